//! `DIR/state/identity`: which cluster and which member a data directory
//! belongs to, and its incarnation id (spec/state-files.md §3.5,
//! spec/membership.md §1). Written once, when a member first opens its
//! directory; checked at every open, so that a directory from another
//! cluster, or another member's directory, is refused instead of joined.

use std::path::Path;

use serde::{Deserialize, Serialize};
use walship_wal::state::{read_state_json, write_state_json, StateError};
use walship_wal::Storage;

/// File name under `DIR/state/`.
pub const IDENTITY_FILE: &str = "identity";
/// Longest cluster id or node id the file may hold.
pub const MAX_IDENTITY_FIELD_BYTES: usize = 255;

/// The body of `state/identity` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The cluster the directory belongs to (`cluster_id` of node.toml).
    pub cluster_id: String,
    /// The member that owns it.
    pub node_id: String,
    /// Random, non-zero; a new one whenever a directory is initialised.
    pub incarnation: u64,
}

/// Why a directory's identity refuses this member.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The directory belongs to another cluster.
    #[error("data directory {dir} belongs to cluster {found:?}, this node is configured for cluster {configured:?}: refusing to join with another cluster's data (use an empty directory, or the right cluster_id)")]
    OtherCluster {
        /// The directory.
        dir: String,
        /// Its cluster id.
        found: String,
        /// node.toml's.
        configured: String,
    },
    /// The directory belongs to another member.
    #[error("data directory {dir} belongs to member {found:?}, not to {configured:?}: refusing to run one member on another's data")]
    OtherMember {
        /// The directory.
        dir: String,
        /// Its node id.
        found: String,
        /// node.toml's.
        configured: String,
    },
    /// The file's fields are out of bounds.
    #[error("{dir}/state/identity is invalid: {why}")]
    Invalid {
        /// The directory.
        dir: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// What [`load_or_create`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The identity (read, or just written).
    pub identity: Identity,
    /// Whether it was written now (a directory without one).
    pub created: bool,
}

/// Reads `state/identity` and checks it against `cluster_id` and `node_id`,
/// or, when the file is absent, writes one with a new incarnation (write,
/// fsync, rename, fsync dir). `root` is the data directory (for messages).
pub fn load_or_create<S: Storage>(
    storage: &S,
    root: &Path,
    state_dir: &Path,
    cluster_id: &str,
    node_id: &str,
) -> Result<Loaded, IdentityError> {
    let dir = root.display().to_string();
    if let Some(found) = read_state_json::<S, Identity>(storage, state_dir, IDENTITY_FILE)? {
        if found.cluster_id.len() > MAX_IDENTITY_FIELD_BYTES
            || found.node_id.len() > MAX_IDENTITY_FIELD_BYTES
        {
            return Err(IdentityError::Invalid {
                dir,
                why: "an id longer than 255 bytes",
            });
        }
        if found.incarnation == 0 {
            return Err(IdentityError::Invalid {
                dir,
                why: "incarnation 0",
            });
        }
        if found.cluster_id != cluster_id {
            return Err(IdentityError::OtherCluster {
                dir,
                found: found.cluster_id,
                configured: cluster_id.to_string(),
            });
        }
        if found.node_id != node_id {
            return Err(IdentityError::OtherMember {
                dir,
                found: found.node_id,
                configured: node_id.to_string(),
            });
        }
        return Ok(Loaded {
            identity: found,
            created: false,
        });
    }
    let identity = Identity {
        cluster_id: cluster_id.to_string(),
        node_id: node_id.to_string(),
        incarnation: new_incarnation(node_id),
    };
    write_state_json(storage, state_dir, IDENTITY_FILE, &identity)?;
    Ok(Loaded {
        identity,
        created: true,
    })
}

/// A random non-zero u64: 8 bytes of the kernel's random source, mixed with
/// the time and the node id in case that source is unavailable.
fn new_incarnation(node_id: &str) -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let from_kernel = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = u64::from_le_bytes(b)
        ^ if from_kernel {
            0
        } else {
            t ^ (u64::from(std::process::id()) << 32)
                ^ u64::from(crc32c::crc32c(node_id.as_bytes()))
        };
    // splitmix64 finaliser: spreads the fallback's few varying bits.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::FsStorage;

    #[test]
    fn first_open_writes_an_identity_later_opens_check_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&state).expect("mkdir");
        let first = load_or_create(&FsStorage, tmp.path(), &state, "c1", "n1").expect("create");
        assert!(first.created);
        assert_ne!(first.identity.incarnation, 0);
        let again = load_or_create(&FsStorage, tmp.path(), &state, "c1", "n1").expect("load");
        assert!(!again.created);
        assert_eq!(again.identity, first.identity, "the incarnation is kept");

        let e =
            load_or_create(&FsStorage, tmp.path(), &state, "c2", "n1").expect_err("other cluster");
        assert!(
            matches!(e, IdentityError::OtherCluster { ref found, .. } if found == "c1"),
            "{e}"
        );
        let e =
            load_or_create(&FsStorage, tmp.path(), &state, "c1", "n2").expect_err("other member");
        assert!(
            matches!(e, IdentityError::OtherMember { ref found, .. } if found == "n1"),
            "{e}"
        );

        // A new directory gets a new incarnation.
        let tmp2 = tempfile::tempdir().expect("tempdir");
        let state2 = tmp2.path().join("state");
        std::fs::create_dir_all(&state2).expect("mkdir");
        let other = load_or_create(&FsStorage, tmp2.path(), &state2, "c1", "n1").expect("create");
        assert_ne!(other.identity.incarnation, first.identity.incarnation);
    }

    #[test]
    fn a_damaged_or_invalid_identity_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&state).expect("mkdir");
        load_or_create(&FsStorage, tmp.path(), &state, "c1", "n1").expect("create");
        let path = state.join(IDENTITY_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let e = load_or_create(&FsStorage, tmp.path(), &state, "c1", "n1").expect_err("damaged");
        assert!(matches!(e, IdentityError::State(_)), "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "left as found");

        write_state_json(
            &FsStorage,
            &state,
            IDENTITY_FILE,
            &Identity {
                cluster_id: "c1".into(),
                node_id: "n1".into(),
                incarnation: 0,
            },
        )
        .expect("write");
        let e = load_or_create(&FsStorage, tmp.path(), &state, "c1", "n1").expect_err("zero");
        assert!(
            matches!(
                e,
                IdentityError::Invalid {
                    why: "incarnation 0",
                    ..
                }
            ),
            "{e}"
        );
    }
}
