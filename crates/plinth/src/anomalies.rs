//! `plinth anomalies`: flag unusual points of an event's daily or hourly
//! count, and score the detector on the Numenta Anomaly Benchmark.

use std::sync::Arc;

use anyhow::{Result, bail};
use plinth_alerts::definition::Measure;
use plinth_alerts::{Series, WatchedMetric, contributors, series};
use plinth_anomaly::{DetectorConfig, detect_series, run_nab};
use plinth_engine::Engine;
use plinth_store::{Mode, Store};

use crate::cli::{AnomaliesArgs, AnomaliesCommand, Interval, ScanArgs};

pub fn run(args: AnomaliesArgs) -> Result<()> {
    match args.command {
        Some(AnomaliesCommand::Nab { nab }) => {
            let report = run_nab(&nab, &DetectorConfig::default())?;
            print!("{report}");
            Ok(())
        }
        None => scan(args.scan),
    }
}

fn scan(args: ScanArgs) -> Result<()> {
    let Some(event) = &args.event else {
        bail!(
            "name the event to watch with --event NAME, or score the detector with `plinth anomalies nab --nab DIR`"
        );
    };
    let store = Arc::new(Store::open(
        &args.data.dir,
        Mode::Reader,
        "plinth anomalies",
    )?);
    let engine = Engine::new(store, plinth_engine::Limits::default());
    let runtime = tokio::runtime::Runtime::new()?;
    let metric = WatchedMetric {
        event: event.clone(),
        measure: Measure::Count,
        property: None,
        interval: match args.interval {
            Interval::Day => plinth_alerts::definition::Interval::Day,
            Interval::Hour => plinth_alerts::definition::Interval::Hour,
        },
    };
    let unit = metric.interval.unit();
    // Every bucket of the store's range, the last one included even if in
    // progress: a look back, not an alert.
    let Some(Series { buckets, values }) = runtime.block_on(series(&engine, &metric, i64::MAX))?
    else {
        bail!("{} holds no events", args.data.dir.display());
    };
    let seconds: Vec<i64> = buckets.iter().map(|b| b / 1_000_000).collect();
    let config = metric_config(args.warmup, args.detector.as_deref())?;
    let points = detect_series(&seconds, &values, &config);
    println!(
        "{:<20} {:>10} {:>10} {:>21} {:>6}",
        unit, "count", "expected", "band", "score"
    );
    let mut flagged = 0;
    for (bucket, point) in buckets.iter().zip(&points) {
        let is_flagged = point.score >= args.threshold;
        if !is_flagged && !args.all {
            continue;
        }
        flagged += usize::from(is_flagged);
        println!(
            "{:<20} {:>10} {:>10.1} {:>10.1}..{:<10.1} {:>6.3}{}",
            format_bucket(*bucket, args.interval),
            point.value,
            point.expected,
            point.low,
            point.high,
            point.score,
            if is_flagged { "  <- flagged" } else { "" }
        );
        if is_flagged && let Some(property) = &args.breakdown {
            let explained = runtime.block_on(contributors(
                &engine,
                &metric,
                property,
                *bucket,
                point.expected,
            ))?;
            for contribution in explained.iter().take(3) {
                println!(
                    "    {}={}: {:.0} vs {:.1} expected ({:.0}% of the change)",
                    contribution.dimension,
                    contribution.value,
                    contribution.actual,
                    contribution.expected,
                    contribution.share * 100.0
                );
            }
        }
    }
    println!(
        "{flagged} of {} {unit}s flagged (score >= {})",
        points.len(),
        args.threshold
    );
    Ok(())
}

/// The product-metric detector with `--detector` overrides applied.
fn metric_config(warmup: usize, overrides: Option<&str>) -> Result<DetectorConfig> {
    let mut config = serde_json::to_value(DetectorConfig::product_metrics(warmup))?;
    if let Some(overrides) = overrides {
        let overrides: serde_json::Map<String, serde_json::Value> = serde_json::from_str(overrides)
            .map_err(|e| anyhow::anyhow!("--detector must be a JSON object: {e}"))?;
        for (key, value) in overrides {
            if config.get(&key).is_none() {
                bail!("--detector: unknown setting {key:?}");
            }
            config[key] = value;
        }
    }
    Ok(serde_json::from_value(config)?)
}

fn format_bucket(micros: i64, interval: Interval) -> String {
    let time = chrono::DateTime::from_timestamp_micros(micros).expect("valid timestamp");
    match interval {
        Interval::Day => time.format("%Y-%m-%d").to_string(),
        Interval::Hour => time.format("%Y-%m-%d %H:00").to_string(),
    }
}
