//! One module per subcommand. Each returns an [`crate::Outcome`] holding its
//! report (from [`crate::report`]) and exit code; `lib.rs` prints it.

pub mod clear_halt;
pub mod diff;
pub mod dump;
pub mod inspect;
pub mod promote;
pub mod rejoin;
pub mod rewind;
pub mod snapshot;
pub mod status;
pub mod text;
pub mod verify;

use crate::cli::Common;
use crate::scan::ScanOptions;

/// Scan options from the shared command-line options.
pub fn scan_options(common: &Common) -> ScanOptions {
    ScanOptions {
        max_record_bytes: common.max_record_bytes,
    }
}

/// The progress label to use, or none when progress bars are disabled.
pub fn progress_label(enabled: bool, label: &str) -> Option<&str> {
    enabled.then_some(label)
}
