//! `status DIR`: the halt record in full, or 'not halted'.

use std::io::{self, Write};
use std::path::Path;

use crate::cmd::text::write_halt;
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::StatusReport;
use crate::{Outcome, TextReport};

/// Runs `status`: exit 4 if halted, else 0.
pub fn status(dir: &Path) -> Result<Outcome<StatusReport>, RecoverError> {
    let d = DataDir::open_locked(dir)?;
    let halt = d.halt()?;
    let exit = if halt.is_some() {
        Exit::Halted
    } else {
        Exit::Ok
    };
    Ok(Outcome::new(
        StatusReport {
            dir: dir.display().to_string(),
            halted: halt.is_some(),
            halt,
        },
        exit,
    ))
}

impl TextReport for StatusReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        match &self.halt {
            Some(h) => write_halt(w, h),
            None => writeln!(w, "not halted"),
        }
    }
}
