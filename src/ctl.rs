//! `walship ctl`: the operator's control plane over the members' HTTP endpoints
//! (`spec/http.md`), with `patronictl`'s verbs: `list`, `switchover`, `promote`, `pause`,
//! `resume`.
//!
//! The members come from a member's `node.toml` (its `[[member]]` tables: id, peer
//! address, HTTP address) or from `--members http1,http2,...` (HTTP addresses; the ids
//! are learned from `/status`). Every member is asked in parallel with a bounded timeout;
//! an unreachable member is a row that says so, never an error of `list`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use walship::config::{NodeConfig, RoleConfig};
use walship::http_client;
use walship_node::election::LogPosition;
use walship_node::membership::{choose_force_survivors, ForceCandidate};
use walship_wal::control::{ConfigMember, Configuration};

/// Where `ctl` finds the members.
#[derive(Clone, Debug)]
pub struct Target {
    /// The member's id, when the configuration names it.
    pub id: Option<String>,
    /// Its peer (QUIC) address, when the configuration names it.
    pub peer_addr: Option<SocketAddr>,
    /// Its HTTP endpoint, if it has one.
    pub http_addr: Option<SocketAddr>,
}

/// The members named by `--config` or `--members` (exactly one of them).
pub fn targets(config: Option<&Path>, members: &[String]) -> Result<Vec<Target>, String> {
    match (config, members.is_empty()) {
        (Some(_), false) => Err("give --config or --members, not both".into()),
        (None, true) => Err("name the members: --config node.toml or --members HTTP,...".into()),
        (Some(path), true) => {
            let cfg = NodeConfig::load(path).map_err(|e| e.to_string())?;
            let RoleConfig::Member { members, .. } = cfg.role else {
                return Err(format!(
                    "{}: not a cluster member's config (role = \"member\" with [[member]] tables)",
                    path.display()
                ));
            };
            Ok(members
                .into_iter()
                .map(|m| Target {
                    id: Some(m.id),
                    peer_addr: Some(m.addr),
                    http_addr: m.http_addr,
                })
                .collect())
        }
        (None, false) => members
            .iter()
            .map(|m| {
                let hostport = m.trim().trim_start_matches("http://").trim_end_matches('/');
                let addr = hostport
                    .to_socket_addrs()
                    .map_err(|e| format!("--members {m}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--members {m}: no address"))?;
                Ok(Target {
                    id: None,
                    peer_addr: None,
                    http_addr: Some(addr),
                })
            })
            .collect(),
    }
}

/// One row of `walship ctl list` (`--json` prints an array of these; `spec/http.md` §7).
#[derive(Clone, Debug, Serialize)]
pub struct MemberRow {
    /// The member's id (from the configuration, else from its `/status`; `null` if neither).
    pub member: Option<String>,
    /// Its peer (QUIC) address, when the configuration names it.
    pub peer_addr: Option<String>,
    /// Its HTTP endpoint.
    pub http_addr: Option<String>,
    /// `primary`, `follower`, `candidate`, `halted`, `stopped`; `null` when unreachable.
    pub role: Option<String>,
    /// `running`, `halted`, `stopped` or `unreachable`.
    pub state: String,
    /// Its epoch.
    pub epoch: Option<u64>,
    /// Its durable lsn.
    pub durable_lsn: Option<u64>,
    /// The commit watermark it knows.
    pub commit_lsn: Option<u64>,
    /// Records it lacks behind the primary (the primary's view; else its own estimate).
    pub lag_records: Option<u64>,
    /// The same lag in bytes, as the primary reports it.
    pub lag_bytes: Option<u64>,
    /// How long it has been behind (ms), as the primary reports it.
    pub lag_ms: Option<u64>,
    /// Automatic failover paused on it (maintenance mode).
    pub paused: Option<bool>,
    /// Its halt reason, while halted.
    pub halt_reason: Option<String>,
    /// Why it stopped, once it did.
    pub stopped: Option<String>,
    /// What blocks an election there (`/status` `blocked_on`).
    pub blocked_on: Option<Value>,
    /// The incarnation id of its data directory (`/status` `incarnation`): a new one
    /// means its disk was wiped or replaced.
    pub incarnation: Option<u64>,
    /// `voter` or `learner` in the newest configuration the primary (else any member)
    /// reports; `-` when it is not in it (a `node.toml` member removed, or not added yet).
    pub membership: Option<String>,
    /// The configuration's generation as the primary (else any member) reports it.
    pub generation: Option<u64>,
    /// Why it could not be asked (unreachable, no HTTP endpoint, a bad answer).
    pub error: Option<String>,
}

/// One member's `/status`, or why there is none.
fn status_of(t: &Target, timeout: Duration) -> Result<Value, String> {
    let addr = t
        .http_addr
        .ok_or_else(|| "no http_addr configured".to_string())?;
    let reply = http_client::get(addr, "/status", timeout).map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("GET /status answered {}", reply.status));
    }
    reply
        .json()
        .filter(Value::is_object)
        .ok_or_else(|| "GET /status: not a JSON object".into())
}

/// Every member's `/status`, asked in parallel.
pub fn statuses(targets: &[Target], timeout: Duration) -> Vec<Result<Value, String>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| s.spawn(move || status_of(t, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("status thread panicked".into()))
            })
            .collect()
    })
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// The primary among the answers: the one reporting role `primary` in the highest epoch.
fn primary_status(answers: &[Result<Value, String>]) -> Option<&Value> {
    answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .filter(|s| s.get("role").and_then(Value::as_str) == Some("primary"))
        .max_by_key(|s| u64_of(s, "epoch").unwrap_or(0))
}

/// The rows of `ctl list`.
pub fn rows(targets: &[Target], answers: &[Result<Value, String>]) -> Vec<MemberRow> {
    let primary = primary_status(answers);
    let configuration = configuration_of(answers);
    let config_member = |id: &str| -> Option<&Value> {
        configuration?
            .get("members")?
            .as_array()?
            .iter()
            .find(|m| m.get("id").and_then(Value::as_str) == Some(id))
    };
    let generation = configuration.and_then(|c| u64_of(c, "generation"));
    let primary_id = primary.and_then(|p| str_of(p, "node_id"));
    let member_view = |id: &str| -> Option<&Value> {
        primary?
            .get("members")?
            .as_array()?
            .iter()
            .find(|m| m.get("node_id").and_then(Value::as_str) == Some(id))
    };
    targets
        .iter()
        .zip(answers)
        .map(|(t, a)| {
            let mut row = MemberRow {
                member: t.id.clone(),
                peer_addr: t.peer_addr.map(|a| a.to_string()),
                http_addr: t.http_addr.map(|a| a.to_string()),
                role: None,
                state: "unreachable".into(),
                epoch: None,
                durable_lsn: None,
                commit_lsn: None,
                lag_records: None,
                lag_bytes: None,
                lag_ms: None,
                paused: None,
                halt_reason: None,
                stopped: None,
                blocked_on: None,
                incarnation: None,
                membership: None,
                generation: None,
                error: None,
            };
            let s = match a {
                Ok(s) => s,
                Err(e) => {
                    row.error = Some(e.clone());
                    return row;
                }
            };
            let id = str_of(s, "node_id");
            if row.member.is_none() {
                row.member = id.clone();
            }
            let role = str_of(s, "role");
            row.state = match role.as_deref() {
                Some("halted") => "halted",
                Some("stopped") => "stopped",
                _ => "running",
            }
            .into();
            row.role = role;
            row.epoch = u64_of(s, "epoch");
            row.durable_lsn = u64_of(s, "durable_lsn");
            row.commit_lsn = u64_of(s, "commit_lsn");
            row.paused = s.get("paused").and_then(Value::as_bool);
            row.halt_reason = s
                .get("halt")
                .and_then(|h| h.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            row.stopped = str_of(s, "stopped");
            row.blocked_on = s.get("blocked_on").filter(|b| !b.is_null()).cloned();
            row.incarnation = u64_of(s, "incarnation");
            row.generation = generation;
            row.membership = id.as_deref().map(|id| match config_member(id) {
                Some(m) if m.get("voter").and_then(Value::as_bool) == Some(true) => "voter".into(),
                Some(_) => "learner".into(),
                None => "-".into(),
            });
            if id.is_some() && id == primary_id {
                (row.lag_records, row.lag_bytes, row.lag_ms) = (Some(0), Some(0), Some(0));
            } else if let Some(m) = id.as_deref().and_then(member_view) {
                row.lag_records = u64_of(m, "lag_records");
                row.lag_bytes = u64_of(m, "lag_bytes");
                row.lag_ms = u64_of(m, "lag_ms");
            } else {
                // No primary's view of it: its own estimate (records behind the last lsn
                // its primary announced).
                row.lag_records = u64_of(s, "lag_records");
            }
            row
        })
        .collect()
}

/// The newest configuration the answers report: the primary's, else the highest
/// generation any member reports.
fn configuration_of(answers: &[Result<Value, String>]) -> Option<&Value> {
    fn of(s: &Value) -> Option<&Value> {
        s.get("configuration").filter(|c| c.is_object())
    }
    primary_status(answers).and_then(of).or_else(|| {
        answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .filter_map(of)
            .max_by_key(|c| u64_of(c, "generation").unwrap_or(0))
    })
}

/// `targets` plus the members of the newest configuration the answers report that
/// no target names (a member added after the `node.toml` was written), by HTTP address.
pub fn with_configured_members(
    targets: &[Target],
    answers: &[Result<Value, String>],
) -> Vec<Target> {
    let mut out = targets.to_vec();
    let Some(members) = configuration_of(answers)
        .and_then(|c| c.get("members"))
        .and_then(Value::as_array)
    else {
        return out;
    };
    let reported: Vec<Option<String>> = answers
        .iter()
        .map(|a| a.as_ref().ok().and_then(|s| str_of(s, "node_id")))
        .collect();
    for m in members {
        let Some(id) = str_of(m, "id") else { continue };
        let http = str_of(m, "http_addr").and_then(|h| h.parse::<SocketAddr>().ok());
        let known = targets.iter().zip(&reported).any(|(t, r)| {
            t.id.as_deref() == Some(id.as_str())
                || r.as_deref() == Some(id.as_str())
                || (http.is_some() && t.http_addr == http)
        });
        if !known {
            out.push(Target {
                id: Some(id),
                peer_addr: str_of(m, "addr").and_then(|a| a.parse().ok()),
                http_addr: http,
            });
        }
    }
    out
}

/// The lines under the table: no primary, election blockers, maintenance mode.
pub fn footer(rows: &[MemberRow]) -> Vec<String> {
    let mut out = Vec::new();
    let reachable: Vec<&MemberRow> = rows.iter().filter(|r| r.error.is_none()).collect();
    let name = |r: &MemberRow| r.member.clone().unwrap_or_else(|| "?".into());
    let has_primary = reachable
        .iter()
        .any(|r| r.role.as_deref() == Some("primary"));
    if !has_primary {
        out.push(format!(
            "no primary among the {} reachable of {} members",
            reachable.len(),
            rows.len()
        ));
    }
    for r in &reachable {
        let Some(b) = &r.blocked_on else { continue };
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("");
        // With a primary serving, only what an operator must act on is named.
        if has_primary && !matches!(kind, "lease" | "halted" | "stopped" | "ineligible") {
            continue;
        }
        if kind == "paused" {
            continue; // the maintenance line below says it once
        }
        let message = b.get("message").and_then(Value::as_str).unwrap_or("");
        let mut line = format!("election blocked on {}: {message}", name(r));
        if let Some(h) = b.get("hint").and_then(Value::as_str) {
            line.push_str(&format!(" ({h})"));
        }
        out.push(line);
    }
    let paused: Vec<String> = reachable
        .iter()
        .filter(|r| r.paused == Some(true))
        .map(|r| name(r))
        .collect();
    if !paused.is_empty() {
        let not: Vec<String> = rows
            .iter()
            .filter(|r| r.paused != Some(true))
            .map(name)
            .collect();
        if !not.is_empty() {
            out.push(format!(
                "maintenance mode on {} only: NOT paused or unreachable: {} (a partly paused cluster may still fail over; `walship ctl pause` again)",
                paused.join(", "),
                not.join(", ")
            ));
        } else {
            out.push(
                "maintenance mode: automatic failover is paused on every member (`walship ctl resume`)"
                    .into(),
            );
        }
    }
    out
}

fn cell(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The table of `ctl list`, with its footer.
pub fn render_table(rows: &[MemberRow]) -> String {
    let header = [
        "Member",
        "Peer",
        "HTTP",
        "Role",
        "State",
        "Epoch",
        "Durable",
        "Commit",
        "Lag",
        "Lag B",
        "Lag ms",
        "Paused",
        "Halt",
        "Incarnation",
        "Member",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_string()).collect()];
    for r in rows {
        table.push(vec![
            cell(r.member.as_ref()),
            cell(r.peer_addr.as_ref()),
            cell(r.http_addr.as_ref()),
            cell(r.role.as_ref()),
            r.state.clone(),
            cell(r.epoch),
            cell(r.durable_lsn),
            cell(r.commit_lsn),
            cell(r.lag_records),
            cell(r.lag_bytes),
            cell(r.lag_ms),
            cell(r.paused.map(|p| if p { "yes" } else { "no" })),
            cell(r.halt_reason.as_ref().or(r.stopped.as_ref())),
            cell(r.incarnation.map(|i| format!("{i:016x}"))),
            cell(r.membership.as_ref()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows.iter().filter(|r| r.error.is_some()) {
        out.push_str(&format!(
            "{}: unreachable: {}\n",
            cell(r.member.as_ref().or(r.http_addr.as_ref())),
            r.error.as_deref().unwrap_or("")
        ));
    }
    for line in footer(rows) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `walship ctl list`.
pub fn list(
    targets: &[Target],
    json: bool,
    watch: Option<Duration>,
    timeout: Duration,
) -> Result<(), String> {
    loop {
        let answers = statuses(targets, timeout);
        // Members the configuration has and the targets do not: asked too.
        let all = with_configured_members(targets, &answers);
        let mut answers = answers;
        answers.extend(statuses(&all[targets.len()..], timeout));
        let rows = rows(&all, &answers);
        if json {
            // One array per line (a stream of them under --watch).
            println!(
                "{}",
                serde_json::to_string(&rows).map_err(|e| e.to_string())?
            );
        } else {
            if watch.is_some() {
                // Clear the screen and go home, then redraw.
                print!("\x1b[2J\x1b[H");
                println!(
                    "walship ctl list (every {:?}; Ctrl-C ends)",
                    watch.unwrap_or_default()
                );
            }
            print!("{}", render_table(&rows));
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        match watch {
            Some(every) => std::thread::sleep(every),
            None => return Ok(()),
        }
    }
}

/// The HTTP address of member `id`: from the configuration, else by asking every member.
fn http_of(targets: &[Target], id: &str, timeout: Duration) -> Result<SocketAddr, String> {
    if let Some(t) = targets.iter().find(|t| t.id.as_deref() == Some(id)) {
        return t
            .http_addr
            .ok_or_else(|| format!("member {id} has no http_addr in the configuration"));
    }
    let answers = statuses(targets, timeout);
    targets
        .iter()
        .zip(&answers)
        .find(|(_, a)| {
            a.as_ref()
                .is_ok_and(|s| s.get("node_id").and_then(Value::as_str) == Some(id))
        })
        .and_then(|(t, _)| t.http_addr)
        .ok_or_else(|| format!("no reachable member reports node_id {id}"))
}

/// The outcome of an operator POST: the JSON body on 200, else the error it names.
fn operator_post(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Value, String> {
    let reply = http_client::post(addr, path, b"", timeout).map_err(|e| e.to_string())?;
    let body = reply.json().unwrap_or(Value::Null);
    if reply.status == 200 {
        return Ok(body);
    }
    let detail = body
        .get("detail")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    Err(format!("POST {path} answered {}: {detail}", reply.status))
}

/// `walship ctl switchover --to N`.
pub fn switchover(targets: &[Target], to: &str, timeout_ms: u64) -> Result<(), String> {
    let ask = Duration::from_secs(3);
    let answers = statuses(targets, ask);
    let (primary, addr) = targets
        .iter()
        .zip(&answers)
        .filter_map(|(t, a)| a.as_ref().ok().map(|s| (t, s)))
        .filter(|(_, s)| s.get("role").and_then(Value::as_str) == Some("primary"))
        .max_by_key(|(_, s)| u64_of(s, "epoch").unwrap_or(0))
        .and_then(|(t, s)| Some((str_of(s, "node_id")?, t.http_addr?)))
        .ok_or("no reachable primary: a switchover needs one (see `walship ctl list`)")?;
    if primary == to {
        return Err(format!("{to} is already the primary"));
    }
    // Node ids are names (letters, digits, `-`, `_`, `.`): nothing to escape in the query.
    if to.is_empty()
        || !to
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("--to {to:?}: not a node id"));
    }
    println!("switchover: {primary} -> {to} (timeout {timeout_ms} ms)");
    let reply = operator_post(
        addr,
        &format!("/switchover?to={to}&timeout_ms={timeout_ms}"),
        Duration::from_millis(timeout_ms) + Duration::from_secs(5),
    )?;
    println!(
        "switchover done: {to} leads; write pause {} ms",
        cell(u64_of(&reply, "write_pause_ms"))
    );
    Ok(())
}

/// `walship ctl promote N [--accept-data-loss]`.
pub fn promote(targets: &[Target], id: &str, accept_data_loss: bool) -> Result<(), String> {
    let ask = Duration::from_secs(3);
    let addr = http_of(targets, id, ask)?;
    let path = if accept_data_loss {
        "/promote?accept_data_loss=true"
    } else {
        "/promote"
    };
    operator_post(addr, path, Duration::from_secs(10))?;
    println!(
        "{id} is campaigning for the next epoch{}; `walship ctl list` shows whether it won",
        if accept_data_loss {
            " (data loss accepted: acknowledged records only the old primary held are lost)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The reachable primary: its id and HTTP address.
fn find_primary(targets: &[Target], ask: Duration) -> Result<(String, SocketAddr, Value), String> {
    let answers = statuses(targets, ask);
    let all = with_configured_members(targets, &answers);
    let mut answers = answers;
    answers.extend(statuses(&all[targets.len()..], ask));
    all.iter()
        .zip(&answers)
        .filter_map(|(t, a)| a.as_ref().ok().map(|s| (t, s)))
        .filter(|(_, s)| s.get("role").and_then(Value::as_str) == Some("primary"))
        .max_by_key(|(_, s)| u64_of(s, "epoch").unwrap_or(0))
        .and_then(|(t, s)| Some((str_of(s, "node_id")?, t.http_addr?, s.clone())))
        .ok_or_else(|| {
            "no reachable primary: membership changes need one (see `walship ctl list`)".into()
        })
}

/// A node id as a query value (letters, digits, `-`, `_`, `.`: nothing to escape).
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("{id:?}: not a node id"));
    }
    Ok(())
}

/// Prints the configuration a `POST /members` answered.
fn print_configuration(reply: &Value) {
    let Some(c) = reply.get("configuration") else {
        return;
    };
    let members: Vec<String> = c
        .get("members")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{}{}",
                        str_of(m, "id").unwrap_or_default(),
                        if m.get("voter").and_then(Value::as_bool) == Some(true) {
                            ""
                        } else {
                            " (learner)"
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "configuration generation {} committed at lsn {}: {}",
        cell(u64_of(c, "generation")),
        cell(u64_of(reply, "lsn")),
        members.join(", ")
    );
}

/// `walship ctl add ID --addr A --http H [--learner]`: adds `id` as a learner (its
/// incarnation read from its own `/status`: it must be running), waits until it holds
/// everything the primary has committed, then makes it a voter (unless `learner`).
pub fn add(
    targets: &[Target],
    id: &str,
    addr: SocketAddr,
    http: SocketAddr,
    learner: bool,
    timeout: Duration,
) -> Result<(), String> {
    check_id(id)?;
    let ask = Duration::from_secs(3);
    let new = status_of(
        &Target {
            id: Some(id.to_owned()),
            peer_addr: Some(addr),
            http_addr: Some(http),
        },
        ask,
    )
    .map_err(|e| format!("{id} at {http}: {e} (start the new member first)"))?;
    if str_of(&new, "node_id").as_deref() != Some(id) {
        return Err(format!(
            "{http} answers as {}, not {id}",
            cell(str_of(&new, "node_id"))
        ));
    }
    let incarnation = u64_of(&new, "incarnation")
        .filter(|i| *i != 0)
        .ok_or_else(|| format!("{id} reports no incarnation: is it a cluster member?"))?;
    let (primary, paddr, _) = find_primary(targets, ask)?;
    println!("add: {id} (incarnation {incarnation:016x}) as a learner via primary {primary}");
    let reply = operator_post(
        paddr,
        &format!("/members?op=add&id={id}&addr={addr}&http={http}&incarnation={incarnation}"),
        Duration::from_secs(15),
    )?;
    if reply.get("bootstrapped").and_then(Value::as_bool) == Some(true) {
        println!("(first membership change: the bootstrap configuration was written first)");
    }
    print_configuration(&reply);
    if learner {
        return Ok(());
    }
    catch_up(targets, id, timeout)?;
    promote_voter(targets, id)
}

/// Waits until the primary reports `id` holding everything it has committed.
fn catch_up(targets: &[Target], id: &str, timeout: Duration) -> Result<(), String> {
    let ask = Duration::from_secs(3);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok((_, _, s)) = find_primary(targets, ask) {
            let commit = u64_of(&s, "commit_lsn").unwrap_or(0);
            let durable = s
                .get("members")
                .and_then(Value::as_array)
                .and_then(|ms| {
                    ms.iter()
                        .find(|m| m.get("node_id").and_then(Value::as_str) == Some(id))
                })
                .and_then(|m| u64_of(m, "durable_lsn"));
            if let Some(d) = durable {
                if d >= commit {
                    println!("{id} caught up: durable lsn {d} >= commit lsn {commit}");
                    return Ok(());
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{id} did not catch up within {timeout:?}: it stays a learner (`walship ctl promote-voter {id}` once it has)"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `walship ctl promote-voter ID`: a learner becomes a voter.
pub fn promote_voter(targets: &[Target], id: &str) -> Result<(), String> {
    member_op(targets, "promote", id)
}

/// `walship ctl demote ID`: a voter becomes a learner.
pub fn demote(targets: &[Target], id: &str) -> Result<(), String> {
    member_op(targets, "demote", id)
}

/// `walship ctl remove ID`.
pub fn remove(targets: &[Target], id: &str) -> Result<(), String> {
    member_op(targets, "remove", id)
}

fn member_op(targets: &[Target], op: &str, id: &str) -> Result<(), String> {
    check_id(id)?;
    let (primary, paddr, _) = find_primary(targets, Duration::from_secs(3))?;
    println!("{op}: {id} via primary {primary}");
    let reply = operator_post(
        paddr,
        &format!("/members?op={op}&id={id}"),
        Duration::from_secs(15),
    )?;
    if reply.get("bootstrapped").and_then(Value::as_bool) == Some(true) {
        println!("(first membership change: the bootstrap configuration was written first)");
    }
    print_configuration(&reply);
    Ok(())
}

/// The configuration a `/status` reports (`configuration`), as the membership code
/// reads it: generation, members with incarnation and voter flag.
fn configuration_from_status(config: &Value) -> Configuration {
    Configuration {
        generation: u64_of(config, "generation").unwrap_or(0),
        forced: false,
        members: config
            .get("members")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| {
                        Some(ConfigMember {
                            id: str_of(m, "id")?,
                            incarnation: u64_of(m, "incarnation").unwrap_or(0),
                            voter: m.get("voter").and_then(Value::as_bool).unwrap_or(true),
                            addr: str_of(m, "addr").unwrap_or_default(),
                            http_addr: str_of(m, "http_addr"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `walship ctl force-quorum [--accept-data-loss]` (seed 003, spec/membership.md §3): when
/// the voters that survive cannot elect, lists each reachable member's position, picks
/// the most up to date, says what may be lost, and makes it campaign among the survivors
/// with a forced configuration that removes the lost voters.
pub fn force_quorum(
    targets: &[Target],
    accept_data_loss: bool,
    timeout: Duration,
) -> Result<(), String> {
    let ask = Duration::from_secs(3);
    let answers = statuses(targets, ask);
    let all = with_configured_members(targets, &answers);
    let mut answers = answers;
    answers.extend(statuses(&all[targets.len()..], ask));
    if let Some(p) = primary_status(&answers) {
        return Err(format!(
            "{} is the primary: nothing to force (`walship ctl remove` drops a lost member)",
            cell(str_of(p, "node_id"))
        ));
    }
    let config = configuration_of(&answers)
        .cloned()
        .ok_or("no reachable member reports a configuration")?;
    let configuration = configuration_from_status(&config);
    let members: Vec<String> = configuration.members.iter().map(|m| m.id.clone()).collect();
    // (id, log head epoch, log head lsn, commit, incarnation, http)
    let mut reachable: Vec<(String, u64, u64, u64, u64, SocketAddr)> = Vec::new();
    println!(
        "{:<10} {:<10} {:>6} {:>10} {:>10} {:>16}",
        "member", "role", "epoch", "log head", "commit", "incarnation"
    );
    for (t, a) in all.iter().zip(&answers) {
        let Ok(s) = a else {
            println!("{:<10} unreachable", cell(t.id.as_ref()));
            continue;
        };
        let id = str_of(s, "node_id").unwrap_or_default();
        let role = str_of(s, "role").unwrap_or_default();
        let head = s.get("log_head");
        let (he, hl) = (
            head.and_then(|h| u64_of(h, "epoch")).unwrap_or(0),
            head.and_then(|h| u64_of(h, "lsn")).unwrap_or(0),
        );
        let commit = u64_of(s, "commit_lsn").unwrap_or(0);
        let inc = u64_of(s, "incarnation").unwrap_or(0);
        println!(
            "{id:<10} {role:<10} {:>6} {:>10} {commit:>10} {inc:>16x}",
            cell(u64_of(s, "epoch")),
            format!("{he}/{hl}")
        );
        let usable = !matches!(role.as_str(), "halted" | "stopped");
        if let (true, Some(http)) = (usable, t.http_addr) {
            reachable.push((id, he, hl, commit, inc, http));
        }
    }
    // The production choice (walship_node::membership::choose_force_survivors): the
    // members of the configuration that run the incarnation it names; the most up to
    // date of them campaigns.
    let candidates: Vec<ForceCandidate> = reachable
        .iter()
        .map(|r| ForceCandidate {
            id: r.0.clone(),
            incarnation: r.4,
            log_head: LogPosition::new(r.1, r.2),
        })
        .collect();
    let none = "no running member of the configuration is reachable: nothing to force (walship-recover promote works on a directory)";
    let (names, chosen) = choose_force_survivors(&configuration, &candidates).ok_or(none)?;
    let survivors: Vec<_> = reachable
        .iter()
        .filter(|r| names.contains(&r.0))
        .cloned()
        .collect();
    let chosen = survivors
        .iter()
        .find(|r| r.0 == chosen)
        .cloned()
        .ok_or(none)?;
    let lost: Vec<&String> = members.iter().filter(|m| !names.contains(m)).collect();
    let max_commit = survivors.iter().map(|s| s.3).max().unwrap_or(0);
    println!(
        "most up to date: {} (log head epoch {}, lsn {}); survivors {}; removed: {}",
        chosen.0,
        chosen.1,
        chosen.2,
        names.join(","),
        lost.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "may be lost: any record the removed members acknowledged above lsn {}; records {}..={} on {} that no survivor knew committed become committed",
        chosen.2,
        max_commit + 1,
        chosen.2,
        chosen.0
    );
    let path = format!(
        "/force-quorum?survivors={}{}",
        names.join(","),
        if accept_data_loss {
            "&accept_data_loss=true"
        } else {
            ""
        }
    );
    let reply = operator_post(chosen.5, &path, Duration::from_secs(10))?;
    println!(
        "{} campaigns with a forced configuration (loss possible: {}); waiting for it to lead",
        chosen.0,
        reply
            .get("may_lose")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    );
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let t = Target {
            id: Some(chosen.0.clone()),
            peer_addr: None,
            http_addr: Some(chosen.5),
        };
        if let Ok(s) = status_of(&t, ask) {
            let gen = s
                .get("configuration")
                .and_then(|c| u64_of(c, "generation"))
                .unwrap_or(0);
            let forced_gen = reply
                .get("configuration")
                .and_then(|c| u64_of(c, "generation"))
                .unwrap_or(u64::MAX);
            if str_of(&s, "role").as_deref() == Some("primary") && gen >= forced_gen {
                println!(
                    "{} leads epoch {} with configuration generation {gen} (forced)",
                    chosen.0,
                    cell(u64_of(&s, "epoch"))
                );
                return Ok(());
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{} did not lead within {timeout:?}: see `walship ctl list`; run force-quorum again",
                chosen.0
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `walship ctl pause` (`paused` true) or `resume`: every member, each reported; an error
/// if any member was not reached (a partly paused cluster may still fail over).
pub fn set_paused(targets: &[Target], paused: bool) -> Result<(), String> {
    let path = if paused { "/pause" } else { "/resume" };
    let ask = Duration::from_secs(5);
    let outcomes: Vec<Result<Value, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| {
                s.spawn(move || {
                    let addr = t
                        .http_addr
                        .ok_or_else(|| "no http_addr configured".to_string())?;
                    operator_post(addr, path, ask)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut missed = Vec::new();
    for (t, o) in targets.iter().zip(&outcomes) {
        let name =
            t.id.clone()
                .or_else(|| o.as_ref().ok().and_then(|v| str_of(v, "node_id")))
                .or_else(|| t.http_addr.map(|a| a.to_string()))
                .unwrap_or_else(|| "?".into());
        match o {
            Ok(v) => println!(
                "{name}: {}{}",
                if paused { "paused" } else { "resumed" },
                if v.get("changed").and_then(Value::as_bool) == Some(false) {
                    " (already)"
                } else {
                    ""
                }
            ),
            Err(e) => {
                println!("{name}: NOT reached: {e}");
                missed.push(name);
            }
        }
    }
    if missed.is_empty() {
        println!(
            "{}",
            if paused {
                "maintenance mode: no automatic failover on any member until `walship ctl resume`"
            } else {
                "automatic failover resumed on every member"
            }
        );
        Ok(())
    } else if paused {
        Err(format!(
            "the cluster is only partly paused: {} not reached. A member that is not paused still starts elections, and with enough unpaused members it can fail over; run `walship ctl pause` again once they are reachable",
            missed.join(", ")
        ))
    } else {
        Err(format!(
            "{} not reached: still paused there (no automatic election starts on them)",
            missed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(id: &str, port: u16) -> Target {
        Target {
            id: Some(id.into()),
            peer_addr: None,
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }

    #[test]
    fn rows_take_lag_from_the_primary_and_show_the_unreachable() {
        let ts = [target("n1", 1), target("n2", 2), target("n3", 3)];
        let answers = vec![
            Ok(
                json!({"node_id": "n1", "role": "primary", "epoch": 4, "durable_lsn": 20,
                "commit_lsn": 19, "paused": false, "blocked_on": null,
                "members": [{"node_id": "n2", "lag_records": 3, "lag_bytes": 96, "lag_ms": 7}]}),
            ),
            Ok(
                json!({"node_id": "n2", "role": "halted", "epoch": 4, "durable_lsn": 17,
                "commit_lsn": 17, "lag_records": 1, "paused": false,
                "halt": {"reason": "checksum"}}),
            ),
            Err("connect: refused".into()),
        ];
        let rows = rows(&ts, &answers);
        assert_eq!(rows[0].lag_records, Some(0));
        assert_eq!(
            (rows[1].lag_records, rows[1].lag_bytes, rows[1].lag_ms),
            (Some(3), Some(96), Some(7))
        );
        assert_eq!(rows[1].state, "halted");
        assert_eq!(rows[1].halt_reason.as_deref(), Some("checksum"));
        assert_eq!(rows[2].state, "unreachable");
        assert_eq!(rows[2].member.as_deref(), Some("n3"));
        let table = render_table(&rows);
        assert!(
            table.contains("n3: unreachable: connect: refused"),
            "{table}"
        );
        assert!(footer(&rows).is_empty(), "{:?}", footer(&rows));
    }

    #[test]
    fn footer_names_the_blocker_and_a_partial_pause() {
        let ts = [target("n1", 1), target("n2", 2), target("n3", 3)];
        let answers = vec![
            Ok(
                json!({"node_id": "n1", "role": "candidate", "epoch": 5, "paused": true,
                "blocked_on": {"kind": "campaign", "message": "need 2 of 3 votes for epoch 6, have 1: waiting for n3",
                "hint": "bring back n3"}}),
            ),
            Ok(json!({"node_id": "n2", "role": "follower", "epoch": 5, "paused": true})),
            Err("down".into()),
        ];
        let f = footer(&rows(&ts, &answers));
        assert_eq!(f[0], "no primary among the 2 reachable of 3 members");
        assert_eq!(
            f[1],
            "election blocked on n1: need 2 of 3 votes for epoch 6, have 1: waiting for n3 (bring back n3)"
        );
        assert!(
            f[2].starts_with("maintenance mode on n1, n2 only: NOT paused or unreachable: n3"),
            "{f:?}"
        );
    }
}
