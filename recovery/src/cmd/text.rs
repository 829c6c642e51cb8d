//! Shared pieces of the human-readable output.

use std::io::{self, Write};

use walship_replica::halt::HaltRecord;

use crate::audit::format_utc_ms;
use crate::report::{DumpMember, SnapshotInfo, SnapshotWal, WalState, WalSummary};

/// One line describing a WAL scan's end.
pub fn wal_state_line(state: &WalState) -> String {
    match state {
        WalState::Clean => "clean".to_string(),
        WalState::TornTail {
            segment,
            offset,
            bytes,
            lsn,
        } => format!(
            "torn tail: {bytes} bytes at offset {offset} of {segment} (would-be lsn {lsn}); left in place, the node cuts it on open"
        ),
        WalState::Corrupt { corruption: c } => {
            let lsn = c.lsn.map(|l| format!(" lsn {l}")).unwrap_or_default();
            format!(
                "CORRUPT: {} in {} at offset {}{lsn}: expected {}, found {}",
                c.kind, c.segment, c.offset, c.expected, c.found
            )
        }
    }
}

/// A configuration's members, `id:voter|learner:incarnation@addr` comma-separated.
pub fn members_text(members: &[DumpMember]) -> String {
    members
        .iter()
        .map(|m| {
            let kind = if m.voter { "voter" } else { "learner" };
            format!("{}:{kind}:{:016x}@{}", m.id, m.incarnation, m.addr)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The segment table and totals of a WAL summary.
pub fn write_wal_summary(w: &mut dyn Write, wal: &WalSummary) -> io::Result<()> {
    writeln!(w, "wal directory: {}", wal.wal_dir)?;
    writeln!(
        w,
        "{:<26} {:>12} {:>12} {:>10} {:>14} {:>6} {:>6}",
        "segment", "first_lsn", "last_lsn", "records", "bytes", "gen", "epoch"
    )?;
    for s in &wal.segments {
        let last = s
            .last_lsn
            .map(|l| l.to_string())
            .unwrap_or_else(|| "-".to_string());
        writeln!(
            w,
            "{:<26} {:>12} {:>12} {:>10} {:>14} {:>6} {:>6}",
            s.name, s.first_lsn, last, s.records, s.bytes, s.generation, s.created_epoch
        )?;
    }
    match wal.first_lsn {
        Some(first) => writeln!(
            w,
            "lsn range: {first}..={} ({} records); last: {}",
            wal.last.lsn, wal.records, wal.last
        )?,
        None => writeln!(w, "lsn range: empty (base {})", wal.base)?,
    }
    for f in &wal.ignored_files {
        writeln!(w, "ignored file: {f}")?;
    }
    for f in &wal.superseded_segments {
        writeln!(w, "superseded segment (older generation): {f}")?;
    }
    writeln!(w, "state: {}", wal_state_line(&wal.state))
}

/// The halt record, one field per line.
pub fn write_halt(w: &mut dyn Write, h: &HaltRecord) -> io::Result<()> {
    writeln!(w, "HALTED")?;
    writeln!(w, "  reason:   {}", h.reason)?;
    writeln!(w, "  lsn:      {}", h.lsn)?;
    writeln!(w, "  epoch:    {}", h.epoch)?;
    writeln!(w, "  expected: {}", h.expected)?;
    writeln!(w, "  found:    {}", h.found)?;
    writeln!(w, "  peer:     {}", h.peer)?;
    writeln!(
        w,
        "  at:       {} ({} ms)",
        format_utc_ms(h.at_unix_ms),
        h.at_unix_ms
    )?;
    if !h.detail.is_empty() {
        writeln!(w, "  detail:   {}", h.detail)?;
    }
    Ok(())
}

/// The snapshot entries and the snapshot/WAL agreement.
pub fn write_snapshots(
    w: &mut dyn Write,
    snaps: &[SnapshotInfo],
    sw: &SnapshotWal,
) -> io::Result<()> {
    if snaps.is_empty() {
        writeln!(w, "snapshots: none")?;
    }
    for s in snaps {
        let what = match (&s.error, s.kind.as_str()) {
            (Some(e), _) => format!("DAMAGED: {e}"),
            (None, "installed") => format!(
                "boundary {}, {} payload bytes, verified: {}",
                s.boundary.map(|b| b.to_string()).unwrap_or_default(),
                s.payload_bytes.unwrap_or(0),
                s.verified
            ),
            (None, "temporary") => {
                "temporary (interrupted install or creation; the node discards it on open)"
                    .to_string()
            }
            (None, _) => "not a snapshot (left alone)".to_string(),
        };
        writeln!(w, "snapshot {} [{}]: {what}", s.name, s.kind)?;
    }
    writeln!(w, "snapshot/WAL: {}: {}", sw.state, sw.detail)
}
