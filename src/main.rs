//! The `walship` binary: run a node, run the loopback demo, make certificates.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod demo;
mod http_views;
mod node;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node {
            config,
            append_stdin,
        } => node::run(&config, append_stdin),
        Command::Demo { data_dir, records } => demo::run(data_dir, records),
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
