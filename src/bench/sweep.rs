//! `rchat bench --sweep clients=10,100,1000`: the same scenario once per
//! client count, one after the other, and a table with a row per point.
//!
//! How many clients send at each point follows `--senders`: `all` (every
//! client) or a number, capped at the point's client count ([`Senders`]).
//! Each point is a complete [`run`](super::run), with its own connections,
//! so points do not disturb each other beyond what the server remembers.

use std::fmt::Write;
use std::str::FromStr;

use super::report::{fmt_bytes, fmt_num};
use super::{BenchConfig, BenchError, Report, MAX_CLIENTS};

/// Most points one sweep may have.
pub const MAX_POINTS: usize = 32;

/// How many clients of a run send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    /// Every client.
    All,
    /// This many, or every client if there are fewer.
    Count(usize),
}

impl Senders {
    /// The number of senders among `clients` clients.
    pub fn resolve(self, clients: usize) -> usize {
        match self {
            Senders::All => clients,
            Senders::Count(n) => n.min(clients),
        }
    }
}

impl FromStr for Senders {
    type Err = String;

    /// Parses `all` or a positive count.
    fn from_str(s: &str) -> Result<Senders, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Senders::All);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Senders::Count(n)),
            _ => Err(format!(
                "invalid senders '{s}': expected 'all' or a positive number"
            )),
        }
    }
}

/// The points of a sweep: for now, client counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSpec {
    pub clients: Vec<usize>,
}

impl FromStr for SweepSpec {
    type Err = String;

    /// Parses `clients=N,N,...` (at least one point, each at least 2).
    fn from_str(s: &str) -> Result<SweepSpec, String> {
        let bad = |why: String| Err(format!("invalid sweep '{s}': {why}"));
        let Some((key, values)) = s.split_once('=') else {
            return bad("expected clients=N,N,...".into());
        };
        if key.trim() != "clients" {
            return bad(format!(
                "cannot sweep '{}'; only clients can be swept",
                key.trim()
            ));
        }
        let mut clients = Vec::new();
        for v in values.split(',') {
            match v.trim().parse::<usize>() {
                Ok(n) if (2..=MAX_CLIENTS).contains(&n) => clients.push(n),
                _ => {
                    return bad(format!(
                        "'{}' is not a client count between 2 and {MAX_CLIENTS}",
                        v.trim()
                    ))
                }
            }
        }
        if clients.len() > MAX_POINTS {
            return bad(format!("at most {MAX_POINTS} points"));
        }
        Ok(SweepSpec { clients })
    }
}

/// The reports of the points that ran, and the error that stopped the
/// sweep early, if one did (with the client count it happened at).
#[derive(Debug)]
pub struct SweepOutcome {
    pub reports: Vec<Report>,
    pub error: Option<(usize, BenchError)>,
}

/// Runs `base` once per point of `spec`, with `senders` at each. Stops at
/// the first point that fails, keeping the reports of those before it.
pub async fn run(base: &BenchConfig, senders: Senders, spec: &SweepSpec) -> SweepOutcome {
    let mut reports = Vec::with_capacity(spec.clients.len());
    for &clients in &spec.clients {
        let cfg = BenchConfig {
            clients,
            senders: senders.resolve(clients),
            ..base.clone()
        };
        match super::run(&cfg).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                return SweepOutcome {
                    reports,
                    error: Some((clients, e)),
                }
            }
        }
    }
    SweepOutcome {
        reports,
        error: None,
    }
}

/// One row per report: clients, senders, throughput, loss, latency and,
/// when sampled, the server's CPU and peak RSS.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>11}",
        "clients",
        "senders",
        "deliveries/s",
        "loss %",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "cpu %",
        "peak RSS"
    );
    for r in reports {
        let l = &r.latency;
        let (cpu, rss) = match &r.server {
            Some(s) => (
                format!("{:.0}", s.cpu_percent),
                fmt_bytes(s.rss_peak_bytes as f64),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let loss = if r.measured() {
            format!("{:.3}", r.loss_ratio * 100.0)
        } else {
            "no data".to_string()
        };
        let _ = writeln!(
            out,
            "{:>8} {:>8} {:>14} {:>10} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>8} {:>11}",
            r.settings.clients,
            r.settings.senders,
            fmt_num(r.deliveries_per_sec),
            loss,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            cpu,
            rss
        );
    }
    for r in reports {
        for w in &r.warnings {
            let _ = writeln!(out, "WARNING at {} clients: {w}", r.settings.clients);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_sweeps() {
        assert_eq!(
            "clients=10,100,1000".parse(),
            Ok(SweepSpec {
                clients: vec![10, 100, 1000]
            })
        );
        assert_eq!(
            " clients = 2, 5 ".parse(),
            Ok(SweepSpec {
                clients: vec![2, 5]
            })
        );
        for bad in [
            "",
            "clients",
            "clients=",
            "clients=10,,20",
            "clients=1,10",
            "clients=10,x",
            "clients=-5",
            "senders=1,2",
            "clients=10;20",
        ] {
            assert!(bad.parse::<SweepSpec>().is_err(), "{bad}");
        }
        let many = format!("clients={}", vec!["2"; MAX_POINTS + 1].join(","));
        assert!(many.parse::<SweepSpec>().is_err());
    }

    #[test]
    fn senders_all_or_capped_count() {
        assert_eq!("all".parse(), Ok(Senders::All));
        assert_eq!("ALL".parse(), Ok(Senders::All));
        assert_eq!("10".parse(), Ok(Senders::Count(10)));
        for bad in ["0", "-1", "some", ""] {
            assert!(bad.parse::<Senders>().is_err(), "{bad}");
        }
        assert_eq!(Senders::All.resolve(500), 500);
        assert_eq!(Senders::Count(10).resolve(500), 10);
        assert_eq!(Senders::Count(10).resolve(4), 4);
    }
}
