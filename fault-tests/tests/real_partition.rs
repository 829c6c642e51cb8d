//! A real partition between processes in separate network namespaces (FM-5.1,
//! FM-9.1): the primary runs in one namespace, the replica in another, joined by
//! a veth pair. The partition is silent: every receiver's INPUT chain drops the
//! peer's packets (iptables, or nft where iptables is missing), so no ICMP or
//! reset tells either side; only QUIC's idle timeout notices.
//!
//! Checked, with majority quorum over the two members (every commit needs the
//! replica's receipt):
//! - FM-5.1, half partition first (only the primary's INPUT drops: receipts are
//!   lost, records still arrive): the replica holds records durable above the
//!   commit watermark it received and applies none of them;
//! - FM-5.1, full partition: the replica's session ends, it does not halt, it
//!   applies nothing past the commit watermark it received (it never learns
//!   anything newer), and the primary acknowledges nothing that lacks the
//!   replica's receipt: appends stay durable but tentative and their callers get
//!   a commit timeout;
//! - FM-9.1: the replica is killed (-9) during the partition; its directory then
//!   verifies clean (or with an unsynced torn tail), holds every acknowledged
//!   record, has no halt; it restarts still partitioned without halting;
//! - after heal it reconnects, catches up, the tentative records commit, and
//!   after a graceful stop walship-recover `verify`/`diff` show identical logs.
//!
//! Needs root, `ip netns` and iptables or nft; otherwise the test prints why it
//! skips and passes. Namespaces (and with them the veth pair and every rule, all
//! inside the namespaces) are removed by a drop guard, also on failure.

mod real_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use real_common::{
    check_diff_prefix, check_dir, log_tail, make_certs, Load, NodeProc, NodeSpec, Reported,
    RoleSpec, Verdict,
};
use walship_recovery::report::WalState;
use walship_wal::Lsn;

const TEST_NAME: &str = "fm_5_1_fm_9_1_netns_partition_is_not_a_halt_and_heals";
const PRIMARY_IP: &str = "169.254.77.1";
const REPLICA_IP: &str = "169.254.77.2";
const PORT: u16 = 7400;

fn main() {
    real_common::harness_main(&[(TEST_NAME, &|| match preconditions() {
        Err(why) => Verdict::Skipped(why),
        Ok(firewall) => run(firewall),
    })]);
}

/// Runs a command; Err carries its stderr.
fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Clone, Copy, Debug)]
enum Firewall {
    Iptables,
    Nft,
}

/// Names unique to this run.
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}{}", std::process::id() % 100_000, nanos % 1000)
}

/// Root, `ip netns` and a firewall that works inside a namespace, or why not.
fn preconditions() -> Result<Firewall, String> {
    let uid = sh(&["id", "-u"]).map_err(|e| format!("cannot tell the user id: {e}"))?;
    if uid.trim() != "0" {
        return Err(format!(
            "needs root for network namespaces (uid {})",
            uid.trim()
        ));
    }
    let probe = Netns::add(&format!("wsrf-probe-{}", tag()))
        .map_err(|e| format!("`ip netns` does not work here: {e}"))?;
    // WALSHIP_PARTITION_FIREWALL=nft forces the nft path where both exist.
    let forced_nft = std::env::var("WALSHIP_PARTITION_FIREWALL").as_deref() == Ok("nft");
    let fw = if !forced_nft
        && probe
            .exec(&["iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"])
            .is_ok()
    {
        Firewall::Iptables
    } else if probe
        .exec(&["nft", "add", "table", "inet", "wsprobe"])
        .is_ok()
    {
        Firewall::Nft
    } else {
        return Err("neither iptables nor nft works inside a network namespace".into());
    };
    drop(probe);
    Ok(fw)
}

/// A network namespace, deleted on drop (with its interfaces and rules).
struct Netns {
    name: String,
}

impl Netns {
    fn add(name: &str) -> Result<Netns, String> {
        sh(&["ip", "netns", "add", name])?;
        Ok(Netns { name: name.into() })
    }

    fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn wrapper(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = sh(&["ip", "netns", "del", &self.name]) {
            eprintln!(
                "warning: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// Two namespaces joined by a veth pair: `p` holds PRIMARY_IP, `r` REPLICA_IP.
struct Net {
    p: Netns,
    r: Netns,
    vp: String,
    vr: String,
    firewall: Firewall,
}

impl Net {
    fn build(firewall: Firewall) -> Result<Net, String> {
        let t = tag();
        let p = Netns::add(&format!("wsrf-p-{t}"))?;
        let r = Netns::add(&format!("wsrf-r-{t}"))?;
        let (vp, vr) = (format!("wsp{t}"), format!("wsr{t}"));
        sh(&[
            "ip", "link", "add", &vp, "type", "veth", "peer", "name", &vr,
        ])?;
        // From here the pair is removed with the namespaces; before the move a
        // failure leaves it in the root namespace, so delete it explicitly then.
        let moved = sh(&["ip", "link", "set", &vp, "netns", &p.name])
            .and_then(|_| sh(&["ip", "link", "set", &vr, "netns", &r.name]));
        if let Err(e) = moved {
            let _ = sh(&["ip", "link", "del", &vp]);
            return Err(e);
        }
        for (ns, dev, ip) in [(&p, &vp, PRIMARY_IP), (&r, &vr, REPLICA_IP)] {
            ns.exec(&["ip", "addr", "add", &format!("{ip}/30"), "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "up"])?;
            ns.exec(&["ip", "link", "set", "lo", "up"])?;
        }
        Ok(Net {
            p,
            r,
            vp,
            vr,
            firewall,
        })
    }

    fn side(&self, side: Side) -> (&Netns, &str) {
        match side {
            Side::Primary => (&self.p, &self.vp),
            Side::Replica => (&self.r, &self.vr),
        }
    }

    /// Silent drop of everything `side` receives on its veth (its INPUT chain).
    fn drop_input(&self, side: Side) -> Result<(), String> {
        let (ns, dev) = self.side(side);
        match self.firewall {
            Firewall::Iptables => {
                ns.exec(&["iptables", "-I", "INPUT", "-i", dev, "-j", "DROP"])?;
            }
            Firewall::Nft => {
                ns.exec(&["nft", "add", "table", "inet", "wspart"])?;
                ns.exec(&[
                    "nft",
                    "add chain inet wspart input { type filter hook input priority 0 ; policy accept ; }",
                ])?;
                ns.exec(&[
                    "nft", "add", "rule", "inet", "wspart", "input", "iifname", dev, "drop",
                ])?;
            }
        }
        Ok(())
    }

    /// Removes the drop of `side`.
    fn heal(&self, side: Side) -> Result<(), String> {
        let (ns, dev) = self.side(side);
        match self.firewall {
            Firewall::Iptables => {
                ns.exec(&["iptables", "-D", "INPUT", "-i", dev, "-j", "DROP"])?;
            }
            Firewall::Nft => {
                ns.exec(&["nft", "delete", "table", "inet", "wspart"])?;
            }
        }
        Ok(())
    }
}

/// One end of the link.
#[derive(Clone, Copy, Debug)]
enum Side {
    Primary,
    Replica,
}

fn specs(root: &Path) -> Result<(NodeSpec, NodeSpec), String> {
    let certs = root.join("certs");
    make_certs(&certs, &["n1", "n2"])?;
    let primary_addr = format!("{PRIMARY_IP}:{PORT}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let base = |name: &str, role| NodeSpec {
        node_id: name.into(),
        cluster_id: "partition".into(),
        data_dir: root.join(name),
        certs_dir: certs.clone(),
        keep_alive_ms: 200,
        idle_timeout_ms: 1_500,
        role,
    };
    Ok((
        base(
            "n1",
            RoleSpec::Primary {
                listen: primary_addr,
                members: vec!["n1".into(), "n2".into()],
                quorum: -1,
                // Short: appends during the partition must come back as commit timeouts.
                commit_timeout_ms: 1_500,
            },
        ),
        base(
            "n2",
            RoleSpec::Replica {
                primary_addr,
                primary_name: "n1".into(),
                bind: "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?,
            },
        ),
    ))
}

fn clean_reports(name: &str, r: &Reported) -> Result<(), String> {
    if !r.halted.is_empty() || !r.violations.is_empty() || !r.errors.is_empty() {
        return Err(format!(
            "{name}: halted {:?} violations {:?} errors {:?}",
            r.halted, r.violations, r.errors
        ));
    }
    Ok(())
}

fn run(firewall: Firewall) -> Verdict {
    println!("real_partition: firewall {firewall:?}");
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return Verdict::Failed(format!("tempdir: {e}")),
    };
    let logs = tmp.path().join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        return Verdict::Failed(format!("create {}: {e}", logs.display()));
    }
    let result = {
        let net = match Net::build(firewall) {
            Ok(net) => net,
            // Namespaces work but a veth pair cannot be made (no veth support): the
            // machine cannot host the test, which is a skip, not a failure.
            Err(e) => {
                return Verdict::Skipped(format!(
                    "cannot join two namespaces with a veth pair: {e}"
                ))
            }
        };
        scenario(&net, tmp.path(), &logs)
        // `net` drops here: namespaces deleted after the nodes (dropped inside) are gone.
    };
    match result {
        Ok(figures) => Verdict::Passed(figures),
        Err(e) => {
            let mut tails = String::new();
            if let Ok(rd) = std::fs::read_dir(&logs) {
                let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                paths.sort();
                for p in paths {
                    tails.push_str(&format!("--- {}\n{}\n", p.display(), log_tail(&p, 15)));
                }
            }
            let kept = tmp.keep();
            Verdict::Failed(format!(
                "{e}\nnode directories kept in {}\n{tails}",
                kept.display()
            ))
        }
    }
}

fn scenario(net: &Net, root: &Path, logs: &Path) -> Result<String, String> {
    let started = Instant::now();
    let limit = Duration::from_secs(60);
    let (p_spec, r_spec) = specs(root)?;
    let primary = NodeProc::spawn(&p_spec, &net.p.wrapper(), &logs.join("n1.log"))?;
    primary.wait_ready()?;
    let replica = NodeProc::spawn(&r_spec, &net.r.wrapper(), &logs.join("n2-1.log"))?;
    replica.wait_ready()?;

    // Connected: commit some records through the veth.
    let load = Load::start(&primary, "before".into(), 16, Duration::from_micros(500));
    primary
        .events
        .wait_for("200 acknowledged before the partition", limit, |r| {
            r.acks.len() >= 200
        })?;
    let sent = load.stop();
    let p = primary
        .events
        .wait_for("appends answered", limit, |r| r.settled(sent))?;
    let before = p.durable;
    replica.events.wait_for("replica caught up", limit, |r| {
        r.durable == before && r.applied == before && r.connected
    })?;
    let acks_before = p.acks.len();

    // Half partition first: the primary hears nothing from the replica (receipts
    // lost), the replica still hears the primary. It receives records that can
    // never commit: it holds them durable above the commit watermark it received
    // and must not apply them (FM-5.1).
    let t_partition = Instant::now();
    net.drop_input(Side::Primary)?;
    let load = Load::start(&primary, "during".into(), 8, Duration::from_millis(2));
    let r = replica.events.wait_for(
        "FM-5.1: the replica holds records above the commit it received",
        limit,
        |r| r.durable > r.commit,
    )?;
    if r.applied > r.commit {
        return Err(format!(
            "FM-5.1: the replica applied {} past the commit {} it received",
            r.applied, r.commit
        ));
    }
    let held_above_commit = r.durable - r.commit;
    // Full partition: the replica's INPUT drops too.
    net.drop_input(Side::Replica)?;
    let r = replica.events.wait_for(
        "FM-5.1: the replica's session ends (idle timeout)",
        limit,
        |r| !r.connected,
    )?;
    clean_reports("n2", &r)?;
    primary.events.wait_for(
        "appends time out without the replica's receipt",
        limit,
        |r| r.failed >= 16,
    )?;
    let sent_during = load.stop();
    let p = primary
        .events
        .wait_for("partitioned appends answered", limit, |r| {
            r.acks.len() as u64 + r.failed == sent + sent_during
        })?;
    let r = replica.events.snapshot();
    if p.durable <= p.commit {
        return Err(format!(
            "FM-5.1: partitioned appends should be durable but tentative on the primary: durable {} commit {}",
            p.durable, p.commit
        ));
    }
    if r.applied > r.commit || r.commit > p.commit || r.durable >= p.durable {
        return Err(format!(
            "FM-5.1: partitioned replica applied {} commit {} durable {}, primary commit {} durable {}",
            r.applied, r.commit, r.durable, p.commit, p.durable
        ));
    }
    let max_acked: Lsn = p.acks.iter().map(|(l, _)| *l).max().unwrap_or(0);

    // FM-9.1: the replica crashes while partitioned.
    let r = replica.kill9();
    clean_reports("n2", &r)?;
    let on_disk = check_dir(&r_spec.data_dir)?;
    if let Some(h) = &on_disk.halt {
        return Err(format!("FM-9.1: replica halted: {h}"));
    }
    for (lsn, payload) in &p.acks {
        if on_disk.payloads.get(lsn) != Some(payload) {
            return Err(format!(
                "FM-5.1: acknowledged lsn {lsn} ({payload}) is not on the only replica: {:?}",
                on_disk.payloads.get(lsn)
            ));
        }
    }
    let replica = NodeProc::spawn(&r_spec, &net.r.wrapper(), &logs.join("n2-2.log"))?;
    replica.wait_ready()?;
    let restart_last = on_disk.last.lsn;
    let r = replica.events.wait_for(
        "FM-9.1: the restarted replica recovers its durable log",
        limit,
        |r| r.durable == restart_last || !r.halted.is_empty() || !r.errors.is_empty(),
    )?;
    clean_reports("n2", &r)?;
    if r.connected {
        return Err("the replica connected through the partition".into());
    }
    let partition_ms = t_partition.elapsed().as_millis();

    // Heal: it reconnects, catches up, the tentative records commit.
    net.heal(Side::Replica)?;
    net.heal(Side::Primary)?;
    let tentative = p.durable;
    let p_after = primary
        .events
        .wait_for("tentative records commit after heal", limit, |r| {
            r.commit >= tentative
        })?;
    let load = Load::start(&primary, "after".into(), 16, Duration::from_micros(500));
    primary
        .events
        .wait_for("100 acknowledged after heal", limit, |r| {
            r.acks.len() >= p_after.acks.len() + 100
        })?;
    let sent_after = load.stop();
    let p = primary
        .events
        .wait_for("every append answered and committed", limit, |r| {
            r.settled(sent + sent_during + sent_after)
        })?;
    let target = p.durable;
    replica.events.wait_for(
        &format!("the replica converges to lsn {target}"),
        limit,
        |r| r.durable >= target && r.applied >= target,
    )?;
    let r = replica.quit()?;
    clean_reports("n2", &r)?;
    let p = primary.quit()?;
    clean_reports("n1", &p)?;
    if p.commit != p.durable {
        return Err(format!(
            "primary stopped with commit {} below durable {}",
            p.commit, p.durable
        ));
    }
    let (pd, rd) = (check_dir(&p_spec.data_dir)?, check_dir(&r_spec.data_dir)?);
    if pd.wal_state != WalState::Clean || rd.wal_state != WalState::Clean || rd.halt.is_some() {
        return Err(format!(
            "after graceful stop: primary {:?}, replica {:?}, halt {:?}",
            pd.wal_state, rd.wal_state, rd.halt
        ));
    }
    for (lsn, payload) in &p.acks {
        if pd.payloads.get(lsn) != Some(payload) {
            return Err(format!(
                "acknowledged lsn {lsn} ({payload}) missing on the primary"
            ));
        }
    }
    check_diff_prefix(&p_spec.data_dir, &r_spec.data_dir, true)?;
    Ok(format!(
        "real_partition figures: {acks_before} acknowledged before the partition (lsn {before}), half partition: replica held {held_above_commit} records above its commit unapplied, partition {partition_ms} ms with {} appends timed out (tentative up to lsn {tentative}, max acknowledged {max_acked}), replica killed and restarted inside it at lsn {restart_last}, after heal {} acknowledged in all, final log {} records identical, {:.1} s",
        p.failed,
        p.acks.len(),
        pd.last.lsn,
        started.elapsed().as_secs_f64()
    ))
}
