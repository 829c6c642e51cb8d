//! `diff DIR_A DIR_B`: the longest common prefix of two logs and the first
//! diverging lsn. Linear: A's positions are collected, then B is scanned and
//! compared record by record (crc equality at lsn k implies equal prefixes up
//! to k through the prev_crc chain, so the first unequal lsn is THE divergence).

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

use walship_wal::{Lsn, Position};

use crate::cli::Common;
use crate::cmd::text::wal_state_line;
use crate::cmd::{progress_label, scan_options};
use crate::datadir::{check_data_dir, DataDir};
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{DiffReport, DiffSide, Divergence, Relation, WalState};
use crate::{Outcome, TextReport};

/// Runs `diff`: exit 3 if either log is corrupt, 7 if they diverge (or share no
/// comparable lsn), 0 if they are identical or one is a prefix of the other.
pub fn diff(
    dir_a: &Path,
    dir_b: &Path,
    common: &Common,
    progress: bool,
) -> Result<Outcome<DiffReport>, RecoverError> {
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
    let a = DataDir::open_locked(dir_a)?;
    let b = DataDir::open_locked(dir_b)?;
    let opts = scan_options(common);

    // A: every known position, from its base (the record before the first retained one) on.
    let mut a_pos: Vec<Position> = Vec::new();
    let scan_a = a.scan(opts, progress_label(progress, "diff A"), &mut |_, _, v| {
        a_pos.push(v.position());
        ControlFlow::Continue(())
    })?;
    a_pos.insert(0, scan_a.start);
    let a_at = |lsn: Lsn| -> Option<Position> {
        let i = lsn.checked_sub(scan_a.start.lsn)?;
        a_pos.get(usize::try_from(i).ok()?).copied()
    };

    // B: compare every record with A's position at the same lsn.
    let mut common_prefix: Option<Position> = None;
    let mut divergence: Option<Divergence> = None;
    // B is scanned to its end even after the divergence: its own verdict and last record are reported too.
    let scan_b = b.scan(opts, progress_label(progress, "diff B"), &mut |_, _, v| {
        if divergence.is_none() {
            compare(
                a_at(v.lsn()),
                v.position(),
                &mut common_prefix,
                &mut divergence,
            );
        }
        ControlFlow::Continue(())
    })?;
    // B's base (the record before its first retained one, from its segment
    // header) is known too: it is the lowest lsn B can compare, so it only
    // matters when no record of B found an equal position.
    if common_prefix.is_none() {
        let base = scan_b.start;
        match a_at(base.lsn) {
            Some(pa) if pa == base => common_prefix = Some(base),
            Some(_) if divergence.is_none() => {
                compare(a_at(base.lsn), base, &mut common_prefix, &mut divergence);
            }
            _ => {}
        }
    }
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
    let side = |d: &Path, s: &crate::scan::WalScan| DiffSide {
        dir: d.display().to_string(),
        base: s.start,
        last: s.last,
        state: WalState::from_end(&s.end),
    };
    let report = DiffReport {
        a: side(dir_a, &scan_a),
        b: side(dir_b, &scan_b),
        relation,
        common_prefix: common_prefix.unwrap_or(Position::ZERO),
        first_divergence: divergence,
    };
    let exit = if report.a.state.is_corrupt() || report.b.state.is_corrupt() {
        Exit::Corruption
    } else {
        match relation {
            Relation::Identical | Relation::APrefixOfB | Relation::BPrefixOfA => Exit::Ok,
            Relation::Diverged | Relation::Disjoint => Exit::Diverged,
        }
    };
    Ok(Outcome::new(report, exit))
}

/// Compares B's record `pb` with A's position at the same lsn (`None`: A does not hold it).
fn compare(
    pa: Option<Position>,
    pb: Position,
    common_prefix: &mut Option<Position>,
    divergence: &mut Option<Divergence>,
) {
    match pa {
        None => {}
        Some(pa) if pa == pb => *common_prefix = Some(pb),
        Some(pa) => {
            *divergence = Some(Divergence {
                lsn: pb.lsn,
                a: Some(pa),
                b: Some(pb),
            })
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
