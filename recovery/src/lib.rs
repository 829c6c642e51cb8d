//! walship-recovery: the operator's recovery tool, `walship-recover`.
//!
//! Works on a STOPPED node's data directory (it takes the node directory lock
//! a running node holds, and refuses with exit code 5 while the node runs):
//!
//! - read-only: `inspect`, `verify`, `dump`, `diff`, `status` never modify a
//!   byte of WAL or state — a torn tail is reported, not cut (the scan in
//!   [`scan`] uses only `Storage::list` and `Storage::map`);
//! - modifying, audited in `state/audit.log`: `rewind` (cut tentative records
//!   after a failover, never at or below the commit watermark without
//!   `--accept-data-loss`), `clear-halt` (lift a halt only once its cause is
//!   gone, per halt reason), `rejoin` (diff against the primary's directory —
//!   read without its lock, never written — then rewind, clear-halt and verify
//!   in one audited command), `promote` (forced recovery of a lone survivor: a new
//!   epoch and a forced configuration, only with `--accept-data-loss`) and
//!   `snapshot create`.
//!
//! Every subcommand prints text or, with `--json`, one JSON document whose
//! schema ([`report`]) and exit codes ([`exit::Exit`]) are documented in
//! `spec/recovery-tool.md`. It does not repair anything by itself, ship
//! records or install snapshots.
//!
//! ```no_run
//! use clap::Parser;
//! use walship_recovery::{cli::Cli, run, Env};
//! let cli = Cli::parse_from(["walship-recover", "verify", "/var/lib/walship/n1", "--json"]);
//! let mut out = Vec::new();
//! let mut err = Vec::new();
//! let exit = run(cli.command, &mut Env::non_interactive(&mut out, &mut err));
//! println!("exit {} {}", exit.code(), String::from_utf8_lossy(&out));
//! ```

#![warn(missing_docs)]

pub mod audit;
pub mod cli;
pub mod cmd;
pub mod datadir;
pub mod error;
pub mod exit;
pub mod progress;
pub mod remote;
pub mod report;
pub mod scan;
pub mod snapshots;

use std::io::Write;

use serde::Serialize;

use crate::cli::Command;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{Envelope, ErrorBody, ErrorInfo, SCHEMA_VERSION};

/// Asks the operator a yes/no question (prompt on stderr, answer on stdin).
pub type Confirm<'a> = &'a mut dyn FnMut(&str) -> std::io::Result<bool>;

/// Where a command reads confirmation from and writes its output.
pub struct Env<'a> {
    /// Text or JSON report.
    pub out: &'a mut dyn Write,
    /// One-line errors, refusals and prompts.
    pub err: &'a mut dyn Write,
    /// The whole command line (recorded in audit entries).
    pub command_line: Vec<String>,
    /// Asks the operator a yes/no question; `None` when there is no terminal to ask on.
    pub confirm: Option<Confirm<'a>>,
    /// Whether long scans may draw a progress bar on stderr (only if it is a terminal).
    pub progress: bool,
}

impl<'a> Env<'a> {
    /// An environment that never prompts and never draws progress (tests, scripts).
    pub fn non_interactive(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Env<'a> {
        Env {
            out,
            err,
            command_line: Vec::new(),
            confirm: None,
            progress: false,
        }
    }
}

/// A command's result: its report, the exit code, and an optional one-line
/// message for stderr (refusals, corruption found).
#[derive(Debug)]
pub struct Outcome<T> {
    /// The report printed on stdout.
    pub report: T,
    /// The exit code.
    pub exit: Exit,
    /// One line for stderr.
    pub message: Option<String>,
}

impl<T> Outcome<T> {
    /// An outcome without a stderr message.
    pub fn new(report: T, exit: Exit) -> Outcome<T> {
        Outcome {
            report,
            exit,
            message: None,
        }
    }
}

/// Text rendering of a report.
pub trait TextReport {
    /// Writes the human-readable form.
    fn write_text(&self, w: &mut dyn Write) -> std::io::Result<()>;
}

/// Runs one subcommand, printing its report, and returns the exit code. Never panics on bad input.
pub fn run(command: Command, env: &mut Env<'_>) -> Exit {
    let name = command.name();
    let json = command.common().json;
    let _span = tracing::info_span!("walship_recover", command = name).entered();
    let result =
        match command {
            Command::Inspect { dir, common } => cmd::inspect::inspect(&dir, &common, env.progress)
                .and_then(|o| emit(env, name, json, o)),
            Command::Verify { dir, common } => cmd::verify::verify(&dir, &common, env.progress)
                .and_then(|o| emit(env, name, json, o)),
            Command::Dump {
                dir,
                from,
                to,
                payload,
                common,
            } => cmd::dump::dump(&dir, from, to, payload, &common, env.out).inspect(|e| {
                if *e == Exit::Corruption {
                    let _ = writeln!(env.err, "walship-recover dump: corruption stops the dump");
                }
            }),
            Command::Diff {
                dir_a,
                dir_b,
                common,
            } => cmd::diff::diff(&dir_a, &dir_b, &common, env.progress)
                .and_then(|o| emit(env, name, json, o)),
            Command::Status { dir, common } => cmd::status::status(&dir, &common, env.progress)
                .and_then(|o| emit(env, name, json, o)),
            Command::Rewind {
                dir,
                to,
                accept_data_loss,
                yes,
                common,
            } => {
                let req = cmd::rewind::RewindRequest {
                    to_lsn: to,
                    accept_data_loss,
                    yes,
                    max_record_bytes: common.max_record_bytes,
                };
                cmd::rewind::rewind(&dir, &req, env).and_then(|o| emit(env, name, json, o))
            }
            Command::Rejoin {
                dir,
                from,
                accept_data_loss,
                yes,
                common,
            } => remote::RejoinFrom::parse(&from).and_then(|from| {
                let req = cmd::rejoin::RejoinRequest {
                    from,
                    accept_data_loss,
                    yes,
                    max_record_bytes: common.max_record_bytes,
                };
                cmd::rejoin::rejoin(&dir, &req, env).and_then(|o| emit(env, name, json, o))
            }),
            Command::Promote {
                dir,
                accept_data_loss,
                voters,
                config,
                common,
            } => {
                let req = cmd::promote::PromoteRequest {
                    accept_data_loss,
                    voters,
                    config,
                    max_record_bytes: common.max_record_bytes,
                };
                cmd::promote::promote(&dir, &req, env).and_then(|o| emit(env, name, json, o))
            }
            Command::ClearHalt { dir, common } => cmd::clear_halt::clear_halt(&dir, &common, env)
                .and_then(|o| emit(env, name, json, o)),
            Command::Snapshot {
                action: cli::SnapshotAction::Verify { dir, common },
            } => cmd::snapshot::verify(&dir, &common, env.progress)
                .and_then(|o| emit(env, name, json, o)),
            Command::Snapshot {
                action:
                    cli::SnapshotAction::Create {
                        dir,
                        state,
                        lsn,
                        chunk_size_bytes,
                        common,
                    },
            } => {
                let req = cmd::snapshot::CreateRequest {
                    state_file: state,
                    lsn,
                    chunk_size_bytes,
                };
                cmd::snapshot::create(&dir, &req, &common, env)
                    .and_then(|o| emit(env, name, json, o))
            }
        };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            let exit = e.exit();
            // A reader that stopped reading (`dump | head`) is not worth a message.
            let closed_pipe = matches!(&e, RecoverError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe);
            if !closed_pipe {
                let _ = writeln!(env.err, "walship-recover {name}: {e}");
            }
            if json {
                let doc = Envelope {
                    schema_version: SCHEMA_VERSION,
                    command: name.to_string(),
                    exit_code: exit.code(),
                    body: ErrorBody {
                        error: ErrorInfo {
                            kind: exit.name().to_string(),
                            message: e.to_string(),
                        },
                    },
                };
                let _ = write_json(env.out, &doc);
            }
            exit
        }
    }
}

/// Prints an outcome (JSON envelope or text) and its stderr line; returns its exit code.
fn emit<T: Serialize + TextReport>(
    env: &mut Env<'_>,
    command: &str,
    json: bool,
    outcome: Outcome<T>,
) -> Result<Exit, RecoverError> {
    let io = |source| RecoverError::Io {
        op: "write",
        path: "<stdout>".into(),
        source,
    };
    if json {
        let doc = Envelope {
            schema_version: SCHEMA_VERSION,
            command: command.to_string(),
            exit_code: outcome.exit.code(),
            body: &outcome.report,
        };
        write_json(env.out, &doc).map_err(io)?;
    } else {
        outcome.report.write_text(env.out).map_err(io)?;
    }
    env.out.flush().map_err(io)?;
    if let Some(m) = &outcome.message {
        let _ = writeln!(env.err, "walship-recover {command}: {m}");
    }
    Ok(outcome.exit)
}

fn write_json<T: Serialize>(w: &mut dyn Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)?;
    w.write_all(b"\n")
}
