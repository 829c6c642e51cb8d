//! The durable vote: `DIR/state/vote`, a walship state file (spec/state-files.md
//! §2: magic `WSST`, version, body length bounded to 1 MiB before anything is
//! allocated, crc32c of the body) whose JSON body is
//! `{"epoch":E,"voted_for":"n2"}` or `{"epoch":E,"voted_for":null}`
//! (spec/election.md §5).
//!
//! A damaged vote file is never reset: [`VoteFile::load`] returns
//! [`VoteFileError::Damaged`] and the node must not build an election core
//! (it may not vote, since it cannot know whom it voted for).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use walship_wal::state::{read_state_json, write_state_json, StateError};
use walship_wal::storage::Storage;

use super::NodeId;

/// Name of the vote file in the node's `state/` directory.
pub const VOTE_FILE: &str = "vote";
/// Longest node id (bytes) a vote file or a configuration may carry.
pub const MAX_NODE_ID_BYTES: usize = 255;

/// The durable election state: the node's epoch and its vote in it.
/// Absent file = `{epoch: 0, voted_for: None}` (a node that never took part).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedVote {
    /// The highest epoch this node has seen.
    pub epoch: u64,
    /// The candidate it voted for in `epoch` (itself when it campaigned).
    pub voted_for: Option<NodeId>,
}

impl PersistedVote {
    fn check(&self) -> Result<(), &'static str> {
        if let Some(id) = &self.voted_for {
            if id.is_empty() {
                return Err("voted_for is an empty node id");
            }
            if id.len() > MAX_NODE_ID_BYTES {
                return Err("voted_for is longer than 255 bytes");
            }
            if self.epoch == 0 {
                return Err("a vote in epoch 0 (no election happens in epoch 0)");
            }
        }
        Ok(())
    }
}

/// Errors of the vote file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum VoteFileError {
    /// The file exists but is not a valid vote file (bad magic, version,
    /// length, checksum, JSON). The node must not vote: an operator repairs
    /// or removes it, knowing what that means (a second vote in an epoch).
    #[error("vote file {}: damaged, this node must not vote or lead until an operator repairs it: {source}", path.display())]
    Damaged {
        /// The vote file.
        path: PathBuf,
        /// What is wrong, as the state-file reader found it.
        #[source]
        source: StateError,
    },
    /// The body parsed but breaks a rule of spec/election.md §5.
    #[error("vote file {}: invalid vote {vote:?}: {rule}; this node must not vote or lead until an operator repairs it", path.display())]
    InvalidVote {
        /// The vote file.
        path: PathBuf,
        /// The vote read.
        vote: PersistedVote,
        /// The broken rule.
        rule: &'static str,
    },
    /// A sync (`sync_data` of the temporary file or `sync_dir`) failed. Fatal:
    /// never retried (the page cache may have dropped the pages); the node
    /// must stop without sending the message that depended on the vote.
    #[error("vote file {}: {op} failed: {source}; fatal, the node must stop", path.display())]
    SyncFailed {
        /// `sync_data` or `sync_dir`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another I/O operation failed (open, write, rename, map). Equally
    /// fatal when persisting: the vote is not durable.
    #[error("vote file {}: {op} failed: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl VoteFileError {
    fn from_state(e: StateError, path: &Path) -> VoteFileError {
        match e {
            StateError::Io { op, path, source } if op == "sync_data" || op == "sync_dir" => {
                VoteFileError::SyncFailed { op, path, source }
            }
            StateError::Io { op, path, source } => VoteFileError::Io { op, path, source },
            other => VoteFileError::Damaged {
                path: path.to_path_buf(),
                source: other,
            },
        }
    }
}

/// The vote file of one node directory.
#[derive(Debug)]
pub struct VoteFile<S: Storage> {
    storage: S,
    state_dir: PathBuf,
    /// The last value loaded or persisted, to assert that the vote never
    /// goes backwards.
    current: Option<PersistedVote>,
}

impl<S: Storage> VoteFile<S> {
    /// The vote file in `state_dir` (`NodeDir::state_dir()`), not read yet.
    pub fn new(storage: S, state_dir: &Path) -> VoteFile<S> {
        VoteFile {
            storage,
            state_dir: state_dir.to_path_buf(),
            current: None,
        }
    }

    /// `state_dir/vote`.
    pub fn path(&self) -> PathBuf {
        self.state_dir.join(VOTE_FILE)
    }

    /// Reads and verifies the vote. Absent file = the default vote (epoch 0,
    /// no vote). Any damage is an error; nothing is reset.
    pub fn load(&mut self) -> Result<PersistedVote, VoteFileError> {
        let path = self.path();
        let vote: Option<PersistedVote> =
            read_state_json(&self.storage, &self.state_dir, VOTE_FILE)
                .map_err(|e| VoteFileError::from_state(e, &path))?;
        let vote = vote.unwrap_or_default();
        vote.check().map_err(|rule| VoteFileError::InvalidVote {
            path: path.clone(),
            vote: vote.clone(),
            rule,
        })?;
        tracing::debug!(epoch = vote.epoch, voted_for = ?vote.voted_for, path = %path.display(), "vote loaded");
        self.current = Some(vote.clone());
        Ok(vote)
    }

    /// Durably replaces the vote: write `vote.tmp`, fsync it, rename over
    /// `vote`, fsync `state/` (walship_wal::state::write_state_file). After
    /// it returns Ok the vote survives power loss; a crash at any point
    /// leaves the old or the new vote. Any error is fatal for the node.
    ///
    /// Panics if the vote would go backwards (a lower epoch, or another
    /// candidate in the same epoch): the election core never asks for that,
    /// so it is a broken invariant, not an input error.
    pub fn persist(&mut self, vote: &PersistedVote) -> Result<(), VoteFileError> {
        let path = self.path();
        if let Err(rule) = vote.check() {
            panic!("invariant: the election core persists only valid votes, got {vote:?}: {rule}");
        }
        if let Some(cur) = &self.current {
            assert!(
                vote.epoch > cur.epoch
                    || (vote.epoch == cur.epoch
                        && (cur.voted_for.is_none() || cur.voted_for == vote.voted_for)),
                "invariant: a vote never goes backwards (one candidate per epoch): stored {cur:?}, new {vote:?}"
            );
        }
        write_state_json(&self.storage, &self.state_dir, VOTE_FILE, vote)
            .map_err(|e| VoteFileError::from_state(e, &path))?;
        tracing::debug!(epoch = vote.epoch, voted_for = ?vote.voted_for, "vote persisted");
        self.current = Some(vote.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::sim::SimStorage;
    use walship_wal::state::{encode_state_file, NodeDir};

    fn dir() -> Result<(SimStorage, PathBuf), StateError> {
        let s = SimStorage::new(3);
        let d = NodeDir::open(s.clone(), Path::new("/node"))?;
        Ok((s, d.state_dir().to_path_buf()))
    }

    fn write_raw(s: &SimStorage, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use walship_wal::storage::StorageFile;
        let f = s.open(path, true)?;
        f.set_len(0)?;
        f.write_at(0, bytes)?;
        f.sync_data()?;
        s.sync_dir(path.parent().unwrap_or(Path::new("/")))
    }

    #[test]
    fn absent_vote_file_loads_as_epoch_0_without_vote() -> Result<(), Box<dyn std::error::Error>> {
        let (s, state) = dir()?;
        let mut vf = VoteFile::new(s, &state);
        assert_eq!(vf.load()?, PersistedVote::default());
        Ok(())
    }

    #[test]
    fn persisted_vote_survives_a_crash_byte_for_byte_as_specified(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (s, state) = dir()?;
        let mut vf = VoteFile::new(s.clone(), &state);
        vf.load()?;
        let vote = PersistedVote {
            epoch: 7,
            voted_for: Some("n2".into()),
        };
        vf.persist(&vote)?;
        s.crash();
        let mut again = VoteFile::new(s.clone(), &state);
        assert_eq!(again.load()?, vote);
        let body = br#"{"epoch":7,"voted_for":"n2"}"#;
        assert_eq!(
            s.contents(&state.join(VOTE_FILE))?,
            encode_state_file(Path::new("x"), body)?
        );
        Ok(())
    }

    #[test]
    fn every_flipped_bit_of_the_vote_file_is_refused_as_damaged(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (s, state) = dir()?;
        let mut vf = VoteFile::new(s.clone(), &state);
        vf.persist(&PersistedVote {
            epoch: 3,
            voted_for: Some("n1".into()),
        })?;
        let path = state.join(VOTE_FILE);
        let len = s.contents(&path)?.len() as u64;
        for offset in 0..len {
            for bit in 0..8 {
                s.flip_bit(&path, offset, bit)?;
                let err = VoteFile::new(s.clone(), &state)
                    .load()
                    .expect_err("damaged");
                assert!(
                    matches!(&err, VoteFileError::Damaged { path: p, .. } if *p == path),
                    "offset {offset} bit {bit}: {err}"
                );
                s.flip_bit(&path, offset, bit)?;
            }
        }
        Ok(())
    }

    #[test]
    fn truncated_vote_file_is_refused_with_the_truncation() -> Result<(), Box<dyn std::error::Error>>
    {
        let (s, state) = dir()?;
        let path = state.join(VOTE_FILE);
        write_raw(&s, &path, b"WSST\x01\x00")?;
        let err = VoteFile::new(s, &state).load().expect_err("truncated");
        assert!(
            matches!(
                err,
                VoteFileError::Damaged {
                    source: StateError::Truncated { len: 6, .. },
                    ..
                }
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn valid_state_file_with_a_vote_in_epoch_0_is_an_invalid_vote(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (s, state) = dir()?;
        let path = state.join(VOTE_FILE);
        write_raw(
            &s,
            &path,
            &encode_state_file(&path, br#"{"epoch":0,"voted_for":"n1"}"#)?,
        )?;
        let err = VoteFile::new(s.clone(), &state)
            .load()
            .expect_err("invalid");
        assert!(
            matches!(err, VoteFileError::InvalidVote { rule, .. } if rule.contains("epoch 0")),
            "{err}"
        );
        write_raw(
            &s,
            &path,
            &encode_state_file(&path, br#"{"epoch":2,"voted_for":"n1","x":1}"#)?,
        )?;
        let err = VoteFile::new(s, &state).load().expect_err("unknown field");
        assert!(
            matches!(
                err,
                VoteFileError::Damaged {
                    source: StateError::Json { .. },
                    ..
                }
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn failed_fsync_of_the_vote_is_a_fatal_sync_error_and_keeps_the_old_vote(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (s, state) = dir()?;
        let mut vf = VoteFile::new(s.clone(), &state);
        let old = PersistedVote {
            epoch: 1,
            voted_for: Some("n1".into()),
        };
        vf.persist(&old)?;
        // The next sync (the temporary file's sync_data) fails.
        s.fail_syncs_after(0);
        let err = vf
            .persist(&PersistedVote {
                epoch: 2,
                voted_for: Some("n3".into()),
            })
            .expect_err("sync fails");
        assert!(
            matches!(
                err,
                VoteFileError::SyncFailed {
                    op: "sync_data",
                    ..
                }
            ),
            "{err}"
        );
        s.clear_faults();
        s.crash();
        assert_eq!(VoteFile::new(s, &state).load()?, old);
        Ok(())
    }

    #[test]
    #[should_panic(expected = "one candidate per epoch")]
    fn persisting_a_second_candidate_in_one_epoch_is_a_broken_invariant() {
        let (s, state) = dir().expect("sim dir");
        let mut vf = VoteFile::new(s, &state);
        let v = |c: &str| PersistedVote {
            epoch: 4,
            voted_for: Some(c.into()),
        };
        vf.persist(&v("n1")).expect("first vote");
        let _ = vf.persist(&v("n2"));
    }
}
