//! The query engine: a DataFusion session over the store, with the JSON
//! functions, per-query limits and the rules on what SQL may do.
//!
//! Besides DataFusion's functions and the JSON functions, SQL has the
//! product-analytics aggregates of [`aggregates`]: `window_funnel` and
//! `retention_periods`. Two optimizer rules answer common questions from
//! what the store knows: grouping by person uses `person_num`
//! ([`person_num_grouping`]); counting events by name reads Parquet
//! dictionary codes, and by day the log's row counts ([`event_counts`]).
//!
//! Every query gets its own [`SessionContext`] whose memory pool is the
//! per-query limit (operators spill to disk beyond it) and whose plan is
//! checked against the caller's [`Privileges`] before it runs: only admins may
//! run statements that touch server files or define tables outside the store
//! (`CREATE EXTERNAL TABLE`, `COPY`, `SET`, DDL and DML).
//!
//! Besides the store's tables, a session sees the relations pipelines built:
//! the newest published version of the warehouse, or, for a build auditing
//! its own work, the staged version it passes to [`Engine::session`].
//!
//! This crate knows nothing of HTTP, users or keys: callers say what a query
//! may do.

mod aggregate_rule;
pub mod aggregates;
mod event_counts;
pub mod format;
mod person_num_grouping;
mod person_overrides;
mod utc_date_trunc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use plinth_store::{Store, TableProviderExt};
use plinth_warehouse::{Version, Warehouse};

use crate::aggregate_rule::AggregateRule;

/// Limits that bound every query.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory a query may hold before its operators spill (and fail if they
    /// cannot spill).
    pub memory_bytes: usize,
    /// Wall time from planning to the last row.
    pub time: Duration,
    /// Where spill files go; the system temporary folder when `None`.
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of one query.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 2 << 30,
            time: Duration::from_secs(300),
            spill_dir: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// What a query is allowed to do beyond reading the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges {
    /// SELECT over the store's tables only.
    ReadStore,
    /// Anything DataFusion runs: DDL, DML, COPY, SET, external tables.
    Admin,
}

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("not allowed: {0} (only admins may run it)")]
    Refused(String),
    #[error("query exceeded the time limit of {0:?}")]
    TimedOut(Duration),
    #[error("query exceeded the memory limit of {limit} bytes: {detail}")]
    OutOfMemory { limit: usize, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The answer of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs SQL over a store.
#[derive(Clone)]
pub struct Engine {
    store: Arc<Store>,
    limits: Limits,
    /// `events.person_id` resolves through merges (see [`person_overrides`]).
    person_overrides: Arc<person_overrides::OverridesCache>,
    /// The relations pipelines publish beside the store.
    warehouse: Warehouse,
}

impl Engine {
    pub fn new(store: Arc<Store>, limits: Limits) -> Engine {
        let warehouse = Warehouse::reader(store.root());
        Engine {
            store,
            limits,
            person_overrides: Arc::default(),
            warehouse,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A fresh session with the store's tables, the JSON functions and this
    /// engine's limits.
    pub fn context(&self) -> Result<SessionContext, QueryError> {
        let mut disk = DiskManagerBuilder::default();
        if let Some(dir) = &self.limits.spill_dir {
            disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
        }
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(self.limits.memory_bytes)))
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(internal)?;
        let config = SessionConfig::new()
            .with_target_partitions(self.limits.threads.max(1))
            .with_information_schema(true)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let overrides = self
            .person_overrides
            .get(&self.store.persons)
            .map_err(internal)?;
        // person_id and person_num name persons one-to-one only without
        // merge overrides and while every event has a number.
        let one_to_one = overrides.is_empty()
            && self
                .store
                .events
                .never_null("person_num")
                .map_err(|e| QueryError::Internal(format!("{e:#}")))?;
        let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = Vec::new();
        if one_to_one {
            rules.push(Arc::new(AggregateRule(
                person_num_grouping::CountDistinctPersonNum,
            )));
        }
        rules.extend(Optimizer::new().rules);
        rules.push(Arc::new(AggregateRule(event_counts::CountEvents)));
        if one_to_one {
            rules.push(Arc::new(AggregateRule(
                person_num_grouping::GroupByPersonNum,
            )));
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rules(rules)
            .with_query_planner(Arc::new(event_counts::ExtensionsQueryPlanner))
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        datafusion_functions_json::register_all(&mut ctx).map_err(internal)?;
        aggregates::register(&ctx);
        ctx.register_udf(utc_date_trunc::UtcDateTrunc::udf());
        person_overrides::register_events(&ctx, self.store.events.provider(), overrides)
            .map_err(internal)?;
        for table in self.store.tables() {
            if table.name() != "events" {
                ctx.register_table(table.name(), table.provider())
                    .map_err(internal)?;
            }
        }
        Ok(ctx)
    }

    /// A fresh session (see [`Engine::context`]) that also sees the
    /// warehouse: `staged` when given (a build reading its own unpublished
    /// relations), else the newest published version. The store's tables
    /// win over relations of the same name.
    pub async fn session(&self, staged: Option<&Version>) -> Result<SessionContext, QueryError> {
        let ctx = self.context()?;
        let warehouse_error = |e: anyhow::Error| QueryError::Internal(format!("{e:#}"));
        match staged {
            Some(version) => self.warehouse.register(&ctx, version),
            None => self
                .warehouse
                .latest()
                .and_then(|version| self.warehouse.register(&ctx, &version)),
        }
        .map_err(warehouse_error)?;
        Ok(ctx)
    }

    /// Plans and runs `sql` within the limits.
    pub async fn query(
        &self,
        sql: &str,
        privileges: Privileges,
    ) -> Result<QueryResult, QueryError> {
        let time = self.limits.time;
        match tokio::time::timeout(time, self.run(sql, privileges)).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::TimedOut(time)),
        }
    }

    async fn run(&self, sql: &str, privileges: Privileges) -> Result<QueryResult, QueryError> {
        let ctx = self.session(None).await?;
        let options = match privileges {
            Privileges::Admin => SQLOptions::new(),
            Privileges::ReadStore => SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false),
        };
        let frame = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| self.classify(e))?;
        let schema = frame.schema().inner().clone();
        let batches = frame.collect().await.map_err(|e| self.classify(e))?;
        Ok(QueryResult { schema, batches })
    }

    fn classify(&self, error: DataFusionError) -> QueryError {
        let error = error.find_root().to_string();
        let plain = error.clone();
        if plain.contains("not supported: ") && is_refusal(&plain) {
            QueryError::Refused(strip_prefix(&plain))
        } else if plain.contains("Resources exhausted") {
            QueryError::OutOfMemory {
                limit: self.limits.memory_bytes,
                detail: strip_prefix(&plain),
            }
        } else if plain.starts_with("Internal error") || plain.starts_with("IO error") {
            QueryError::Internal(plain)
        } else {
            QueryError::Invalid(strip_prefix(&plain))
        }
    }
}

fn is_refusal(message: &str) -> bool {
    [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ]
    .iter()
    .any(|p| message.contains(p))
}

/// DataFusion prefixes messages with their category ("Error during
/// planning: "); users want the sentence.
fn strip_prefix(message: &str) -> String {
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "Resources exhausted: ",
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    message.to_string()
}

fn internal(error: DataFusionError) -> QueryError {
    QueryError::Internal(error.to_string())
}
