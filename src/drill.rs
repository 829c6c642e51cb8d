//! The failover drill: `walship` member processes on loopback under continuous appends
//! through `POST /append`; the primary is killed with SIGKILL, again and again; after
//! each kill the drill waits for a new primary, restarts the killed member, and at the
//! end checks, from every member's data directory, that every acknowledged append is in
//! every member's log at the lsn it was acknowledged with, and that each epoch had one
//! primary (the `EpochStart` control records of all logs agree).
//!
//! `walship demo` runs it once (its failover act); `walship failover-drill` runs it with
//! any member count and kill count (the real-process tests call it). The partition drill
//! (`crate::partition_drill`) runs its members, writers, recovery and checks with the
//! pieces here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use walship::http_client;
use walship_wal::control::ControlRecord;

/// How long any single wait of the drill may take before it fails (only a hang reaches it).
pub(crate) const WAIT: Duration = Duration::from_secs(60);
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Member count.
    pub nodes: usize,
    /// How many times the primary is killed.
    pub kills: usize,
    /// Quorum setting of the cluster.
    pub quorum: i64,
    /// Concurrent writers.
    pub writers: usize,
    /// Acknowledged appends to wait for between two kills.
    pub appends_between: u64,
    /// Where configs, certificates, data and logs go.
    pub dir: PathBuf,
    /// Election timeout and lease (ms).
    pub election_timeout_ms: u64,
}

/// One kill.
#[derive(Debug, Clone, Serialize)]
pub struct KillReport {
    /// The member killed (the primary).
    pub killed: String,
    /// Its epoch.
    pub epoch: u64,
    /// Acknowledged appends before the kill.
    pub acked_before: usize,
    /// Who was elected next.
    pub new_primary: String,
    /// In which epoch.
    pub new_epoch: u64,
    /// From the kill until the new primary acknowledged an append.
    pub write_pause_ms: u64,
    /// The killed member, restarted: `follower` (it rejoined by itself), or `rejoined`
    /// (it halted `divergence` on a tentative tail the new primary lacks, and
    /// `walship-recover rejoin` brought it back, as an operator would).
    pub restart: String,
}

/// The drill's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Each kill.
    pub kills: Vec<KillReport>,
    /// Appends acknowledged in all.
    pub acknowledged: usize,
    /// Acknowledged appends missing from some member's log (must be 0).
    pub missing: usize,
    /// Epochs and their primary, from the logs' control records.
    pub epochs: BTreeMap<u64, String>,
    /// Each member's log end after the drill.
    pub log_ends: BTreeMap<String, u64>,
}

/// One member process: its config, HTTP endpoint and data directory.
pub(crate) struct Member {
    pub(crate) id: String,
    config: PathBuf,
    /// Its QUIC address.
    pub(crate) addr: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub(crate) fn spawn(&mut self, log_dir: &Path) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", self.id)))
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(exe)
            .args(["node", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.id))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY-free: libc::kill on a pid this process spawned and has not reaped.
            let pid = libc::pid_t::try_from(c.id()).unwrap_or(0);
            if pid > 0 {
                // SAFETY: kill(2) with a valid signal on our own child; no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn status(&self) -> Option<serde_json::Value> {
        self.child.as_ref()?;
        http_client::get(self.http, "/status", HTTP_TIMEOUT)
            .ok()
            .and_then(|r| r.json())
    }
}

/// The members, terminated on drop.
pub(crate) struct Members(pub(crate) Vec<Member>);

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.0 {
            m.terminate();
        }
    }
}

fn free_port(ip: IpAddr, udp: bool) -> Result<u16, String> {
    let port = if udp {
        std::net::UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind((ip, 0)).and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| format!("free port on {ip}: {e}"))
}

/// Certificates and one config per member; member `i` listens (QUIC and HTTP) on
/// `ips[i]`, or on 127.0.0.1 where `ips` has no entry.
pub(crate) fn write_configs(opts: &DrillOptions, ips: &[IpAddr]) -> Result<Vec<Member>, String> {
    let ids: Vec<String> = (1..=opts.nodes).map(|i| format!("m{i}")).collect();
    let certs = opts.dir.join("certs");
    walship_wire::certs::generate(&certs, &ids).map_err(|e| format!("certs: {e}"))?;
    let mut table = String::new();
    let mut addrs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let ip = ips
            .get(i)
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let quic = SocketAddr::new(ip, free_port(ip, true)?);
        let http = SocketAddr::new(ip, free_port(ip, false)?);
        table.push_str(&format!(
            "[[member]]\nid = \"{id}\"\naddr = \"{quic}\"\nhttp_addr = \"{http}\"\n"
        ));
        addrs.push((quic, http));
    }
    let mut members = Vec::new();
    for (id, (addr, http)) in ids.iter().zip(addrs) {
        let config = opts.dir.join(format!("{id}.toml"));
        let text = format!(
            "node_id = \"{id}\"\ncluster_id = \"drill\"\nrole = \"member\"\ndata_dir = \"data/{id}\"\n\
             quorum = {q}\nelection_timeout_ms = {t}\nlease_ms = {t}\ncommit_timeout_ms = 5000\n\
             {table}[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{id}.pem\"\nkey = \"certs/{id}.key\"\n\
             [transport]\nkeep_alive_ms = 200\nidle_timeout_ms = 2000\n",
            q = opts.quorum,
            t = opts.election_timeout_ms,
        );
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        members.push(Member {
            id: id.clone(),
            config,
            addr,
            http,
            dir: opts.dir.join("data").join(id),
            child: None,
        });
    }
    Ok(members)
}

/// The member that reports itself primary in the highest epoch, if exactly one does.
pub(crate) fn find_primary(members: &[Member]) -> Option<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    let mut tie = false;
    for (i, m) in members.iter().enumerate() {
        let Some(s) = m.status() else { continue };
        if s["role"] != "primary" {
            continue;
        }
        let epoch = s["epoch"].as_u64().unwrap_or(0);
        match best {
            Some((_, e)) if e > epoch => {}
            Some((_, e)) if e == epoch => tie = true,
            _ => {
                best = Some((i, epoch));
                tie = false;
            }
        }
    }
    if tie {
        None
    } else {
        best
    }
}

pub(crate) fn wait_primary(members: &[Member], above: u64) -> Result<(usize, u64), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((i, e)) = find_primary(members) {
            if e > above {
                return Ok((i, e));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no primary above epoch {above} within {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One acknowledged append (`POST /append` answered 200).
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    /// The lsn the answer named.
    pub(crate) lsn: u64,
    pub(crate) payload: Vec<u8>,
    /// The member that answered (index into the member list).
    pub(crate) member: usize,
    /// When the request was sent.
    pub(crate) sent: Instant,
    /// When the answer arrived.
    pub(crate) answered: Instant,
}

/// Acknowledged appends, in the order their answers arrived.
pub(crate) type Acked = Arc<Mutex<Vec<Ack>>>;

/// The acknowledged appends so far.
pub(crate) fn acked_now(acked: &Acked) -> Vec<Ack> {
    acked.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// One writer: appends unique payloads to whichever member is primary, following the
/// `primary_http` hint of a refusal; only a 200 counts as acknowledged.
pub(crate) fn writer(w: usize, targets: Vec<SocketAddr>, acked: Acked, stop: Arc<AtomicBool>) {
    let mut target = 0usize;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let payload = format!("w{w}-{seq}").into_bytes();
        let sent = Instant::now();
        match http_client::post(targets[target], "/append", &payload, HTTP_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                if let Some(lsn) = r.json().and_then(|j| j["lsn"].as_u64()) {
                    acked.lock().unwrap_or_else(|p| p.into_inner()).push(Ack {
                        lsn,
                        payload,
                        member: target,
                        sent,
                        answered: Instant::now(),
                    });
                }
            }
            Ok(r) => {
                let hint = r
                    .json()
                    .and_then(|j| j["primary_http"].as_str().map(str::to_owned))
                    .and_then(|h| h.trim_start_matches("http://").parse::<SocketAddr>().ok());
                match hint.and_then(|h| targets.iter().position(|t| *t == h)) {
                    Some(i) if i != target => target = i,
                    _ => {
                        target = (target + 1) % targets.len();
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            Err(_) => {
                target = (target + 1) % targets.len();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

pub(crate) fn wait_acked(acked: &Acked, at_least: usize) -> Result<Duration, String> {
    let start = Instant::now();
    while acked.lock().unwrap_or_else(|p| p.into_inner()).len() < at_least {
        if start.elapsed() > WAIT {
            return Err(format!(
                "fewer than {at_least} appends acknowledged within {WAIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(start.elapsed())
}

/// Runs the drill; `say` gets one line per step.
pub fn run(opts: &DrillOptions, say: &mut dyn FnMut(String)) -> Result<DrillReport, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let mut members = Members(write_configs(opts, &[])?);
    for m in &mut members.0 {
        m.spawn(&opts.dir)?;
    }
    let (mut p, mut epoch) = wait_primary(&members.0, 0)?;
    say(format!(
        "{} members up; {} is primary of epoch {epoch}",
        opts.nodes, members.0[p].id
    ));
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<SocketAddr> = members.0.iter().map(|m| m.http).collect();
    let writers: Vec<_> = (0..opts.writers)
        .map(|w| {
            let (t, a, s) = (targets.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || writer(w, t, a, s))
        })
        .collect();
    let mut kills = Vec::new();
    let result = (|| -> Result<(), String> {
        let per = usize::try_from(opts.appends_between).unwrap_or(usize::MAX);
        wait_acked(&acked, per)?;
        for _ in 0..opts.kills {
            let before = acked.lock().unwrap_or_else(|p| p.into_inner()).len();
            let killed = members.0[p].id.clone();
            let t = Instant::now();
            members.0[p].kill9();
            say(format!("killed {killed} (primary of epoch {epoch}) with SIGKILL after {before} acknowledged appends"));
            let (q, e) = wait_primary(&members.0, epoch)?;
            wait_acked(&acked, before + 1)?;
            let pause = t.elapsed();
            say(format!(
                "{} is primary of epoch {e}; appends resumed {} ms after the kill",
                members.0[q].id,
                pause.as_millis()
            ));
            kills.push(KillReport {
                killed,
                epoch,
                acked_before: before,
                new_primary: members.0[q].id.clone(),
                new_epoch: e,
                write_pause_ms: u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                restart: String::new(),
            });
            members.0[p].spawn(&opts.dir)?;
            let restart = settle(&mut members.0, p, q, &opts.dir, say)?;
            if let Some(k) = kills.last_mut() {
                k.restart = restart;
            }
            // A follower that was not killed may hold a tentative tail too.
            let statuses: Vec<_> = members.0.iter().map(Member::status).collect();
            rejoin_diverged(&mut members.0, &statuses, &opts.dir, say)?;
            (p, epoch) = (q, e);
            wait_acked(&acked, before + per)?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    result?;
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    let last = converge(&mut members.0, &acked, &opts.dir, say)?;
    say(format!(
        "all members hold lsn {last}; stopping them to read their logs"
    ));
    stop_followers_first(&mut members.0);
    let (missing, epochs, log_ends) = verify(&members.0, &acked)?;
    Ok(DrillReport {
        kills,
        acknowledged: acked.len(),
        missing,
        epochs,
        log_ends,
    })
}

/// Waits until every member reports the same durable lsn, at least the highest
/// acknowledged one, twice in a row; returns it.
///
/// Any member may halt `divergence` on the way, not only a restarted primary: in a cluster
/// of five, a follower that was not killed can hold records of the old primary that the
/// winner of the election lacks (they were never committed: the winner's voters lacked
/// them too). The drill then does what the operator does for it (`settle`: `walship-recover
/// rejoin` against the current primary, restart). Any other halt fails the drill.
pub(crate) fn converge(
    members: &mut [Member],
    acked: &[Ack],
    log_dir: &Path,
    say: &mut dyn FnMut(String),
) -> Result<u64, String> {
    let last = acked.iter().map(|a| a.lsn).max().unwrap_or(0);
    // Every live member converges: all report the same durable lsn, at least the last
    // acknowledged one, twice in a row (appends still in flight when the writers stopped
    // reach everyone too).
    let deadline = Instant::now() + WAIT;
    let mut previous = None;
    loop {
        let statuses: Vec<Option<serde_json::Value>> = members.iter().map(Member::status).collect();
        if rejoin_diverged(members, &statuses, log_dir, say)? {
            previous = None;
            continue;
        }
        let durable: Vec<u64> = statuses
            .iter()
            .map(|s| {
                s.as_ref()
                    .and_then(|s| s["durable_lsn"].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        let same = durable.windows(2).all(|w| w[0] == w[1]);
        if same && durable[0] >= last && previous.as_ref() == Some(&durable) {
            return Ok(durable[0]);
        }
        if Instant::now() > deadline {
            let roles: Vec<String> = members
                .iter()
                .zip(&statuses)
                .map(|(m, s)| {
                    let role = s
                        .as_ref()
                        .and_then(|s| s["role"].as_str())
                        .unwrap_or("down");
                    format!("{} {role}", m.id)
                })
                .collect();
            return Err(format!(
                "members did not converge to one log end at or above lsn {last}: {durable:?} ({})",
                roles.join(", ")
            ));
        }
        previous = Some(durable);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rejoins every member whose `statuses` entry says it halted `divergence` (stop,
/// `walship-recover rejoin` against the current primary, restart: `settle`); fails on any
/// other halt. Returns whether it rejoined one.
pub(crate) fn rejoin_diverged(
    members: &mut [Member],
    statuses: &[Option<serde_json::Value>],
    log_dir: &Path,
    say: &mut dyn FnMut(String),
) -> Result<bool, String> {
    let mut any = false;
    for (i, s) in statuses.iter().enumerate() {
        let Some(s) = s.as_ref().filter(|s| s["role"] == "halted") else {
            continue;
        };
        let reason = s["halt"]["reason"].as_str().unwrap_or("").to_owned();
        if reason != "divergence" {
            return Err(format!("{} halted `{reason}`", members[i].id));
        }
        let (q, _) = find_primary(members)
            .ok_or_else(|| format!("{} halted `divergence` with no primary", members[i].id))?;
        settle(members, i, q, log_dir, say)?;
        any = true;
    }
    Ok(any)
}

/// Runs one `walship-recover` command (`args` after the program name) through the
/// recovery library, as an operator would run the tool: its exit and its output.
pub(crate) fn walship_recover(
    args: &[&std::ffi::OsStr],
) -> Result<(walship_recovery::exit::Exit, String), String> {
    let argv = std::iter::once("walship-recover".as_ref()).chain(args.iter().copied());
    let cli = walship_recovery::cli::Cli::try_parse_from(argv)
        .map_err(|e| format!("walship-recover arguments: {e}"))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = walship_recovery::run(
        cli.command,
        &mut walship_recovery::Env::non_interactive(&mut out, &mut err),
    );
    Ok((
        exit,
        String::from_utf8_lossy(&out).into_owned() + &String::from_utf8_lossy(&err),
    ))
}

/// Stops every member, the primary last: stopping the primary first would let the others
/// elect a new one, whose epoch-start record would make the logs differ by one record.
/// With the primary up, the followers never campaign (it keeps heartbeating), and once too
/// few are left for its lease no majority remains to elect anyone.
pub(crate) fn stop_followers_first(members: &mut [Member]) {
    let primary = find_primary(members).map(|(i, _)| i);
    for (i, m) in members.iter_mut().enumerate() {
        if Some(i) != primary {
            m.terminate();
        }
    }
    if let Some(p) = primary {
        members[p].terminate();
    }
}

/// Waits until restarted (or reconnected) member `k` follows primary `q` (`GET /replica`
/// 200, `/status` names `q`). If it halts `divergence` instead (it holds a tentative tail
/// the primary `q` lacks), stops it, runs `walship-recover rejoin DIR --from
/// http://PRIMARY_HTTP --yes` (over the primary's endpoint, not its directory; it refuses
/// to cut anything at or below the commit watermark) and starts it again.
pub(crate) fn settle(
    members: &mut [Member],
    k: usize,
    q: usize,
    log_dir: &Path,
    say: &mut dyn FnMut(String),
) -> Result<String, String> {
    let mut rejoined = false;
    let deadline = Instant::now() + WAIT;
    // Back means: it stored a record it did not have before it restarted, which a replica
    // does only after proving its log a prefix of the primary's (a connected replica may
    // still be searching for the divergence point, and its own log end, a tentative tail
    // included, may already be above what the primary had). The writers keep appending,
    // so such a record comes.
    let mut target: Option<u64> = None;
    loop {
        let status = members[k].status();
        if target.is_none() {
            if let Some(own) = status.as_ref().and_then(|s| s["durable_lsn"].as_u64()) {
                let primary = members[q]
                    .status()
                    .and_then(|s| s["durable_lsn"].as_u64())
                    .unwrap_or(0);
                target = Some(own.max(primary) + 1);
            }
        }
        let target = target.unwrap_or(u64::MAX);
        let durable = status
            .as_ref()
            .and_then(|s| s["durable_lsn"].as_u64())
            .unwrap_or(0);
        let follows = status
            .as_ref()
            .is_some_and(|s| s["primary"].as_str() == Some(members[q].id.as_str()));
        if durable >= target
            && follows
            && http_client::get(members[k].http, "/replica", HTTP_TIMEOUT)
                .is_ok_and(|r| r.status == 200)
        {
            let how = if rejoined { "rejoined" } else { "follower" };
            say(format!("{} is back as a follower ({how})", members[k].id));
            return Ok(how.into());
        }
        let halted = members[k]
            .status()
            .filter(|s| s["role"] == "halted")
            .map(|s| s["halt"]["reason"].as_str().unwrap_or("").to_owned());
        if let Some(reason) = halted {
            if rejoined || reason != "divergence" {
                return Err(format!(
                    "{} halted `{reason}` after its restart",
                    members[k].id
                ));
            }
            // Over the primary's HTTP endpoint, as an operator without access to its disk
            // would (`GET /status`, `GET /log/ids`).
            let from = format!("http://{}", members[q].http);
            say(format!(
                "{} halted `divergence` (a tentative tail the new primary lacks): walship-recover rejoin --from {from} ({})",
                members[k].id, members[q].id
            ));
            members[k].terminate();
            let dir = members[k].dir.clone();
            let (exit, text) = walship_recover(&[
                "rejoin".as_ref(),
                dir.as_os_str(),
                "--from".as_ref(),
                from.as_ref(),
                "--yes".as_ref(),
            ])?;
            std::fs::write(log_dir.join(format!("{}-rejoin.txt", members[k].id)), &text)
                .map_err(|e| format!("rejoin log: {e}"))?;
            if exit != walship_recovery::exit::Exit::Ok {
                return Err(format!(
                    "rejoin of {} failed ({exit:?}): {text}",
                    members[k].id
                ));
            }
            rejoined = true;
            members[k].spawn(log_dir)?;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} neither followed nor halted within {WAIT:?}",
                members[k].id
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `verify` found: acknowledged appends missing anywhere, each epoch's primary,
/// each member's log end.
pub(crate) type Verified = (usize, BTreeMap<u64, String>, BTreeMap<String, u64>);

/// Reads every member's log; counts acknowledged appends missing anywhere; maps each
/// epoch to its primary from the `EpochStart` records (two primaries for one epoch is an
/// error).
pub(crate) fn verify(members: &[Member], acked: &[Ack]) -> Result<Verified, String> {
    let mut missing = 0;
    let mut epochs: BTreeMap<u64, String> = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for m in members {
        let (wal, _) = walship_wal::Wal::open(
            walship_wal::FsStorage,
            &m.dir.join("wal"),
            walship_wal::WalOptions::default(),
        )
        .map_err(|e| format!("{}: open WAL: {e}", m.id))?;
        let mut log: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut reader = wal.reader(0).map_err(|e| format!("{}: {e}", m.id))?;
        while let Some(r) = reader.next_record() {
            let r = r.map_err(|e| format!("{}: {e}", m.id))?;
            if r.view().is_control() {
                if let Ok(ControlRecord::EpochStart { epoch, primary }) =
                    ControlRecord::decode(r.payload())
                {
                    if let Some(other) = epochs.insert(epoch, primary.clone()) {
                        if other != primary {
                            return Err(format!(
                                "epoch {epoch} has two primaries: {other} and {primary}"
                            ));
                        }
                    }
                }
                continue;
            }
            log.insert(r.lsn(), r.payload().to_vec());
        }
        ends.insert(m.id.clone(), wal.last().lsn);
        for a in acked {
            if log.get(&a.lsn) != Some(&a.payload) {
                missing += 1;
            }
        }
    }
    // The operator's own check: `walship-recover diff` finds every member's log the same.
    if let Some((first, rest)) = members.split_first() {
        for m in rest {
            let (exit, text) =
                walship_recover(&["diff".as_ref(), first.dir.as_os_str(), m.dir.as_os_str()])?;
            if exit != walship_recovery::exit::Exit::Ok {
                return Err(format!(
                    "walship-recover diff {} {} ({exit:?}): {text}",
                    first.id, m.id
                ));
            }
        }
    }
    Ok((missing, epochs, ends))
}
