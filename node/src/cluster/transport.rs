//! Election messages between members (spec/election.md §5, "On the wire").
//!
//! Every member runs one QUIC endpoint on its configured address, with the same mutual-TLS
//! rules as replication: a peer is a member because its certificate, signed by the cluster
//! CA, names one. An election message travels alone on a unidirectional stream of a
//! connection between two members: the stream's bytes are one [`Envelope`] (bincode 2,
//! standard configuration), at most [`MAX_ENVELOPE_BYTES`], and the stream ends after it.
//! Loss, duplication and reordering are tolerated by the election core, so a message that
//! cannot be sent at once is dropped, never queued behind a dead peer.
//!
//! Bidirectional streams on the same endpoint are replication sessions (a replica's
//! `Hello`): the node hands them to its primary role, or refuses them when it has none.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::election::{ElectionMessage, NodeId};

/// Largest envelope a member reads; longer streams are refused before allocation.
pub const MAX_ENVELOPE_BYTES: usize = 4096;

/// Version of the envelope layout.
pub const ENVELOPE_VERSION: u32 = 3;

/// Upper bound of [`Envelope::addr`] (a configuration's address bound).
pub const MAX_ENVELOPE_ADDR_BYTES: usize = 255;

/// How long a connection attempt to a peer may take before the message is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// After a failed connection attempt, messages to that peer are dropped for this long.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// One election message with what a receiver checks before it believes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub version: u32,
    /// The sender's cluster id.
    pub cluster_id: String,
    /// The incarnation of the sender's data directory (`state/identity`; 0: none): a
    /// vote counts only from the incarnation the configuration names (spec/membership.md).
    pub incarnation: u64,
    /// The sender's peer (QUIC) address as it advertises it (`node.toml`): a member
    /// that follows a primary no configuration in its log names yet (it was down while
    /// the primary was added) learns where to connect from its heartbeats. Only a hint:
    /// the connection still verifies the primary's certificate name.
    pub addr: String,
    /// Digest of the sender's member list, quorum setting and timeouts
    /// ([`super::NodeConfig::digest`]): members that disagree about who votes or how many
    /// votes win must not elect each other.
    pub config_digest: u32,
    /// The message.
    pub msg: ElectionMessage,
}

/// Why an envelope was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Longer than [`MAX_ENVELOPE_BYTES`].
    #[error("election message of {len} bytes is above the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge {
        /// Bytes received.
        len: usize,
    },
    /// Not a valid envelope.
    #[error("malformed election message: {0}")]
    Malformed(String),
    /// Another layout version.
    #[error("election message version {theirs}, this build reads {ENVELOPE_VERSION}")]
    Version {
        /// The sender's version.
        theirs: u32,
    },
    /// Another cluster.
    #[error("election message from cluster {theirs:?}, this node is in {ours:?}")]
    ClusterMismatch {
        /// This node's cluster id.
        ours: String,
        /// The sender's.
        theirs: String,
    },
    /// Another member list, quorum setting or timeouts.
    #[error("peer's cluster configuration differs (digest {theirs:#010x}, ours {ours:#010x}): members, quorum and timeouts must be the same on every member")]
    ConfigMismatch {
        /// This node's digest.
        ours: u32,
        /// The sender's.
        theirs: u32,
    },
}

impl Envelope {
    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        // A plain serde struct of strings and integers: encoding cannot fail.
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .unwrap_or_else(|e| panic!("encoding an election envelope failed: {e}"))
    }

    /// Decodes and checks an envelope received from a peer: the message, the
    /// sender's incarnation and its advertised address.
    pub fn decode_checked(
        bytes: &[u8],
        cluster_id: &str,
        digest: u32,
    ) -> Result<(ElectionMessage, u64, String), EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge { len: bytes.len() });
        }
        let config = bincode::config::standard().with_limit::<MAX_ENVELOPE_BYTES>();
        let (env, used): (Envelope, usize) = bincode::serde::decode_from_slice(bytes, config)
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if used != bytes.len() {
            return Err(EnvelopeError::Malformed(format!(
                "{} trailing bytes",
                bytes.len() - used
            )));
        }
        if env.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version {
                theirs: env.version,
            });
        }
        if env.cluster_id != cluster_id {
            return Err(EnvelopeError::ClusterMismatch {
                ours: cluster_id.to_owned(),
                theirs: env.cluster_id,
            });
        }
        if env.config_digest != digest {
            return Err(EnvelopeError::ConfigMismatch {
                ours: digest,
                theirs: env.config_digest,
            });
        }
        if env.addr.len() > MAX_ENVELOPE_ADDR_BYTES {
            return Err(EnvelopeError::Malformed(format!(
                "sender address of {} bytes (at most {MAX_ENVELOPE_ADDR_BYTES})",
                env.addr.len()
            )));
        }
        Ok((env.msg, env.incarnation, env.addr))
    }
}

/// Sends election messages to peers: one task per peer, each keeping one connection.
#[derive(Clone)]
pub struct Sender {
    queues: HashMap<NodeId, (SocketAddr, mpsc::UnboundedSender<Vec<u8>>)>,
    endpoint: quinn::Endpoint,
    cluster_id: String,
    digest: u32,
    incarnation: u64,
    addr: String,
}

impl Sender {
    /// Starts one sending task per peer (`(id, addr)`, this node excluded) on `endpoint`;
    /// `addr` is this node's advertised peer address, sent in every envelope.
    pub fn start(
        endpoint: &quinn::Endpoint,
        peers: &[(NodeId, SocketAddr)],
        cluster_id: &str,
        digest: u32,
        incarnation: u64,
        addr: SocketAddr,
    ) -> Sender {
        let mut sender = Sender {
            queues: HashMap::new(),
            endpoint: endpoint.clone(),
            cluster_id: cluster_id.to_owned(),
            digest,
            incarnation,
            addr: addr.to_string(),
        };
        sender.set_peers(peers);
        sender
    }

    /// The peers changed (a configuration record, spec/membership.md): a task per new
    /// peer (or new address); the tasks of peers no longer listed end.
    pub fn set_peers(&mut self, peers: &[(NodeId, SocketAddr)]) {
        self.queues
            .retain(|id, (addr, _)| peers.iter().any(|(p, a)| p == id && a == addr));
        for (id, addr) in peers {
            if self.queues.contains_key(id) {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(peer_task(self.endpoint.clone(), id.clone(), *addr, rx));
            self.queues.insert(id.clone(), (*addr, tx));
        }
    }

    /// Queues `msg` for `to` (dropped if `to` is unknown or its task ended).
    pub fn send(&self, to: &str, msg: ElectionMessage) {
        let Some((_, q)) = self.queues.get(to) else {
            warn!(
                peer = to,
                "election message to a node that is not a peer: dropped"
            );
            return;
        };
        let env = Envelope {
            version: ENVELOPE_VERSION,
            cluster_id: self.cluster_id.clone(),
            config_digest: self.digest,
            incarnation: self.incarnation,
            addr: self.addr.clone(),
            msg,
        };
        let _ = q.send(env.encode());
    }
}

async fn peer_task(
    endpoint: quinn::Endpoint,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut conn: Option<quinn::Connection> = None;
    let mut retry_at = tokio::time::Instant::now();
    while let Some(bytes) = rx.recv().await {
        if conn.as_ref().is_some_and(|c| c.close_reason().is_some()) {
            conn = None;
        }
        if conn.is_none() {
            if tokio::time::Instant::now() < retry_at {
                continue;
            }
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                walship_wire::endpoint::connect(&endpoint, addr, &peer),
            )
            .await;
            match attempt {
                Ok(Ok(c)) => {
                    info!(%peer, %addr, "election connection to peer established");
                    conn = Some(c);
                }
                Ok(Err(e)) => {
                    debug!(%peer, %addr, error = %e, "cannot reach peer: election message dropped");
                    retry_at = tokio::time::Instant::now() + RECONNECT_BACKOFF;
                    continue;
                }
                Err(_) => {
                    debug!(%peer, %addr, "connecting to peer timed out: election message dropped");
                    retry_at = tokio::time::Instant::now() + RECONNECT_BACKOFF;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let sent = async {
            let mut s = c.open_uni().await?;
            s.write_all(&bytes).await?;
            s.finish()?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        if let Err(e) = sent {
            debug!(%peer, error = %e, "election message not sent: dropping the connection");
            conn = None;
        }
    }
}

/// Reads one envelope from a unidirectional stream (bounded before allocation).
pub async fn read_envelope(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, EnvelopeError> {
    recv.read_to_end(MAX_ENVELOPE_BYTES)
        .await
        .map_err(|e| match e {
            quinn::ReadToEndError::TooLong => EnvelopeError::TooLarge {
                len: MAX_ENVELOPE_BYTES + 1,
            },
            quinn::ReadToEndError::Read(e) => EnvelopeError::Malformed(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::LogPosition;

    fn env() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            cluster_id: "c".into(),
            config_digest: 7,
            incarnation: 0xfeed,
            addr: "10.0.0.4:7000".into(),
            msg: ElectionMessage::VoteRequest {
                epoch: 3,
                last: LogPosition::new(2, 10),
            },
        }
    }

    #[test]
    fn an_envelope_round_trips_and_every_check_refuses_what_it_names() {
        let bytes = env().encode();
        assert_eq!(
            Envelope::decode_checked(&bytes, "c", 7),
            Ok((env().msg, 0xfeed, "10.0.0.4:7000".to_string())),
            "round trip"
        );
        let mut long = env();
        long.addr = "x".repeat(MAX_ENVELOPE_ADDR_BYTES + 1);
        assert!(matches!(
            Envelope::decode_checked(&long.encode(), "c", 7),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode_checked(&bytes, "other", 7),
            Err(EnvelopeError::ClusterMismatch { .. })
        ));
        assert!(matches!(
            Envelope::decode_checked(&bytes, "c", 8),
            Err(EnvelopeError::ConfigMismatch { ours: 8, theirs: 7 })
        ));
        let mut v = env();
        v.version = 9;
        assert!(matches!(
            Envelope::decode_checked(&v.encode(), "c", 7),
            Err(EnvelopeError::Version { theirs: 9 })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Envelope::decode_checked(&trailing, "c", 7),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode_checked(&bytes[..bytes.len() - 1], "c", 7),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode_checked(&vec![0u8; MAX_ENVELOPE_BYTES + 1], "c", 7),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_string_claiming_more_than_the_envelope_holds_is_malformed_not_allocated() {
        // version 2, then a cluster id claiming 2^32 bytes (varint 0xFC + u32).
        let bytes = [2u8, 0xFC, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            Envelope::decode_checked(&bytes, "c", 7),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
