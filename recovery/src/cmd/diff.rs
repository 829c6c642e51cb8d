//! `diff DIR_A DIR_B`: the longest common prefix of two logs and the first
//! diverging lsn. Linear, both logs scanned at once and compared record by
//! record (crc equality at lsn k implies equal prefixes up to k through the
//! prev_crc chain, so the first unequal lsn is THE divergence).

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

use walship_wal::Position;

use crate::cli::Common;
use crate::cmd::text::wal_state_line;
use crate::cmd::{progress_label, scan_options};
use crate::datadir::{check_data_dir, DataDir, ScanSource};
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{DiffReport, DiffSide, Divergence, Relation, WalState};
use crate::scan::{ScanOptions, WalScan};
use crate::{Outcome, TextReport};

/// Runs `diff`: exit 3 if either log is corrupt, 7 if they diverge (or share no
/// comparable lsn), 0 if they are identical or one is a prefix of the other.
pub fn diff(
    dir_a: &Path,
    dir_b: &Path,
    common: &Common,
    progress: bool,
) -> Result<Outcome<DiffReport>, RecoverError> {
    check_distinct_data_dirs(dir_a, dir_b)?;
    let a = DataDir::open_locked(dir_a)?;
    let b = DataDir::open_locked(dir_b)?;
    let cmp = compare_logs(
        &a,
        &b,
        scan_options(common),
        progress_label(progress, "diff"),
        ReadB::ToItsEnd,
    )?;
    let report = cmp.report();
    let exit = if report.a.state.is_corrupt() || report.b.state.is_corrupt() {
        Exit::Corruption
    } else {
        match report.relation {
            Relation::Identical | Relation::APrefixOfB | Relation::BPrefixOfA => Exit::Ok,
            Relation::Diverged | Relation::Disjoint => Exit::Diverged,
        }
    };
    Ok(Outcome::new(report, exit))
}

/// Both paths must be data directories, and not the same one (usage error).
/// Creates nothing.
pub fn check_distinct_data_dirs(dir_a: &Path, dir_b: &Path) -> Result<(), RecoverError> {
    check_data_dir(dir_a)?;
    check_data_dir(dir_b)?;
    let same = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| RecoverError::Io {
            op: "canonicalize",
            path: p.to_path_buf(),
            source,
        })
    };
    if same(dir_a)? == same(dir_b)? {
        return Err(RecoverError::BadInput {
            message: format!(
                "{} and {} are the same directory",
                dir_a.display(),
                dir_b.display()
            ),
        });
    }
    Ok(())
}

/// How far [`compare_logs`] reads side B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadB {
    /// To its end, for its own verdict (`diff`).
    ToItsEnd,
    /// Only as far as the comparison needs: up to the first lsn beyond A's
    /// last record, or up to the first divergence (`rejoin`: B is a live
    /// primary's log, whose later records do not matter). B's scan then ends
    /// `Stopped` and its `last` is the last record read, not its end.
    UntilDecided,
}

/// A log compared by record identity: a data directory scanned here ([`DataDir`],
/// [`crate::datadir::LiveDir`]), or a running primary's identities fetched over HTTP
/// ([`crate::remote::RemoteLog`]). A source yields positions `(lsn, epoch, crc)` in lsn
/// order, not payloads: the crc chain makes equal positions at an lsn mean equal prefixes.
pub trait PositionSource: Sync {
    /// How reports name the source (a directory path, or `http://ip:port`).
    fn name(&self) -> String;
    /// Reads the log, visiting every verified position in lsn order (the visitor may stop
    /// it: the scan then ends [`crate::scan::ScanEnd::Stopped`]). The returned scan's
    /// `start` is the record before the first retained one.
    fn scan_positions(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut PositionVisitor<'_>,
    ) -> Result<WalScan, RecoverError>;
}

/// What a [`PositionSource`] calls for each position.
pub type PositionVisitor<'v> = dyn FnMut(Position) -> ControlFlow<()> + 'v;

/// Every [`ScanSource`] (a data directory) is compared by the positions of its records.
fn scan_source_positions(
    src: &dyn ScanSource,
    opts: ScanOptions,
    progress_label: Option<&str>,
    visit: &mut PositionVisitor<'_>,
) -> Result<WalScan, RecoverError> {
    src.scan_log(opts, progress_label, &mut |_, _, v| visit(v.position()))
}

impl PositionSource for DataDir {
    fn name(&self) -> String {
        self.root().display().to_string()
    }
    fn scan_positions(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut PositionVisitor<'_>,
    ) -> Result<WalScan, RecoverError> {
        scan_source_positions(self, opts, progress_label, visit)
    }
}

impl PositionSource for crate::datadir::LiveDir {
    fn name(&self) -> String {
        ScanSource::root(self).display().to_string()
    }
    fn scan_positions(
        &self,
        opts: ScanOptions,
        progress_label: Option<&str>,
        visit: &mut PositionVisitor<'_>,
    ) -> Result<WalScan, RecoverError> {
        scan_source_positions(self, opts, progress_label, visit)
    }
}

/// Two logs compared record by record (A's positions matched with B's at the same lsn).
#[derive(Debug)]
pub struct Comparison {
    /// Side A's name (its directory).
    pub name_a: String,
    /// Side B's name (its directory, or the primary's address).
    pub name_b: String,
    /// A's scan (always to its end).
    pub a: WalScan,
    /// B's scan (to its end, or stopped early with [`ReadB::UntilDecided`]).
    pub b: WalScan,
    /// How the logs relate.
    pub relation: Relation,
    /// The last lsn both hold identically, if any.
    pub common_prefix: Option<Position>,
    /// The first lsn at which they differ, if any.
    pub divergence: Option<Divergence>,
}

impl Comparison {
    /// The comparison as `diff` reports it.
    pub fn report(&self) -> DiffReport {
        let side = |d: &str, s: &WalScan| DiffSide {
            dir: d.to_string(),
            base: s.start,
            last: s.last,
            state: WalState::from_end(&s.end),
        };
        DiffReport {
            a: side(&self.name_a, &self.a),
            b: side(&self.name_b, &self.b),
            relation: self.relation,
            common_prefix: self.common_prefix.unwrap_or(Position::ZERO),
            first_divergence: self.divergence.clone(),
        }
    }
}

/// Compares the logs of `a` and `b` (spec/recovery-tool.md §5). Both are
/// scanned at once, A on a helper thread streaming its positions through a
/// bounded channel, B here comparing in lsn order: memory stays bounded
/// whatever the log sizes. A is always scanned to its end; B as `read_b` says.
pub fn compare_logs(
    a: &dyn PositionSource,
    b: &dyn PositionSource,
    opts: ScanOptions,
    progress_label: Option<&str>,
    read_b: ReadB,
) -> Result<Comparison, RecoverError> {
    // Each log's base (the record before its first retained one, from its
    // first segment header) is the lowest lsn it can compare: a scan stopped
    // at the first record yields it cheaply.
    let base = |d: &dyn PositionSource| {
        d.scan_positions(opts, None, &mut |_| ControlFlow::Break(()))
            .map(|s| s.start)
    };
    let a_base = base(a)?;
    let b_base = base(b)?;

    let mut merge = Merge {
        common_prefix: None,
        divergence: None,
    };
    let (scan_a, scan_b) = std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Position>(DIFF_CHANNEL_POSITIONS);
        let helper = sc.spawn(move || {
            a.scan_positions(opts, None, &mut |p| {
                // After B is done the receiver is gone; A's scan still runs to its end for its own verdict.
                let _ = tx.send(p);
                ControlFlow::Continue(())
            })
        });
        // The iterator owns the receiver: dropping it below is what lets A's
        // scan run on when B ended first (`send` then fails at once instead
        // of blocking on a full channel while this thread waits in `join`).
        let mut a_positions = std::iter::once(a_base).chain(rx).peekable();
        let decided = merge.step(&mut a_positions, b_base);
        let scan_b = if decided && read_b == ReadB::UntilDecided {
            // Nothing of B beyond its base can matter: stop at its first record.
            b.scan_positions(opts, None, &mut |_| ControlFlow::Break(()))
        } else {
            b.scan_positions(opts, progress_label, &mut |p| {
                let decided = merge.step(&mut a_positions, p);
                if decided && read_b == ReadB::UntilDecided {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        };
        drop(a_positions); // drops `rx`: A's pending and later sends fail instead of blocking
        let scan_a = helper.join().map_err(|_| RecoverError::Internal {
            message: format!("the scan thread of {} panicked", a.name()),
        });
        (scan_a, scan_b)
    });
    let scan_a = scan_a??;
    let scan_b = scan_b?;
    let Merge {
        common_prefix,
        divergence,
    } = merge;
    let a_last = scan_a.last;
    let b_last = scan_b.last;
    let relation = match (&divergence, common_prefix) {
        (Some(_), _) => Relation::Diverged,
        (None, None) => Relation::Disjoint,
        (None, Some(c)) => {
            if c.lsn == a_last.lsn && c.lsn == b_last.lsn {
                Relation::Identical
            } else if c.lsn == a_last.lsn {
                Relation::APrefixOfB
            } else if c.lsn == b_last.lsn {
                Relation::BPrefixOfA
            } else {
                // Both go on past the last compared lsn but one stopped being scanned
                // (corruption): they agree as far as both verified.
                Relation::Disjoint
            }
        }
    };
    Ok(Comparison {
        name_a: a.name(),
        name_b: b.name(),
        a: scan_a,
        b: scan_b,
        relation,
        common_prefix,
        divergence,
    })
}

/// Bound on A's positions in flight between the two scans.
const DIFF_CHANNEL_POSITIONS: usize = 4096;

/// The comparison state: B's positions arrive in lsn order and are matched
/// with A's (also in lsn order) at the same lsn.
struct Merge {
    common_prefix: Option<Position>,
    divergence: Option<Divergence>,
}

impl Merge {
    /// Compares B's position `pb` with A's at the same lsn. Returns whether the
    /// comparison is decided: the logs diverged, or A has no position at or
    /// after `pb.lsn` (its scan ended), so no later position of B can matter.
    fn step(
        &mut self,
        a: &mut std::iter::Peekable<impl Iterator<Item = Position>>,
        pb: Position,
    ) -> bool {
        if self.divergence.is_some() {
            return true;
        }
        while a.next_if(|pa| pa.lsn < pb.lsn).is_some() {}
        match a.peek() {
            Some(pa) if pa.lsn == pb.lsn => {
                if *pa == pb {
                    self.common_prefix = Some(pb);
                    false
                } else {
                    self.divergence = Some(Divergence {
                        lsn: pb.lsn,
                        a: Some(*pa),
                        b: Some(pb),
                    });
                    true
                }
            }
            Some(_) => false,
            None => true,
        }
    }
}

impl TextReport for DiffReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        for (name, s) in [("A", &self.a), ("B", &self.b)] {
            writeln!(
                w,
                "{name}: {} last {} ({})",
                s.dir,
                s.last,
                wal_state_line(&s.state)
            )?;
        }
        let rel = match self.relation {
            Relation::Identical => "identical",
            Relation::APrefixOfB => "A is a prefix of B",
            Relation::BPrefixOfA => "B is a prefix of A",
            Relation::Diverged => "DIVERGED",
            Relation::Disjoint => "no comparable lsn (disjoint or unverifiable)",
        };
        writeln!(w, "relation: {rel}")?;
        writeln!(w, "common prefix up to: {}", self.common_prefix)?;
        if let Some(d) = &self.first_divergence {
            let side = |p: &Option<Position>| match p {
                Some(p) => format!("epoch {} crc {:#010x}", p.epoch, p.crc),
                None => "absent".to_string(),
            };
            writeln!(
                w,
                "first diverging lsn: {}  A: {}  B: {}",
                d.lsn,
                side(&d.a),
                side(&d.b)
            )?;
        }
        Ok(())
    }
}
