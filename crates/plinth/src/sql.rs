//! `plinth sql`: one query, printed.
//!
//! It opens the data directory read-only, so it works beside a running
//! server; it then sees what the server has published to Parquet, not the
//! rows still in the server's memory, and says so.

use std::sync::Arc;

use anyhow::Result;
use plinth_engine::{Engine, Privileges, format};
use plinth_store::{Mode, Store};

use crate::cli::{OutputFormat, SqlArgs};

pub fn run(args: SqlArgs) -> Result<()> {
    if let Some(holder) = Store::writer(&args.data.dir) {
        eprintln!(
            "note: {} is open by {}; this query reads what it has published, \
             not its last few seconds of buffered events (POST /api/v1/query sees those)",
            args.data.dir.display(),
            holder.trim()
        );
    }
    let store = Arc::new(Store::open(&args.data.dir, Mode::Reader, "plinth sql")?);
    let engine = Engine::new(store, args.limits.limits());
    let runtime = tokio::runtime::Runtime::new()?;
    // The command line runs with the permissions of whoever runs it, so it
    // may read files too.
    let started = std::time::Instant::now();
    let result = runtime.block_on(engine.query(&args.sql, Privileges::Admin))?;
    if args.timing {
        eprintln!("time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    match args.format {
        OutputFormat::Table => println!("{}", format::table(&result)?),
        OutputFormat::Csv => print!("{}", String::from_utf8(format::csv(&result)?)?),
        OutputFormat::Json => println!("{}", format::json(&result)?),
    }
    Ok(())
}
