//! The `rchat` command line: parse, then call into the library.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use rchat::cert;
use rchat::config::{ServeFlags, ServerConfig};
use rchat::server::Server;

#[derive(Parser)]
#[command(
    name = "rchat",
    version,
    about = "A fast, secure, self-hostable chat-room server and client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the chat server.
    Serve(Box<ServeArgs>),
    /// Join a server: full-screen on a terminal, line mode otherwise.
    Connect(ConnectArgs),
    /// Write a self-signed certificate and key for `serve --tls-cert/--tls-key`.
    GenCert(GenCertArgs),
    /// Measure a line-based chat server: throughput, loss, order, latency.
    Bench(Box<rchat::bench::cli::BenchArgs>),
}

#[derive(Args)]
struct ConnectArgs {
    /// Server address, HOST:PORT. [default: `server` in client.toml, else
    /// 127.0.0.1:1234]
    addr: Option<String>,
    /// Nickname to use (and to restore after a reconnect).
    #[arg(long)]
    nick: Option<String>,
    /// Room to start in. [default: lobby]
    #[arg(long)]
    room: Option<String>,
    /// Connect over TLS, verifying the server (system roots, --ca, or a
    /// fingerprint remembered on first use).
    #[arg(long)]
    tls: bool,
    /// Trust only this CA (or the server's own self-signed cert.pem). Implies --tls.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint, and
    /// remember it. Implies --tls.
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    trust: Option<String>,
    /// Do not verify the server's certificate at all (warns every time). Implies --tls.
    #[arg(long)]
    insecure: bool,
    /// Line mode: read stdin, print events to stdout (automatic when stdin or
    /// stdout is not a terminal).
    #[arg(long)]
    plain: bool,
    /// Exit when the connection is lost instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
    /// File whose first line is the server's password.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with server settings; flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, then --config, then
    /// flags) as TOML that --config reads back, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    flags: ServeFlags,
}

#[derive(Args)]
struct GenCertArgs {
    /// Directory to write cert.pem and key.pem into (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Host name or IP the certificate is for (repeatable).
    /// [default: localhost, 127.0.0.1, ::1]
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// Days the certificate is valid, from now.
    #[arg(long, value_name = "N", default_value_t = cert::DEFAULT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(cert::MAX_DAYS)))]
    days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The client draws on the terminal; a stray log line would corrupt the
    // screen, so it logs only when asked to with RUST_LOG.
    let default_filter = match cli.command {
        Command::Connect(_) => "off",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Connect(args) => connect(args),
        Command::GenCert(args) => gen_cert(args),
        Command::Bench(args) => {
            raise_fd_limit();
            rchat::bench::cli::run(*args)
        }
    };
    match result {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // The library's messages already name their cause; print the
            // chain on one line, without a backtrace.
            eprintln!("rchat: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn connect(args: ConnectArgs) -> anyhow::Result<u8> {
    let config = rchat::client::app::ConnectConfig {
        addr: args.addr,
        nick: args.nick,
        room: args.room,
        tls: args.tls,
        ca: args.ca,
        trust: args.trust,
        insecure: args.insecure,
        plain: args.plain,
        reconnect: !args.no_reconnect,
        password: args
            .password_file
            .as_deref()
            .map(rchat::client::app::read_password_file)
            .transpose()?,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let code = runtime.block_on(rchat::client::app::run(config))?;
    // Stdin reads may still be parked in a blocking thread; don't wait.
    runtime.shutdown_background();
    Ok(code.clamp(0, 255) as u8)
}

fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let config = ServerConfig::load(args.config.as_deref(), &args.flags)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(0);
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        server.run(shutdown_signal()).await;
        anyhow::Ok(0)
    })
}

/// Each connection is a file descriptor; the common soft limit of 1024 would
/// cap the server far below `--max-clients`, so raise it to the hard limit.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn gen_cert(args: GenCertArgs) -> anyhow::Result<u8> {
    let names: Vec<String> = if args.names.is_empty() {
        cert::DEFAULT_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.names
    };
    let generated = cert::self_signed(&names, args.days)?;
    cert::write_pair(&args.out_dir, &generated, args.force)?;
    let (cert_path, key_path) = cert::pem_paths(&args.out_dir);
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    println!("valid for: {}", names.join(", "));
    if let Some(info) = cert::info(&generated.cert_der) {
        println!(
            "expires: {} UTC ({} days)",
            rchat::clock::date_time(info.not_after.max(0) as u64 * 1000),
            args.days
        );
    }
    println!(
        "SHA-256 fingerprint: {}",
        cert::fingerprint(&generated.cert_der)
    );
    Ok(0)
}
