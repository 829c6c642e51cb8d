//! The partition drill (`walship partition-drill`, hidden; tests/partition_processes.rs
//! runs it): three `walship` members on loopback, each on its own address (127.0.0.1,
//! 127.0.0.2, 127.0.0.3), under continuous appends through `POST /append`. The primary is
//! cut off from the other two by iptables rules that silently drop UDP (QUIC: replication
//! and election messages) between its address and each other member's, both directions;
//! TCP stays open, so the drill keeps watching every member's HTTP endpoint. Checked:
//!
//! - the isolated primary steps down (its lease lapses: `/status` role no longer `primary`,
//!   `GET /primary` 503), measured from the moment the rules are in;
//! - the majority elects a new primary in a higher epoch and appends through it are
//!   acknowledged;
//! - the isolated primary acknowledges nothing that was sent to it after the partition
//!   started, and nothing at all once it stepped down;
//! - after the heal (rules deleted) it follows the new primary: by itself, or, when it
//!   holds a tentative tail the new primary lacks (appends it took after the partition,
//!   durable on it alone, never acknowledged), after halting `divergence` and
//!   `walship-recover rejoin` (as the failover drill does after a kill). No other halt;
//! - every acknowledged append is in every member's log at its lsn, and each epoch had one
//!   primary.
//!
//! The rules are matched by the members' addresses and QUIC ports and carry a comment
//! unique to the run, so they touch nothing else; a guard deletes them when the drill
//! ends, also on failure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use walship::http_client;

use crate::drill::{self, Ack, Acked, DrillOptions, Member, Members, HTTP_TIMEOUT, WAIT};

/// A generous bound on the step-down (the lease is `election_timeout_ms`); only a primary
/// that keeps acting on a lapsed lease reaches it.
const STEP_DOWN_BOUND: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct PartitionOptions {
    /// Where configs, certificates, data and logs go.
    pub dir: PathBuf,
    /// Concurrent writers.
    pub writers: usize,
    /// Acknowledged appends to wait for before the partition, through the new primary
    /// during it, and after the heal.
    pub appends: u64,
    /// Election timeout and lease (ms).
    pub election_timeout_ms: u64,
}

/// The drill's outcome (every field is also checked by the drill itself).
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    /// Each member's QUIC address.
    pub members: BTreeMap<String, String>,
    /// The primary that was cut off, and its epoch.
    pub old_primary: String,
    pub old_epoch: u64,
    /// Its lease (ms).
    pub lease_ms: u64,
    /// iptables rules of the partition.
    pub rules: usize,
    /// Appends acknowledged before the partition.
    pub acked_before_partition: usize,
    /// From the rules being in until the old primary was seen stepped down (`/status` role
    /// not `primary` and `GET /primary` 503).
    pub step_down_ms: u64,
    /// The primary the majority elected, and its epoch.
    pub new_primary: String,
    pub new_epoch: u64,
    /// From the rules being in until the new primary was seen.
    pub election_ms: u64,
    /// From the rules being in until the new primary acknowledged its first append.
    pub first_ack_new_primary_ms: u64,
    /// Appends the new primary acknowledged during the partition.
    pub new_primary_acks_in_partition: usize,
    /// Appends the old primary acknowledged after the partition started that were sent to
    /// it before (committed with receipts that left the others before the rules).
    pub old_primary_acks_answered_in_partition: usize,
    /// Appends sent to the old primary during the partition that it acknowledged (must be 0).
    pub old_primary_acks_sent_in_partition: usize,
    /// Appends the old primary acknowledged after it was seen stepped down (must be 0).
    pub old_primary_acks_after_step_down: usize,
    /// How the old primary came back after the heal: `follower` (by itself) or `rejoined`
    /// (it halted `divergence` on a tentative tail and `walship-recover rejoin` brought it
    /// back).
    pub heal: String,
    /// From the heal until the old primary followed the new primary.
    pub back_ms: u64,
    /// Appends acknowledged in all.
    pub acknowledged: usize,
    /// Acknowledged appends missing from some member's log (must be 0).
    pub missing: usize,
    /// Epochs and their primary, from the logs' control records.
    pub epochs: BTreeMap<u64, String>,
    /// Each member's log end after the drill.
    pub log_ends: BTreeMap<String, u64>,
}

/// The members' addresses: 127.0.0.1, 127.0.0.2, 127.0.0.3.
fn member_ips() -> Vec<IpAddr> {
    (1..=3)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

fn iptables(args: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("iptables {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "iptables {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A partition: iptables INPUT rules that drop UDP between one member and others. The
/// rules are deleted on drop.
struct Partition {
    /// Each installed rule's match and target (what follows `-I INPUT` / `-D INPUT`).
    rules: Vec<Vec<String>>,
}

impl Partition {
    /// Drops UDP from `isolated` to each of `others` and back: every packet between their
    /// QUIC endpoints, and between either endpoint and the other's replication client
    /// (which binds its member's address with an ephemeral port).
    fn isolate(isolated: SocketAddr, others: &[SocketAddr], tag: &str) -> Result<Self, String> {
        let mut partition = Partition { rules: Vec::new() };
        for other in others {
            for (src, dst) in [(isolated, *other), (*other, isolated)] {
                for (flag, port) in [("--sport", src.port()), ("--dport", dst.port())] {
                    let rule: Vec<String> = [
                        "-p",
                        "udp",
                        "-s",
                        &src.ip().to_string(),
                        "-d",
                        &dst.ip().to_string(),
                        flag,
                        &port.to_string(),
                        "-m",
                        "comment",
                        "--comment",
                        tag,
                        "-j",
                        "DROP",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    let mut insert = vec!["-I".to_string(), "INPUT".into()];
                    insert.extend(rule.iter().cloned());
                    // On failure `partition` drops here and deletes what is in.
                    iptables(&insert)?;
                    partition.rules.push(rule);
                }
            }
        }
        Ok(partition)
    }

    /// Deletes every rule (all are tried; the first failure is returned).
    fn heal(&mut self) -> Result<(), String> {
        let mut first = Ok(());
        while let Some(rule) = self.rules.pop() {
            let mut delete = vec!["-D".to_string(), "INPUT".into()];
            delete.extend(rule);
            if let Err(e) = iptables(&delete) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            eprintln!("partition drill: warning: could not delete an iptables rule: {e}");
        }
    }
}

/// A rule comment unique to this run.
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("walship-partition-drill-{}-{nanos}", std::process::id())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The old primary is seen stepped down: `/status` answers and its role is not
/// `primary`, and `GET /primary` answers 503.
fn stepped_down(m: &Member) -> bool {
    m.status().is_some_and(|s| s["role"] != "primary")
        && http_client::get(m.http, "/primary", HTTP_TIMEOUT).is_ok_and(|r| r.status == 503)
}

/// What the phases under the writers measured.
struct Phases {
    p: usize,
    epoch: u64,
    q: usize,
    new_epoch: u64,
    rules: usize,
    acked_before: usize,
    t0: Instant,
    step_down_at: Instant,
    elected_at: Instant,
    healed_at: Instant,
    heal: String,
    back: Duration,
}

/// Runs the drill; `say` gets one line per step.
pub fn run(
    opts: &PartitionOptions,
    say: &mut dyn FnMut(String),
) -> Result<PartitionReport, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let drill_opts = DrillOptions {
        nodes: 3,
        kills: 0,
        quorum: -1,
        writers: opts.writers,
        appends_between: opts.appends,
        dir: opts.dir.clone(),
        election_timeout_ms: opts.election_timeout_ms,
    };
    let mut members = Members(drill::write_configs(&drill_opts, &member_ips())?);
    for m in &mut members.0 {
        m.spawn(&opts.dir)?;
    }
    let addrs: BTreeMap<String, String> = members
        .0
        .iter()
        .map(|m| (m.id.clone(), m.addr.to_string()))
        .collect();
    let (p, epoch) = drill::wait_primary(&members.0, 0)?;
    say(format!(
        "members up ({addrs:?}); {} is primary of epoch {epoch}",
        members.0[p].id
    ));
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<SocketAddr> = members.0.iter().map(|m| m.http).collect();
    let writers: Vec<_> = (0..opts.writers)
        .map(|w| {
            let (t, a, s) = (targets.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || drill::writer(w, t, a, s))
        })
        .collect();
    let result = phases(opts, &mut members, p, epoch, &acked, say);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let ph = result?;
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));

    // The old primary's answers from the partition until the heal.
    let old = |a: &&Ack| a.member == ph.p;
    let in_partition = |t: Instant| t >= ph.t0 && t < ph.healed_at;
    let sent_in_partition = acked
        .iter()
        .filter(old)
        .filter(|a| in_partition(a.sent))
        .count();
    let after_step_down = acked
        .iter()
        .filter(old)
        .filter(|a| a.answered >= ph.step_down_at && a.answered < ph.healed_at)
        .count();
    let answered_in_partition = acked
        .iter()
        .filter(old)
        .filter(|a| in_partition(a.answered))
        .count();
    let new_in_partition: Vec<&Ack> = acked
        .iter()
        .filter(|a| a.member == ph.q && in_partition(a.answered))
        .collect();
    let first_new = new_in_partition
        .iter()
        .map(|a| a.answered)
        .min()
        .map_or(0, |t| ms(t - ph.t0));
    let (old_id, new_id) = (members.0[ph.p].id.clone(), members.0[ph.q].id.clone());
    say(format!(
        "{old_id} acknowledged {answered_in_partition} appends after the partition started (all sent before it), \
         {sent_in_partition} of those sent during it, {after_step_down} after it stepped down; \
         {new_id} acknowledged {} during the partition, the first {first_new} ms after it started",
        new_in_partition.len()
    ));
    if sent_in_partition != 0 || after_step_down != 0 {
        return Err(format!(
            "the isolated primary {old_id} acknowledged {sent_in_partition} appends sent during the partition and {after_step_down} after it stepped down"
        ));
    }

    let last = drill::converge(&mut members.0, &acked, &opts.dir, say)?;
    // No member halted (a `divergence` halt of the old primary was cleared by rejoin) and
    // one of them leads.
    let mut primaries = Vec::new();
    for m in &members.0 {
        let s = m
            .status()
            .ok_or_else(|| format!("{}: no /status at the end", m.id))?;
        match s["role"].as_str() {
            Some("primary") => primaries.push(m.id.clone()),
            Some("follower") => {}
            other => {
                return Err(format!(
                    "{} ends as {other:?} (halt {}), not primary or follower",
                    m.id, s["halt"]
                ))
            }
        }
    }
    if primaries.len() != 1 {
        return Err(format!("the members end with primaries {primaries:?}"));
    }
    say(format!(
        "all members hold lsn {last}, none halted, {} leads; stopping them to read their logs",
        primaries[0]
    ));
    drill::stop_followers_first(&mut members.0);
    let (missing, epochs, log_ends) = drill::verify(&members.0, &acked)?;
    if epochs.get(&ph.new_epoch) != Some(&new_id) {
        return Err(format!(
            "the logs do not name {new_id} primary of epoch {}: {epochs:?}",
            ph.new_epoch
        ));
    }
    if missing != 0 {
        return Err(format!(
            "{missing} acknowledged appends missing from some member's log"
        ));
    }
    Ok(PartitionReport {
        members: addrs,
        old_primary: old_id,
        old_epoch: ph.epoch,
        lease_ms: opts.election_timeout_ms,
        rules: ph.rules,
        acked_before_partition: ph.acked_before,
        step_down_ms: ms(ph.step_down_at - ph.t0),
        new_primary: new_id,
        new_epoch: ph.new_epoch,
        election_ms: ms(ph.elected_at - ph.t0),
        first_ack_new_primary_ms: first_new,
        new_primary_acks_in_partition: new_in_partition.len(),
        old_primary_acks_answered_in_partition: answered_in_partition,
        old_primary_acks_sent_in_partition: sent_in_partition,
        old_primary_acks_after_step_down: after_step_down,
        heal: ph.heal,
        back_ms: ms(ph.back),
        acknowledged: acked.len(),
        missing,
        epochs,
        log_ends,
    })
}

/// Partition, observe, heal, settle: the part that runs under the writers.
fn phases(
    opts: &PartitionOptions,
    members: &mut Members,
    p: usize,
    epoch: u64,
    acked: &Acked,
    say: &mut dyn FnMut(String),
) -> Result<Phases, String> {
    let per = usize::try_from(opts.appends).unwrap_or(usize::MAX);
    drill::wait_acked(acked, per)?;
    let acked_before = drill::acked_now(acked).len();
    let others: Vec<SocketAddr> = (0..members.0.len())
        .filter(|&i| i != p)
        .map(|i| members.0[i].addr)
        .collect();
    let tag = tag();
    let mut partition = Partition::isolate(members.0[p].addr, &others, &tag)?;
    let t0 = Instant::now();
    say(format!(
        "partition: {} (primary of epoch {epoch}) cut off from the others by {} iptables rules (comment {tag}) after {acked_before} acknowledged appends",
        members.0[p].id,
        partition.rules.len()
    ));
    let rules = partition.rules.len();

    // Watch both sides: the old primary steps down, the majority elects.
    let (mut step_down_at, mut elected) = (None, None);
    let (step_down_at, (q, new_epoch, elected_at)) = loop {
        if step_down_at.is_none() && stepped_down(&members.0[p]) {
            let t = Instant::now();
            say(format!(
                "{} stepped down {} ms after the partition started (lease {} ms)",
                members.0[p].id,
                ms(t - t0),
                opts.election_timeout_ms
            ));
            step_down_at = Some(t);
        }
        if elected.is_none() {
            if let Some((q, e)) = drill::find_primary(&members.0) {
                if q != p && e > epoch {
                    let t = Instant::now();
                    say(format!(
                        "{} is primary of epoch {e}, {} ms after the partition started",
                        members.0[q].id,
                        ms(t - t0)
                    ));
                    elected = Some((q, e, t));
                }
            }
        }
        if let (Some(s), Some(e)) = (step_down_at, elected) {
            break (s, e);
        }
        if step_down_at.is_none() && t0.elapsed() > STEP_DOWN_BOUND {
            return Err(format!(
                "{} still acts as primary {STEP_DOWN_BOUND:?} after the partition (lease {} ms)",
                members.0[p].id, opts.election_timeout_ms
            ));
        }
        if t0.elapsed() > WAIT {
            return Err(format!(
                "the majority elected no primary within {WAIT:?} of the partition"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Appends through the new primary are acknowledged during the partition.
    let deadline = Instant::now() + WAIT;
    loop {
        let through_new = drill::acked_now(acked)
            .iter()
            .filter(|a| a.member == q && a.answered >= t0)
            .count();
        if through_new >= per {
            say(format!(
                "{} acknowledged {through_new} appends during the partition",
                members.0[q].id
            ));
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} acknowledged only {through_new} appends within {WAIT:?} of its election",
                members.0[q].id
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    partition.heal()?;
    let healed_at = Instant::now();
    say(format!(
        "healed: rules deleted {} ms after the partition started",
        ms(healed_at - t0)
    ));
    let heal = drill::settle(&mut members.0, p, q, &opts.dir, say)?;
    let back = healed_at.elapsed();
    say(format!(
            "{} follows {} {} ms after the heal ({})",
            members.0[p].id,
            members.0[q].id,
            back.as_millis(),
            match heal.as_str() {
                "rejoined" => "it held a tentative tail the new primary lacks: halted `divergence`, walship-recover rejoin, restarted",
                _ => "it held nothing the new primary lacks: no halt",
            }
        ));
    let n = drill::acked_now(acked).len();
    drill::wait_acked(acked, n + per)?;
    Ok(Phases {
        p,
        epoch,
        q,
        new_epoch,
        rules,
        acked_before,
        t0,
        step_down_at,
        elected_at,
        healed_at,
        heal,
        back,
    })
}
