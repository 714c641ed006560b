//! A private tmux server for driving the real full-screen client: start
//! a session, type into it with send-keys, read it with capture-pane
//! (plain or with its styles), and record what it wrote (to see a bell).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A private tmux server, killed (with its sessions) when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn new() -> Option<Tmux> {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .map(|o| o.status.success());
        if !matches!(ok, Ok(true)) {
            return None;
        }
        // One tmux server per test: tests run in parallel in one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Tmux {
            socket: format!("rchat-test-{}-{n}", std::process::id()),
        })
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Starts `cmd` in a new detached 100x30 session.
    pub fn start(&self, name: &str, cmd: &str) {
        self.start_sized(name, 100, cmd);
    }

    /// Starts `cmd` in a new detached session `width` columns wide.
    pub fn start_sized(&self, name: &str, width: u16, cmd: &str) {
        let width = width.to_string();
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &width,
            "-y",
            "30",
            cmd,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Copies everything session `name` writes to `file` from now on (to
    /// see bytes the screen does not show, such as the bell).
    pub fn record(&self, name: &str, file: &std::path::Path) {
        let cmd = format!("cat >> {}", file.display());
        assert!(self
            .run(&["pipe-pane", "-o", "-t", name, &cmd])
            .status
            .success());
    }

    /// The screen with its colours and attributes as escape sequences.
    pub fn styled_screen(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-e", "-t", name]).stdout)
            .into_owned()
    }

    pub fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Types `text` literally (no key-name interpretation).
    pub fn type_text(&self, name: &str, text: &str) {
        assert!(self
            .run(&["send-keys", "-t", name, "-l", text])
            .status
            .success());
    }

    pub fn screen(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    }

    pub fn alive(&self, name: &str) -> bool {
        self.run(&["has-session", "-t", name]).status.success()
    }

    /// Waits until the screen satisfies `pred`; panics with the screen if it
    /// does not within the deadline.
    pub fn wait_screen(&self, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen(name);
            if pred(&screen) {
                return screen;
            }
            if start.elapsed() > super::DEADLINE {
                panic!("{name}: timed out waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_exit(&self, name: &str) {
        let start = Instant::now();
        while self.alive(name) {
            if start.elapsed() > super::DEADLINE {
                panic!("{name} did not exit; screen:\n{}", self.screen(name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The line of the screen holding the input prompt: the last line that
/// contains `needle`.
pub fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().rev().find(|l| l.contains(needle))
}
