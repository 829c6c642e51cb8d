//! The crate's error type: one variant per situation, each mapped to a documented exit code.

use std::path::PathBuf;

use walship_replica::halt::HaltError;
use walship_wal::error::WalError;
use walship_wal::state::StateError;

use crate::exit::Exit;
use crate::scan::ScanIoError;

/// Why a `walship-recover` command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The path is not a walship data directory.
    #[error("{}: not a walship data directory: {reason}", path.display())]
    NotADataDir {
        /// The path given.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The node's directory lock is held: the node (or another walship-recover) is running.
    #[error("{}: node is running (directory lock {} is held); stop the node first", dir.display(), lock.display())]
    NodeRunning {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Bad input from the user or a malformed file that is not a checksummed walship file.
    #[error("{message}")]
    BadInput {
        /// One line describing the problem.
        message: String,
    },
    /// A state file (`state/commit`, `state/epochs`, `state/halt`) is damaged.
    #[error("{message}")]
    StateCorrupt {
        /// What is wrong, naming the file.
        message: String,
    },
    /// An installed snapshot is damaged or disagrees with the WAL.
    #[error("{message}")]
    SnapshotCorrupt {
        /// What is wrong, naming the file.
        message: String,
    },
    /// The WAL is corrupt (a modifying command cannot proceed).
    #[error("{0}")]
    WalCorrupt(walship_wal::error::CorruptionReport),
    /// A safety rule (or a missing confirmation) refused the action; nothing was changed.
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The WAL failed in a way that is not corruption.
    #[error("{0}")]
    Wal(WalError),
    /// The log of a directory read without its lock (a running primary) changed
    /// under the read in a way that makes the read unusable; nothing was changed.
    #[error("{}: the running node's log changed during the read: {detail}; nothing was changed, run the command again", dir.display())]
    LiveLogChanged {
        /// The data directory read.
        dir: PathBuf,
        /// What changed.
        detail: String,
    },
    /// A running primary's log read over HTTP (`rejoin --from ADDR`) could not be read,
    /// or an answer was rejected (not the expected JSON, too large, more identities than
    /// asked for, a broken chain, a failover during the read); nothing was changed.
    #[error("{addr}: {detail}; nothing was changed")]
    RemoteLog {
        /// The endpoint, `http://ip:port`.
        addr: String,
        /// What went wrong.
        detail: String,
    },
    /// A broken internal invariant (a bug).
    #[error("internal error: {message}")]
    Internal {
        /// What broke.
        message: String,
    },
}

impl RecoverError {
    /// The documented exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            RecoverError::NotADataDir { .. } | RecoverError::BadInput { .. } => Exit::Usage,
            RecoverError::NodeRunning { .. } => Exit::NodeRunning,
            RecoverError::StateCorrupt { .. }
            | RecoverError::SnapshotCorrupt { .. }
            | RecoverError::WalCorrupt(_) => Exit::Corruption,
            RecoverError::Refused { .. } => Exit::Refused,
            RecoverError::Io { .. }
            | RecoverError::Wal(_)
            | RecoverError::LiveLogChanged { .. }
            | RecoverError::RemoteLog { .. }
            | RecoverError::Internal { .. } => Exit::Io,
        }
    }
}

impl From<WalError> for RecoverError {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Corruption(r) => RecoverError::WalCorrupt(r),
            other => RecoverError::Wal(other),
        }
    }
}

impl From<ScanIoError> for RecoverError {
    fn from(e: ScanIoError) -> Self {
        RecoverError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl From<StateError> for RecoverError {
    fn from(e: StateError) -> Self {
        state_error(e)
    }
}

impl From<HaltError> for RecoverError {
    fn from(e: HaltError) -> Self {
        match e {
            HaltError::State(s) => state_error(s),
            HaltError::Body { path, source } => RecoverError::StateCorrupt {
                message: format!("{path}: body is not a halt record: {source}"),
            },
            HaltError::Io { op, path, source } => RecoverError::Io {
                op,
                path: PathBuf::from(path),
                source,
            },
        }
    }
}

fn state_error(e: StateError) -> RecoverError {
    match e {
        StateError::Locked { path } => RecoverError::NodeRunning {
            dir: path.parent().map(PathBuf::from).unwrap_or_default(),
            lock: path,
        },
        StateError::Io { op, path, source } => RecoverError::Io { op, path, source },
        other => RecoverError::StateCorrupt {
            message: other.to_string(),
        },
    }
}
