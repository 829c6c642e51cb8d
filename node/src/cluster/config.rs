//! [`NodeConfig`]: what every member of a cluster is configured with.

use std::net::SocketAddr;
use std::path::PathBuf;

use walship_wal::WalOptions;
use walship_wire::{TlsFiles, TransportOptions};

use crate::election::{ElectionConfig, NodeId};
use crate::primary::{PrimaryConfig, Quorum};
use crate::replica::ReplicaConfig;

use super::NodeError;

/// One member of the cluster, as every member's configuration lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddr {
    /// The member's node id (its certificate's DNS name).
    pub node_id: NodeId,
    /// Its QUIC address: replication and election messages.
    pub addr: SocketAddr,
    /// Its HTTP endpoint, if it has one (clients are pointed there).
    pub http_addr: Option<SocketAddr>,
}

/// Configuration of a cluster member. Every member has the same kind of configuration:
/// the same `cluster_id`, `members`, `quorum`, `election_timeout_ms` and `lease_ms`
/// ([`NodeConfig::digest`]; members that disagree refuse each other's election messages).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id; one of `members`.
    pub node_id: NodeId,
    /// The cluster id.
    pub cluster_id: String,
    /// The node's data directory (`LOCK`, `wal/`, `state/`, `snapshots/`).
    pub data_dir: PathBuf,
    /// Every voting member, this node included.
    pub members: Vec<MemberAddr>,
    /// Quorum setting: `-1` majority, `0` local only (no automatic failover), `k > 0`
    /// receipts from `k` replicas.
    pub quorum: i64,
    /// Minimum election timeout (each drawn from `[t, 2t)`).
    pub election_timeout_ms: u64,
    /// A primary that heard from fewer than an election quorum for this long steps down.
    pub lease_ms: u64,
    /// How long an append waits for its quorum.
    pub commit_timeout_ms: u64,
    /// CA, certificate and key of this node.
    pub tls: TlsFiles,
    /// QUIC timing and flow control.
    pub transport: TransportOptions,
    /// WAL segment size and record limit.
    pub wal: WalOptions,
    /// Seed of the randomised election timeouts (`None`: from the clock and the node id).
    pub election_seed: Option<u64>,
    /// Members of `members` that join as learners (spec/membership.md): they receive the
    /// log but neither vote nor lead until a configuration makes them voters. A node added
    /// to a running cluster lists itself here; the cluster's log then decides.
    pub learners: Vec<NodeId>,
    /// The primary promotes a learner to voter by itself once it holds everything up to
    /// the commit watermark (default `false`: `walship ctl promote` does it; `ctl add`
    /// does it after the learner caught up).
    pub auto_promote_learners: bool,
    /// Seed 000's `elector.deregistration_timeout`: the primary removes a member it has
    /// not heard from (no receipt) for this long (0, the default: never; `walship ctl
    /// remove` does it). The removal is a configuration change like any other.
    pub deregistration_timeout_ms: u64,
}

impl NodeConfig {
    /// A configuration with default timings (election timeout 1 s, lease 1 s, commit
    /// timeout 10 s), majority quorum and default transport and WAL options.
    pub fn new(
        node_id: impl Into<String>,
        cluster_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        members: Vec<MemberAddr>,
        tls: TlsFiles,
    ) -> NodeConfig {
        NodeConfig {
            node_id: node_id.into(),
            cluster_id: cluster_id.into(),
            data_dir: data_dir.into(),
            members,
            quorum: -1,
            election_timeout_ms: 1000,
            lease_ms: 1000,
            commit_timeout_ms: 10_000,
            tls,
            transport: TransportOptions::default(),
            wal: WalOptions::default(),
            election_seed: None,
            learners: Vec::new(),
            auto_promote_learners: false,
            deregistration_timeout_ms: 0,
        }
    }

    /// Every member's id, in configuration order.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.node_id.clone()).collect()
    }

    /// This node's own entry.
    pub fn me(&self) -> Result<&MemberAddr, NodeError> {
        self.member(&self.node_id)
            .ok_or_else(|| NodeError::InvalidConfig {
                field: "members",
                reason: format!("node {} is not in the member list", self.node_id),
            })
    }

    /// The entry of member `id`.
    pub fn member(&self, id: &str) -> Option<&MemberAddr> {
        self.members.iter().find(|m| m.node_id == id)
    }

    /// Checks the configuration (the election's rules, the quorum against the member count).
    pub fn validate(&self) -> Result<(), NodeError> {
        self.me()?;
        self.election_config().validate()?;
        Quorum::from_setting(self.quorum)
            .and_then(|q| q.validate(self.members.len()).map(|_| q))
            .map_err(|e| NodeError::InvalidConfig {
                field: "quorum",
                reason: e.to_string(),
            })?;
        if self.commit_timeout_ms == 0 {
            return Err(NodeError::InvalidConfig {
                field: "commit_timeout_ms",
                reason: "must be greater than 0".into(),
            });
        }
        Ok(())
    }

    /// The static base configuration (generation 0): the `members` with their addresses,
    /// voters unless listed in `learners`, incarnations unknown. In effect until the log
    /// holds a configuration record (spec/membership.md).
    pub fn base_configuration(&self) -> walship_wal::control::Configuration {
        crate::membership::base_configuration(self.members.iter().map(|m| {
            walship_wal::control::ConfigMember {
                id: m.node_id.clone(),
                incarnation: 0,
                voter: !self.learners.contains(&m.node_id),
                addr: m.addr.to_string(),
                http_addr: m.http_addr.map(|a| a.to_string()),
            }
        }))
    }

    /// The election core's configuration (its voters are then set from the newest
    /// configuration in the log, [`crate::election::ElectionCore::set_membership`]).
    pub fn election_config(&self) -> ElectionConfig {
        ElectionConfig {
            node_id: self.node_id.clone(),
            voters: self.member_ids(),
            quorum_setting: self.quorum,
            election_timeout_ms: self.election_timeout_ms,
            lease_ms: self.lease_ms,
        }
    }

    /// crc32c of the settings every member must share: cluster id, each member's id and
    /// address (in order), the quorum setting, the election timeout and the lease.
    pub fn digest(&self) -> u32 {
        // The member list is not in it: membership is data in the log
        // (spec/membership.md), and a member added later lists itself in its node.toml.
        let s = format!(
            "cluster={};quorum={};election_timeout_ms={};lease_ms={}",
            self.cluster_id, self.quorum, self.election_timeout_ms, self.lease_ms
        );
        crc32c::crc32c(s.as_bytes())
    }

    /// The primary role's configuration for epoch `epoch` (a new epoch this node won).
    pub fn primary_config(&self, epoch: u64) -> Result<PrimaryConfig, NodeError> {
        let me = self.me()?;
        let mut p = PrimaryConfig::new(
            self.node_id.clone(),
            self.cluster_id.clone(),
            self.data_dir.clone(),
            me.addr,
            self.member_ids(),
            self.tls.clone(),
        );
        p.quorum = Quorum::from_setting(self.quorum).map_err(|e| NodeError::InvalidConfig {
            field: "quorum",
            reason: e.to_string(),
        })?;
        p.commit_timeout_ms = self.commit_timeout_ms;
        p.transport = self.transport;
        p.segment_size_bytes = self.wal.segment_size_bytes;
        p.max_record_bytes = self.wal.max_record_bytes;
        p.new_epoch = Some(epoch);
        p.base_config = Some(self.base_configuration());
        Ok(p)
    }

    /// The replica role's configuration: follow `primary` in epoch `epoch`.
    pub fn replica_config(&self, primary: &str, epoch: u64) -> Result<ReplicaConfig, NodeError> {
        let m = self
            .member(primary)
            .ok_or_else(|| NodeError::InvalidConfig {
                field: "members",
                reason: format!("primary {primary} is not a member"),
            })?;
        self.replica_config_at(primary, m.addr, epoch)
    }

    /// [`NodeConfig::replica_config`] for a primary at `addr` (from the newest
    /// configuration: it may not be in this node's `members`).
    pub fn replica_config_at(
        &self,
        primary: &str,
        addr: SocketAddr,
        epoch: u64,
    ) -> Result<ReplicaConfig, NodeError> {
        let mut r = ReplicaConfig::new(
            self.node_id.clone(),
            self.cluster_id.clone(),
            self.data_dir.clone(),
            addr,
            primary.to_owned(),
            self.tls.clone(),
        );
        r.bind_addr = client_bind_addr(self.me()?.addr, addr, r.bind_addr);
        r.transport = self.transport;
        r.wal = self.wal;
        r.backoff_initial_ms = 50;
        r.backoff_max_ms = self.election_timeout_ms.clamp(100, 2000);
        r.min_primary_epoch = epoch;
        Ok(r)
    }
}

/// The local address a replica role's client endpoint binds to follow `primary`: this
/// member's own IP (any port), so that all of a member's traffic leaves from the address
/// the other members know it by (per-member firewall rules see one address per member);
/// with a wildcard own address (or one of the other IP family), 127.0.0.1 towards a
/// loopback primary, else `default`.
fn client_bind_addr(me: SocketAddr, primary: SocketAddr, default: SocketAddr) -> SocketAddr {
    if !me.ip().is_unspecified() && me.is_ipv4() == primary.is_ipv4() {
        SocketAddr::new(me.ip(), 0)
    } else if primary.ip().is_loopback() {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(me: &str, addrs: &[(&str, &str)]) -> NodeConfig {
        let members = addrs
            .iter()
            .map(|(id, addr)| MemberAddr {
                node_id: (*id).into(),
                addr: addr.parse().expect("addr"),
                http_addr: None,
            })
            .collect();
        let tls = TlsFiles {
            ca: "ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        };
        NodeConfig::new(me, "c", "data", members, tls)
    }

    #[test]
    fn a_following_member_connects_from_its_own_address() {
        let members = [
            ("m1", "127.0.0.1:7001"),
            ("m2", "127.0.0.2:7002"),
            ("m3", "0.0.0.0:7003"),
            ("m4", "10.1.2.4:7004"),
        ];
        let bind = |me: &str, primary: &str| {
            config(me, &members)
                .replica_config(primary, 1)
                .expect("replica config")
                .bind_addr
        };
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        // Its own loopback address, not 127.0.0.1, whoever it follows.
        assert_eq!(bind("m2", "m1"), addr("127.0.0.2:0"));
        assert_eq!(bind("m1", "m2"), addr("127.0.0.1:0"));
        assert_eq!(bind("m4", "m1"), addr("10.1.2.4:0"));
        // A wildcard own address: 127.0.0.1 towards a loopback primary, else the wildcard.
        assert_eq!(bind("m3", "m1"), addr("127.0.0.1:0"));
        assert_eq!(bind("m3", "m4"), addr("0.0.0.0:0"));
    }
}
