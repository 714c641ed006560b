//! `rchat bench` on the command line: its flags, and turning them into a
//! run (or a sweep, or an idle hold), a printed report, a JSON file and a
//! plot. The binary only parses and calls [`run`]; like the binary, this is
//! the edge where errors become `anyhow` messages for a person.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server address (loopback for load tests). Give several, the nodes
    /// of one cluster, to spread the clients over them in turn.
    #[arg(required = true, num_args = 1..)]
    pub addr: Vec<SocketAddr>,
    /// Clients to connect; every one receives.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How many of the clients send: a number (at most every client), or
    /// `all`.
    #[arg(long, default_value = "10")]
    pub senders: crate::bench::sweep::Senders,
    /// Messages per second over all senders (open loop), or `max`.
    #[arg(long, default_value = "max")]
    pub rate: crate::bench::Rate,
    /// Each sender's messages in flight until every other client has them
    /// (closed loop); 0 for no bound.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Bytes per message line, token included.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seconds measured, after the warm-up. With --idle: seconds the
    /// connections are held once the server has settled.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds that connecting (and greeting) every client may take.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Report this process's CPU use and memory (RSS) during the run: the
    /// server's pid (`$!` after starting it in the background). Repeat it
    /// for a cluster's nodes and its Redis. Linux only.
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,
    /// Connect over TLS, verifying the server against the system's roots
    /// (or a fingerprint `rchat connect` remembered); see --ca, --insecure.
    #[arg(long)]
    pub tls: bool,
    /// Trust only this CA (or the server's own self-signed cert.pem).
    /// Implies --tls.
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint.
    /// Implies --tls.
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub trust: Option<String>,
    /// Do not verify the server's certificate at all. Implies --tls.
    #[arg(long)]
    pub insecure: bool,
    /// Also connect N slow clients, not measured: they join before the
    /// start and then never read (see --slow-rate), so that the server has
    /// to disconnect them. Reports when it did.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slow: usize,
    /// Bytes per second each --slow client reads, instead of none.
    #[arg(long, value_name = "BYTES")]
    pub slow_rate: Option<u64>,
    /// Also a wave of N clients, not measured, that join at once during the
    /// measured window, stay (--churn-hold), then all quit at once. Reports
    /// the measured latency during the joins and the leaves apart.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub churn: usize,
    /// Seconds into the measured window when the churn wave starts
    /// connecting. [default: a quarter of --duration]
    #[arg(long, value_name = "SECS")]
    pub churn_at: Option<f64>,
    /// Seconds the churn wave stays once all of it is in the room.
    /// [default: a quarter of --duration]
    #[arg(long, value_name = "SECS")]
    pub churn_hold: Option<f64>,
    /// The room the churn wave joins (with `/join`, once in the room every
    /// client starts in), so that the measured clients see the joins'
    /// cost without their room growing. [default: the measured room]
    #[arg(long, value_name = "ROOM")]
    pub churn_room: Option<String>,
    /// Speak IRC instead of rchat's text protocol, to measure an IRC server
    /// (InspIRCd, Ergo, …) with the same load: each client registers as
    /// `rbN`, joins #bench and sends its messages as PRIVMSGs. The server
    /// must let this many clients in from one address, at this rate, and
    /// not ping them within the run.
    #[arg(long, conflicts_with_all = ["idle", "soak", "slow", "slow_rate", "churn", "churn_at", "churn_hold", "churn_room"])]
    pub irc: bool,
    /// Instead of sending: hold this many idle connections and report the
    /// server's memory per connection (needs --server-pid).
    #[arg(
        long,
        value_name = "C",
        requires = "server_pid",
        conflicts_with_all = ["sweep", "plot", "slow", "slow_rate", "churn", "churn_at", "churn_hold", "churn_room"]
    )]
    pub idle: Option<usize>,
    /// A soak instead of a measurement: a quarter of the clients talk
    /// within the flood limits and check that every message reaches them
    /// exactly once and in order, while the rest misbehave in every way
    /// (floods, garbage, slow reads, resets, stalled handshakes) for
    /// --duration seconds. Exits with status 1 if anything was lost,
    /// doubled or reordered, or the server died.
    #[arg(
        long,
        conflicts_with_all = ["idle", "sweep", "plot", "slow", "slow_rate", "churn", "churn_at", "churn_hold", "churn_room"]
    )]
    pub soak: bool,
    /// Seed of the soak's random choices, to repeat a run. [default: random]
    #[arg(long, requires = "soak")]
    pub seed: Option<u64>,
    /// Run once per client count, e.g. `clients=10,100,1000`; a row each.
    #[arg(long, value_name = "clients=N,N,...")]
    pub sweep: Option<crate::bench::sweep::SweepSpec>,
    /// Write the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw an SVG: the latency CDF and, with --sweep, throughput and p99
    /// latency against clients.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Exit code of a bench run that ran but measured nothing (or, in a sweep,
/// a point that measured nothing): its figures are not figures.
const EXIT_NOT_MEASURED: u8 = 2;

/// Exit code of a soak that found a fault.
const EXIT_SOAK_FAILED: u8 = 1;

/// Runs `rchat bench` as its flags say; the exit status is returned.
pub fn run(args: BenchArgs) -> anyhow::Result<u8> {
    let secs = |s: f64, what: &str| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--{what} must be a number of seconds"))
    };
    let tls = bench_tls(&args)?;
    let addr = args.addr[0];
    let one_server = |what: &str| {
        if args.addr.len() > 1 || args.server_pid.len() > 1 {
            anyhow::bail!("--{what} takes one server address and at most one --server-pid");
        }
        Ok(())
    };
    let connect_timeout = secs(args.connect_timeout, "connect-timeout")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;

    if args.soak {
        one_server("soak")?;
        let mut config = crate::bench::soak::SoakConfig::new(
            addr,
            args.clients,
            secs(args.duration, "duration")?,
        );
        config.tls = tls;
        config.connect_timeout = connect_timeout;
        config.server_pid = args.server_pid.first().copied();
        config.seed = args.seed;
        config.quiet = args.quiet;
        let report = runtime.block_on(crate::bench::soak::run(&config))?;
        emit(&report.table());
        if let Some(path) = &args.out {
            write_json(path, &report)?;
        }
        return Ok(if report.passed() { 0 } else { EXIT_SOAK_FAILED });
    }

    if let (Some(connections), Some(&pid)) = (args.idle, args.server_pid.first()) {
        one_server("idle")?;
        let mut config = crate::bench::idle::IdleConfig::new(addr, connections, pid);
        config.tls = tls;
        config.hold = secs(args.duration, "duration")?;
        config.connect_timeout = connect_timeout;
        config.quiet = args.quiet;
        let report = runtime.block_on(crate::bench::idle::run(&config))?;
        emit(&report.table());
        if let Some(path) = &args.out {
            write_json(path, &report)?;
        }
        return Ok(0);
    }

    let mut config = crate::bench::BenchConfig::new(addr);
    config.tls = tls;
    config.other_addrs = args.addr[1..].to_vec();
    config.server_pid = args.server_pid.first().copied();
    config.other_pids = args.server_pid.iter().skip(1).copied().collect();
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
    config.churn_room = args.churn_room.clone();
    config.irc = args.irc;
    config.quiet = args.quiet;
    if config.slow_rate.is_some() && config.slow == 0 {
        anyhow::bail!("--slow-rate needs --slow");
    }
    if (config.churn_at.is_some() || config.churn_hold.is_some() || config.churn_room.is_some())
        && config.churn == 0
    {
        anyhow::bail!("--churn-at, --churn-hold and --churn-room need --churn");
    }

    let (reports, failure) = match &args.sweep {
        None => {
            let report = runtime.block_on(crate::bench::run(&config))?;
            emit(&report.table());
            (vec![report], None)
        }
        Some(spec) => {
            let outcome = runtime.block_on(crate::bench::sweep::run(&config, args.senders, spec));
            emit(&crate::bench::sweep::table(&outcome.reports));
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
            crate::bench::plot::write_svg(path, &reports)?;
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
fn bench_tls(args: &BenchArgs) -> anyhow::Result<Option<crate::bench::TlsTarget>> {
    use crate::client::trust::{self, KnownHosts, TrustMode};
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
    let host_port = args.addr[0].to_string();
    let known = KnownHosts::load_default()?;
    let (config, _seen) = trust::client_config(&mode, &host_port, args.trust.as_deref(), &known)?;
    Ok(Some(crate::bench::TlsTarget {
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
