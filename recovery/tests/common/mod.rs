//! Builders of node data directories for the CLI tests (real files, the WAL's own API).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use walship_replica::halt::{write_halt, HaltReason, HaltRecord};
use walship_wal::state::{EpochHistory, NodeDir};
use walship_wal::{FsStorage, Lsn, Position, Wal, WalOptions};

/// A small segment size so a few dozen records span several segments.
pub const SMALL_SEGMENT_BYTES: u64 = 512;

/// A node data directory in a temp dir.
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Node {
    /// Creates `DIR/{wal,state,snapshots}` (like a node does on first start).
    pub fn new() -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("node");
        NodeDir::open(FsStorage, &root).expect("node dir");
        Node { tmp, root }
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn node_dir(&self) -> NodeDir<FsStorage> {
        NodeDir::open(FsStorage, &self.root).expect("node dir")
    }

    /// Appends `payloads` (each with its epoch) durably; returns the last position.
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Position {
        self.append_with_segment_bytes(SMALL_SEGMENT_BYTES, records)
    }

    /// [`Node::append`] rolling segments at `segment_size_bytes` (long logs in few files).
    pub fn append_with_segment_bytes(
        &self,
        segment_size_bytes: u64,
        records: &[(u64, Vec<u8>)],
    ) -> Position {
        let opts = WalOptions {
            segment_size_bytes,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(FsStorage, &self.wal_dir(), opts).expect("wal open");
        for (epoch, p) in records {
            if *epoch != wal.epoch() {
                wal.set_epoch(*epoch);
            }
            wal.append(p).expect("append");
        }
        wal.sync().expect("sync");
        wal.last()
    }

    /// `n` records of epoch `epoch`, payload `tag-lsn`.
    pub fn append_n(&self, epoch: u64, n: u64, tag: &str) -> Position {
        let first = self.last().lsn + 1;
        let recs: Vec<(u64, Vec<u8>)> = (first..first + n)
            .map(|l| (epoch, format!("{tag}-{l}").into_bytes()))
            .collect();
        self.append(&recs)
    }

    /// Removes every record after `after_lsn` (the WAL rewrites the segment holding it).
    pub fn truncate_tail(&self, after_lsn: Lsn) {
        let opts = WalOptions {
            segment_size_bytes: SMALL_SEGMENT_BYTES,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(FsStorage, &self.wal_dir(), opts).expect("wal open");
        wal.truncate_tail(after_lsn).expect("truncate_tail");
    }

    /// Replaces this node's WAL files with copies of `other`'s.
    pub fn copy_wal_from(&self, other: &Node) {
        for e in std::fs::read_dir(self.wal_dir()).expect("read wal dir") {
            std::fs::remove_file(e.expect("entry").path()).expect("remove");
        }
        for e in std::fs::read_dir(other.wal_dir()).expect("read wal dir") {
            let p = e.expect("entry").path();
            if p.extension().is_none_or(|x| x != "wal") {
                continue;
            }
            let name = p.file_name().expect("file name");
            std::fs::copy(&p, self.wal_dir().join(name)).expect("copy");
        }
    }

    /// Removes whole segments below `before_lsn` (retention); returns the new first lsn.
    pub fn truncate_front(&self, before_lsn: Lsn) -> Lsn {
        let opts = WalOptions {
            segment_size_bytes: SMALL_SEGMENT_BYTES,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(FsStorage, &self.wal_dir(), opts).expect("wal open");
        wal.truncate_front(before_lsn).expect("truncate_front");
        wal.first_lsn()
    }

    /// The last position, through the WAL API.
    pub fn last(&self) -> Position {
        let opts = WalOptions {
            segment_size_bytes: SMALL_SEGMENT_BYTES,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(FsStorage, &self.wal_dir(), opts).expect("wal open");
        wal.last()
    }

    pub fn set_commit(&self, lsn: Lsn) {
        self.node_dir().set_commit_lsn(lsn).expect("commit");
    }

    pub fn set_epochs(&self, entries: &[(u64, Lsn)]) {
        let mut h = EpochHistory::new();
        for (e, l) in entries {
            h.push(*e, *l).expect("valid epochs");
        }
        self.node_dir().set_epochs(&h).expect("epochs");
    }

    pub fn halt(&self, reason: HaltReason, lsn: Lsn, epoch: u64) -> HaltRecord {
        let rec = HaltRecord {
            reason,
            lsn,
            epoch,
            expected: "prev_crc 0x00000001".to_string(),
            found: "prev_crc 0x00000002".to_string(),
            peer: "n1".to_string(),
            at_unix_ms: 1_795_000_000_000,
            detail: "test halt".to_string(),
        };
        write_halt(&FsStorage, &self.state_dir(), &rec).expect("write halt");
        rec
    }

    /// Segment files, sorted.
    pub fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.wal_dir())
            .expect("read wal dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        v.sort();
        v
    }

    /// Every file under the node directory with its bytes (to prove nothing changed).
    pub fn snapshot_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        collect(&self.root, &mut out);
        out.retain(|(p, _)| p.file_name().is_none_or(|n| n != "LOCK"));
        out.sort();
        out
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push((p.clone(), std::fs::read(&p).expect("read")));
        }
    }
}

/// `walship-recover` with `args`.
pub fn recover(args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("walship-recover").expect("binary");
    c.args(args);
    c
}

/// Runs `walship-recover args... --json`, returns (exit code, parsed stdout, stderr).
pub fn recover_json(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let out = recover(&all).output().expect("run");
    let code = out.status.code().expect("exit code");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (code, v, String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every field path of `v` (`a.b.c`, arrays as `[]`): a JSON document's schema.
pub fn paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}
