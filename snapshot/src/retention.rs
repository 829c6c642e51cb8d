//! Retention on the primary, as pure functions: how far the WAL may be
//! truncated from the front, which lagging replicas are switched to a
//! snapshot instead of holding the log forever, and when a snapshot is due.
//!
//! Rules (DESIGN.md "Record and log", issue 4):
//! * records after the newest snapshot's boundary are always kept — a
//!   snapshot plus the WAL after it is the whole history;
//! * a non-halted replica with durable lsn `d` needs records from `d + 1`;
//!   they are kept unless keeping them exceeds `max_retained_bytes` (or they
//!   are gone already), in which case that replica is switched to the
//!   snapshot (only possible when one covers `d`, i.e. `d < boundary.lsn`);
//! * halted replicas hold nothing back: they need an operator resync anyway.

use walship_wal::{Lsn, Position, SegmentInfo};

/// The lsn range and size of one WAL segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    /// First lsn the segment can hold.
    pub first_lsn: Lsn,
    /// Last lsn it holds (`first_lsn - 1` when empty).
    pub last_lsn: Lsn,
    /// Bytes it occupies.
    pub len_bytes: u64,
}

impl From<&SegmentInfo> for SegmentSpan {
    fn from(s: &SegmentInfo) -> Self {
        SegmentSpan {
            first_lsn: s.first_lsn,
            last_lsn: s.last.lsn,
            len_bytes: s.len_bytes,
        }
    }
}

/// What retention needs to know about one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaNeed {
    /// The replica's node id.
    pub id: String,
    /// The replica's durable lsn (from its last receipt or hello).
    pub durable_lsn: Lsn,
    /// Whether the replica is halted (holds nothing back).
    pub halted: bool,
}

/// The decision of [`plan_retention`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Argument for `Wal::truncate_front`: records below it may go (the WAL
    /// removes whole segments only, so it may keep some of them).
    pub truncate_before: Lsn,
    /// Replicas that must get the newest snapshot instead of the log.
    pub switch_to_snapshot: Vec<String>,
    /// Bytes of WAL segments kept after truncating at `truncate_before`.
    pub retained_bytes: u64,
    /// A replica is over the cap and no snapshot covers it yet: create one.
    pub snapshot_needed: bool,
}

/// Bytes of the segments that hold `lsn` or anything after it (what stays
/// after `truncate_front(lsn)`).
pub fn retained_bytes_from(segments: &[SegmentSpan], lsn: Lsn) -> u64 {
    segments
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            // The last segment always stays (it is the active one).
            s.last_lsn >= lsn || *i + 1 == segments.len()
        })
        .map(|(_, s)| s.len_bytes)
        .sum()
}

/// Computes the truncation point and the replicas to switch to a snapshot.
/// `segments` are in lsn order (as `Wal::segments` returns them).
pub fn plan_retention(
    segments: &[SegmentSpan],
    newest_snapshot: Option<Position>,
    replicas: &[ReplicaNeed],
    max_retained_bytes: u64,
) -> RetentionPlan {
    debug_assert!(
        segments
            .windows(2)
            .all(|w| w[0].first_lsn <= w[1].first_lsn),
        "segments must be in lsn order"
    );
    let first_lsn = segments.first().map_or(1, |s| s.first_lsn);
    // Without a snapshot nothing may be truncated: the log is the whole history.
    let floor = newest_snapshot
        .map_or(first_lsn, |b| b.lsn + 1)
        .max(first_lsn);
    let mut truncate_before = floor;
    let mut switch_to_snapshot = Vec::new();
    let mut snapshot_needed = false;
    for r in replicas.iter().filter(|r| !r.halted) {
        let need = r.durable_lsn + 1;
        if need >= floor {
            continue; // kept anyway
        }
        let covered = newest_snapshot.is_some_and(|b| r.durable_lsn < b.lsn);
        let gone = need < first_lsn;
        let too_big = retained_bytes_from(segments, need) > max_retained_bytes;
        if covered && (gone || too_big) {
            switch_to_snapshot.push(r.id.clone());
            continue;
        }
        if gone || too_big {
            snapshot_needed = true;
        }
        truncate_before = truncate_before.min(need.max(first_lsn));
    }
    RetentionPlan {
        truncate_before,
        retained_bytes: retained_bytes_from(segments, truncate_before),
        switch_to_snapshot,
        snapshot_needed,
    }
}

/// How the primary brings a replica whose last lsn is `replica_last_lsn` up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The WAL still holds what the replica needs next (its last record, or
    /// the base position just before the first retained record): prove the
    /// prefix and stream.
    Stream,
    /// The WAL no longer holds it: ship this snapshot first; the replica then
    /// reconnects from its boundary, which the WAL holds.
    Snapshot(Position),
    /// Neither the WAL nor a snapshot can serve the replica: a snapshot must
    /// be created first (this cannot happen if truncation followed
    /// [`plan_retention`], which never cuts past the newest snapshot).
    NoSnapshot,
}

/// Decides [`CatchUp`] from the replica's last lsn (its `Hello.last.lsn`),
/// the WAL's first retained lsn and the newest snapshot. Use it rather than
/// `Wal::position_at(replica_last_lsn) == None`: `position_at(0)` answers
/// the base position, so an empty replica would look "retained".
pub fn catch_up_plan(
    replica_last_lsn: Lsn,
    wal_first_lsn: Lsn,
    newest_snapshot: Option<Position>,
) -> CatchUp {
    if replica_last_lsn.saturating_add(1) >= wal_first_lsn {
        return CatchUp::Stream;
    }
    match newest_snapshot {
        Some(b) if b.lsn.saturating_add(1) >= wal_first_lsn => CatchUp::Snapshot(b),
        _ => CatchUp::NoSnapshot,
    }
}

/// When the primary creates a snapshot by policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Every this many records since the last snapshot (`None`: never by count).
    pub every_records: Option<u64>,
    /// Every this many WAL bytes since the last snapshot (`None`: never by size).
    pub every_bytes: Option<u64>,
}

/// Whether a snapshot is due: `last_snapshot_lsn` is the newest snapshot's
/// boundary lsn (0 if none), `applied_lsn` the embedder's applied lsn,
/// `bytes_since` the WAL bytes written after the last snapshot.
pub fn snapshot_due(
    policy: &SnapshotPolicy,
    last_snapshot_lsn: Lsn,
    applied_lsn: Lsn,
    bytes_since: u64,
) -> bool {
    let records = applied_lsn.saturating_sub(last_snapshot_lsn);
    if records == 0 {
        return false;
    }
    policy.every_records.is_some_and(|n| records >= n)
        || policy.every_bytes.is_some_and(|n| bytes_since >= n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<SegmentSpan> {
        // 4 segments of 100 records, 1000 bytes each: lsns 1..=400.
        (0..4)
            .map(|i| SegmentSpan {
                first_lsn: i * 100 + 1,
                last_lsn: i * 100 + 100,
                len_bytes: 1000,
            })
            .collect()
    }

    fn snap(lsn: Lsn) -> Option<Position> {
        Some(Position {
            lsn,
            epoch: 1,
            crc: 7,
        })
    }

    fn r(id: &str, d: Lsn, halted: bool) -> ReplicaNeed {
        ReplicaNeed {
            id: id.into(),
            durable_lsn: d,
            halted,
        }
    }

    #[test]
    fn no_snapshot_truncates_nothing() {
        let p = plan_retention(&segs(), None, &[r("a", 400, false)], u64::MAX);
        assert_eq!(p.truncate_before, 1);
        assert!(p.switch_to_snapshot.is_empty());
        assert_eq!(p.retained_bytes, 4000);
    }

    #[test]
    fn truncates_behind_snapshot_and_every_replica() {
        let p = plan_retention(
            &segs(),
            snap(350),
            &[r("a", 400, false), r("b", 150, false)],
            u64::MAX,
        );
        assert_eq!(p.truncate_before, 151);
        assert_eq!(p.retained_bytes, 3000);
        assert!(p.switch_to_snapshot.is_empty());
    }

    #[test]
    fn lagging_replica_over_cap_is_switched_to_snapshot() {
        let p = plan_retention(
            &segs(),
            snap(350),
            &[r("a", 400, false), r("b", 50, false)],
            2500,
        );
        assert_eq!(p.switch_to_snapshot, vec!["b".to_string()]);
        assert_eq!(p.truncate_before, 351);
        assert_eq!(p.retained_bytes, 1000);
        assert!(!p.snapshot_needed);
    }

    #[test]
    fn halted_replica_holds_nothing_back() {
        let p = plan_retention(&segs(), snap(350), &[r("h", 10, true)], 0);
        assert_eq!(p.truncate_before, 351);
        assert!(p.switch_to_snapshot.is_empty());
    }

    #[test]
    fn replica_behind_truncated_log_without_covering_snapshot_asks_for_one() {
        let mut s = segs();
        s.remove(0);
        let p = plan_retention(&s, None, &[r("b", 20, false)], u64::MAX);
        assert!(p.snapshot_needed);
        assert_eq!(p.truncate_before, 101);
    }

    #[test]
    fn replica_ahead_of_snapshot_never_switched() {
        let p = plan_retention(&segs(), snap(100), &[r("a", 120, false)], 0);
        assert!(p.switch_to_snapshot.is_empty());
        assert_eq!(p.truncate_before, 101);
    }

    #[test]
    fn catch_up_streams_when_retained_ships_snapshot_when_not() {
        let b = snap(350);
        // WAL first retained lsn 301: base position is 300.
        assert_eq!(catch_up_plan(300, 301, b), CatchUp::Stream);
        assert_eq!(catch_up_plan(320, 301, b), CatchUp::Stream);
        assert_eq!(
            catch_up_plan(299, 301, b),
            CatchUp::Snapshot(b.expect("snapshot"))
        );
        // An empty replica against a truncated log.
        assert_eq!(
            catch_up_plan(0, 301, b),
            CatchUp::Snapshot(b.expect("snapshot"))
        );
        // An untruncated log serves an empty replica.
        assert_eq!(catch_up_plan(0, 1, None), CatchUp::Stream);
        assert_eq!(catch_up_plan(0, 301, None), CatchUp::NoSnapshot);
        // A snapshot older than the truncation point cannot serve.
        assert_eq!(catch_up_plan(0, 301, snap(100)), CatchUp::NoSnapshot);
    }

    #[test]
    fn snapshot_due_by_records_or_bytes() {
        let pol = SnapshotPolicy {
            every_records: Some(100),
            every_bytes: Some(1 << 20),
        };
        assert!(!snapshot_due(&pol, 50, 149, 10));
        assert!(snapshot_due(&pol, 50, 150, 10));
        assert!(snapshot_due(&pol, 50, 51, 1 << 20));
        assert!(!snapshot_due(&pol, 50, 50, 1 << 30));
        assert!(!snapshot_due(&SnapshotPolicy::default(), 0, 1000, 1 << 30));
    }

    proptest::proptest! {
        #[test]
        fn plan_never_cuts_what_a_kept_replica_or_the_snapshot_needs(
            nseg in 1u64..8,
            per_seg in 1u64..50,
            first_seg in 0u64..3,
            snap_at in proptest::option::of(0u64..400),
            ds in proptest::collection::vec((0u64..400, proptest::bool::ANY), 0..6),
            cap in 0u64..10_000,
        ) {
            let segments: Vec<SegmentSpan> = (first_seg..first_seg + nseg)
                .map(|i| SegmentSpan { first_lsn: i * per_seg + 1, last_lsn: (i + 1) * per_seg, len_bytes: per_seg * 10 })
                .collect();
            let first = segments[0].first_lsn;
            let last = segments[segments.len() - 1].last_lsn;
            let snapshot = snap_at
                .map(|l| l.clamp(first - 1, last))
                .map(|lsn| Position { lsn, epoch: 1, crc: 0 });
            let replicas: Vec<ReplicaNeed> = ds
                .iter()
                .enumerate()
                .map(|(i, (d, h))| ReplicaNeed { id: format!("r{i}"), durable_lsn: (*d).min(last), halted: *h })
                .collect();
            let p = plan_retention(&segments, snapshot, &replicas, cap);
            let floor = snapshot.map_or(first, |b| b.lsn + 1).max(first);
            proptest::prop_assert!(p.truncate_before >= first);
            proptest::prop_assert!(p.truncate_before <= floor, "never past the snapshot");
            for r in &replicas {
                let switched = p.switch_to_snapshot.contains(&r.id);
                if r.halted {
                    proptest::prop_assert!(!switched);
                    continue;
                }
                if switched {
                    let b = snapshot.expect("switch needs a snapshot");
                    proptest::prop_assert!(r.durable_lsn < b.lsn);
                    let need = r.durable_lsn + 1;
                    proptest::prop_assert!(need < first || retained_bytes_from(&segments, need) > cap);
                } else {
                    proptest::prop_assert!(
                        p.truncate_before <= (r.durable_lsn + 1).max(first),
                        "replica {} needs {} but truncation is at {}", r.id, r.durable_lsn + 1, p.truncate_before
                    );
                }
            }
        }
    }
}
