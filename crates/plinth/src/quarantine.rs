//! `plinth quarantine list|replay`: see the events capture or import could
//! not accept, and re-ingest them once the cause is fixed.

use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use plinth_ingest::capture::{self, Quarantined};
use plinth_ingest::{CaptureConfig, CapturePipeline, Ingestor};
use plinth_store::{Mode, Store};

use crate::cli::{DataArg, TrackingPlanArg};

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined items: id, received at, source, reason, payload.
    List(ListArgs),
    /// Normalise quarantined payloads again; those that pass move to events.
    Replay(ReplayArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    data: DataArg,
    /// Print whole payloads instead of their first 120 characters.
    #[arg(long)]
    full: bool,
}

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    data: DataArg,
    /// Replay only the items whose id (as `list` prints it) starts with one
    /// of these; all items by default.
    #[arg(long, value_name = "ID", num_args = 1..)]
    id: Vec<String>,
    #[command(flatten)]
    tracking_plan: TrackingPlanArg,
}

pub fn run(command: QuarantineCommand) -> Result<()> {
    match command {
        QuarantineCommand::List(args) => list(args),
        QuarantineCommand::Replay(args) => replay(args),
    }
}

fn list(args: ListArgs) -> Result<()> {
    let store = Store::open(&args.data.dir, Mode::Reader, "plinth quarantine list")?;
    let items = capture::quarantined(&store)?;
    for item in &items {
        let payload = if args.full || item.payload.chars().count() <= 120 {
            item.payload.clone()
        } else {
            format!("{}…", item.payload.chars().take(120).collect::<String>())
        };
        let received = chrono::DateTime::from_timestamp_micros(item.received_at_micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        println!(
            "{}\t{received}\t{}\t{}\t{payload}",
            item.id, item.source, item.reason
        );
    }
    eprintln!("{} quarantined", items.len());
    Ok(())
}

fn replay(args: ReplayArgs) -> Result<()> {
    let plan = args.tracking_plan.load(&args.data.dir)?;
    let store = Arc::new(Store::open(
        &args.data.dir,
        Mode::Writer,
        "plinth quarantine replay",
    )?);
    let ingestor = Arc::new(Ingestor::open(store.clone())?);
    // Events a killed server logged but never flushed are quarantine rows
    // too: recover them first, so the replay sees the whole table.
    let (pipeline, _) = CapturePipeline::open(ingestor.clone(), CaptureConfig::new(store.root()))?;
    pipeline.shutdown()?;
    let selected = |item: &Quarantined| {
        args.id.is_empty() || args.id.iter().any(|id| item.id.starts_with(id.as_str()))
    };
    let report = capture::replay_quarantine(&ingestor, plan.as_ref(), selected)?;
    for (id, reason) in &report.still_failing {
        println!("{id}\tstill fails: {reason}");
    }
    println!(
        "{} replayed into events, {} still quarantined",
        report.replayed,
        report.still_failing.len()
    );
    Ok(())
}
