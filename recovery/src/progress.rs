//! Progress reporting for long scans: an indicatif bar on stderr, shown only
//! when stderr is a terminal and only once a scan has run longer than a
//! moment ([`PROGRESS_DELAY`]): short scans never flash a bar.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A scan still running after this long gets a progress bar.
pub const PROGRESS_DELAY: Duration = Duration::from_millis(700);

/// A byte-counting progress sink; a no-op unless stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    shown: Cell<bool>,
}

impl Progress {
    /// A sink that never draws (tests, JSON pipelines, non-terminal stderr).
    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            started: Instant::now(),
            shown: Cell::new(false),
        }
    }

    /// A bar over `total_bytes` labelled `label`, drawn on stderr only if it
    /// is a terminal, and only after the scan has run for [`PROGRESS_DELAY`].
    pub fn for_scan(label: &str, total_bytes: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_string());
        Progress {
            bar: Some(bar),
            started: Instant::now(),
            shown: Cell::new(false),
        }
    }

    /// Advances the bar by `bytes` (and shows it once the scan is long).
    pub fn advance(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
            if !self.shown.get() && self.started.elapsed() >= PROGRESS_DELAY {
                self.shown.set(true);
                b.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
