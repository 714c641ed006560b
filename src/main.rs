//! The `rchat` command line: parse, then call into the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
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
    Serve(ServeArgs),
    /// Join a server: full-screen on a terminal, line mode otherwise.
    Connect(ConnectArgs),
    /// Write a self-signed certificate and key for `serve --tls-cert/--tls-key`.
    GenCert(GenCertArgs),
    /// Measure a line-based chat server: throughput, loss, order, latency.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Server address (loopback for load tests).
    addr: SocketAddr,
    /// Clients to connect; every one receives.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How many of the clients send: a number (at most every client), or
    /// `all`.
    #[arg(long, default_value = "10")]
    senders: rchat::bench::sweep::Senders,
    /// Messages per second over all senders (open loop), or `max`.
    #[arg(long, default_value = "max")]
    rate: rchat::bench::Rate,
    /// Each sender's messages in flight until every other client has them
    /// (closed loop); 0 for no bound.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Bytes per message line, token included.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Seconds measured, after the warm-up. With --idle: seconds the
    /// connections are held once the server has settled.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds that connecting (and greeting) every client may take.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    connect_timeout: f64,
    /// Report this process's CPU use and memory (RSS) during the run: the
    /// server's pid (`$!` after starting it in the background). Linux only.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Connect over TLS, verifying the server against the system's roots
    /// (or a fingerprint `rchat connect` remembered); see --ca, --insecure.
    #[arg(long)]
    tls: bool,
    /// Trust only this CA (or the server's own self-signed cert.pem).
    /// Implies --tls.
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint.
    /// Implies --tls.
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    trust: Option<String>,
    /// Do not verify the server's certificate at all. Implies --tls.
    #[arg(long)]
    insecure: bool,
    /// Also connect N slow clients, not measured: they join before the
    /// start and then never read (see --slow-rate), so that the server has
    /// to disconnect them. Reports when it did.
    #[arg(long, value_name = "N", default_value_t = 0)]
    slow: usize,
    /// Bytes per second each --slow client reads, instead of none.
    #[arg(long, value_name = "BYTES")]
    slow_rate: Option<u64>,
    /// Also a wave of N clients, not measured, that join at once during the
    /// measured window, stay (--churn-hold), then all quit at once. Reports
    /// the measured latency during the joins and the leaves apart.
    #[arg(long, value_name = "N", default_value_t = 0)]
    churn: usize,
    /// Seconds into the measured window when the churn wave starts
    /// connecting. [default: a quarter of --duration]
    #[arg(long, value_name = "SECS")]
    churn_at: Option<f64>,
    /// Seconds the churn wave stays once all of it is in the room.
    /// [default: a quarter of --duration]
    #[arg(long, value_name = "SECS")]
    churn_hold: Option<f64>,
    /// Instead of sending: hold this many idle connections and report the
    /// server's memory per connection (needs --server-pid).
    #[arg(
        long,
        value_name = "C",
        requires = "server_pid",
        conflicts_with_all = ["sweep", "plot", "slow", "slow_rate", "churn", "churn_at", "churn_hold"]
    )]
    idle: Option<usize>,
    /// Run once per client count, e.g. `clients=10,100,1000`; a row each.
    #[arg(long, value_name = "clients=N,N,...")]
    sweep: Option<rchat::bench::sweep::SweepSpec>,
    /// Write the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Draw an SVG: the latency CDF and, with --sweep, throughput and p99
    /// latency against clients.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct ConnectArgs {
    /// Server address, HOST:PORT.
    #[arg(default_value = rchat::config::DEFAULT_LISTEN)]
    addr: String,
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
        Command::Serve(args) => serve(args),
        Command::Connect(args) => connect(args),
        Command::GenCert(args) => gen_cert(args),
        Command::Bench(args) => bench(args),
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

/// Exit code of a bench run that ran but measured nothing (or, in a sweep,
/// a point that measured nothing): its figures are not figures.
const EXIT_NOT_MEASURED: u8 = 2;

fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    let secs = |s: f64, what: &str| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--{what} must be a number of seconds"))
    };
    let tls = bench_tls(&args)?;
    let connect_timeout = secs(args.connect_timeout, "connect-timeout")?;
    raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;

    if let (Some(connections), Some(pid)) = (args.idle, args.server_pid) {
        let mut config = rchat::bench::idle::IdleConfig::new(args.addr, connections, pid);
        config.tls = tls;
        config.hold = secs(args.duration, "duration")?;
        config.connect_timeout = connect_timeout;
        config.quiet = args.quiet;
        let report = runtime.block_on(rchat::bench::idle::run(&config))?;
        emit(&report.table());
        if let Some(path) = &args.out {
            write_json(path, &report)?;
        }
        return Ok(0);
    }

    let mut config = rchat::bench::BenchConfig::new(args.addr);
    config.tls = tls;
    config.server_pid = args.server_pid;
    config.clients = args.clients;
    config.senders = args.senders.resolve(args.clients);
    config.rate = args.rate;
    config.window = args.window;
    config.size = args.size;
    config.duration = secs(args.duration, "duration")?;
    config.warmup = secs(args.warmup, "warmup")?;
    config.connect_timeout = connect_timeout;
    config.slow = args.slow;
    config.slow_rate = args.slow_rate;
    config.churn = args.churn;
    config.churn_at = args.churn_at.map(|s| secs(s, "churn-at")).transpose()?;
    config.churn_hold = args.churn_hold.map(|s| secs(s, "churn-hold")).transpose()?;
    config.quiet = args.quiet;
    if config.slow_rate.is_some() && config.slow == 0 {
        anyhow::bail!("--slow-rate needs --slow");
    }
    if (config.churn_at.is_some() || config.churn_hold.is_some()) && config.churn == 0 {
        anyhow::bail!("--churn-at and --churn-hold need --churn");
    }

    let (reports, failure) = match &args.sweep {
        None => {
            let report = runtime.block_on(rchat::bench::run(&config))?;
            emit(&report.table());
            (vec![report], None)
        }
        Some(spec) => {
            let outcome = runtime.block_on(rchat::bench::sweep::run(&config, args.senders, spec));
            emit(&rchat::bench::sweep::table(&outcome.reports));
            (outcome.reports, outcome.error)
        }
    };
    if let Some(path) = &args.out {
        if args.sweep.is_some() {
            write_json(path, &serde_json::json!({ "points": reports }))?;
        } else {
            write_json(path, &reports[0])?;
        }
    }
    if let Some(path) = &args.plot {
        if !reports.is_empty() {
            rchat::bench::plot::write_svg(path, &reports)?;
        }
    }
    if let Some((clients, e)) = failure {
        return Err(
            anyhow::Error::new(e).context(format!("the sweep stopped at {clients} clients"))
        );
    }
    if reports.iter().any(|r| !r.measured()) {
        eprintln!("rchat: the run measured nothing (see the warnings above); exit status {EXIT_NOT_MEASURED}");
        return Ok(EXIT_NOT_MEASURED);
    }
    Ok(0)
}

/// The TLS settings for `bench --tls/--ca/--insecure`, built by the same
/// trust code as `rchat connect`'s, or `None` for plain TCP.
fn bench_tls(args: &BenchArgs) -> anyhow::Result<Option<rchat::bench::TlsTarget>> {
    use rchat::client::trust::{self, KnownHosts, TrustMode};
    if !(args.tls || args.ca.is_some() || args.trust.is_some() || args.insecure) {
        return Ok(None);
    }
    let mode = match (&args.ca, args.insecure) {
        (_, true) => TrustMode::Insecure,
        (Some(ca), false) => TrustMode::Ca(ca.clone()),
        (None, false) => TrustMode::System,
    };
    if mode == TrustMode::Insecure {
        eprintln!("{}", trust::insecure_warning());
    }
    let host_port = args.addr.to_string();
    let known = KnownHosts::load_default()?;
    let (config, _seen) = trust::client_config(&mode, &host_port, args.trust.as_deref(), &known)?;
    Ok(Some(rchat::bench::TlsTarget {
        config,
        server_name: trust::server_name(&host_port)?,
    }))
}

/// Prints a report; a closed stdout (`| head`) is not worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(path, json)
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

fn gen_cert(args: GenCertArgs) -> anyhow::Result<u8> {
    let names: Vec<String> = if args.names.is_empty() {
        cert::DEFAULT_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.names
    };
    let generated = cert::self_signed(&names)?;
    cert::write_pair(&args.out_dir, &generated, args.force)?;
    let (cert_path, key_path) = cert::pem_paths(&args.out_dir);
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    println!("valid for: {}", names.join(", "));
    println!(
        "SHA-256 fingerprint: {}",
        cert::fingerprint(&generated.cert_der)
    );
    Ok(0)
}
