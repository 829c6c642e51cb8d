//! `walship-recover promote`: forced recovery of a lone surviving member, offline
//! (spec/recovery-tool.md §12, spec/membership.md §3 "Forced configurations").
//! Directories are built with the WAL's and the node's own writers; the result is
//! read back with `dump`/`verify`, the WAL's open and the node's election core.

mod common;

use std::path::{Path, PathBuf};

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;

use common::{paths, recover, recover_json, s, Node, SMALL_SEGMENT_BYTES};
use walship_node::cluster::identity::{load_or_create, Identity, IDENTITY_FILE};
use walship_node::cluster::plan::RestartRule;
use walship_node::election::{
    Action, ElectionConfig, ElectionCore, LogPosition, PersistedVote, StartState, VoteFile,
};
use walship_replica::halt::HaltReason;
use walship_wal::control::{ConfigMember, Configuration, ControlRecord};
use walship_wal::state::{read_acked_lsn, read_state_json, write_acked_lsn, DirLock};
use walship_wal::{FsStorage, Position, Wal, WalOptions};

const INC_N1: u64 = 0x1111;
const INC_N2: u64 = 0x2222;

fn member(id: &str, incarnation: u64) -> ConfigMember {
    let i = &id[1..];
    ConfigMember {
        id: id.to_string(),
        incarnation,
        voter: true,
        addr: format!("127.0.0.1:700{i}"),
        http_addr: Some(format!("127.0.0.1:800{i}")),
    }
}

fn wal_opts(epoch: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes: SMALL_SEGMENT_BYTES,
        epoch,
        ..WalOptions::default()
    }
}

/// n3's directory in a formed cluster `{n1, n2, n3}`: epoch 1 (primary n1) with the
/// first configuration record at lsn 2 (unless `with_config` is false) and data to lsn 5,
/// epoch 2 (primary n2) from lsn 6 to lsn 8. Commit watermark 5, acknowledged mark 8,
/// vote epoch 2 for n2, epoch history [(1,1),(2,6)], state/identity when `identity`.
fn survivor(with_config: bool, identity: bool) -> (Node, Option<u64>) {
    let n = Node::new();
    let inc = identity.then(|| {
        load_or_create(&FsStorage, &n.root, &n.state_dir(), "c1", "n3")
            .expect("identity")
            .identity
            .incarnation
    });
    let (mut wal, _) = Wal::open(FsStorage, &n.wal_dir(), wal_opts(1)).expect("wal");
    wal.append_control(&ControlRecord::EpochStart {
        epoch: 1,
        primary: "n1".into(),
    })
    .expect("epoch start 1");
    if with_config {
        wal.append_control(&ControlRecord::Configuration {
            epoch: 1,
            config: Configuration {
                generation: 1,
                forced: false,
                members: vec![
                    member("n1", INC_N1),
                    member("n2", INC_N2),
                    member("n3", inc.unwrap_or(0x3333)),
                ],
            },
        })
        .expect("configuration");
    }
    while wal.last().lsn < 5 {
        wal.append(format!("a-{}", wal.last().lsn + 1).as_bytes())
            .expect("append");
    }
    wal.set_epoch(2);
    wal.append_control(&ControlRecord::EpochStart {
        epoch: 2,
        primary: "n2".into(),
    })
    .expect("epoch start 2");
    wal.append(b"b-7").expect("append");
    wal.append(b"b-8").expect("append");
    wal.sync().expect("sync");
    assert_eq!(wal.last().lsn, 8);
    drop(wal);
    n.set_epochs(&[(1, 1), (2, 6)]);
    n.set_commit(5);
    write_acked_lsn(&FsStorage, &n.state_dir(), 8).expect("acked");
    VoteFile::new(FsStorage, &n.state_dir())
        .persist(&PersistedVote {
            epoch: 2,
            voted_for: Some("n2".into()),
        })
        .expect("vote");
    (n, inc)
}

/// node.toml of n3 in `{n1, n2, n3}` (TLS files are named, never read here).
fn node_toml(n: &Node) -> PathBuf {
    let path = n.tmp.path().join("n3.toml");
    let mut t = format!(
        "node_id = \"n3\"\ncluster_id = \"c1\"\nrole = \"member\"\ndata_dir = \"{}\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"n3.pem\"\nkey = \"n3.key\"\n",
        n.root.display()
    );
    for i in 1..=3 {
        t.push_str(&format!(
            "\n[[member]]\nid = \"n{i}\"\naddr = \"127.0.0.1:700{i}\"\nhttp_addr = \"127.0.0.1:800{i}\"\n"
        ));
    }
    std::fs::write(&path, t).expect("write node.toml");
    path
}

/// The control records of `dir` as `dump --json` shows them: (lsn, epoch, control).
fn controls(dir: &Path) -> Vec<(u64, u64, serde_json::Value)> {
    let (code, v, err) = recover_json(&["dump", s(dir)]);
    assert_eq!(code, 0, "dump: {err}");
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| !r["control"].is_null())
        .map(|r| {
            (
                r["lsn"].as_u64().expect("lsn"),
                r["epoch"].as_u64().expect("epoch"),
                r["control"].clone(),
            )
        })
        .collect()
}

fn vote(n: &Node) -> PersistedVote {
    VoteFile::new(FsStorage, &n.state_dir())
        .load()
        .expect("vote file")
}

fn ids(members: &serde_json::Value) -> Vec<(String, bool)> {
    members
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_string(),
                m["voter"].as_bool().expect("voter"),
            )
        })
        .collect()
}

/// The node's election core on the promoted directory, built as the node builds it at
/// open (vote file, recovered log head, restart rule), counting votes among the forced
/// configuration's voters (rule 1): it wins the next epoch on its first tick, alone.
fn elect_on(n: &Node, voters: Vec<String>) -> u64 {
    let (wal, _) = Wal::open(FsStorage, &n.wal_dir(), wal_opts(1)).expect("the WAL reopens");
    let last = wal.last();
    drop(wal);
    let rule = RestartRule {
        log_end: last.lsn,
        commit_lsn: n.node_dir().commit_lsn().expect("commit"),
        acked_lsn: read_acked_lsn(&FsStorage, &n.state_dir()).expect("acked"),
    };
    assert!(
        rule.eligible_at_start(),
        "the promoted node is eligible: {rule:?}"
    );
    let start = StartState {
        vote: vote(n),
        log_head: LogPosition::new(last.epoch, last.lsn),
        eligible: true,
    };
    let config = ElectionConfig {
        node_id: "n3".into(),
        voters,
        quorum_setting: -1,
        election_timeout_ms: 1000,
        lease_ms: 1000,
    };
    let mut core = ElectionCore::new(config, start, 0, 7).expect("core");
    assert_eq!(
        core.epoch(),
        last.epoch,
        "the core starts in the vote's epoch"
    );
    let at = core.next_tick_ms().expect("a follower has a deadline");
    let actions = core.tick(at);
    actions
        .iter()
        .find_map(|a| match a {
            Action::BecomePrimary { epoch } => Some(*epoch),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no BecomePrimary on the first tick: {actions:?}"))
}

#[test]
fn promote_without_accept_data_loss_states_the_loss_and_changes_nothing() {
    let (n, _) = survivor(true, true);
    let before = n.snapshot_files();
    let out = recover(&["promote", s(&n.root)]).output().expect("run");
    assert_eq!(out.status.code(), Some(6), "refused without the flag");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "WHAT MAY BE LOST",
        "this node's log ends at lsn 8 (epoch 2)",
        "any record that n1, n2 acknowledged above lsn 8 is lost",
        "commit watermark known here: lsn 5",
        "lsn 6..=8 (3 records) were not known committed here; they become committed with epoch 3",
        "FORCED configuration: generation 2, epoch 3",
        "REFUSED",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept-data-loss"));
    let (code, v, _) = recover_json(&["promote", s(&n.root)]);
    assert_eq!(code, 6);
    assert_eq!(v["command"], "promote");
    assert_eq!(v["performed"], false);
    assert_eq!(v["epoch"], 3);
    assert_eq!(v["loss"]["durable_lsn"], 8);
    assert_eq!(v["loss"]["durable_epoch"], 2);
    assert_eq!(v["loss"]["commit_lsn"], 5);
    assert_eq!(v["loss"]["uncommitted_kept"], 3);
    assert_eq!(v["loss"]["committed_missing"], 0);
    assert_eq!(v["loss"]["removed_voters"], serde_json::json!(["n1", "n2"]));
    assert_eq!(v["old_configuration"]["lsn"], 2);
    assert!(v["audit_log"].is_null());
    assert_eq!(
        n.snapshot_files(),
        before,
        "a refused promote changes no byte"
    );
}

#[test]
fn promote_with_an_uncommitted_tail_writes_epoch_start_and_forced_configuration() {
    let (n, inc) = survivor(true, true);
    let inc = inc.expect("identity");
    // The vote is ahead of the log: the new epoch is above both.
    VoteFile::new(FsStorage, &n.state_dir())
        .persist(&PersistedVote {
            epoch: 4,
            voted_for: Some("n1".into()),
        })
        .expect("vote");
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["performed"], true);
    assert_eq!(v["epoch"], 5, "max(vote 4, log head 2, history 2) + 1");
    assert_eq!(v["epoch_start"]["lsn"], 9);
    assert_eq!(v["after"]["lsn"], 10);
    assert_eq!(v["after"]["epoch"], 5);
    assert_eq!(
        v["commit_lsn_after"], 5,
        "an uncommitted tail leaves the watermark"
    );
    assert_eq!(v["acked_lsn_after"], 10);
    assert_eq!(v["verify"]["wal"]["state"]["state"], "clean");

    let c = controls(&n.root);
    assert_eq!(c.len(), 5, "{c:?}");
    let (lsn, epoch, start) = &c[3];
    assert_eq!((*lsn, *epoch), (9, 5));
    assert_eq!(start["kind"], "epoch-start");
    assert_eq!(start["primary"], "n3");
    let (lsn, epoch, cfg) = &c[4];
    assert_eq!((*lsn, *epoch), (10, 5));
    assert_eq!(cfg["kind"], "configuration");
    assert_eq!(cfg["forced"], true);
    assert_eq!(cfg["generation"], 2);
    assert_eq!(ids(&cfg["members"]), vec![("n3".to_string(), true)]);
    assert_eq!(cfg["members"][0]["incarnation"], inc);
    assert_eq!(cfg["members"][0]["addr"], "127.0.0.1:7003");
    assert_eq!(c[1].2["forced"], false, "the old record reads as unforced");

    let text = recover(&["dump", s(&n.root), "--from", "10"])
        .output()
        .expect("dump");
    assert!(String::from_utf8_lossy(&text.stdout).contains("generation=2 FORCED members=n3:voter"));

    assert_eq!(
        vote(&n),
        PersistedVote {
            epoch: 5,
            voted_for: Some("n3".into())
        }
    );
    let h = n.node_dir().epochs().expect("epochs");
    assert_eq!(h.last().map(|e| (e.epoch, e.start_lsn)), Some((5, 9)));
    assert_eq!(n.node_dir().commit_lsn().expect("commit"), 5);
    assert_eq!(
        read_acked_lsn(&FsStorage, &n.state_dir()).expect("acked"),
        10
    );

    let audit = std::fs::read_to_string(n.state_dir().join("audit.log")).expect("audit log");
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry"))
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "promote");
    assert_eq!(entries[0]["phase"], "intent");
    assert_eq!(entries[0]["details"]["old_configuration"]["generation"], 1);
    assert_eq!(entries[0]["details"]["new_configuration"]["generation"], 2);
    assert_eq!(entries[0]["details"]["loss"]["durable_lsn"], 8);
    assert!(entries[0]["details"]["may_lose"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    assert_eq!(entries[1]["phase"], "done");
    assert_eq!(entries[1]["details"]["after"]["lsn"], 10);
    assert_eq!(entries[1]["details"]["verify_ok"], true);

    let (code, _, err) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(elect_on(&n, vec!["n3".into()]), 6, "alone, it wins epoch 6");
}

#[test]
fn promote_without_a_configuration_record_takes_the_base_from_node_toml() {
    // No state/identity either: node.toml names the node, its identity is written now.
    let (n, _) = survivor(false, false);
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 2, "{v}");
    assert!(err.contains("--config"), "{err}");
    assert_eq!(n.snapshot_files(), before, "nothing changed");
    let toml = node_toml(&n);
    let (code, v, err) = recover_json(&[
        "promote",
        s(&n.root),
        "--accept-data-loss",
        "--voters",
        "n3,n1",
        "--config",
        s(&toml),
    ]);
    assert_eq!(code, 2, "other members' incarnations are unknown: {v}");
    assert!(err.contains("incarnation is unknown"), "{err}");
    assert_eq!(n.snapshot_files(), before, "nothing changed");

    let (code, v, err) = recover_json(&[
        "promote",
        s(&n.root),
        "--accept-data-loss",
        "--config",
        s(&toml),
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["old_configuration"]["generation"], 0);
    assert!(v["old_configuration"]["lsn"].is_null());
    assert_eq!(v["epoch"], 3);
    let identity: Identity = read_state_json(&FsStorage, &n.state_dir(), IDENTITY_FILE)
        .expect("identity")
        .expect("written by promote");
    assert_eq!(
        (identity.cluster_id.as_str(), identity.node_id.as_str()),
        ("c1", "n3")
    );
    assert_eq!(v["incarnation"], identity.incarnation);
    let c = controls(&n.root);
    let (lsn, _, cfg) = c.last().expect("records");
    assert_eq!(*lsn, 10);
    assert_eq!(cfg["generation"], 1, "generation 1 over the base");
    assert_eq!(cfg["forced"], true);
    assert_eq!(ids(&cfg["members"]), vec![("n3".to_string(), true)]);
    assert_eq!(cfg["members"][0]["incarnation"], identity.incarnation);
    assert_eq!(cfg["members"][0]["addr"], "127.0.0.1:7003");
    assert_eq!(cfg["members"][0]["http_addr"], "127.0.0.1:8003");
    let (code, _, err) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(elect_on(&n, vec!["n3".into()]), 4);
}

#[test]
fn promote_checks_voters_and_keeps_the_listed_members_entries() {
    let (n, inc) = survivor(true, true);
    let before = n.snapshot_files();
    for (voters, why) in [
        ("n3,n9", "not a member"),
        ("n1,n2", "must include n3"),
        ("n3,n3", "twice"),
    ] {
        let (code, v, err) = recover_json(&[
            "promote",
            s(&n.root),
            "--accept-data-loss",
            "--voters",
            voters,
        ]);
        assert_eq!(code, 2, "--voters {voters}: {v}");
        assert!(err.contains(why), "--voters {voters}: {err}");
        assert_eq!(v["error"]["kind"], "usage");
        assert_eq!(
            n.snapshot_files(),
            before,
            "--voters {voters} changed nothing"
        );
    }
    let (code, v, err) = recover_json(&[
        "promote",
        s(&n.root),
        "--accept-data-loss",
        "--voters",
        "n2,n3",
    ]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["loss"]["removed_voters"], serde_json::json!(["n1"]));
    let c = controls(&n.root);
    let cfg = &c.last().expect("records").2;
    assert_eq!(
        ids(&cfg["members"]),
        vec![("n2".to_string(), true), ("n3".to_string(), true)],
        "in the old configuration's order"
    );
    assert_eq!(
        cfg["members"][0]["incarnation"], INC_N2,
        "n2's entry as it was"
    );
    assert_eq!(cfg["members"][1]["incarnation"], inc.expect("identity"));
}

#[test]
fn promote_refuses_a_running_nodes_directory() {
    let (n, _) = survivor(true, true);
    let before = n.snapshot_files();
    let lock = DirLock::acquire(&n.root).expect("the node's lock");
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 5, "{v}");
    assert!(err.contains("node is running"), "{err}");
    drop(lock);
    assert_eq!(n.snapshot_files(), before, "nothing changed");
}

#[test]
fn promote_refuses_a_halted_directory() {
    let (n, _) = survivor(true, true);
    n.halt(HaltReason::Divergence, 7, 2);
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 6, "{v}");
    assert!(err.contains("clear-halt"), "{err}");
    assert_eq!(n.snapshot_files(), before, "nothing changed");
}

#[test]
fn promote_twice_gives_generation_plus_two_and_epoch_plus_two() {
    let (n, _) = survivor(true, true);
    let (code, first, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{err}");
    let (code, second, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first["epoch"], 3);
    assert_eq!(second["epoch"], 4);
    assert_eq!(first["new_configuration"]["generation"], 2);
    assert_eq!(second["new_configuration"]["generation"], 3);
    assert_eq!(second["old_configuration"]["lsn"], 10);
    assert_eq!(second["old_configuration"]["forced"], true);
    assert_eq!(
        second["loss"]["removed_voters"],
        serde_json::json!([]),
        "nobody left to remove"
    );
    assert_eq!(second["after"]["lsn"], 12);
    let c = controls(&n.root);
    let tail: Vec<(u64, u64, String, u64)> = c[c.len() - 4..]
        .iter()
        .map(|(l, e, x)| {
            (
                *l,
                *e,
                x["kind"].as_str().unwrap_or_default().to_string(),
                x["generation"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            (9, 3, "epoch-start".to_string(), 0),
            (10, 3, "configuration".to_string(), 2),
            (11, 4, "epoch-start".to_string(), 0),
            (12, 4, "configuration".to_string(), 3),
        ]
    );
    assert_eq!(vote(&n).epoch, 4);
    assert_eq!(elect_on(&n, vec!["n3".into()]), 5);
}

#[test]
fn promote_lowers_a_watermark_above_the_log_and_states_the_certain_loss() {
    let (n, _) = survivor(true, true);
    n.set_commit(11); // the disk lost lsn 9..=11 it had synced (FM-X.6)
    let (code, v, _) = recover_json(&["promote", s(&n.root)]);
    assert_eq!(code, 6);
    assert_eq!(v["loss"]["committed_missing"], 3);
    let lines = v["may_lose"].to_string();
    assert!(
        lines.contains("DATA LOSS FOR CERTAIN: lsn 9..=11 (3 records)"),
        "{lines}"
    );
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["commit_lsn_after"], 8);
    assert_eq!(n.node_dir().commit_lsn().expect("commit"), 8);
    let (code, _, err) = recover_json(&["verify", s(&n.root)]);
    assert_eq!(code, 0, "the node would start: {err}");
    // The WAL's own open agrees about the end.
    let (wal, _) = Wal::open(FsStorage, &n.wal_dir(), wal_opts(1)).expect("reopen");
    assert_eq!(
        wal.last(),
        Position {
            lsn: 10,
            epoch: 3,
            crc: wal.last().crc
        }
    );
}

#[test]
fn promote_cuts_a_torn_tail_and_starts_the_epoch_after_the_last_verified_record() {
    let (n, _) = survivor(true, true);
    let (_, v, _) = recover_json(&["inspect", s(&n.root)]);
    let seg = v["wal"]["segments"]
        .as_array()
        .and_then(|a| a.last())
        .expect("a segment")
        .clone();
    let path = n.wal_dir().join(seg["name"].as_str().expect("name"));
    let end = seg["valid_bytes"].as_u64().expect("valid_bytes");
    // An unsynced half-written header after the last record: a torn tail, not corruption.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open segment")
        .write_all_at(&[0xab; 20], end)
        .expect("write");
    let (code, v, _) = recover_json(&["promote", s(&n.root)]);
    assert_eq!(code, 6);
    assert_eq!(v["wal_state"]["state"], "torn-tail");
    assert_eq!(v["loss"]["durable_lsn"], 8);
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["epoch_start"]["lsn"], 9);
    assert_eq!(v["verify"]["wal"]["state"]["state"], "clean");
    assert_eq!(elect_on(&n, vec!["n3".into()]), 4);
}

#[test]
fn promote_json_field_paths_are_stable() {
    let (n, _) = survivor(true, true);
    let config_view = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = ["", ".lsn", ".epoch", ".generation", ".forced", ".members"]
            .iter()
            .map(|f| format!("{prefix}{f}"))
            .collect();
        v.extend(
            ["id", "incarnation", "voter", "addr", "http_addr"]
                .map(|f| format!("{prefix}.members[].{f}")),
        );
        v
    };
    let mut want: Vec<String> = [
        "schema_version",
        "command",
        "exit_code",
        "dir",
        "node_id",
        "incarnation",
        "before",
        "before.lsn",
        "before.epoch",
        "before.crc",
        "wal_state",
        "wal_state.state",
        "vote",
        "vote.epoch",
        "vote.voted_for",
        "epoch",
        "loss",
        "loss.durable_lsn",
        "loss.durable_epoch",
        "loss.commit_lsn",
        "loss.acked_lsn",
        "loss.committed_missing",
        "loss.uncommitted_kept",
        "loss.removed_voters",
        "loss.removed_members",
        "may_lose",
        "performed",
        "refused",
        "epoch_start",
        "after",
        "commit_lsn_after",
        "acked_lsn_after",
        "verify",
        "audit_log",
    ]
    .map(String::from)
    .to_vec();
    want.extend(config_view("old_configuration"));
    want.extend(config_view("new_configuration"));
    let (_, v, _) = recover_json(&["promote", s(&n.root)]);
    let mut got = BTreeSet::new();
    paths(&v, "", &mut got);
    assert_eq!(got, want.into_iter().collect::<BTreeSet<_>>());
}

/// Records what the node applies (it must be each lsn once, in order).
#[derive(Clone, Default)]
struct Applied(std::sync::Arc<std::sync::Mutex<u64>>);

impl walship_node::Applier for Applied {
    fn applied_lsn(&self) -> u64 {
        *self.0.lock().expect("lock")
    }
    fn apply(&mut self, lsn: u64, _payload: &[u8]) -> Result<(), walship_node::ApplyError> {
        let mut g = self.0.lock().expect("lock");
        if lsn != *g + 1 {
            return Err(format!("applied lsn {lsn} after {}", *g).into());
        }
        *g = lsn;
        Ok(())
    }
    fn apply_control(
        &mut self,
        lsn: u64,
        _control: &ControlRecord,
    ) -> Result<(), walship_node::ApplyError> {
        self.apply(lsn, &[])
    }
}

/// A real member (`walship_node::Node`) started on the promoted directory with its
/// unchanged node.toml member list `{n1, n2, n3}` (n1 and n2 are gone: nothing listens
/// on their addresses): it counts votes in the forced configuration of its log (rule 1)
/// and commits under it alone, so it elects itself in the epoch after the forced one and
/// commits an append. The wait is a liveness bound, not a timing assertion.
#[test]
fn a_node_started_on_the_promoted_directory_elects_itself_under_the_forced_configuration() {
    use std::time::{Duration, Instant};
    use walship_node::election::Role;
    use walship_node::{MemberAddr, Node, NodeConfig, NodeError};
    use walship_wire::TlsFiles;

    let (n, _) = survivor(true, true);
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["after"]["lsn"], 10);
    let certs = n.tmp.path().join("certs");
    walship_wire::generate(&certs, &["n1", "n2", "n3"]).expect("certs");
    let members = ["n1", "n2", "n3"]
        .map(|id| MemberAddr {
            node_id: id.into(),
            addr: std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|u| u.local_addr())
                .expect("a free UDP port"),
            http_addr: None,
        })
        .to_vec();
    let mut config = NodeConfig::new(
        "n3",
        "c1",
        &n.root,
        members,
        TlsFiles::for_node(&certs, "n3"),
    );
    config.election_timeout_ms = 200;
    config.lease_ms = 200;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let applied = Applied::default();
    let lsn = rt.block_on(async {
        let node = Node::open(config, applied.clone())
            .await
            .expect("node opens");
        let deadline = Instant::now() + Duration::from_secs(30);
        let lsn = loop {
            match node.append(b"after-promote".to_vec()).await {
                Ok(lsn) => break lsn,
                Err(e @ NodeError::NotPrimary { .. }) => {
                    assert!(Instant::now() < deadline, "never became primary: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("append failed: {e}"),
            }
        };
        let st = node.status().state;
        assert_eq!((st.role, st.epoch), (Role::Primary, 4), "epoch E + 1 = 4");
        node.shutdown().await;
        lsn
    });
    assert_eq!(lsn, 12, "epoch-start of 4 at lsn 11, the append at 12");
    let c = controls(&n.root);
    let (l, e, start) = c.last().expect("records");
    assert_eq!((*l, *e), (11, 4));
    assert_eq!(start["primary"], "n3");
    assert_eq!(
        n.node_dir().commit_lsn().expect("commit"),
        12,
        "everything through the append committed"
    );
}

#[test]
fn promote_refuses_a_front_truncated_log_without_a_configuration_record() {
    let (n, _) = survivor(false, true);
    n.append_n(2, 30, "more");
    let first = n.truncate_front(20);
    assert!(
        first > 1,
        "segments below lsn 20 removed (first retained {first})"
    );
    let toml = node_toml(&n);
    let before = n.snapshot_files();
    let (code, v, err) = recover_json(&[
        "promote",
        s(&n.root),
        "--accept-data-loss",
        "--config",
        s(&toml),
    ]);
    assert_eq!(code, 6, "{v}");
    assert!(err.contains("newest generation is unknown"), "{err}");
    assert_eq!(n.snapshot_files(), before, "nothing changed");
}

/// A log truncated behind a snapshot no longer holds its configuration record; the
/// snapshot `snapshot create` made records it (spec/snapshot-format.md §1.5), and promote
/// takes it: the forced configuration follows generation 1, not node.toml's generation 0.
#[test]
fn promote_takes_the_configuration_a_snapshot_records_when_the_log_no_longer_holds_it() {
    let (n, _) = survivor(true, true);
    n.append_n(2, 30, "more");
    n.set_commit(30);
    let state = n.tmp.path().join("state.bin");
    std::fs::write(&state, b"embedder state at lsn 20").expect("state file");
    let (code, v, err) = recover_json(&[
        "snapshot",
        "create",
        s(&n.root),
        "--state",
        s(&state),
        "--lsn",
        "20",
    ]);
    assert_eq!(code, 0, "{v} {err}");
    let (boundary, recorded) = walship_snapshot::read_newest_membership(
        &FsStorage,
        &n.root.join("snapshots"),
        &walship_snapshot::Limits::default(),
    )
    .expect("read")
    .expect("a snapshot");
    assert_eq!(boundary.lsn, 20);
    match &recorded {
        walship_snapshot::BoundaryMembership::Record { lsn, config } => {
            assert_eq!((*lsn, config.generation), (2, 1));
        }
        other => panic!("the configuration record at lsn 2 is recorded: {other:?}"),
    }
    let first = n.truncate_front(20);
    assert!(
        first > 2,
        "the configuration record is truncated (first {first})"
    );
    let (code, v, err) = recover_json(&["promote", s(&n.root), "--accept-data-loss"]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["old_configuration"]["lsn"], 2, "{v}");
    assert_eq!(v["old_configuration"]["generation"], 1, "{v}");
    assert_eq!(v["new_configuration"]["generation"], 2, "{v}");
    // A damaged configuration file is what the node refuses at open: `snapshot verify`
    // reports it.
    let file = n
        .root
        .join("snapshots")
        .join(walship_snapshot::snapshot_dir_name(20))
        .join(walship_snapshot::CONFIG_FILE);
    let mut bytes = std::fs::read(&file).expect("configuration file");
    bytes[40] ^= 0x10;
    std::fs::write(&file, bytes).expect("damage it");
    let (code, v, _) = recover_json(&["snapshot", "verify", s(&n.root)]);
    assert_eq!(code, 3, "{v}");
    assert!(v.to_string().contains("configuration"), "{v}");
}
