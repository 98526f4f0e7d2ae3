//! `plinth`: the command line. Wiring only: every command parses its
//! arguments, opens what it needs from the library crates, and reports.
//!
//! Errors print as one line (`error: …`) and exit with status 1; usage errors
//! exit with status 2 (clap's convention).

mod alerts;
mod anomalies;
mod cli;
mod demo;
mod experiments;
mod import;
mod keys;
mod maintain;
mod pipelines;
mod quarantine;
mod serve;
mod sql;
mod stats;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
