//! `walship-recover`: the operator's recovery tool (see the `walship_recovery` crate docs).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use walship_recovery::cli::Cli;
use walship_recovery::{run, Env};

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    // Clap prints usage errors itself and exits 2 (the documented usage code).
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut ask = |question: &str| -> std::io::Result<bool> {
        let mut e = std::io::stderr();
        e.write_all(question.as_bytes())?;
        e.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let a = line.trim().to_ascii_lowercase();
        Ok(a == "y" || a == "yes")
    };
    let interactive = std::io::stdin().is_terminal();
    let mut env = Env {
        out: &mut stdout,
        err: &mut stderr,
        command_line: std::env::args().collect(),
        confirm: if interactive { Some(&mut ask) } else { None },
        progress: true,
    };
    run(cli.command, &mut env).into()
}
