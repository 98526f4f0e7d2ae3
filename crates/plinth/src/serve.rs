//! `plinth serve`: the HTTP API and the capture endpoints over a data
//! directory, with background maintenance and the alert scheduler (and
//! the experiment definition files of `<data>/experiments/`, which must
//! all be valid for it to start); with
//! `--project`, the pipeline routes, and with `--build-every`, scheduled
//! builds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use plinth_catalog::Catalog;
use plinth_engine::Engine;
use plinth_experiments::{CATALOG_KIND as EXPERIMENT_KIND, DefinitionFiles};
use plinth_ingest::{CaptureConfig, CapturePipeline, Ingestor};
use plinth_server::capture::CaptureService;
use plinth_server::pipelines::PipelineService;
use plinth_server::{AppState, router};
use plinth_store::{Mode, Store};
use plinth_tracking_plan::TrackingPlan;
use plinth_warehouse::Warehouse;

use crate::cli::{CaptureLimitArgs, ServeArgs};

/// How often the server compacts small files and deletes replaced ones.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);
const COMPACT_ROWS: u64 = 4_000_000;
const VACUUM_GRACE: Duration = Duration::from_secs(300);

pub fn run(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.serving.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.serving.listen))?;
        let address = listener.local_addr()?;
        let store = Arc::new(Store::open(
            &args.data.dir,
            Mode::Writer,
            &format!("plinth serve on {address}"),
        )?);
        let catalog = Arc::new(Catalog::open(&args.data.dir)?);
        check_experiment_files(&args.data.dir, &catalog)?;
        let engine = Engine::new(store.clone(), args.serving.limits.limits());
        let plan = args.serving.tracking_plan.load(&args.data.dir)?;
        let capture = start_capture(&store, &args.serving.capture, plan).await?;
        let pipelines = match &args.project {
            Some(project) => Some(Arc::new(PipelineService::new(
                engine.clone(),
                Warehouse::writer(&args.data.dir)?,
                project.clone(),
            ))),
            None => None,
        };
        let build_every = match (&args.project, args.build_every) {
            (Some(project), None) => plinth_pipelines::build_schedule(project)?
                .map(|every| {
                    crate::cli::parse_interval(&every).map_err(|e| {
                        anyhow::anyhow!("{}: {e}", plinth_pipelines::PLINTH_SETTINGS_FILE)
                    })
                })
                .transpose()?,
            (_, every) => every,
        };
        if let (Some(service), Some(every)) = (&pipelines, build_every) {
            tokio::spawn(service.clone().run_every(every));
        }
        println!(
            "Plinth is serving {} on http://{address}",
            args.data.dir.display()
        );
        let state = AppState {
            engine,
            catalog,
            capture: Some(capture),
            pipelines,
        };
        serve(listener, store, state).await
    })
}

/// Refuses to serve while a definition file of `<data>/experiments/` is
/// broken (the error names every such file and line): an experiment must
/// not go missing without a word. Notes on stderr the stored definitions
/// that files hide. The server reads the files again on every request.
pub fn check_experiment_files(data: &Path, catalog: &Catalog) -> Result<()> {
    let files = DefinitionFiles::load(data)?;
    files.check()?;
    for (name, file) in files.iter() {
        if let Ok(file) = file
            && catalog.definition(EXPERIMENT_KIND, name)?.is_some()
        {
            eprintln!(
                "note: {} defines experiment {name:?} and hides the definition stored under that name",
                file.path.display()
            );
        }
    }
    Ok(())
}

/// Replays the write-ahead log into the store and starts the capture
/// pipeline; nothing is served before the replay is complete.
pub async fn start_capture(
    store: &Arc<Store>,
    settings: &CaptureLimitArgs,
    plan: Option<TrackingPlan>,
) -> Result<Arc<CaptureService>> {
    let store = store.clone();
    let limits = settings.limits();
    let flush_interval = settings.flush_interval;
    let (pipeline, recovery) = tokio::task::spawn_blocking(move || {
        let config = CaptureConfig {
            flush_interval,
            ..CaptureConfig::new(store.root())
        };
        let ingestor = Arc::new(Ingestor::open(store)?);
        CapturePipeline::open(ingestor, config)
    })
    .await??;
    if recovery.events > 0 || recovery.quarantined > 0 {
        eprintln!(
            "recovered {} events and {} quarantined items from the write-ahead log",
            recovery.events, recovery.quarantined
        );
    }
    Ok(Arc::new(CaptureService::new(
        Arc::new(pipeline),
        limits,
        plan,
    )))
}

/// Serves until Ctrl-C or SIGTERM, maintaining the store in the background;
/// then drains the capture pipeline, so that every acknowledged event is in
/// Parquet when the process exits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    state: AppState,
) -> Result<()> {
    let maintenance = tokio::spawn(maintain_forever(store));
    let alerts = tokio::spawn(plinth_alerts::run_forever(
        state.engine.clone(),
        state.catalog.clone(),
    ));
    let capture = state.capture.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    maintenance.abort();
    alerts.abort();
    if let Some(capture) = capture {
        let pipeline = capture.pipeline().clone();
        tokio::task::spawn_blocking(move || pipeline.shutdown()).await??;
    }
    Ok(())
}

async fn maintain_forever(store: Arc<Store>) {
    let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let store = store.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<()> {
            for table in store.tables() {
                table.compact(COMPACT_ROWS)?;
                table.vacuum(VACUUM_GRACE)?;
            }
            Ok(())
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("maintenance failed: {e:#}"),
            Err(e) => tracing::error!("maintenance panicked: {e}"),
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
