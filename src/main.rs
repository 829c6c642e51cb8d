//! The `walship` binary: run a node, run the loopback demo, make certificates.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod ctl;
mod demo;
mod drill;
mod http_views;
mod node;
mod partition_drill;

/// WAL-shipping replication with strict halting.
#[derive(Parser, Debug)]
#[command(name = "walship", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node (primary or replica) from its node.toml until SIGINT/SIGTERM.
    Node {
        /// Path to the node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Primary only: append each line read from stdin as one record and
        /// print `committed <lsn>` once it is committed under the quorum policy.
        #[arg(long)]
        append_stdin: bool,
    },
    /// Start a primary and two replicas as separate processes on loopback over
    /// QUIC with mutual TLS, replicate, corrupt one record to one replica, and
    /// show that replica halt while the other keeps streaming.
    Demo {
        /// Keep the three data directories (and certs, configs, logs) here.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Records to write before the fault.
        #[arg(long, default_value_t = 20_000)]
        records: u64,
    },
    /// Create a development CA and one certificate per node.
    Certs {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated node ids, e.g. n1,n2,n3.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
    },
    /// Failover drill: start cluster members as processes on loopback, append through
    /// POST /append continuously, kill the primary with SIGKILL `--kills` times (restarting
    /// it each time), then check every member's log holds every acknowledged append and
    /// each epoch had one primary. Prints a JSON report; exits non-zero on any loss.
    FailoverDrill {
        /// Where configs, certificates, data and logs go (kept).
        #[arg(long)]
        dir: PathBuf,
        /// Members.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Times the primary is killed.
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// Quorum setting (-1 majority, k receipts; 0 has no automatic failover).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        quorum: i64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Acknowledged appends between two kills.
        #[arg(long, default_value_t = 200)]
        appends_between: u64,
        /// Election timeout and lease (ms).
        #[arg(long, default_value_t = 500)]
        election_timeout_ms: u64,
    },
    /// Partition drill (needs root and iptables; tests/partition_processes.rs runs it):
    /// three members on 127.0.0.1-3 under continuous POST /append; iptables cuts the
    /// primary off (UDP), the majority elects, the rules are deleted, the old primary
    /// follows again; checks every acknowledged append is in every log. Prints a JSON
    /// report; exits non-zero on any failed check.
    #[command(hide = true)]
    PartitionDrill {
        /// Where configs, certificates, data and logs go (kept).
        #[arg(long)]
        dir: PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Acknowledged appends before the partition, through the new primary during it,
        /// and after the heal.
        #[arg(long, default_value_t = 200)]
        appends: u64,
        /// Election timeout and lease (ms).
        #[arg(long, default_value_t = 500)]
        election_timeout_ms: u64,
    },
    /// The operator's control plane over the members' HTTP endpoints (patronictl's verbs):
    /// list, switchover, promote, pause, resume, add, remove, promote-voter, demote,
    /// force-quorum.
    Ctl {
        /// A member's node.toml: its [[member]] tables name every member.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Or the members' HTTP endpoints, comma-separated (host:port or http://host:port).
        #[arg(long, value_delimiter = ',', global = true)]
        members: Vec<String>,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// The demo's primary process (spawned by `walship demo`; not for direct use).
    #[command(hide = true)]
    DemoPrimary {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        records: u64,
        #[arg(long)]
        corrupt_replica: String,
    },
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// One row per member (role, state, epoch, lsns, lag, halt); unreachable members are
    /// rows too. A footer names an election blocker and maintenance mode.
    List {
        /// Print a JSON array of rows (spec/http.md §7) instead of the table.
        #[arg(long)]
        json: bool,
        /// Redraw every --interval-ms until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Interval of --watch.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Per-member request timeout.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Planned hand-over: the primary drains, waits until N holds everything, and hands
    /// over; prints the measured write pause.
    Switchover {
        /// The member to lead.
        #[arg(long)]
        to: String,
        /// How long the primary waits for N to catch up and lead.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Operator promotion: N campaigns for the next epoch now (also while paused).
    Promote {
        /// The member to promote.
        node: String,
        /// Required under quorum 0: acknowledged records only the old primary held are lost.
        #[arg(long)]
        accept_data_loss: bool,
    },
    /// Maintenance mode on every member: no automatic failover until `resume` (kept across
    /// restarts). Exits non-zero if any member was not reached.
    Pause,
    /// Ends maintenance mode on every member.
    Resume,
    /// Adds a member (it must be running, with itself listed as `learner = true` in its
    /// node.toml): a learner first, made a voter once it holds everything committed.
    Add {
        /// The new member's node id.
        node: String,
        /// Its peer (QUIC) address.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// Its HTTP endpoint.
        #[arg(long)]
        http: std::net::SocketAddr,
        /// Leave it a learner (no vote).
        #[arg(long)]
        learner: bool,
        /// How long to wait for it to catch up before making it a voter.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Removes a member from the configuration (it stops receiving the log; its votes and
    /// receipts stop counting). The primary cannot remove itself: switch over first.
    Remove {
        /// The member.
        node: String,
    },
    /// A learner becomes a voter.
    PromoteVoter {
        /// The member.
        node: String,
    },
    /// A voter becomes a learner.
    Demote {
        /// The member.
        node: String,
    },
    /// When the surviving voters cannot elect (seed 003): lists each reachable member's
    /// position, picks the most up to date, prints what may be lost, and makes it lead a
    /// forced configuration of the survivors (the others are removed).
    ForceQuorum {
        /// Required when acknowledged records may exist only on the lost members.
        #[arg(long)]
        accept_data_loss: bool,
        /// How long to wait for the chosen member to lead.
        #[arg(long, default_value_t = 15_000)]
        timeout_ms: u64,
    },
}

fn run_ctl(
    config: Option<PathBuf>,
    members: Vec<String>,
    command: CtlCommand,
) -> Result<(), String> {
    let targets = ctl::targets(config.as_deref(), &members)?;
    match command {
        CtlCommand::List {
            json,
            watch,
            interval_ms,
            timeout_ms,
        } => ctl::list(
            &targets,
            json,
            watch.then(|| std::time::Duration::from_millis(interval_ms.max(100))),
            std::time::Duration::from_millis(timeout_ms.max(1)),
        ),
        CtlCommand::Switchover { to, timeout_ms } => ctl::switchover(&targets, &to, timeout_ms),
        CtlCommand::Promote {
            node,
            accept_data_loss,
        } => ctl::promote(&targets, &node, accept_data_loss),
        CtlCommand::Pause => ctl::set_paused(&targets, true),
        CtlCommand::Resume => ctl::set_paused(&targets, false),
        CtlCommand::Add {
            node,
            addr,
            http,
            learner,
            timeout_ms,
        } => ctl::add(
            &targets,
            &node,
            addr,
            http,
            learner,
            std::time::Duration::from_millis(timeout_ms),
        ),
        CtlCommand::Remove { node } => ctl::remove(&targets, &node),
        CtlCommand::PromoteVoter { node } => ctl::promote_voter(&targets, &node),
        CtlCommand::Demote { node } => ctl::demote(&targets, &node),
        CtlCommand::ForceQuorum {
            accept_data_loss,
            timeout_ms,
        } => ctl::force_quorum(
            &targets,
            accept_data_loss,
            std::time::Duration::from_millis(timeout_ms),
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node {
            config,
            append_stdin,
        } => node::run(&config, append_stdin),
        Command::Demo { data_dir, records } => demo::run(data_dir, records),
        Command::Ctl {
            config,
            members,
            command,
        } => run_ctl(config, members, command),
        Command::FailoverDrill {
            dir,
            nodes,
            kills,
            quorum,
            writers,
            appends_between,
            election_timeout_ms,
        } => {
            let opts = drill::DrillOptions {
                nodes,
                kills,
                quorum,
                writers,
                appends_between,
                dir,
                election_timeout_ms,
            };
            drill::run(&opts, &mut |line| eprintln!("drill: {line}")).and_then(|report| {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
                if report.missing == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{} acknowledged appends missing from some member's log",
                        report.missing
                    ))
                }
            })
        }
        Command::PartitionDrill {
            dir,
            writers,
            appends,
            election_timeout_ms,
        } => {
            let opts = partition_drill::PartitionOptions {
                dir,
                writers,
                appends,
                election_timeout_ms,
            };
            partition_drill::run(&opts, &mut |line| eprintln!("partition drill: {line}")).and_then(
                |report| {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                    );
                    Ok(())
                },
            )
        }
        Command::Certs { out, nodes } => walship_wire::certs::generate(&out, &nodes)
            .map(|_| {
                println!(
                    "wrote ca.pem, ca.key and a certificate and key for {} into {}",
                    nodes.join(", "),
                    out.display()
                );
            })
            .map_err(|e| format!("certs: {e}")),
        Command::DemoPrimary {
            config,
            records,
            corrupt_replica,
        } => demo::run_primary(&config, records, &corrupt_replica),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("walship: {message}");
            ExitCode::FAILURE
        }
    }
}
