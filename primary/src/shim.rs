//! TEMPORARY stand-in for `walship_wal::WalError`, which is not yet on main; replaced by the
//! real type as soon as the full WAL lands.

/// Stand-in for the WAL's error type.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O failure (stand-in).
    #[error("io: {0}")]
    Io(String),
}
