//! Maintenance mode (`walship ctl pause|resume`, Patroni's pause) and the blocker an
//! operator reads in `/status` (`walship ctl list`'s footer).
//!
//! **What paused means** (spec/election.md §2.9): a paused node starts no automatic
//! election: no pre-vote round at an election timeout, and it refuses the pre-votes of
//! others. It still answers vote requests under the usual rules, follows and ships as
//! before, and takes operator acts: `walship ctl promote` and `walship ctl switchover`
//! (a hand-over) work while paused.
//!
//! Why that is safe and what it buys: pausing changes only who *starts* an election,
//! never how a vote is granted (one candidate per epoch, persisted before the answer,
//! up-to-date rule), so no safety argument depends on it. Refusing pre-votes means a
//! member that missed the pause (unreachable when `ctl pause` ran) cannot start an
//! automatic failover through paused voters: its pre-vote needs an election quorum of
//! grants. Votes stay answered because an operator promotion and a switchover need them.
//! A cluster where fewer than an election quorum is paused can still fail over
//! automatically — `ctl pause` says so and exits non-zero when a member was missed.
//!
//! The flag is durable: `DIR/state/paused`, a walship state file (spec/state-files.md)
//! with the JSON body `{"paused":true,"at_unix_ms":T}`, written like the vote file (write
//! the temporary file, fsync it, rename, fsync `state/`), so a restart keeps the node
//! paused. No file = not paused.

use std::path::Path;

use serde::{Deserialize, Serialize};
use walship_wal::state::{read_state_json, write_state_json, StateError};
use walship_wal::FsStorage;

use crate::election::{CampaignPhase, ElectionStatus, Role};
use crate::http::ElectionBlocker;

/// Name of the maintenance-mode file in the node's `state/` directory.
pub const PAUSED_FILE: &str = "paused";

/// The body of `state/paused`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PausedState {
    /// Automatic elections are paused.
    pub paused: bool,
    /// When the flag was last set, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Reads `state/paused` (absent: not paused). A damaged file is an error: the node does
/// not guess whether the operator paused it.
pub fn load_paused(state_dir: &Path) -> Result<bool, StateError> {
    let s: Option<PausedState> = read_state_json(&FsStorage, state_dir, PAUSED_FILE)?;
    Ok(s.is_some_and(|s| s.paused))
}

/// Durably writes `state/paused` (write, fsync, rename, fsync `state/`): after it
/// returns Ok the flag survives power loss.
pub fn persist_paused(state_dir: &Path, paused: bool) -> Result<(), StateError> {
    let at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    write_state_json(
        &FsStorage,
        state_dir,
        PAUSED_FILE,
        &PausedState { paused, at_unix_ms },
    )
}

/// The blocker `/status` reports for an election status (`None`: nothing blocks).
pub fn blocker(e: &ElectionStatus) -> Option<ElectionBlocker> {
    let message = e.blocked_on()?;
    let plain = |kind: &str, hint: Option<&str>| ElectionBlocker {
        kind: kind.to_owned(),
        need: None,
        have: None,
        voters: None,
        waiting_for: Vec::new(),
        refused_by: Vec::new(),
        message: message.clone(),
        hint: hint.map(str::to_owned),
    };
    // The same precedence as `ElectionStatus::blocked_on`.
    let b = match e.role {
        Role::Halted => plain(
            "halted",
            Some("inspect the halt with `walship-recover inspect DIR`; clear it once resolved"),
        ),
        Role::Stopped => plain("stopped", Some("see the node's log; restart it")),
        _ if !e.eligible => plain(
            "ineligible",
            Some("it becomes eligible once it re-fetched what it acknowledged from the primary"),
        ),
        _ => {
            if let Some(c) = &e.campaign {
                let what = match c.phase {
                    CampaignPhase::PreVote => "pre-votes",
                    CampaignPhase::Vote => "votes",
                };
                ElectionBlocker {
                    kind: "campaign".into(),
                    need: Some(c.need),
                    have: Some(c.granted.len()),
                    voters: Some(c.voters),
                    waiting_for: c.waiting.clone(),
                    refused_by: c.refused.clone(),
                    message: message.clone(),
                    hint: Some(format!(
                        "an election needs {} of {} {what}: bring back one of the members it waits for{}",
                        c.need,
                        c.voters,
                        if c.refused.is_empty() {
                            ""
                        } else {
                            " (a refusal: that member still hears a primary, has a longer log, or is paused)"
                        }
                    )),
                }
            } else if let Some(l) = &e.lease {
                ElectionBlocker {
                    kind: "lease".into(),
                    need: Some(l.need),
                    have: Some(l.heard),
                    voters: None,
                    waiting_for: Vec::new(),
                    refused_by: Vec::new(),
                    message: message.clone(),
                    hint: Some("the primary steps down unless it hears enough members".into()),
                }
            } else if e.paused {
                plain(
                    "paused",
                    Some("maintenance mode: `walship ctl resume` (or `walship ctl promote N`)"),
                )
            } else if !e.automatic_failover {
                plain(
                    "quorum-0",
                    Some(
                        "quorum 0: no automatic failover; `walship ctl promote N --accept-data-loss`",
                    ),
                )
            } else {
                plain("no-primary", None)
            }
        }
    };
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{
        CampaignStatus, ElectionConfig, ElectionCore, ElectionMessage, LogPosition, StartState,
    };

    fn core(n: usize, quorum: i64) -> ElectionCore {
        let config = ElectionConfig {
            node_id: "n1".into(),
            voters: (1..=n).map(|i| format!("n{i}")).collect(),
            quorum_setting: quorum,
            election_timeout_ms: 100,
            lease_ms: 100,
        };
        // A member of a formed cluster (an empty log needs every voter: spec/election.md §2.10).
        let start = StartState {
            log_head: LogPosition::new(0, 1),
            ..StartState::fresh()
        };
        ElectionCore::new(config, start, 0, 1).expect("valid")
    }

    /// Times out, then gets pre-vote grants from `grants`: the blocker of the round.
    fn blocked_after(n: usize, quorum: i64, grants: &[&str]) -> ElectionBlocker {
        let mut c = core(n, quorum);
        let d = c.next_tick_ms().expect("deadline");
        c.tick(d);
        for g in grants {
            c.on_message(
                d,
                g,
                ElectionMessage::PreVoteResponse {
                    epoch: 1,
                    granted: true,
                    current_epoch: 0,
                },
            )
            .expect("peer");
        }
        blocker(&c.status(d)).expect("blocked")
    }

    #[test]
    fn majority_of_7_needs_4_and_names_the_missing() {
        let b = blocked_after(7, -1, &["n2", "n3"]);
        assert_eq!(b.kind, "campaign");
        assert_eq!((b.need, b.have, b.voters), (Some(4), Some(3), Some(7)));
        assert_eq!(b.waiting_for, ["n4", "n5", "n6", "n7"]);
        assert_eq!(
            b.message,
            "need 4 of 7 pre-votes for epoch 1, have 3: waiting for n4, n5, n6, n7"
        );
    }

    #[test]
    fn static_k_2_of_7_needs_5() {
        let b = blocked_after(7, 2, &["n2", "n3", "n5"]);
        assert_eq!((b.need, b.have), (Some(5), Some(4)));
        assert_eq!(b.waiting_for, ["n4", "n6", "n7"]);
    }

    #[test]
    fn quorum_0_names_the_operator_promotion() {
        let c = core(3, 0);
        let b = blocker(&c.status(0)).expect("blocked");
        assert_eq!(b.kind, "quorum-0");
        assert!(
            b.hint
                .as_deref()
                .is_some_and(|h| h.contains("walship ctl promote N --accept-data-loss")),
            "{b:?}"
        );
    }

    #[test]
    fn paused_names_resume_and_wins_over_quorum_0() {
        for quorum in [-1, 0, 1] {
            let mut c = core(3, quorum);
            c.pause(0);
            let b = blocker(&c.status(0)).expect("blocked");
            assert_eq!(b.kind, "paused", "quorum {quorum}");
            assert!(b.hint.as_deref().is_some_and(|h| h.contains("ctl resume")));
        }
    }

    #[test]
    fn a_refusal_is_named() {
        let e = ElectionStatus {
            node_id: "n1".into(),
            role: Role::PreCandidate,
            epoch: 3,
            voted_for: None,
            primary: None,
            log_head: LogPosition::ZERO,
            eligible: true,
            paused: false,
            automatic_failover: true,
            campaign: Some(CampaignStatus {
                phase: CampaignPhase::PreVote,
                epoch: 4,
                voters: 3,
                need: 2,
                granted: vec!["n1".into()],
                refused: vec!["n2".into()],
                waiting: vec!["n3".into()],
            }),
            lease: None,
        };
        let b = blocker(&e).expect("blocked");
        assert_eq!(b.refused_by, ["n2"]);
        assert_eq!(
            b.message,
            "need 2 of 3 pre-votes for epoch 4, have 1: waiting for n3; refused by n2"
        );
    }

    #[test]
    fn paused_flag_survives_a_reload_and_absent_means_not_paused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!load_paused(dir.path()).expect("absent"));
        persist_paused(dir.path(), true).expect("persist");
        assert!(load_paused(dir.path()).expect("load"));
        persist_paused(dir.path(), false).expect("persist");
        assert!(!load_paused(dir.path()).expect("load"));
        std::fs::write(dir.path().join(PAUSED_FILE), b"garbage").expect("write");
        assert!(
            load_paused(dir.path()).is_err(),
            "a damaged file is an error"
        );
    }
}
