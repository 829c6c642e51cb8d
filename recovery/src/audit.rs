//! The operator audit log `DIR/state/audit.log`: one JSON object per line,
//! appended and fsynced before and after every modifying action.
//!
//! An entry with `phase: "intent"` is written and made durable BEFORE the
//! action touches anything, so an action can never happen without a trace
//! (a crash in the middle leaves an intent without its `done`/`failed`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use walship_wal::{Storage, StorageFile};

use crate::error::RecoverError;

/// File name of the audit log inside `DIR/state/`.
pub use walship_wal::state::AUDIT_LOG_FILE as AUDIT_FILE;

/// Who ran the tool.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Operator {
    /// `$USER` (or `$LOGNAME`), empty if neither is set.
    pub user: String,
    /// The process's effective uid (owner of `/proc/self`), if it can be read.
    pub uid: Option<u32>,
}

impl Operator {
    /// The operator running this process.
    pub fn current() -> Operator {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_default();
        Operator {
            user,
            uid: current_uid(),
        }
    }
}

#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(not(unix))]
fn current_uid() -> Option<u32> {
    None
}

/// One line of `state/audit.log`. Field names are stable (see spec/recovery-tool.md).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The same instant as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
    pub at_utc: String,
    /// Who ran the tool.
    pub operator: Operator,
    /// `rewind` or `clear-halt`.
    pub action: String,
    /// `intent` (written before acting), `done` or `failed`.
    pub phase: String,
    /// The data directory acted on.
    pub dir: String,
    /// The whole command line.
    pub command_line: Vec<String>,
    /// Action-specific facts (from/to lsns, the halt record, the verify result, ...).
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// An entry stamped now for the current operator.
    pub fn now(
        action: &str,
        phase: &str,
        dir: &Path,
        command_line: &[String],
        details: serde_json::Value,
    ) -> AuditEntry {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        AuditEntry {
            at_unix_ms,
            at_utc: format_utc_ms(at_unix_ms),
            operator: Operator::current(),
            action: action.to_string(),
            phase: phase.to_string(),
            dir: dir.display().to_string(),
            command_line: command_line.to_vec(),
            details,
        }
    }
}

/// Appends `entry` as one line to `state_dir/audit.log` and makes it durable
/// (fdatasync of the file; fsync of the directory when the file was created).
pub fn append_audit<S: Storage>(
    storage: &S,
    state_dir: &Path,
    entry: &AuditEntry,
) -> Result<PathBuf, RecoverError> {
    let path = state_dir.join(AUDIT_FILE);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| RecoverError::Io {
            op,
            path: p,
            source,
        }
    };
    let mut line = serde_json::to_vec(entry).map_err(|e| RecoverError::Internal {
        message: format!("audit entry does not serialise: {e}"),
    })?;
    line.push(b'\n');
    let existed = storage.exists(&path).map_err(io("exists", &path))?;
    let file = storage.open(&path, true).map_err(io("open", &path))?;
    let len = file.len().map_err(io("len", &path))?;
    file.write_at(len, &line).map_err(io("write", &path))?;
    // The entry is the operator's proof of what was done: durable before we act.
    file.sync_data().map_err(io("fsync", &path))?;
    if !existed {
        // A new file's directory entry survives power loss only after the directory fsync.
        storage
            .sync_dir(state_dir)
            .map_err(io("fsync dir", state_dir))?;
    }
    Ok(path)
}

/// Reads every entry of `state_dir/audit.log` (empty if absent). Lines that are
/// not valid entries are an error naming the line number.
pub fn read_audit<S: Storage>(
    storage: &S,
    state_dir: &Path,
) -> Result<Vec<AuditEntry>, RecoverError> {
    let path = state_dir.join(AUDIT_FILE);
    if !storage.exists(&path).map_err(|source| RecoverError::Io {
        op: "exists",
        path: path.clone(),
        source,
    })? {
        return Ok(Vec::new());
    }
    let map = storage.map(&path).map_err(|source| RecoverError::Io {
        op: "map",
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in map.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e = serde_json::from_slice(line).map_err(|e| RecoverError::BadInput {
            message: format!("{} line {}: not an audit entry: {e}", path.display(), i + 1),
        })?;
        out.push(e);
    }
    Ok(out)
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::FsStorage;

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_utc_ms(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn audit_entries_append_and_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage;
        let cmd = vec!["walship-recover".to_string(), "rewind".to_string()];
        let a = AuditEntry::now(
            "rewind",
            "intent",
            dir.path(),
            &cmd,
            serde_json::json!({"to_lsn": 5}),
        );
        let b = AuditEntry::now(
            "rewind",
            "done",
            dir.path(),
            &cmd,
            serde_json::json!({"to_lsn": 5}),
        );
        append_audit(&s, dir.path(), &a).expect("append a");
        append_audit(&s, dir.path(), &b).expect("append b");
        let got = read_audit(&s, dir.path()).expect("read");
        assert_eq!(got, vec![a, b]);
    }
}
