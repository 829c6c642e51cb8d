//! The documented process exit codes of `walship-recover` (see `spec/recovery-tool.md`).

/// A process exit status with a documented meaning. The numeric values are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exit {
    /// 0: the command did what was asked and found nothing wrong.
    Ok,
    /// 1: an I/O error or another failure that is not one of the situations below.
    Io,
    /// 2: usage error or bad input (not a data directory, an lsn out of range, ...).
    Usage,
    /// 3: corruption found (WAL, state file, snapshot).
    Corruption,
    /// 4: the node is halted (`status`, `inspect`).
    Halted,
    /// 5: the node is running: its directory lock is held by another process.
    NodeRunning,
    /// 6: `rewind`, `clear-halt`, `rejoin`, `promote` or `snapshot create` refused to act (a safety rule, no confirmation, or `promote` without `--accept-data-loss`).
    Refused,
    /// 7: `diff`: the two logs diverge (neither is a prefix of the other).
    Diverged,
}

impl Exit {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Io => 1,
            Exit::Usage => 2,
            Exit::Corruption => 3,
            Exit::Halted => 4,
            Exit::NodeRunning => 5,
            Exit::Refused => 6,
            Exit::Diverged => 7,
        }
    }

    /// Stable kebab-case name, used as the error `kind` in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Io => "io",
            Exit::Usage => "usage",
            Exit::Corruption => "corruption",
            Exit::Halted => "halted",
            Exit::NodeRunning => "node-running",
            Exit::Refused => "refused",
            Exit::Diverged => "diverged",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let all = [
            (Exit::Ok, 0),
            (Exit::Io, 1),
            (Exit::Usage, 2),
            (Exit::Corruption, 3),
            (Exit::Halted, 4),
            (Exit::NodeRunning, 5),
            (Exit::Refused, 6),
            (Exit::Diverged, 7),
        ];
        for (e, n) in all {
            assert_eq!(e.code(), n, "{e:?}");
        }
    }
}
