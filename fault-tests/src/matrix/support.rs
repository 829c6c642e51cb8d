//! Helpers shared by the failure-matrix scenarios: cluster set-up, convergence, disk seeding.

use std::path::PathBuf;

use walship_wal::sim::SimStorage;
use walship_wal::state::{write_state_file, EpochEntry, EpochHistory};
use walship_wal::{Lsn, Position, Storage, Wal, WalOptions};

use crate::check::{check_all, standard_checkers};
use crate::net::NodeId;
use crate::world::{node_name, World, WorldConfig, NODE_ROOT};

pub(super) fn cfg(replicas: usize, quorum: i64) -> WorldConfig {
    WorldConfig {
        replicas,
        quorum,
        ..WorldConfig::default()
    }
}

pub(super) fn payloads(tag: &str, n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = format!("{tag}-{i}-").into_bytes();
            v.resize(v.len() + len, (i % 251) as u8);
            v
        })
        .collect()
}

/// A started cluster that has committed and applied `n` records everywhere.
pub(super) fn converged_cluster(c: WorldConfig, seed: u64, n: usize) -> Result<World, String> {
    let mut w = World::new(c, seed)?;
    w.start_all();
    w.client_append(&payloads("base", n, 40));
    if !w.run_until_converged(30_000) {
        return Err(format!("setup did not converge: {}", w.trace.render_tail()));
    }
    checked(&w)?;
    Ok(w)
}

pub(super) fn converge(w: &mut World) -> Result<(), String> {
    if w.run_until_converged(60_000) {
        Ok(())
    } else {
        Err(format!(
            "did not converge; last events:\n{}",
            w.trace.render_tail()
        ))
    }
}

/// Runs the standard checkers once (fresh: they judge the whole state).
pub(super) fn checked(w: &World) -> Result<(), String> {
    let mut c = standard_checkers();
    check_all(&mut c, w).map_err(|v| v.to_string())
}

pub(super) fn last_of(w: &World, n: NodeId) -> Position {
    w.replica_last(n).unwrap_or_default()
}

pub(super) fn durable_of(w: &World, n: NodeId) -> Lsn {
    w.replica(n)
        .up
        .as_ref()
        .and_then(|u| u.wal())
        .map_or(0, |w| w.durable_lsn())
}

pub(super) fn primary_last(w: &World) -> Lsn {
    w.primary.up.as_ref().map_or(0, |p| p.wal.last().lsn)
}

pub(super) fn no_halts(w: &World) -> Result<(), String> {
    for r in &w.replicas {
        if let Some(h) = &r.halted {
            return Err(format!(
                "{} halted ({}): {}",
                node_name(r.id),
                h.record.reason.as_str(),
                h.record.detail
            ));
        }
    }
    Ok(())
}

/// Steps 1 ms at a time until `cond` holds (or `max_ms` passes).
pub(super) fn run_until_cond(
    w: &mut World,
    max_ms: u64,
    mut cond: impl FnMut(&World) -> bool,
) -> bool {
    let end = w.now() + max_ms;
    while w.now() < end {
        if cond(w) {
            return true;
        }
        let t = w.now() + 1;
        w.run_until(t);
    }
    cond(w)
}

/// Seeds a node's disk with a WAL of `payloads` at `epoch` (all synced).
pub(super) fn seed_wal(
    s: &SimStorage,
    epoch: u64,
    tail_epoch: Option<(u64, usize)>,
    pl: &[Vec<u8>],
) -> Result<Position, String> {
    let dir = PathBuf::from(NODE_ROOT).join("wal");
    let opts = WalOptions {
        segment_size_bytes: WorldConfig::default().segment_size_bytes,
        max_record_bytes: WorldConfig::default().max_record_bytes,
        epoch,
    };
    let (mut wal, _) = Wal::open(s.clone(), &dir, opts).map_err(|e| e.to_string())?;
    for (i, p) in pl.iter().enumerate() {
        if let Some((e, from)) = tail_epoch {
            if i == from {
                wal.set_epoch(e);
            }
        }
        wal.append(p).map_err(|e| e.to_string())?;
    }
    wal.sync().map_err(|e| e.to_string())?;
    Ok(wal.last())
}

pub(super) fn seed_epochs(s: &SimStorage, entries: Vec<EpochEntry>) -> Result<(), String> {
    let body = serde_json::to_vec(&EpochHistory { entries }).map_err(|e| e.to_string())?;
    write_state_file(s, &PathBuf::from(NODE_ROOT).join("state"), "epochs", &body)
        .map_err(|e| e.to_string())
}

pub(super) fn first_segment(s: &SimStorage) -> Result<PathBuf, String> {
    let dir = PathBuf::from(NODE_ROOT).join("wal");
    let names = s.list(&dir).map_err(|e| e.to_string())?;
    names
        .iter()
        .find(|n| n.ends_with(".wal"))
        .map(|n| dir.join(n))
        .ok_or_else(|| "no segment file".to_string())
}

// ---------------------------------------------------------------- section 3
