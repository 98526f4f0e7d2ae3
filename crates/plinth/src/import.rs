//! `plinth import`: load event files into the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_ingest::{ImportFormat, Ingestor, import_file};
use plinth_store::{Mode, Store};

use crate::cli::ImportArgs;

/// `mi_option_purge_delay` of mimalloc.h (the same number in v2 and v3):
/// `libmimalloc-sys` leaves option numbers out of its constants.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory the process frees instead of giving it back to the kernel.
///
/// An import frees and allocates chunk-sized buffers every second or so.
/// mimalloc returns freed pages after 10 ms, so the kernel zeroed each
/// chunk's pages anew: 10M demo events took 460,000-530,000 page faults,
/// against 175,000 without returning them. An import ends when its files do,
/// so holding its peak is no cost; a server keeps mimalloc's default.
fn keep_freed_memory() {
    // SAFETY: mi_option_set is not thread-safe; the import has not started
    // a thread yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

pub fn run(args: ImportArgs) -> Result<()> {
    keep_freed_memory();
    let mut plan = Vec::new();
    for file in &args.files {
        let format = match args.format {
            Some(format) => format.into(),
            None => match ImportFormat::from_path(file) {
                Some(format) => format,
                None => bail!(
                    "cannot tell the format of {} from its name; pass --format ndjson|csv|parquet",
                    file.display()
                ),
            },
        };
        if !file.is_file() {
            bail!("{} is not a file", file.display());
        }
        plan.push((file, format));
    }
    let store = Arc::new(Store::open(&args.data.dir, Mode::Writer, "plinth import")?);
    let ingestor = Ingestor::open(store.clone())?;
    let started = Instant::now();
    let (mut events, mut quarantined) = (0u64, 0u64);
    for (file, format) in plan {
        let bar = ProgressBar::new(std::fs::metadata(file)?.len()).with_style(
            ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )?,
        );
        bar.set_message(file.display().to_string());
        let report = import_file(&ingestor, file, format, args.commit_rows, &|bytes| {
            bar.set_position(bytes)
        })?;
        bar.finish_and_clear();
        let resumed = match (report.resumed_after, report.identities_replayed) {
            (0, _) => String::new(),
            (after, 0) => format!(" (resumed after row {after})"),
            (after, replayed) => format!(
                " (resumed after row {after}; persons of the last {replayed} rows applied again)"
            ),
        };
        println!(
            "{}: {} events, {} quarantined{resumed}",
            file.display(),
            report.events,
            report.quarantined
        );
        events += report.events;
        quarantined += report.quarantined;
    }
    let elapsed = started.elapsed();
    if !args.no_compact {
        store.events.compact(4_000_000)?;
        store.events.vacuum(Duration::from_secs(300))?;
    }
    println!(
        "imported {events} events in {:.1} s ({:.0} events/s); {quarantined} quarantined \
         (see: plinth sql \"SELECT * FROM quarantine\"); {} persons",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(1e-9),
        ingestor.persons()
    );
    Ok(())
}
