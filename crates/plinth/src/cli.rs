//! The command-line grammar and dispatch.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use plinth_runner::Command as RunnerCommand;

#[derive(Parser)]
#[command(
    name = "plinth",
    version,
    about = "Plinth: collect product events, transform them with tested SQL, and answer questions about them.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API over a data directory.
    Serve(ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run SQL over a data directory and print the result.
    Sql(SqlArgs),
    /// Import events from NDJSON, CSV or Parquet files.
    Import(ImportArgs),
    /// Generate the demo product, then serve it.
    Demo(DemoArgs),
    /// Merge small files, apply retention and delete files no longer needed.
    Maintain(MaintainArgs),
    /// List or replay the events that could not be accepted.
    #[command(subcommand)]
    Quarantine(crate::quarantine::QuarantineCommand),
    /// Experiment statistics: a JSON request on stdin, the JSON result on stdout.
    ///
    /// Example: echo '{"test": "ttest", "metric": "proportion", "difference": "relative",
    /// "control": {"n": 1000, "sum": 100}, "treatment": {"n": 1000, "sum": 120}}' | plinth stats
    ///
    /// Tests: ttest, sequential, bayesian, cuped, srm, holm, bh, power, mde, cap.
    Stats,
    /// Render a dbt-compatible project's SQL and write target/manifest.json.
    Compile(ProjectArgs),
    /// List a dbt-compatible project's nodes in run order.
    Ls(ProjectArgs),
    /// Build seeds, models and snapshots, test them, and publish them together
    /// only if no error-severity test failed (write-audit-publish).
    Build(RunArgs),
    /// Build models only; publishes those that succeeded.
    Run(RunArgs),
    /// Run data tests against the published relations.
    Test(RunArgs),
    /// Load seeds (CSV files) only; publishes those that succeeded.
    Seed(RunArgs),
    /// The columns a model column is computed from, and those computed from it.
    Lineage(LineageArgs),
    /// Project documentation.
    #[command(subcommand)]
    Docs(DocsCommand),
    /// Source tables.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Flag unusual days or hours of an event's count; or score the detector on NAB.
    Anomalies(AnomaliesArgs),
    /// Experiments: create from YAML (or keep files in DIR/experiments/), list,
    /// delete, and compute results from the events.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Metric alerts that `plinth serve` evaluates on a schedule.
    #[command(subcommand)]
    Alert(AlertCommand),
}

#[derive(Subcommand)]
pub enum AlertCommand {
    /// Save (or replace) an alert from a YAML definition file.
    Create {
        #[command(flatten)]
        data: DataArg,
        /// The definition (see plinth_alerts::definition for the schema).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the saved alerts and how many points each has flagged.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Delete an alert: a running server stops evaluating it within a
    /// second; the points it flagged and its delivery log are kept.
    Delete {
        #[command(flatten)]
        data: DataArg,
        /// The alert's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Save (or replace) an experiment from a YAML definition file.
    Create {
        #[command(flatten)]
        data: DataArg,
        /// The definition (see plinth_experiments::definition for the schema).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the experiments: saved ones and the files of DIR/experiments/.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Delete a saved experiment (one defined by a file is the file's to
    /// delete).
    Delete {
        #[command(flatten)]
        data: DataArg,
        /// The experiment's name.
        name: String,
    },
    /// Per variant and metric: units, mean, lift with interval, p-value,
    /// chance to win; the sample ratio check and warnings.
    Results {
        #[command(flatten)]
        data: DataArg,
        /// The experiment's name.
        name: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ResultsFormat,
        #[command(flatten)]
        limits: QueryLimitArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ResultsFormat {
    Table,
    Json,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AnomaliesArgs {
    #[command(subcommand)]
    pub command: Option<AnomaliesCommand>,
    #[command(flatten)]
    pub scan: ScanArgs,
}

#[derive(Subcommand)]
pub enum AnomaliesCommand {
    /// Score the detector on a Numenta Anomaly Benchmark folder (data/, labels/).
    Nab {
        #[arg(long, value_name = "DIR")]
        nab: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Interval {
    Day,
    Hour,
}

#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// The event whose count to watch.
    #[arg(long)]
    pub event: Option<String>,
    /// The bucket of the series.
    #[arg(long, value_enum, default_value = "day")]
    pub interval: Interval,
    /// Points the detector learns from before it scores.
    #[arg(long, default_value_t = 21)]
    pub warmup: usize,
    /// The score from which a point is flagged.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// An event property whose values explain a flagged change.
    #[arg(long, value_name = "PROPERTY")]
    pub breakdown: Option<String>,
    /// Print every point, not only flagged ones.
    #[arg(long)]
    pub all: bool,
    /// Detector settings to override, as JSON (see plinth_anomaly::DetectorConfig),
    /// e.g. '{"band_sigmas": 4}'.
    #[arg(long, value_name = "JSON")]
    pub detector: Option<String>,
}

/// A dbt-compatible project and a selection of its nodes.
#[derive(Args)]
pub struct ProjectArgs {
    /// The project folder (with dbt_project.yml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub project: PathBuf,
    /// Nodes to include: names, +model, model+, tag:, path:, source:.
    #[arg(long, short = 's', value_name = "SELECTOR", num_args = 1..)]
    pub select: Vec<String>,
    /// Nodes to leave out, same syntax as --select.
    #[arg(long, value_name = "SELECTOR", num_args = 1..)]
    pub exclude: Vec<String>,
    /// Project variables as YAML or JSON, e.g. '{start_date: 2026-01-01}'.
    #[arg(long, value_name = "YAML")]
    pub vars: Option<String>,
    /// Treat incremental models as if built from scratch.
    #[arg(long)]
    pub full_refresh: bool,
}

/// A project run over a data directory (`build`, `run`, `test`, `seed`).
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub data: DataArg,
    /// Nodes built at once (dbt's --threads); each query uses every core.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub threads: usize,
    /// Store every test's failing rows as dbt_test__audit.<test>.
    #[arg(long)]
    pub store_failures: bool,
}

#[derive(Subcommand)]
pub enum DocsCommand {
    /// Write target/manifest.json and target/catalog.json (descriptions,
    /// owners, tags, columns with their built types, tests).
    Generate(ProjectDataArgs),
}

#[derive(Subcommand)]
pub enum SourceCommand {
    /// How old each source's newest row is (loaded_at_field), against its
    /// warn_after and error_after; writes target/sources.json.
    Freshness(ProjectDataArgs),
}

/// A project and a data directory.
#[derive(Args)]
pub struct ProjectDataArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Args)]
pub struct LineageArgs {
    /// A model column, e.g. orders.amount.
    #[arg(value_name = "MODEL.COLUMN")]
    pub column: String,
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub data: DataArg,
}

/// The data directory, shared by every command.
#[derive(Args, Clone)]
pub struct DataArg {
    /// The data directory.
    #[arg(
        long = "data",
        value_name = "DIR",
        default_value = "./plinth-data",
        env = "PLINTH_DATA"
    )]
    pub dir: PathBuf,
}

/// Limits on every query.
#[derive(Args, Clone)]
pub struct QueryLimitArgs {
    /// Memory one query may hold before it spills to disk, e.g. 512MiB, 2GiB.
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_size)]
    pub query_memory: usize,
    /// Wall time one query may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub query_timeout: u64,
    /// Threads one query uses; all cores by default.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl QueryLimitArgs {
    pub fn limits(&self) -> plinth_engine::Limits {
        let defaults = plinth_engine::Limits::default();
        plinth_engine::Limits {
            memory_bytes: self.query_memory,
            time: std::time::Duration::from_secs(self.query_timeout),
            threads: self.threads.unwrap_or(defaults.threads),
            ..defaults
        }
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[command(flatten)]
    pub serving: ServingArgs,
    /// A dbt-compatible project to build on request (POST
    /// /api/v1/pipelines/run) and to document (GET /api/v1/catalog).
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Build the project this often, e.g. 15m, 1h, 1d; the first build at
    /// start. By default, `build_every` in the project's plinth.yml.
    #[arg(long, value_name = "INTERVAL", requires = "project", value_parser = parse_interval)]
    pub build_every: Option<std::time::Duration>,
}

/// How a server listens and what it bounds; shared by `serve` and `demo`.
#[derive(Args)]
pub struct ServingArgs {
    /// Address to listen on. Plinth binds to loopback unless told otherwise.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub listen: String,
    #[command(flatten)]
    pub limits: QueryLimitArgs,
    #[command(flatten)]
    pub capture: CaptureLimitArgs,
    #[command(flatten)]
    pub tracking_plan: TrackingPlanArg,
}

/// The tracking plan that captured events are checked against.
#[derive(Args, Clone)]
pub struct TrackingPlanArg {
    /// A tracking plan (YAML) to check events against; by default
    /// `<data>/tracking-plan.yml` when that file exists.
    #[arg(long, value_name = "FILE")]
    pub tracking_plan: Option<PathBuf>,
}

impl TrackingPlanArg {
    /// The plan to apply, if any. A plan named on the command line must
    /// exist; a broken plan is an error, never silently no plan.
    pub fn load(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<Option<plinth_tracking_plan::TrackingPlan>> {
        let path = match &self.tracking_plan {
            Some(path) => path.clone(),
            None => {
                let default = data_dir.join("tracking-plan.yml");
                if !default.exists() {
                    return Ok(None);
                }
                default
            }
        };
        Ok(Some(plinth_tracking_plan::TrackingPlan::load(&path)?))
    }
}

/// Size limits of capture requests (PostHog and Segment endpoints).
#[derive(Args, Clone)]
pub struct CaptureLimitArgs {
    /// Largest single event; a larger one is refused (413) or, inside a
    /// batch, quarantined.
    #[arg(long, value_name = "SIZE", default_value = "2MiB", value_parser = parse_size)]
    pub max_event_bytes: usize,
    /// Largest capture request, compressed or decompressed (413 above it).
    #[arg(long, value_name = "SIZE", default_value = "20MiB", value_parser = parse_size)]
    pub max_batch_bytes: usize,
    /// How often captured events move from memory to Parquet (they are
    /// queryable before). Each move holds up the log's syncs while its files
    /// are synced: longer intervals make longer pauses (at 5s, the p99 of
    /// single-event requests was 250 ms; at 1s, 6 ms) and fewer small files
    /// for compaction.
    #[arg(long, value_name = "INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub flush_interval: std::time::Duration,
}

impl CaptureLimitArgs {
    pub fn limits(&self) -> plinth_server::capture::CaptureLimits {
        plinth_server::capture::CaptureLimits {
            max_event_bytes: self.max_event_bytes,
            max_batch_bytes: self.max_batch_bytes,
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (it is shown only once).
    Create(crate::keys::CreateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// The SQL to run.
    pub sql: String,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Print the query's wall time (planning and execution) to stderr.
    #[arg(long)]
    pub timing: bool,
    #[command(flatten)]
    pub limits: QueryLimitArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FileFormat {
    Ndjson,
    Csv,
    Parquet,
}

impl From<FileFormat> for plinth_ingest::ImportFormat {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Ndjson => plinth_ingest::ImportFormat::Ndjson,
            FileFormat::Csv => plinth_ingest::ImportFormat::Csv,
            FileFormat::Parquet => plinth_ingest::ImportFormat::Parquet,
        }
    }
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Files to import. NDJSON lines may be PostHog- or Segment-shaped
    /// events. A file must not change while it is imported.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The files' format; by default, from each file's extension.
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Rows per commit; an interrupted import resumes after the last commit.
    #[arg(long, value_name = "ROWS", default_value_t = plinth_ingest::import::DEFAULT_COMMIT_ROWS)]
    pub commit_rows: usize,
    /// Do not merge the new files into one per day afterwards.
    #[arg(long)]
    pub no_compact: bool,
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Users to simulate.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Days of history.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// The same seed (and end date) always gives the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The last day of the demo (YYYY-MM-DD); yesterday (UTC) by default.
    #[arg(long, value_name = "DATE")]
    pub end_date: Option<chrono::NaiveDate>,
    /// Generate and exit without serving.
    #[arg(long)]
    pub no_serve: bool,
    /// Write the events as PostHog-shaped NDJSON to FILE instead of storing them.
    #[arg(long, value_name = "FILE")]
    pub ndjson: Option<PathBuf>,
    #[command(flatten)]
    pub serving: ServingArgs,
}

impl DemoArgs {
    pub fn end_date(&self) -> chrono::NaiveDate {
        self.end_date
            .unwrap_or_else(|| chrono::Utc::now().date_naive() - chrono::Duration::days(1))
    }
}

#[derive(Args)]
pub struct MaintainArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Merge each day's small files into files of up to this many rows.
    #[arg(long, value_name = "ROWS", default_value_t = 4_000_000)]
    pub compact_rows: u64,
    /// Drop events whose day is older than this many days.
    #[arg(long, value_name = "DAYS")]
    pub retention_days: Option<u64>,
    /// Delete replaced files once they have been out of the table this long
    /// (seconds); running queries may still read them until then.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub vacuum_grace: u64,
}

/// Intervals such as `90s`, `15m`, `1h`, `1d`.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an interval such as 15m or 1h"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown interval unit {other:?}: use s, m, h or d")),
    };
    if number == 0 {
        return Err("the interval must be longer than zero".to_string());
    }
    Ok(std::time::Duration::from_secs(number * seconds))
}

/// Sizes such as `512MiB`, `2GiB`, `1000000`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB or 2GiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB")),
    };
    Ok(number * factor)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::run(args),
        Command::Keys(KeysCommand::Create(args)) => crate::keys::create(args),
        Command::Sql(args) => crate::sql::run(args),
        Command::Import(args) => crate::import::run(args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Maintain(args) => crate::maintain::run(args),
        Command::Quarantine(command) => crate::quarantine::run(command),
        Command::Stats => crate::stats::run(),
        Command::Compile(args) => crate::pipelines::compile_command(args),
        Command::Ls(args) => crate::pipelines::ls_command(args),
        Command::Build(args) => crate::pipelines::run_command(RunnerCommand::Build, args),
        Command::Run(args) => crate::pipelines::run_command(RunnerCommand::Run, args),
        Command::Test(args) => crate::pipelines::run_command(RunnerCommand::Test, args),
        Command::Seed(args) => crate::pipelines::run_command(RunnerCommand::Seed, args),
        Command::Lineage(args) => crate::pipelines::lineage_command(args),
        Command::Docs(DocsCommand::Generate(args)) => crate::pipelines::docs_generate_command(args),
        Command::Source(SourceCommand::Freshness(args)) => {
            crate::pipelines::source_freshness_command(args)
        }
        Command::Anomalies(args) => crate::anomalies::run(args),
        Command::Experiment(command) => crate::experiments::run(command),
        Command::Alert(command) => crate::alerts::run(command),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_interval, parse_size};

    #[test]
    fn intervals_parse_with_units() {
        assert_eq!(parse_interval("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_interval("1d").unwrap().as_secs(), 86_400);
        assert!(parse_interval("0h").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
