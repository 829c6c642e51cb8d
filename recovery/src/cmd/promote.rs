//! `promote DIR --accept-data-loss [--voters ID,...] [--config NODE_TOML]`: forced
//! recovery, offline, of a cluster that lost its other voters, on its one surviving
//! data directory (spec/recovery-tool.md §12, spec/membership.md §3 "Forced
//! configurations").
//!
//! It reads what the node would read at open (identity, vote, commit watermark,
//! acknowledged mark, epoch history, the log and the newest configuration record in
//! it), prints what may be lost, and — only with `--accept-data-loss` — makes the node
//! the primary of a new epoch `E` with a forced configuration, exactly as an elected
//! primary would start its epoch (node/src/primary/exec.rs `start_epoch`): the epoch
//! history first, then `EpochStart{E, self}` and the forced `Configuration` through
//! `Wal::append_control`, one sync. The vote in `E` for itself is persisted before the
//! records of `E` are written (a node never writes in an epoch it could forget). Every
//! state file is written with the node's own writers (write, fsync, rename, fsync dir).

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use walship::config::{NodeConfig, RoleConfig};
use walship_node::cluster::identity::{load_or_create, Identity, IdentityError, IDENTITY_FILE};
use walship_node::election::{PersistedVote, VoteFile, VoteFileError};
use walship_node::membership::{classify_change, Change};
use walship_wal::control::{ConfigMember, Configuration, ControlRecord};
use walship_wal::state::{read_acked_lsn, read_state_json, write_acked_lsn, NodeDir};
use walship_wal::{FsStorage, Lsn, OpenOptions, Position, Wal, WalOptions};

use crate::audit::{append_audit, AuditEntry};
use crate::cmd::progress_label;
use crate::cmd::text::{members_text, wal_state_line};
use crate::cmd::verify::verify_data_dir;
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{ConfigView, DumpMember, PromoteLoss, PromoteReport, VoteView, WalState};
use crate::scan::ScanOptions;
use crate::snapshots::{boundaries, check_snapshots, Depth};
use crate::{Env, Outcome, TextReport};
use walship_snapshot::BoundaryMembership;

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct PromoteRequest {
    /// Write the forced configuration (without it: print what may be lost, change nothing).
    pub accept_data_loss: bool,
    /// `--voters`: the new configuration's voters (empty: this node alone).
    pub voters: Vec<String>,
    /// `--config`: the node's node.toml.
    pub config: Option<PathBuf>,
    /// The node's record size bound.
    pub max_record_bytes: u32,
}

/// The newest configuration record found in the log.
struct Newest {
    lsn: Lsn,
    epoch: u64,
    config: Configuration,
}

/// Runs `promote`: exit 0 when promoted (and the final verify is clean), 6 when refused
/// or without `--accept-data-loss` (nothing changed), 3 when the log or a state file is
/// corrupt (nothing changed) or the final verify fails, 2 for bad input (`--voters`, a
/// missing `--config`), 5 when the node is running.
pub fn promote(
    dir: &Path,
    req: &PromoteRequest,
    env: &mut Env<'_>,
) -> Result<Outcome<PromoteReport>, RecoverError> {
    let node_toml = req.config.as_deref().map(load_node_toml).transpose()?;
    let d = DataDir::open_locked(dir)?;
    let state_dir = d.state_dir();
    let opts = ScanOptions {
        max_record_bytes: req.max_record_bytes,
    };

    // What the node would read at open, read-only.
    let mut newest: Option<Newest> = None;
    let scan = d.scan(
        opts,
        progress_label(env.progress, "promote: scan"),
        &mut |_, _, v| {
            // The scan verified every control body it visits; only configurations matter.
            if v.is_control() {
                if let Ok(ControlRecord::Configuration { epoch, config }) =
                    ControlRecord::decode(v.payload())
                {
                    newest = Some(Newest {
                        lsn: v.lsn(),
                        epoch,
                        config,
                    });
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(c) = scan.corruption() {
        return Err(RecoverError::WalCorrupt(c.clone()));
    }
    let last = scan.last;
    if let Some(h) = d.halt()? {
        return Err(RecoverError::Refused {
            reason: format!(
                "{} is halted ({} at lsn {}): a halted node neither votes nor leads; find the cause (status, verify) and clear-halt first",
                dir.display(),
                h.reason,
                h.lsn
            ),
        });
    }
    let identity = read_identity(&d, node_toml.as_ref())?;
    let node_id = match (&identity, &node_toml) {
        (Some(i), _) => i.node_id.clone(),
        (None, Some(c)) => c.node_id.clone(),
        (None, None) => {
            return Err(RecoverError::BadInput {
                message: format!(
                    "{} has no state/identity (a directory no member opened since identities exist): pass --config NODE_TOML to name its cluster and node",
                    dir.display()
                ),
            })
        }
    };
    let mut vote_file = VoteFile::new(FsStorage, &state_dir);
    let vote = vote_file.load().map_err(vote_error)?;
    let commit_lsn = d.commit_lsn()?;
    let acked_lsn = read_acked_lsn(d.storage(), &state_dir)?;
    let history = d.epoch_history()?.unwrap_or_default();
    if history.is_empty() && last.lsn > 0 {
        return Err(RecoverError::Refused {
            reason: format!(
                "{} holds records up to lsn {} but no epoch history (state/epochs): the node could not start a primary on it",
                dir.display(),
                last.lsn
            ),
        });
    }
    let snapshot_lsn = boundaries(&check_snapshots(
        d.storage(),
        &d.snapshot_dir(),
        Depth::Header,
    )?)
    .pop()
    .map_or(0, |b| b.lsn);
    if snapshot_lsn > last.lsn {
        // The node would complete the interrupted install on open (reset to the boundary),
        // discarding whatever promote appended below it.
        return Err(RecoverError::Refused {
            reason: format!(
                "the newest installed snapshot's boundary (lsn {snapshot_lsn}) is above the log's end (lsn {}): start the node once so that it completes the install, stop it, then promote",
                last.lsn
            ),
        });
    }

    if newest.is_none() && scan.start.lsn > 0 {
        // The records before the first retained one (front truncation, a snapshot's
        // boundary) may hold a configuration: the newest snapshot records which
        // (spec/snapshot-format.md §1.5). Without that record, the base of node.toml could
        // be a generation that the cluster left long ago.
        let at_snapshot = walship_snapshot::read_newest_membership(
            d.storage(),
            &d.snapshot_dir(),
            &walship_snapshot::Limits::default(),
        )
        .map_err(|e| RecoverError::Refused {
            reason: format!("the newest snapshot's configuration cannot be read: {e}"),
        })?;
        match at_snapshot {
            Some((b, BoundaryMembership::Record { lsn, config })) if b.lsn >= scan.start.lsn => {
                newest = Some(Newest {
                    lsn,
                    epoch: history.epoch_at(lsn).unwrap_or(0),
                    config,
                });
            }
            Some((b, BoundaryMembership::Static)) if b.lsn >= scan.start.lsn => {}
            _ => {
                return Err(RecoverError::Refused {
                    reason: format!(
                        "no configuration record in the retained log, which starts after lsn {}, and no snapshot records the configuration before it: the newest generation is unknown",
                        scan.start.lsn
                    ),
                });
            }
        }
    }

    // The configuration it replaces and the forced one.
    let (old, old_at) = match newest {
        Some(n) => (n.config, Some((n.lsn, n.epoch))),
        None => match &node_toml {
            Some(c) => (base_configuration(c)?, None),
            None => {
                return Err(RecoverError::BadInput {
                    message: format!(
                        "the log of {} holds no configuration record: pass --config NODE_TOML (its [[member]] list is the base configuration)",
                        dir.display()
                    ),
                })
            }
        },
    };
    if old.member(&node_id).is_none() {
        return Err(RecoverError::Refused {
            reason: format!(
                "{node_id} is not a member of configuration generation {}: it cannot be promoted",
                old.generation
            ),
        });
    }
    let voters = choose_voters(&old, &node_id, &req.voters)?;
    let mut new = forced_configuration(&old, &voters, &node_id, identity.as_ref());
    let epoch = [vote.epoch, last.epoch, history.last_epoch()]
        .into_iter()
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| RecoverError::Refused {
            reason: "epoch u64::MAX reached: no new epoch exists".to_string(),
        })?;
    // What the WAL would refuse is refused before anything is written (an incarnation
    // still to be created is checked as 1: any non-zero value encodes alike).
    let mut check = new.clone();
    set_incarnation(
        &mut check,
        &node_id,
        incarnation_or_placeholder(&new, &node_id),
    );
    ControlRecord::Configuration {
        epoch,
        config: check,
    }
    .encode()
    .map_err(|e| RecoverError::BadInput {
        message: format!("the forced configuration cannot be written: {e}"),
    })?;
    let change = classify_change(&old, &new).map_err(|e| RecoverError::Internal {
        message: format!("the forced configuration breaks the membership rules: {e}"),
    })?;
    assert!(
        matches!(change, Change::Forced { .. }),
        "a forced configuration classifies as Change::Forced, got {change:?}"
    );

    let loss = loss_facts(last, commit_lsn, acked_lsn, &old, &new);
    let may_lose = loss_lines(&loss, epoch);
    let mut report = PromoteReport {
        dir: dir.display().to_string(),
        node_id: node_id.clone(),
        incarnation: identity.as_ref().map(|i| i.incarnation),
        before: last,
        wal_state: WalState::from_end(&scan.end),
        vote: VoteView {
            epoch: vote.epoch,
            voted_for: vote.voted_for.clone(),
        },
        old_configuration: view(&old, old_at),
        new_configuration: view(&new, None),
        epoch,
        loss,
        may_lose,
        performed: false,
        refused: None,
        epoch_start: None,
        after: None,
        commit_lsn_after: commit_lsn,
        acked_lsn_after: None,
        verify: None,
        audit_log: None,
    };
    if !req.accept_data_loss {
        let reason = format!(
            "promoting {node_id} may lose acknowledged records (above); pass --accept-data-loss to accept that loss"
        );
        report.refused = Some(reason.clone());
        return Ok(Outcome {
            report,
            exit: Exit::Refused,
            message: Some(format!("refused: {reason}; nothing was changed")),
        });
    }

    // Audit first: the action must never happen without a durable trace.
    let details = serde_json::json!({
        "node_id": node_id,
        "before": last,
        "vote": report.vote,
        "commit_lsn": commit_lsn,
        "acked_lsn": acked_lsn,
        "epoch": epoch,
        "old_configuration": report.old_configuration,
        "new_configuration": report.new_configuration,
        "loss": report.loss,
        "may_lose": report.may_lose,
    });
    let audit_path = append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("promote", "intent", dir, &env.command_line, details.clone()),
    )?;
    report.audit_log = Some(audit_path.display().to_string());
    let failed = |env: &Env<'_>, e: &RecoverError| {
        let mut f = details.clone();
        f["error"] = serde_json::Value::String(e.to_string());
        // Best effort: the error being reported matters more than this entry.
        let _ = append_audit(
            d.storage(),
            &state_dir,
            &AuditEntry::now("promote", "failed", dir, &env.command_line, f),
        );
    };
    let acted = (|| -> Result<Acted, RecoverError> {
        let node_dir = NodeDir::open(FsStorage, dir)?;
        // A watermark above the log names records this node lost (FM-X.6): they are part of
        // the accepted loss, and the node would refuse to start below it.
        let commit_after = match commit_lsn {
            Some(c) if c > last.lsn => {
                node_dir.set_commit_lsn(last.lsn)?;
                Some(last.lsn)
            }
            other => other,
        };
        if identity.is_none() {
            let c = node_toml.as_ref().ok_or_else(|| RecoverError::Internal {
                message: "no identity and no node.toml past the checks".to_string(),
            })?;
            let created = load_or_create(d.storage(), dir, &state_dir, &c.cluster_id, &c.node_id)
                .map_err(identity_error)?;
            set_incarnation(&mut new, &node_id, created.identity.incarnation);
        }
        // As start_epoch: the history names the epoch before any record of it exists.
        let mut next = history.clone();
        next.push(epoch, last.lsn + 1)
            .map_err(|e| RecoverError::Internal {
                message: format!("epoch history: {e}"),
            })?;
        node_dir.set_epochs(&next)?;
        // The vote before the records: the node never writes in an epoch it could forget.
        vote_file
            .persist(&PersistedVote {
                epoch,
                voted_for: Some(node_id.clone()),
            })
            .map_err(vote_error)?;
        let wal_opts = WalOptions {
            max_record_bytes: req.max_record_bytes,
            epoch,
            ..node_toml
                .as_ref()
                .map_or_else(WalOptions::default, |c| WalOptions {
                    segment_size_bytes: c.wal.segment_size_bytes,
                    ..WalOptions::default()
                })
        };
        let (mut wal, _) = Wal::open_with(
            FsStorage,
            &d.wal_dir(),
            wal_opts,
            OpenOptions::protecting_commit(commit_after.unwrap_or(0), snapshot_lsn),
        )?;
        if wal.last() != last || wal.epoch() != epoch {
            return Err(RecoverError::Internal {
                message: format!(
                    "the WAL opened at {} (epoch {}), the scan ended at {last} (new epoch {epoch})",
                    wal.last(),
                    wal.epoch()
                ),
            });
        }
        let start = wal.append_control(&ControlRecord::EpochStart {
            epoch,
            primary: node_id.clone(),
        })?;
        let config = wal.append_control(&ControlRecord::Configuration {
            epoch,
            config: new.clone(),
        })?;
        let durable = wal.sync()?;
        assert_eq!(durable, config.lsn, "promote: both records are durable");
        drop(wal);
        // The forced configuration is what makes this node the only voter: a disk that
        // loses it must make the node ineligible, not silently back to the old voters.
        write_acked_lsn(d.storage(), &state_dir, config.lsn)?;
        Ok(Acted {
            start,
            config,
            commit_after,
        })
    })();
    let acted = match acted {
        Ok(a) => a,
        Err(e) => {
            failed(env, &e);
            return Err(e);
        }
    };
    tracing::warn!(
        dir = %dir.display(),
        node = %node_id,
        epoch,
        lsn = acted.config.lsn,
        generation = new.generation,
        voters = ?voters,
        "operator promote: forced configuration written"
    );
    report.performed = true;
    report.incarnation = new.member(&node_id).map(|m| m.incarnation);
    report.new_configuration = view(&new, Some((acted.config.lsn, epoch)));
    report.epoch_start = Some(acted.start);
    report.after = Some(acted.config);
    report.commit_lsn_after = acted.commit_after;
    report.acked_lsn_after = Some(acted.config.lsn);

    let verified = verify_data_dir(&d, opts, progress_label(env.progress, "promote: verify"));
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            failed(env, &e);
            return Err(e);
        }
    };
    let exit = verified.exit;
    let mut done = details;
    done["epoch_start"] = serde_json::to_value(acted.start).unwrap_or_default();
    done["after"] = serde_json::to_value(acted.config).unwrap_or_default();
    done["new_configuration"] = serde_json::to_value(&report.new_configuration).unwrap_or_default();
    done["commit_lsn_after"] = serde_json::to_value(acted.commit_after).unwrap_or_default();
    done["acked_lsn_after"] = serde_json::Value::from(acted.config.lsn);
    done["verify"] = serde_json::to_value(&verified.report.wal.state).unwrap_or_default();
    done["verify_ok"] = serde_json::Value::Bool(exit == Exit::Ok);
    append_audit(
        d.storage(),
        &state_dir,
        &AuditEntry::now("promote", "done", dir, &env.command_line, done),
    )?;
    report.verify = Some(verified.report);
    let mut o = Outcome::new(report, exit);
    if exit != Exit::Ok {
        o.message = Some(
            verified
                .message
                .unwrap_or_else(|| "the promoted directory does not verify".to_string()),
        );
    }
    Ok(o)
}

/// What the write phase did.
struct Acted {
    start: Position,
    config: Position,
    commit_after: Option<Lsn>,
}

fn load_node_toml(path: &Path) -> Result<NodeConfig, RecoverError> {
    let c = NodeConfig::load(path).map_err(|e| RecoverError::BadInput {
        message: e.to_string(),
    })?;
    if !matches!(c.role, RoleConfig::Member { .. }) {
        return Err(RecoverError::BadInput {
            message: format!(
                "{}: role is not \"member\": only a cluster member can be promoted",
                path.display()
            ),
        });
    }
    Ok(c)
}

/// `state/identity`, checked as the node checks it at open (against node.toml when
/// given, else against itself: bounds and a non-zero incarnation). Never written here.
fn read_identity(
    d: &DataDir,
    node_toml: Option<&NodeConfig>,
) -> Result<Option<Identity>, RecoverError> {
    let state_dir = d.state_dir();
    let Some(found) = read_state_json::<_, Identity>(d.storage(), &state_dir, IDENTITY_FILE)?
    else {
        return Ok(None);
    };
    let (cluster_id, node_id) = match node_toml {
        Some(c) => (c.cluster_id.as_str(), c.node_id.as_str()),
        None => (found.cluster_id.as_str(), found.node_id.as_str()),
    };
    // The file exists: load_or_create only reads and checks it.
    let loaded = load_or_create(d.storage(), d.root(), &state_dir, cluster_id, node_id)
        .map_err(identity_error)?;
    assert!(!loaded.created, "an existing identity is never rewritten");
    Ok(Some(loaded.identity))
}

fn identity_error(e: IdentityError) -> RecoverError {
    match e {
        IdentityError::State(s) => RecoverError::from(s),
        IdentityError::Invalid { .. } => RecoverError::StateCorrupt {
            message: e.to_string(),
        },
        IdentityError::OtherCluster { .. } | IdentityError::OtherMember { .. } => {
            RecoverError::BadInput {
                message: e.to_string(),
            }
        }
    }
}

fn vote_error(e: VoteFileError) -> RecoverError {
    match e {
        VoteFileError::SyncFailed { op, path, source } | VoteFileError::Io { op, path, source } => {
            RecoverError::Io { op, path, source }
        }
        VoteFileError::Damaged { .. } | VoteFileError::InvalidVote { .. } => {
            RecoverError::StateCorrupt {
                message: e.to_string(),
            }
        }
    }
}

/// node.toml's `[[member]]` list as the base configuration (generation 0), as the node
/// builds it (`walship_node::membership::base_configuration`). node.toml records no
/// incarnation: 0 here means "unknown" (never written: only this node's entry goes into
/// a forced configuration over the base, with its own incarnation).
fn base_configuration(c: &NodeConfig) -> Result<Configuration, RecoverError> {
    let RoleConfig::Member { members, .. } = &c.role else {
        return Err(RecoverError::Internal {
            message: "load_node_toml admits members only".to_string(),
        });
    };
    Ok(walship_node::membership::base_configuration(
        members.iter().map(|m| ConfigMember {
            id: m.id.clone(),
            incarnation: 0,
            voter: !m.learner,
            addr: m.addr.to_string(),
            http_addr: m.http_addr.map(|a| a.to_string()),
        }),
    ))
}

/// `--voters`, checked: no id twice, this node among them, each a member of `old`; over
/// the base configuration only this node (no other member's incarnation is known).
fn choose_voters(
    old: &Configuration,
    node_id: &str,
    requested: &[String],
) -> Result<Vec<String>, RecoverError> {
    if requested.is_empty() {
        return Ok(vec![node_id.to_string()]);
    }
    let bad = |message: String| Err(RecoverError::BadInput { message });
    for (i, id) in requested.iter().enumerate() {
        if requested[..i].contains(id) {
            return bad(format!("--voters names {id} twice"));
        }
        if old.member(id).is_none() {
            return bad(format!(
                "--voters: {id} is not a member of configuration generation {} (members: {})",
                old.generation,
                old.members
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if old.generation == 0 && id != node_id {
            return bad(format!(
                "--voters: {id}'s incarnation is unknown (the log holds no configuration record, node.toml records none): over the base configuration only {node_id} can be a voter; add the others afterwards"
            ));
        }
    }
    if !requested.iter().any(|id| id == node_id) {
        return bad(format!(
            "--voters must include {node_id}: the promoted node leads the new epoch"
        ));
    }
    Ok(requested.to_vec())
}

/// The forced configuration: the members of `old` named in `voters`, as voters, in
/// `old`'s order, with their entries as they were — except this node's incarnation,
/// which is its directory's (0 until the identity is written, at promote).
fn forced_configuration(
    old: &Configuration,
    voters: &[String],
    node_id: &str,
    identity: Option<&Identity>,
) -> Configuration {
    let mut new = Configuration {
        generation: old.generation + 1,
        forced: true,
        members: old
            .members
            .iter()
            .filter(|m| voters.contains(&m.id))
            .map(|m| ConfigMember {
                voter: true,
                ..m.clone()
            })
            .collect(),
    };
    set_incarnation(&mut new, node_id, identity.map_or(0, |i| i.incarnation));
    new
}

fn incarnation_or_placeholder(config: &Configuration, node_id: &str) -> u64 {
    config.member(node_id).map_or(1, |m| m.incarnation).max(1)
}

fn set_incarnation(config: &mut Configuration, node_id: &str, incarnation: u64) {
    for m in config.members.iter_mut().filter(|m| m.id == node_id) {
        m.incarnation = incarnation;
    }
}

fn view(c: &Configuration, at: Option<(Lsn, u64)>) -> ConfigView {
    ConfigView {
        lsn: at.map(|a| a.0),
        epoch: at.map(|a| a.1),
        generation: c.generation,
        forced: c.forced,
        members: c.members.iter().map(DumpMember::from).collect(),
    }
}

fn loss_facts(
    last: Position,
    commit_lsn: Option<Lsn>,
    acked_lsn: Lsn,
    old: &Configuration,
    new: &Configuration,
) -> PromoteLoss {
    let commit = commit_lsn.unwrap_or(0);
    let removed = |voters_only: bool| {
        old.members
            .iter()
            .filter(|m| (m.voter || !voters_only) && new.member(&m.id).is_none())
            .map(|m| m.id.clone())
            .collect::<Vec<_>>()
    };
    PromoteLoss {
        durable_lsn: last.lsn,
        durable_epoch: last.epoch,
        commit_lsn,
        acked_lsn,
        committed_missing: commit.saturating_sub(last.lsn),
        uncommitted_kept: last.lsn.saturating_sub(commit),
        removed_voters: removed(true),
        removed_members: removed(false),
    }
}

/// The loss, one sentence each, as printed before anything is written.
fn loss_lines(l: &PromoteLoss, epoch: u64) -> Vec<String> {
    let mut v = vec![format!(
        "this node's log ends at lsn {} (epoch {}): every record after it is lost, on whichever member holds it",
        l.durable_lsn, l.durable_epoch
    )];
    if l.removed_voters.is_empty() {
        v.push("no voter is removed".to_string());
    } else {
        v.push(format!(
            "any record that {} acknowledged above lsn {} is lost (they are removed from the configuration; their receipts were counted for commits this node cannot see)",
            l.removed_voters.join(", "),
            l.durable_lsn
        ));
    }
    match l.commit_lsn {
        None => v.push(
            "commit watermark known here: none (state/commit absent): no commit could be checked"
                .to_string(),
        ),
        Some(c) => v.push(format!("commit watermark known here: lsn {c}")),
    }
    if l.committed_missing > 0 {
        let c = l.commit_lsn.unwrap_or(0);
        v.push(format!(
            "DATA LOSS FOR CERTAIN: lsn {}..={c} ({} records) were committed and this node no longer holds them; its watermark is lowered to lsn {}",
            l.durable_lsn + 1,
            l.committed_missing,
            l.durable_lsn
        ));
    }
    if l.acked_lsn > l.durable_lsn {
        v.push(format!(
            "this node acknowledged records up to lsn {} (state/acked) and holds only up to lsn {}: those are lost; the mark is set to the forced configuration's lsn",
            l.acked_lsn, l.durable_lsn
        ));
    }
    if l.uncommitted_kept > 0 {
        v.push(format!(
            "lsn {}..={} ({} records) were not known committed here; they become committed with epoch {epoch}, whether or not a client was ever told so",
            l.durable_lsn - l.uncommitted_kept + 1,
            l.durable_lsn,
            l.uncommitted_kept
        ));
    }
    if !l.removed_members.is_empty() {
        v.push(format!(
            "{} must never run again on their old data directories: they still hold the old configuration and could elect a second primary among themselves; wipe them and add them back as new members",
            l.removed_members.join(", ")
        ));
    }
    v
}

impl TextReport for PromoteReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let inc = self
            .incarnation
            .map_or("none yet".to_string(), |i| format!("{i:016x}"));
        writeln!(
            w,
            "promote {} (node {}, incarnation {inc})",
            self.dir, self.node_id
        )?;
        writeln!(
            w,
            "  log: last {} ({}); vote: epoch {} for {}",
            self.before,
            wal_state_line(&self.wal_state),
            self.vote.epoch,
            self.vote.voted_for.as_deref().unwrap_or("nobody")
        )?;
        let lsn = |l: Option<Lsn>| l.map_or("absent".to_string(), |l| l.to_string());
        writeln!(
            w,
            "  commit watermark: {}; acknowledged mark: {}",
            lsn(self.loss.commit_lsn),
            self.loss.acked_lsn
        )?;
        let at = |c: &ConfigView| match (c.lsn, c.epoch) {
            (Some(l), Some(e)) => format!("at lsn {l} (epoch {e})"),
            _ if c.generation == 0 => "the base configuration of node.toml".to_string(),
            _ => "not written".to_string(),
        };
        let o = &self.old_configuration;
        writeln!(
            w,
            "  configuration now: generation {}, {}: {}",
            o.generation,
            at(o),
            members_text(&o.members)
        )?;
        let n = &self.new_configuration;
        writeln!(
            w,
            "  FORCED configuration: generation {}, epoch {}, {}: {}",
            n.generation,
            self.epoch,
            at(n),
            members_text(&n.members)
        )?;
        writeln!(w, "WHAT MAY BE LOST:")?;
        for l in &self.may_lose {
            writeln!(w, "  - {l}")?;
        }
        if let Some(r) = &self.refused {
            writeln!(w, "REFUSED: {r}")?;
        }
        if self.performed {
            if let (Some(s), Some(a)) = (&self.epoch_start, &self.after) {
                writeln!(
                    w,
                    "done: epoch-start {s}, forced configuration {a}; vote: epoch {} for {}",
                    self.epoch, self.node_id
                )?;
            }
            writeln!(
                w,
                "  commit watermark: {}; acknowledged mark: {}",
                lsn(self.commit_lsn_after),
                lsn(self.acked_lsn_after)
            )?;
        }
        if let Some(v) = &self.verify {
            writeln!(w, "verify: {}", wal_state_line(&v.wal.state))?;
        }
        if let Some(a) = &self.audit_log {
            writeln!(w, "audit entries written to {a}")?;
        }
        Ok(())
    }
}
