//! The progress bar `rchat bench` draws on stderr while it runs (indicatif),
//! or nothing at all when quiet. It only displays; nothing reads it back.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar counting `clients` connections first.
    pub(crate) fn new(quiet: bool, clients: usize) -> Progress {
        if quiet {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(clients as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:32.cyan/blue} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("connecting 0/{clients}"));
        Progress { bar: Some(bar) }
    }

    pub(crate) fn connecting(&self, ready: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(ready as u64);
            bar.set_message(format!("connecting {ready}/{total}"));
        }
    }

    /// Shows a phase that has no progress to count.
    pub(crate) fn phase(&self, what: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.into());
        }
    }

    pub(crate) fn start(&self, total: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.as_millis().max(1) as u64);
            bar.set_position(0);
            bar.set_message(format!("0.0/{:.1} s", total.as_secs_f64()));
        }
    }

    /// Time elapsed of the length given to [`Progress::start`], and a note.
    pub(crate) fn running(&self, elapsed: Duration, note: &str) {
        if let Some(bar) = &self.bar {
            let total = bar.length().unwrap_or(0) as f64 / 1e3;
            bar.set_position(elapsed.as_millis() as u64);
            bar.set_message(format!("{:.1}/{total:.1} s  {note}", elapsed.as_secs_f64()));
        }
    }

    pub(crate) fn draining(&self) {
        if let Some(bar) = &self.bar {
            if let Some(len) = bar.length() {
                bar.set_position(len);
            }
            bar.set_message("waiting for messages in flight");
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
