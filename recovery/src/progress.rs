//! Progress reporting for long scans: an indicatif bar on stderr, shown only
//! when stderr is a terminal and the scan is large enough to take a moment.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Scans smaller than this many bytes finish in well under a second: no bar.
pub const PROGRESS_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// A byte-counting progress sink; a no-op unless stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A sink that never draws (tests, JSON pipelines, non-terminal stderr).
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// A bar over `total_bytes` labelled `label`, drawn only when stderr is a
    /// terminal and `total_bytes >= PROGRESS_MIN_BYTES`.
    pub fn for_scan(label: &str, total_bytes: u64) -> Progress {
        if total_bytes < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_string());
        Progress { bar: Some(bar) }
    }

    /// Advances the bar by `bytes`.
    pub fn advance(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
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
