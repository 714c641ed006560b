//! The server process's CPU time and resident memory, read from Linux's
//! `/proc` (`bench --server-pid`), and a watcher that keeps the peak.
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (every thread of the
//! process, in clock ticks); memory is `VmRSS` of `/proc/PID/status`. Both
//! are cheap to read, so the watcher samples often enough to see a peak
//! that lasts a tenth of a second. Other systems have no `/proc`: asking
//! for a pid there is an error, not a silent zero.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How often the watcher samples memory.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Why the server process cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process {pid} to watch: {source} (is the server running, and is this its pid?)")]
    NotFound {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make sense of {path}: {what}")]
    Format { path: PathBuf, what: &'static str },
    #[error("--server-pid needs Linux's /proc")]
    Unsupported,
}

/// One reading of the process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// User plus system CPU time since the process started.
    pub cpu_secs: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// A process to sample.
#[derive(Debug, Clone)]
pub struct Process {
    pid: u32,
    ticks_per_sec: f64,
}

impl Process {
    /// Checks that `pid` exists and can be read.
    pub fn open(pid: u32) -> Result<Process, ProcessError> {
        let p = Process {
            pid,
            ticks_per_sec: clock_ticks_per_sec()?,
        };
        p.sample()?;
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn sample(&self) -> Result<Sample, ProcessError> {
        let dir = PathBuf::from(format!("/proc/{}", self.pid));
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|source| ProcessError::NotFound {
                pid: self.pid,
                source,
            })
        };
        let stat = read("stat")?;
        let status = read("status")?;
        let at = Instant::now();
        let ticks = cpu_ticks(&stat).ok_or_else(|| ProcessError::Format {
            path: dir.join("stat"),
            what: "no utime and stime fields",
        })?;
        let rss_bytes = vm_rss_bytes(&status).ok_or_else(|| ProcessError::Format {
            path: dir.join("status"),
            what: "no VmRSS line",
        })?;
        Ok(Sample {
            at,
            cpu_secs: ticks as f64 / self.ticks_per_sec,
            rss_bytes,
        })
    }
}

#[cfg(target_os = "linux")]
fn clock_ticks_per_sec() -> Result<f64, ProcessError> {
    Ok(rustix::param::clock_ticks_per_second().max(1) as f64)
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks_per_sec() -> Result<f64, ProcessError> {
    Err(ProcessError::Unsupported)
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (in
/// parentheses) may hold spaces and parentheses itself, so fields are
/// counted from the last `)`.
pub(crate) fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state); utime is field 14.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` from the text of `/proc/PID/status`, in bytes.
pub(crate) fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(n * 1024),
        _ => None,
    }
}

/// Samples a process in the background, keeping the highest RSS seen.
pub(crate) struct Watch {
    process: Process,
    first: Sample,
    peak: Arc<AtomicU64>,
    /// A sample failed: the process is probably gone.
    lost: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Watch {
    /// Takes a first sample now, then keeps sampling until dropped.
    pub(crate) fn start(process: Process) -> Result<Watch, ProcessError> {
        let first = process.sample()?;
        let peak = Arc::new(AtomicU64::new(first.rss_bytes));
        let lost = Arc::new(AtomicBool::new(false));
        let task = {
            let (process, peak, lost) = (process.clone(), peak.clone(), lost.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(WATCH_EVERY);
                loop {
                    tick.tick().await;
                    match process.sample() {
                        Ok(s) => {
                            peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                        }
                        Err(_) => {
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        };
        Ok(Watch {
            process,
            first,
            peak,
            lost,
            task,
        })
    }

    /// The sample taken when watching started.
    pub(crate) fn first(&self) -> Sample {
        self.first
    }

    /// A sample now, counted towards the peak; `None` once the process is
    /// gone.
    pub(crate) fn sample(&self) -> Option<Sample> {
        match self.process.sample() {
            Ok(s) => {
                self.peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                Some(s)
            }
            Err(_) => {
                self.lost.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    pub(crate) fn peak_rss(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU use between two samples, as a percentage of one core.
pub(crate) fn cpu_percent(from: &Sample, to: &Sample) -> f64 {
    let wall = to.at.saturating_duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_secs - from.cpu_secs).max(0.0) / wall * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_awkward_command_names() {
        let stat = "4242 (rchat (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 52 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(783));
        assert_eq!(cpu_ticks("4242 (rchat) S 1 2 3"), None);
        assert_eq!(cpu_ticks("no parenthesis at all"), None);
    }

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\trchat\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_bytes(status), Some(5120 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tkthreadd\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\t12 MB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn samples_this_process_and_refuses_a_missing_one() {
        let p = Process::open(std::process::id()).expect("own process");
        let s = p.sample().unwrap();
        assert!(s.rss_bytes > 0);
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        let err = Process::open(u32::MAX).expect_err("no such pid");
        assert!(matches!(err, ProcessError::NotFound { .. }), "{err}");
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        let at = Instant::now();
        let a = Sample {
            at,
            cpu_secs: 1.0,
            rss_bytes: 0,
        };
        let b = Sample {
            at: at + Duration::from_secs(2),
            cpu_secs: 4.0,
            rss_bytes: 0,
        };
        assert!((cpu_percent(&a, &b) - 150.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&b, &a), 0.0);
    }
}
