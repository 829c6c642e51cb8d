//! Command-line interface of `walship-recover` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use walship_wal::record::DEFAULT_MAX_RECORD_BYTES;
use walship_wal::Lsn;

/// walship-recover: inspect, verify and repair a stopped walship node's data directory.
///
/// Every subcommand takes the node directory lock and refuses (exit 5) while the node runs
/// (rejoin's --from PRIMARY_DIR excepted: read without its lock, never written; or
/// --from ADDR, read over the primary's HTTP endpoint).
/// Read-only subcommands never modify anything; rewind, clear-halt, rejoin, promote and snapshot
/// create are audited in DIR/state/audit.log.
#[derive(Debug, Parser)]
#[command(
    name = "walship-recover",
    version,
    after_help = "Exit codes: 0 ok, 1 I/O error, 2 usage or bad input, 3 corruption found, 4 halted, \
5 node running (lock held), 6 refused (promote: also without --accept-data-loss), 7 logs diverge (diff). \
JSON schema: spec/recovery-tool.md."
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Print one JSON document on stdout (schema in spec/recovery-tool.md) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Upper bound on a record's payload length, as configured on the node.
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_RECORD_BYTES, value_name = "BYTES")]
    pub max_record_bytes: u32,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segments, lsn range, epochs, durable and commit watermarks, snapshots and halt state.
    Inspect {
        /// The node's data directory.
        dir: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Full read-only scan: clean, torn tail, or the first corruption (segment, offset, lsn).
    Verify {
        /// The node's data directory.
        dir: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Record headers (and payloads as hex or length) for an lsn range.
    Dump {
        /// The node's data directory.
        dir: PathBuf,
        /// First lsn to print (default: the first retained record).
        #[arg(long, value_name = "LSN")]
        from: Option<Lsn>,
        /// Last lsn to print (default: the last record).
        #[arg(long, value_name = "LSN")]
        to: Option<Lsn>,
        /// How to show payloads.
        #[arg(long, value_enum, default_value_t = PayloadFormat::Len)]
        payload: PayloadFormat,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Longest common prefix of two logs and the first diverging lsn.
    Diff {
        /// The first node's data directory.
        dir_a: PathBuf,
        /// The second node's data directory.
        dir_b: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// The halt record in full, or 'not halted'.
    Status {
        /// The node's data directory.
        dir: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Cut the log's tail after an lsn (tentative records left by a failover). Audited.
    Rewind {
        /// The node's data directory.
        dir: PathBuf,
        /// Keep records up to and including this lsn; cut everything after it.
        #[arg(long, value_name = "LSN")]
        to: Lsn,
        /// Allow cutting records at or below the commit watermark (loses committed data).
        #[arg(long)]
        accept_data_loss: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Bring a node that holds records the primary lacks back: diff against the
    /// primary's log (its data directory, or its HTTP endpoint), rewind to the common
    /// prefix, clear the divergence/stale-primary halt, verify. Audited.
    Rejoin {
        /// The rejoining node's data directory (the node must be stopped).
        dir: PathBuf,
        /// The primary: its data directory (or a copy; read without its lock, never
        /// written), or its HTTP endpoint. An address is a value that starts with
        /// `http://` (`http://HOST:PORT`) or parses as `IP:PORT` / `[IPv6]:PORT`; anything
        /// else is a directory (write `./127.0.0.1:80` for a directory named like an
        /// address). An address must answer `/status` as the primary, else rejoin refuses.
        #[arg(long = "from", value_name = "PRIMARY_DIR|ADDR")]
        from: PathBuf,
        /// Allow cutting records at or below the commit watermark (loses committed data).
        #[arg(long)]
        accept_data_loss: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Forced recovery of a cluster that lost its other voters, offline, on this one surviving
    /// directory: prints what may be lost and, only with --accept-data-loss, writes a new
    /// epoch's start record and a FORCED configuration whose voters are this node (or
    /// --voters), votes for itself in that epoch. Audited. See spec/recovery-tool.md §12.
    Promote {
        /// The surviving node's data directory (the node must be stopped).
        dir: PathBuf,
        /// Write the forced configuration, accepting the loss printed (without it nothing
        /// is written and the exit code is 6).
        #[arg(long)]
        accept_data_loss: bool,
        /// The new configuration's voters, this node included; each must be a member of
        /// the newest configuration; members not listed are removed. Default: this node alone.
        #[arg(long, value_delimiter = ',', value_name = "ID,...")]
        voters: Vec<String>,
        /// The node's node.toml: the base configuration's addresses when the log holds no
        /// configuration record, and the cluster and node id when DIR has no state/identity.
        #[arg(long, value_name = "NODE_TOML")]
        config: Option<PathBuf>,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Lift a halt once its cause is gone (see spec/recovery-tool.md for the rule per reason). Audited.
    ClearHalt {
        /// The node's data directory.
        dir: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Snapshots: verify the installed ones, or create one from an embedder state file.
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        action: SnapshotAction,
    },
}

/// `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Fully verify every installed snapshot (chunks, payload crc) and the newest one against the WAL.
    Verify {
        /// The node's data directory.
        dir: PathBuf,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
    /// Install a snapshot of the embedder's state, exported to a file, at a committed lsn. Audited.
    Create {
        /// The node's data directory.
        dir: PathBuf,
        /// The embedder's state as of `--lsn` (opaque bytes: the snapshot payload).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// The lsn the state corresponds to (every record up to it applied, none after).
        #[arg(long, value_name = "LSN")]
        lsn: Lsn,
        /// Payload bytes per chunk.
        #[arg(long, default_value_t = walship_snapshot::format::DEFAULT_CHUNK_SIZE_BYTES, value_name = "BYTES")]
        chunk_size_bytes: u32,
        /// Shared options.
        #[command(flatten)]
        common: Common,
    },
}

impl Command {
    /// The subcommand's stable name (as in JSON output's `command` field).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Inspect { .. } => "inspect",
            Command::Verify { .. } => "verify",
            Command::Dump { .. } => "dump",
            Command::Diff { .. } => "diff",
            Command::Status { .. } => "status",
            Command::Rewind { .. } => "rewind",
            Command::Rejoin { .. } => "rejoin",
            Command::Promote { .. } => "promote",
            Command::ClearHalt { .. } => "clear-halt",
            Command::Snapshot {
                action: SnapshotAction::Verify { .. },
            } => "snapshot-verify",
            Command::Snapshot {
                action: SnapshotAction::Create { .. },
            } => "snapshot-create",
        }
    }

    /// The shared options of this invocation.
    pub fn common(&self) -> &Common {
        match self {
            Command::Inspect { common, .. }
            | Command::Verify { common, .. }
            | Command::Dump { common, .. }
            | Command::Diff { common, .. }
            | Command::Status { common, .. }
            | Command::Rewind { common, .. }
            | Command::Rejoin { common, .. }
            | Command::Promote { common, .. }
            | Command::ClearHalt { common, .. }
            | Command::Snapshot {
                action:
                    SnapshotAction::Verify { common, .. } | SnapshotAction::Create { common, .. },
            } => common,
        }
    }
}

/// How `dump` prints payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadFormat {
    /// Only the payload length.
    Len,
    /// The payload bytes as lowercase hex.
    Hex,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rewind_requires_to() {
        let e = Cli::try_parse_from(["walship-recover", "rewind", "/d"]).expect_err("missing --to");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn rejoin_requires_from() {
        let e =
            Cli::try_parse_from(["walship-recover", "rejoin", "/d"]).expect_err("missing --from");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let cli = Cli::try_parse_from(["walship-recover", "rejoin", "/d", "--from", "/p", "--yes"])
            .expect("parses");
        assert_eq!(cli.command.name(), "rejoin");
    }

    #[test]
    fn promote_takes_a_comma_separated_voter_list() {
        let cli = Cli::try_parse_from([
            "walship-recover",
            "promote",
            "/d",
            "--accept-data-loss",
            "--voters",
            "n1,n2",
        ])
        .expect("parses");
        let Command::Promote {
            voters,
            accept_data_loss,
            ..
        } = cli.command
        else {
            panic!("not promote");
        };
        assert_eq!(voters, vec!["n1".to_string(), "n2".to_string()]);
        assert!(accept_data_loss);
        let cli = Cli::try_parse_from(["walship-recover", "promote", "/d"]).expect("parses");
        assert_eq!(cli.command.name(), "promote");
    }

    #[test]
    fn json_flag_is_accepted_after_the_dir() {
        let cli =
            Cli::try_parse_from(["walship-recover", "verify", "/d", "--json"]).expect("parses");
        assert!(cli.command.common().json);
        assert_eq!(cli.command.name(), "verify");
    }
}
