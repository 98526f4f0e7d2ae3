//! `plinth maintain`: compaction, retention and vacuum of the event store.

use std::time::Duration;

use anyhow::Result;
use plinth_store::{Mode, Store};

use crate::cli::MaintainArgs;

pub fn run(args: MaintainArgs) -> Result<()> {
    let store = Store::open(&args.data.dir, Mode::Writer, "plinth maintain")?;
    if let Some(days) = args.retention_days {
        let dropped = store.events.retain(Duration::from_secs(days * 86_400))?;
        println!("retention: dropped {dropped} events older than {days} days");
    }
    for table in store.tables() {
        let report = table.compact(args.compact_rows)?;
        let deleted = table.vacuum(Duration::from_secs(args.vacuum_grace))?;
        println!(
            "{}: {} rows, {} files -> {} files, {} old files deleted",
            table.name(),
            report.rows,
            report.files_before,
            report.files_after,
            deleted
        );
    }
    Ok(())
}
