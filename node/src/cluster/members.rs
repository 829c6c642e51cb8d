//! Membership changes of a running cluster (spec/membership.md): the operator's
//! `add`, `remove`, `promote`, `demote` on the primary, and the changes the primary
//! makes by itself ([`crate::membership::automatic_change`]). The rules are the
//! primary executor's ([`crate::primary::exec::PrimaryExec::propose_configuration`]);
//! this module only builds the next configuration and waits for its commit.

use std::collections::BTreeMap;

use tracing::info;
use walship_wal::control::Configuration;
use walship_wal::Lsn;

use super::{Inner, NodeError, RoleSlot};
use crate::membership::{apply_change, MemberChange, MembershipView, ReplicaFacts};
use crate::primary::{Primary, PrimaryError};

/// A committed membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChanged {
    /// Where its configuration record is.
    pub lsn: Lsn,
    /// The configuration now in effect.
    pub config: Configuration,
    /// Whether a bootstrap record (generation 1: the base configuration with every
    /// member's incarnation) was written first.
    pub bootstrapped: bool,
}

/// What the primary role knows of its replicas (incarnation each `Hello` announced,
/// durable lsn).
pub(crate) fn replica_facts(p: &Primary) -> Vec<ReplicaFacts> {
    let up = p.uptime_ms();
    p.status()
        .replicas
        .iter()
        .map(|r| ReplicaFacts {
            silent_ms: r.last_receipt_age_ms.unwrap_or(up),
            id: r.node_id.clone(),
            incarnation: if r.connected {
                r.incarnation.unwrap_or(0)
            } else {
                0
            },
            durable_lsn: r.durable_lsn,
        })
        .collect()
}

/// The primary role, or `NotPrimary`.
fn primary_of(inner: &Inner) -> Result<(MembershipView, Vec<ReplicaFacts>), NodeError> {
    match &*inner.lock_role() {
        RoleSlot::Primary(p) => Ok((p.membership(), replica_facts(p))),
        _ => Err(inner.not_primary()),
    }
}

/// Proposes `config` through the primary role and waits for its commit.
async fn propose(inner: &Inner, config: Configuration) -> Result<Lsn, NodeError> {
    use std::sync::atomic::Ordering;
    // Counted before the drain is read, uncounted once answered: a switchover sets the
    // drain, then waits for the count to reach 0, so either this sees the drain or the
    // switchover sees this proposal (and waits for its commit).
    struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    inner.proposing.fetch_add(1, Ordering::SeqCst);
    let _counted = Counted(&inner.proposing);
    let draining = inner
        .draining
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(target) = draining {
        // A switchover is handing the primary role to `target`: a record written now could
        // leave it behind the voters it asks for votes.
        return Err(NodeError::NotPrimary {
            epoch: inner.state.borrow().epoch,
            primary_hint: Some(target),
        });
    }
    let fut = match &*inner.lock_role() {
        RoleSlot::Primary(p) => p.propose_configuration(config),
        _ => return Err(inner.not_primary()),
    };
    fut.await.map_err(|e| match e {
        PrimaryError::ShuttingDown => inner.not_primary(),
        e => NodeError::Primary(e),
    })
}

/// The first configuration record of a log (generation 0 → 1): the base members with
/// the incarnation each one's data directory has. Every member must have connected to
/// this primary (its `Hello` carries its incarnation): a record naming an unknown
/// incarnation could not tell a wiped member from the old one.
fn bootstrap_config(
    base: &Configuration,
    me: &str,
    my_incarnation: u64,
    replicas: &[ReplicaFacts],
) -> Result<Configuration, NodeError> {
    let known: BTreeMap<&str, u64> = replicas
        .iter()
        .filter(|r| r.incarnation != 0)
        .map(|r| (r.id.as_str(), r.incarnation))
        .collect();
    let mut next = base.clone();
    next.generation = 1;
    for m in &mut next.members {
        m.incarnation = if m.id == me {
            my_incarnation
        } else {
            *known.get(m.id.as_str()).ok_or_else(|| {
                NodeError::Primary(PrimaryError::Membership(format!(
                    "the first configuration record names every member's incarnation, and {} has not connected to this primary: start it (or remove it from node.toml on every member) and retry",
                    m.id
                )))
            })?
        };
    }
    Ok(next)
}

/// `change` on the running primary: writes the bootstrap record first if the log has
/// none, then the changed configuration; resolves once it is committed (under the old
/// and the new voters).
pub(crate) async fn change(
    inner: &Inner,
    change: MemberChange,
) -> Result<MembershipChanged, NodeError> {
    let (view, replicas) = primary_of(inner)?;
    let mut bootstrapped = false;
    let current = if view.config.generation == 0 {
        let incarnation = inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .incarnation;
        let first = bootstrap_config(&view.config, &inner.config.node_id, incarnation, &replicas)?;
        let lsn = propose(inner, first.clone()).await?;
        info!(
            lsn,
            "bootstrap configuration record committed (generation 1)"
        );
        bootstrapped = true;
        first
    } else {
        view.config
    };
    if change == MemberChange::Bootstrap {
        if !bootstrapped {
            return Err(NodeError::Primary(PrimaryError::Membership(format!(
                "the log already holds configuration generation {}",
                current.generation
            ))));
        }
        let lsn = primary_of(inner)?.0.lsn;
        return Ok(MembershipChanged {
            lsn,
            config: current,
            bootstrapped,
        });
    }
    let next = apply_change(&current, &change)
        .map_err(|e| NodeError::Primary(PrimaryError::Membership(e.to_string())))?;
    let lsn = propose(inner, next.clone()).await?;
    info!(
        lsn,
        generation = next.generation,
        ?change,
        "membership change committed"
    );
    Ok(MembershipChanged {
        lsn,
        config: next,
        bootstrapped,
    })
}

/// The change the primary makes by itself now, if any (a reincarnated voter demoted;
/// caught-up learners promoted when `auto_promote`).
pub(crate) fn automatic(inner: &Inner) -> Option<MemberChange> {
    let slot = inner.lock_role();
    let RoleSlot::Primary(p) = &*slot else {
        return None;
    };
    let view = p.membership();
    crate::membership::automatic_change(
        &view,
        &replica_facts(p),
        p.commit_lsn(),
        inner.config.auto_promote_learners,
        inner.config.deregistration_timeout_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::control::ConfigMember;

    fn member(id: &str) -> ConfigMember {
        ConfigMember {
            id: id.into(),
            incarnation: 0,
            voter: true,
            addr: format!("127.0.0.1:{}", 7000 + id.len()),
            http_addr: None,
        }
    }

    #[test]
    fn the_bootstrap_record_needs_every_members_incarnation() {
        let base = crate::membership::base_configuration([member("a"), member("b"), member("c")]);
        let facts = |b: u64| {
            vec![
                ReplicaFacts {
                    id: "b".into(),
                    incarnation: b,
                    durable_lsn: 3,
                    silent_ms: 0,
                },
                ReplicaFacts {
                    id: "c".into(),
                    incarnation: 9,
                    durable_lsn: 3,
                    silent_ms: 0,
                },
            ]
        };
        let err = bootstrap_config(&base, "a", 5, &facts(0)).expect_err("b unknown");
        assert!(err.to_string().contains("b has not connected"), "{err}");
        let first = bootstrap_config(&base, "a", 5, &facts(7)).expect("all known");
        assert_eq!(first.generation, 1);
        let incs: Vec<u64> = first.members.iter().map(|m| m.incarnation).collect();
        assert_eq!(incs, vec![5, 7, 9]);
        assert_eq!(
            crate::membership::classify_change(&base, &first),
            Ok(crate::membership::Change::Bootstrap)
        );
    }
}
