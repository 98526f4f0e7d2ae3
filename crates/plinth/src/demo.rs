//! `plinth demo`: generate the demo product, then serve it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_catalog::{Catalog, KeyKind, Role};
use plinth_demo::{DemoConfig, DemoEvent};
use plinth_engine::Engine;
use plinth_experiments::{CATALOG_KIND, ExperimentDefinition};
use plinth_ingest::import::IDENTITY_SAVE_INTERVAL;
use plinth_ingest::{EventInput, Ingestor};
use plinth_server::AppState;
use plinth_store::{Mode, Store};
use serde_json::{Map, Value};

use crate::cli::DemoArgs;

/// Events per commit while generating.
const CHUNK_EVENTS: usize = 1 << 19;

/// The events checkpoint that says whether the demo's generation finished
/// (1) or is under way or was interrupted (0).
const DEMO_GENERATED: &str = "demo_generated";

pub fn run(args: DemoArgs) -> Result<()> {
    let config = DemoConfig::new(args.users, args.days, args.seed, args.end_date());
    if let Some(path) = &args.ndjson {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let written = plinth_demo::write_posthog_ndjson(&config, &mut out)?;
        std::io::Write::flush(&mut out)?;
        println!("wrote {written} events to {}", path.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = if args.no_serve {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&args.serving.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.serving.listen))?,
            )
        };
        let holder = match &listener {
            Some(l) => format!("plinth demo on {}", l.local_addr()?),
            None => "plinth demo".to_string(),
        };
        let store = Arc::new(Store::open(&args.data.dir, Mode::Writer, &holder)?);
        let events = store.events.snapshot();
        let existing = events.rows();
        if events.checkpoints.get(DEMO_GENERATED) == Some(&0) {
            anyhow::bail!(
                "{} holds a demo whose generation was interrupted; remove the folder to generate anew",
                args.data.dir.display()
            );
        }
        if existing > 0 {
            println!(
                "{} already holds {existing} events; using them (remove the folder to generate anew)",
                args.data.dir.display()
            );
        } else {
            let store = store.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || generate(&store, &config)).await??;
        }
        let catalog = Arc::new(Catalog::open(&args.data.dir)?);
        if existing == 0 {
            save_demo_experiment(&catalog, &config)?;
        }
        let admin = catalog.create_key(KeyKind::Secret(Role::Admin))?;
        let capture = catalog.create_key(KeyKind::Capture)?;
        println!("secret key (admin): {admin}");
        println!("project write key:  {capture}");
        let Some(listener) = listener else {
            return Ok(());
        };
        crate::serve::check_experiment_files(&args.data.dir, &catalog)?;
        let address = listener.local_addr()?;
        println!("Plinth demo is serving on http://{address}");
        println!(
            "try: curl -s http://{address}/api/v1/query -H 'Authorization: Bearer {admin}' \
             -d '{{\"sql\": \"SELECT event, count(*) FROM events GROUP BY event ORDER BY 2 DESC\"}}'"
        );
        let engine = Engine::new(store.clone(), args.serving.limits.limits());
        let plan = args.serving.tracking_plan.load(&args.data.dir)?;
        let capture =
            crate::serve::start_capture(&store, &args.serving.capture, plan).await?;
        let state = AppState {
            engine,
            catalog,
            capture: Some(capture),
            pipelines: None,
        };
        crate::serve::serve(listener, store, state).await
    })
}

fn generate(store: &Arc<Store>, config: &DemoConfig) -> Result<()> {
    let ingestor = Ingestor::open(store.clone())?;
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "{spinner} generating the demo: {human_pos} events ({per_sec}) {elapsed}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    // `persons` is replaced whole when saved, so it is saved every
    // IDENTITY_SAVE_INTERVAL and before the last chunk, as `plinth import`
    // does, not with each chunk (at 2.4M users that was 190 copies, 13 GB).
    // Until the last chunk, with every person saved, is stored, the events
    // say the generation is unfinished, and a later run refuses the folder.
    let mut saved = Instant::now();
    let mut commit = |chunk: &[EventInput], last: bool| -> Result<()> {
        let batch = ingestor.events_batch(chunk, now())?;
        if last || saved.elapsed() >= IDENTITY_SAVE_INTERVAL {
            ingestor.save_identities()?;
            saved = Instant::now();
        }
        let generated = BTreeMap::from([(DEMO_GENERATED.to_string(), u64::from(last))]);
        store.events.append(&[batch], &generated)?;
        Ok(())
    };
    let mut chunk = Vec::with_capacity(CHUNK_EVENTS);
    let mut total = 0u64;
    for event in plinth_demo::generate(config) {
        chunk.push(to_input(event)?);
        if chunk.len() == CHUNK_EVENTS {
            total += chunk.len() as u64;
            commit(&chunk, false)?;
            chunk.clear();
            bar.set_position(total);
        }
    }
    total += chunk.len() as u64;
    commit(&chunk, true)?;
    bar.set_position(total);
    bar.set_message("compacting");
    store.events.compact(4_000_000)?;
    // Nothing can have read the replaced files: this process created them.
    for table in store.tables() {
        table.vacuum(Duration::ZERO)?;
    }
    bar.finish_and_clear();
    println!(
        "generated {total} events for {} users over {} days ({} to {}) in {:.1} s; {} persons",
        config.users,
        config.days,
        config.start_date(),
        config.end_date,
        started.elapsed().as_secs_f64(),
        ingestor.persons()
    );
    Ok(())
}

/// The definition of the demo's planted experiment, over the demo's window.
const DEMO_EXPERIMENT: &str = include_str!("new-onboarding.yml");

/// Saves the planted experiment unless one of its name exists (it may have
/// been edited), so `plinth experiment results new-onboarding` works at once.
fn save_demo_experiment(catalog: &Catalog, config: &DemoConfig) -> Result<()> {
    let text = DEMO_EXPERIMENT
        .replace("{start}", &config.start_date().to_string())
        .replace("{end}", &config.end_date.to_string());
    let experiment = ExperimentDefinition::parse(&text)?;
    let name = &experiment.definition.name;
    if catalog.definition(CATALOG_KIND, name)?.is_none() {
        catalog.put_definition(CATALOG_KIND, name, &experiment.definition.to_json())?;
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A demo event as the capture endpoints would have accepted it.
fn to_input(event: DemoEvent) -> Result<EventInput> {
    let mut input = EventInput {
        uuid: Some(event.uuid.to_string()),
        event: event.event.to_string(),
        distinct_id: event.distinct_id,
        timestamp_micros: event.timestamp_micros,
        session_id: event.session_id,
        properties: event.properties_json,
        lib: Some("plinth-demo".to_string()),
        ..Default::default()
    };
    // Only identity events carry person updates; parse just those.
    if input.properties.contains("\"$set") || input.properties.contains("\"$anon_distinct_id") {
        let properties: Map<String, Value> = serde_json::from_str(&input.properties)?;
        input.set = properties.get("$set").and_then(|v| v.as_object()).cloned();
        input.set_once = properties
            .get("$set_once")
            .and_then(|v| v.as_object())
            .cloned();
        input.merge_with = properties
            .get("$anon_distinct_id")
            .and_then(|v| v.as_str())
            .map(str::to_string);
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_experiment_measures_what_the_demo_plants() {
        let config = DemoConfig::new(
            10,
            90,
            1,
            chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(),
        );
        let text = DEMO_EXPERIMENT
            .replace("{start}", &config.start_date().to_string())
            .replace("{end}", &config.end_date.to_string());
        let experiment = ExperimentDefinition::parse(&text).unwrap();
        let definition = &experiment.definition;
        assert_eq!(definition.flag, plinth_demo::EXPERIMENT_FLAG);
        assert_eq!(definition.variants, plinth_demo::EXPERIMENT_VARIANTS);
        assert_eq!(
            definition.primary_metrics[0].event.as_deref(),
            Some(plinth_demo::ACTIVATION_EVENT)
        );
    }
}
