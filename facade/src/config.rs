//! `node.toml`: the configuration of one walship node.
//!
//! The file is untrusted input: it is bounded in size before it is read,
//! unknown keys are rejected, and every cross-field rule (a primary lists
//! itself among the members, a quorum the membership can satisfy, ...) is
//! checked before anything is opened, with an error that names the field.
//! Relative paths are resolved against the directory holding the file, so a
//! config directory can be moved as a whole.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest config file we read; anything bigger is certainly not a node config.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// What went wrong loading a config; each names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config {path} is {len} bytes, above the {max}-byte limit")]
    TooLarge {
        /// The config file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The TOML did not parse or has unknown/missing keys.
    #[error("config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message (it names line, column and key).
        message: String,
    },
    /// A field is present but its value is not acceptable.
    #[error("config {path}: field `{field}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts appends and ships them.
    Primary,
    /// Receives, verifies and applies.
    Replica,
    /// A cluster member: leads or follows as elected (`walship_node::Node`).
    Member,
}

/// One `[[member]]` table of a member's config: every member of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: String,
    addr: String,
    http_addr: Option<String>,
    #[serde(default)]
    learner: bool,
}

/// A cluster member as every member's config lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// The member's node id.
    pub id: String,
    /// Its QUIC address (replication and elections).
    pub addr: SocketAddr,
    /// Its HTTP endpoint, if any.
    pub http_addr: Option<SocketAddr>,
    /// `learner = true`: it joins as a learner (spec/membership.md): a member added to a
    /// running cluster lists itself so; the cluster's log then decides.
    pub learner: bool,
}

/// TLS material: the cluster CA and this node's certificate and key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate, signed by the CA, naming `node_id`.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// QUIC transport timing.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSection {
    /// Keep-alive interval; must be well below the idle timeout.
    pub keep_alive_ms: u64,
    /// A peer silent this long is considered gone (the session ends; not a halt).
    pub idle_timeout_ms: u64,
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            keep_alive_ms: 1_000,
            idle_timeout_ms: 5_000,
        }
    }
}

/// WAL sizing.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalSection {
    /// A segment is sealed and a new one started past this size.
    pub segment_size_bytes: u64,
    /// Largest payload accepted by `append`; larger lengths on disk are corruption.
    pub max_record_bytes: u32,
}

impl Default for WalSection {
    fn default() -> Self {
        WalSection {
            segment_size_bytes: 64 * 1024 * 1024,
            max_record_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The on-disk shape of `node.toml`, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: String,
    cluster_id: String,
    role: Role,
    data_dir: PathBuf,
    listen_addr: Option<String>,
    primary_addr: Option<String>,
    primary_name: Option<String>,
    primary_http: Option<String>,
    http_addr: Option<String>,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    member: Vec<RawMember>,
    election_timeout_ms: Option<u64>,
    lease_ms: Option<u64>,
    deregistration_timeout_ms: Option<u64>,
    auto_promote_learners: Option<bool>,
    #[serde(default = "default_quorum")]
    quorum: i64,
    #[serde(default = "default_commit_timeout_ms")]
    commit_timeout_ms: u64,
    tls: TlsPaths,
    #[serde(default)]
    transport: TransportSection,
    #[serde(default)]
    wal: WalSection,
}

fn default_quorum() -> i64 {
    -1
}

fn default_commit_timeout_ms() -> u64 {
    10_000
}

/// Role-specific settings, validated.
#[derive(Debug, Clone)]
pub enum RoleConfig {
    /// A primary: where it listens, who may connect, and how commits are counted.
    Primary {
        /// UDP address the QUIC server binds.
        listen_addr: SocketAddr,
        /// Every cluster member's node id, the primary's own included.
        members: Vec<String>,
        /// Quorum policy as written: 0 local only, -1 majority, k exactly k receipts.
        quorum: i64,
        /// How long `append` waits for the quorum before `CommitTimeout`.
        commit_timeout_ms: u64,
    },
    /// A cluster member (`role = "member"`): elected to lead or follow.
    Member {
        /// Every member (`[[member]]` tables), this node included.
        members: Vec<MemberEntry>,
        /// Quorum policy: 0 local only (no automatic failover), -1 majority, k receipts.
        quorum: i64,
        /// How long an append waits for its quorum.
        commit_timeout_ms: u64,
        /// Minimum election timeout (each drawn from `[t, 2t)`).
        election_timeout_ms: u64,
        /// A primary that heard from fewer than an election quorum for this long steps down.
        lease_ms: u64,
        /// The primary removes a member silent this long (0: never; seed 000's
        /// `elector.deregistration_timeout`).
        deregistration_timeout_ms: u64,
        /// The primary makes a caught-up learner a voter by itself.
        auto_promote_learners: bool,
    },
    /// A replica: which primary it follows.
    Replica {
        /// The primary's UDP address.
        primary_addr: SocketAddr,
        /// The name the primary's certificate must carry.
        primary_name: String,
        /// Where the primary's HTTP endpoint listens, if it has one: `/status` and a refused
        /// `POST /append` point clients there.
        primary_http: Option<SocketAddr>,
    },
}

/// A validated node configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id; its certificate must name it.
    pub node_id: String,
    /// Cluster id; a replica and a primary of different clusters refuse each other.
    pub cluster_id: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Role-specific settings.
    pub role: RoleConfig,
    /// Where the node's HTTP endpoint listens (TCP); `None`: no endpoint.
    pub http_addr: Option<SocketAddr>,
    /// TLS material, absolute paths.
    pub tls: TlsPaths,
    /// QUIC timing.
    pub transport: TransportSection,
    /// WAL sizing.
    pub wal: WalSection,
}

impl NodeConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                len,
                max: MAX_CONFIG_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base)
    }

    /// Parses and validates config text; `path` is only used in messages and
    /// `base` anchors relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<NodeConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        check_name(&raw.node_id).map_err(|m| invalid("node_id", m))?;
        check_name(&raw.cluster_id).map_err(|m| invalid("cluster_id", m))?;
        if raw.transport.idle_timeout_ms == 0 || raw.transport.keep_alive_ms == 0 {
            return Err(invalid(
                "transport",
                "keep_alive_ms and idle_timeout_ms must be positive".into(),
            ));
        }
        if raw.transport.keep_alive_ms >= raw.transport.idle_timeout_ms {
            return Err(invalid(
                "transport.keep_alive_ms",
                format!(
                    "{} ms is not below idle_timeout_ms ({} ms): a live peer would time out",
                    raw.transport.keep_alive_ms, raw.transport.idle_timeout_ms
                ),
            ));
        }
        if raw.wal.max_record_bytes == 0 || raw.wal.segment_size_bytes < 4096 {
            return Err(invalid(
                "wal",
                "max_record_bytes must be positive and segment_size_bytes at least 4096".into(),
            ));
        }
        let addr =
            |field: &'static str, value: Option<String>| -> Result<SocketAddr, ConfigError> {
                let value = value.ok_or_else(|| invalid(field, "required for this role".into()))?;
                value.parse().map_err(|e| {
                    invalid(field, format!("`{value}` is not an ip:port address: {e}"))
                })
            };
        let mut http_addr = raw
            .http_addr
            .map(|a| addr("http_addr", Some(a)))
            .transpose()?;
        if raw.role != Role::Member
            && (!raw.member.is_empty()
                || raw.election_timeout_ms.is_some()
                || raw.lease_ms.is_some()
                || raw.deregistration_timeout_ms.is_some()
                || raw.auto_promote_learners.is_some())
        {
            return Err(invalid(
                "member",
                "[[member]], election_timeout_ms, lease_ms, deregistration_timeout_ms and auto_promote_learners belong to role = \"member\"".into(),
            ));
        }
        let role = match raw.role {
            Role::Member => {
                if raw.listen_addr.is_some()
                    || raw.primary_addr.is_some()
                    || raw.primary_name.is_some()
                    || raw.primary_http.is_some()
                    || !raw.members.is_empty()
                {
                    return Err(invalid(
                        "role",
                        "a member lists every member in [[member]] tables; remove listen_addr, primary_*, members".into(),
                    ));
                }
                let mut members: Vec<MemberEntry> = Vec::new();
                for m in raw.member {
                    check_name(&m.id).map_err(|e| invalid("member.id", e))?;
                    let entry = MemberEntry {
                        addr: addr("member.addr", Some(m.addr))?,
                        http_addr: m
                            .http_addr
                            .map(|a| addr("member.http_addr", Some(a)))
                            .transpose()?,
                        learner: m.learner,
                        id: m.id,
                    };
                    if members.iter().any(|o| o.id == entry.id) {
                        return Err(invalid(
                            "member.id",
                            format!("`{}` is listed twice", entry.id),
                        ));
                    }
                    if members.iter().any(|o| o.addr == entry.addr) {
                        return Err(invalid(
                            "member.addr",
                            format!("{} is listed for two members", entry.addr),
                        ));
                    }
                    members.push(entry);
                }
                let Some(me) = members.iter().find(|m| m.id == raw.node_id) else {
                    return Err(invalid(
                        "member",
                        format!("must include this node's own id `{}`", raw.node_id),
                    ));
                };
                if let (Some(mine), Some(listed)) = (http_addr, me.http_addr) {
                    if mine != listed {
                        return Err(invalid(
                            "http_addr",
                            format!(
                                "{mine} differs from this node's [[member]] http_addr {listed}"
                            ),
                        ));
                    }
                }
                let replicas = members.len() as i64 - 1;
                if raw.quorum < -1 || raw.quorum > replicas {
                    return Err(invalid(
                        "quorum",
                        format!(
                            "{} is not 0 (local only), -1 (majority) or 1..={replicas} receipts",
                            raw.quorum
                        ),
                    ));
                }
                let election_timeout_ms = raw.election_timeout_ms.unwrap_or(1000);
                let lease_ms = raw.lease_ms.unwrap_or(election_timeout_ms);
                if election_timeout_ms == 0 || lease_ms == 0 || raw.commit_timeout_ms == 0 {
                    return Err(invalid(
                        "election_timeout_ms",
                        "election_timeout_ms, lease_ms and commit_timeout_ms must be positive"
                            .into(),
                    ));
                }
                RoleConfig::Member {
                    members,
                    quorum: raw.quorum,
                    commit_timeout_ms: raw.commit_timeout_ms,
                    election_timeout_ms,
                    lease_ms,
                    deregistration_timeout_ms: raw.deregistration_timeout_ms.unwrap_or(0),
                    auto_promote_learners: raw.auto_promote_learners.unwrap_or(false),
                }
            }
            Role::Primary => {
                if raw.primary_http.is_some() {
                    return Err(invalid(
                        "primary_http",
                        "a primary's own endpoint is http_addr; remove primary_http".into(),
                    ));
                }
                if raw.primary_addr.is_some() || raw.primary_name.is_some() {
                    return Err(invalid(
                        "primary_addr",
                        "a primary does not follow another primary; remove primary_addr/primary_name"
                            .into(),
                    ));
                }
                let listen_addr = addr("listen_addr", raw.listen_addr)?;
                if raw.members.is_empty() {
                    return Err(invalid("members", "a primary needs its member list".into()));
                }
                for m in &raw.members {
                    check_name(m).map_err(|e| invalid("members", e))?;
                }
                let mut sorted = raw.members.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != raw.members.len() {
                    return Err(invalid("members", "a member is listed twice".into()));
                }
                if !raw.members.contains(&raw.node_id) {
                    return Err(invalid(
                        "members",
                        format!("must include this node's own id `{}`", raw.node_id),
                    ));
                }
                let replicas = raw.members.len() as i64 - 1;
                if raw.quorum < -1 || raw.quorum > replicas {
                    return Err(invalid(
                        "quorum",
                        format!(
                            "{} is not 0 (local only), -1 (majority) or 1..={replicas} receipts",
                            raw.quorum
                        ),
                    ));
                }
                if raw.commit_timeout_ms == 0 {
                    return Err(invalid("commit_timeout_ms", "must be positive".into()));
                }
                RoleConfig::Primary {
                    listen_addr,
                    members: raw.members,
                    quorum: raw.quorum,
                    commit_timeout_ms: raw.commit_timeout_ms,
                }
            }
            Role::Replica => {
                if raw.listen_addr.is_some() || !raw.members.is_empty() {
                    return Err(invalid(
                        "listen_addr",
                        "a replica does not serve; remove listen_addr/members".into(),
                    ));
                }
                let primary_addr = addr("primary_addr", raw.primary_addr)?;
                let primary_name = raw
                    .primary_name
                    .ok_or_else(|| invalid("primary_name", "required for a replica".into()))?;
                check_name(&primary_name).map_err(|e| invalid("primary_name", e))?;
                let primary_http = raw
                    .primary_http
                    .map(|a| addr("primary_http", Some(a)))
                    .transpose()?;
                RoleConfig::Replica {
                    primary_addr,
                    primary_name,
                    primary_http,
                }
            }
        };
        if let RoleConfig::Member { members, .. } = &role {
            // A member's own endpoint may be given once, in its [[member]] table.
            if http_addr.is_none() {
                http_addr = members
                    .iter()
                    .find(|m| m.id == raw.node_id)
                    .and_then(|m| m.http_addr);
            }
        }
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        Ok(NodeConfig {
            node_id: raw.node_id,
            cluster_id: raw.cluster_id,
            data_dir: abs(raw.data_dir),
            role,
            http_addr,
            tls: TlsPaths {
                ca: abs(raw.tls.ca),
                cert: abs(raw.tls.cert),
                key: abs(raw.tls.key),
            },
            transport: raw.transport,
            wal: raw.wal,
        })
    }
}

/// Node and cluster ids double as certificate DNS names: keep them to a safe alphabet.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = r#"
node_id = "n1"
cluster_id = "demo"
role = "primary"
data_dir = "data/n1"
listen_addr = "127.0.0.1:7001"
members = ["n1", "n2", "n3"]
[tls]
ca = "certs/ca.pem"
cert = "certs/n1.pem"
key = "certs/n1.key"
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("node.toml"), Path::new("/etc/walship"))
    }

    #[test]
    fn primary_config_parses_with_defaults_and_absolute_paths() {
        let c = parse(PRIMARY).expect("valid config");
        assert_eq!(c.data_dir, PathBuf::from("/etc/walship/data/n1"));
        assert_eq!(c.tls.key, PathBuf::from("/etc/walship/certs/n1.key"));
        match c.role {
            RoleConfig::Primary {
                quorum,
                ref members,
                ..
            } => {
                assert_eq!(quorum, -1);
                assert_eq!(members.len(), 3);
            }
            _ => panic!("not parsed as a primary"),
        }
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = parse(&format!("bogus_key = 1\n{PRIMARY}")).unwrap_err();
        assert!(err.to_string().contains("bogus_key"), "{err}");
    }

    #[test]
    fn quorum_above_replica_count_is_rejected() {
        let err = parse(&PRIMARY.replace("role = \"primary\"", "role = \"primary\"\nquorum = 3"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "quorum",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn primary_must_be_a_member() {
        let err =
            parse(&PRIMARY.replace("[\"n1\", \"n2\", \"n3\"]", "[\"n2\", \"n3\"]")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "members",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn replica_needs_primary_addr() {
        let text = r#"
node_id = "n2"
cluster_id = "demo"
role = "replica"
data_dir = "/d"
primary_name = "n1"
[tls]
ca = "a"
cert = "b"
key = "c"
"#;
        let err = parse(text).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "primary_addr",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_address_and_bad_name_are_named() {
        let err = parse(&PRIMARY.replace("127.0.0.1:7001", "localhost")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "listen_addr",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(&PRIMARY.replace("node_id = \"n1\"", "node_id = \"N 1\"")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "node_id",
                    ..
                }
            ),
            "{err}"
        );
    }

    const REPLICA: &str = r#"
node_id = "n2"
cluster_id = "demo"
role = "replica"
data_dir = "/d"
primary_addr = "127.0.0.1:7001"
primary_name = "n1"
[tls]
ca = "a"
cert = "b"
key = "c"
"#;

    /// Inserts top-level `line` before the `[tls]` table.
    fn with(text: &str, line: &str) -> String {
        text.replace("[tls]", &format!("{line}\n[tls]"))
    }

    #[test]
    fn http_addr_is_optional_and_parsed_on_both_roles() {
        assert_eq!(parse(PRIMARY).expect("valid").http_addr, None);
        let c = parse(&with(PRIMARY, "http_addr = \"127.0.0.1:8081\"")).expect("valid");
        assert_eq!(c.http_addr, Some("127.0.0.1:8081".parse().expect("addr")));
        let c = parse(&with(
            REPLICA,
            "http_addr = \"[::1]:8082\"\nprimary_http = \"127.0.0.1:8081\"",
        ))
        .expect("valid");
        assert_eq!(c.http_addr, Some("[::1]:8082".parse().expect("addr")));
        match c.role {
            RoleConfig::Replica { primary_http, .. } => {
                assert_eq!(primary_http, Some("127.0.0.1:8081".parse().expect("addr")))
            }
            _ => panic!("not parsed as a replica"),
        }
    }

    #[test]
    fn bad_http_addr_is_refused_naming_the_field_and_the_value() {
        for bad in ["localhost:8080", "127.0.0.1", "http://127.0.0.1:8080", ""] {
            let err = parse(&with(PRIMARY, &format!("http_addr = \"{bad}\""))).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        field: "http_addr",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("`{bad}` is not an ip:port address")),
                "{err}"
            );
        }
        let err = parse(&with(PRIMARY, "http_addr = 8080")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("http_addr"), "{err}");
    }

    #[test]
    fn primary_http_is_refused_on_a_primary_and_checked_on_a_replica() {
        let err = parse(&with(PRIMARY, "primary_http = \"127.0.0.1:8081\"")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "primary_http",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(&with(REPLICA, "primary_http = \"n1:8081\"")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "primary_http",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn keep_alive_must_be_below_idle_timeout() {
        let text = format!("{PRIMARY}[transport]\nkeep_alive_ms = 5000\nidle_timeout_ms = 5000\n");
        let err = parse(&text).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "transport.keep_alive_ms",
                    ..
                }
            ),
            "{err}"
        );
    }

    const MEMBER: &str = r#"
node_id = "n2"
cluster_id = "demo"
role = "member"
data_dir = "data/n2"
quorum = 1
election_timeout_ms = 500
[[member]]
id = "n1"
addr = "127.0.0.1:7001"
http_addr = "127.0.0.1:8001"
[[member]]
id = "n2"
addr = "127.0.0.1:7002"
http_addr = "127.0.0.1:8002"
[[member]]
id = "n3"
addr = "127.0.0.1:7003"
[tls]
ca = "certs/ca.pem"
cert = "certs/n2.pem"
key = "certs/n2.key"
"#;

    #[test]
    fn member_config_lists_every_member_and_takes_its_http_addr_from_its_own_table() {
        let c = parse(MEMBER).expect("valid member config");
        assert_eq!(c.http_addr, Some("127.0.0.1:8002".parse().expect("addr")));
        match c.role {
            RoleConfig::Member {
                ref members,
                quorum,
                election_timeout_ms,
                lease_ms,
                ..
            } => {
                assert_eq!(members.len(), 3);
                assert_eq!(members[2].http_addr, None);
                assert_eq!((quorum, election_timeout_ms, lease_ms), (1, 500, 500));
            }
            _ => panic!("not parsed as a member"),
        }
    }

    #[test]
    fn member_config_errors_name_the_field() {
        let field = |text: &str| match parse(text) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert_eq!(
            field(&MEMBER.replace("\nid = \"n2\"", "\nid = \"n9\"")),
            "member"
        );
        assert_eq!(
            field(&MEMBER.replace("\nid = \"n3\"", "\nid = \"n1\"")),
            "member.id"
        );
        assert_eq!(
            field(&MEMBER.replace("127.0.0.1:7003", "127.0.0.1:7001")),
            "member.addr"
        );
        assert_eq!(field(&MEMBER.replace("quorum = 1", "quorum = 3")), "quorum");
        assert_eq!(
            field(&MEMBER.replace(
                "role = \"member\"",
                "role = \"member\"\nlisten_addr = \"127.0.0.1:1\""
            )),
            "role"
        );
        assert_eq!(
            field(&MEMBER.replace(
                "role = \"member\"",
                "role = \"member\"\nhttp_addr = \"127.0.0.1:9\""
            )),
            "http_addr"
        );
        assert_eq!(
            field(&PRIMARY.replace("members = ", "lease_ms = 5\nmembers = ")),
            "member"
        );
    }
}
