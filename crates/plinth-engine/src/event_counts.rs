//! Events counted by name or by day without grouping every row.
//!
//! "Which events happen, and how often" and "events per day" open most
//! product questions. DataFusion answers both by grouping every row: it
//! copies each `event` text out of Parquet and hashes it, or truncates and
//! hashes each timestamp. The store knows more. It writes `event`
//! dictionary-encoded (a few dozen names, files sorted by event), so names
//! are counted by reading the column as dictionary keys, counting keys in
//! an array and looking the names up once a batch. And each file holds one
//! UTC day (the log records its first and last timestamp), so days are
//! counted from the log's row counts without reading a file; a file that
//! spans days (none the store writes) is read.
//!
//! [`CountEvents`] rewrites an aggregate over the stored `events`
//! whose only grouping key is `event` or `date_trunc('day', timestamp)` and
//! whose aggregates are all `count(*)`, read straight from the scan (an
//! alias allowed; no filter, no limit), into an [`EventCounts`] leaf.
//! [`ExtensionsQueryPlanner`] plans that as [`EventCountsExec`], which
//! counts the snapshot the scan would have read, files and buffered rows.
//! Anything else (a filter, `count(col)`, a second key) keeps DataFusion's
//! plan.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, DataFusionError, Result};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, LogicalPlan, SubqueryAlias, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore,
};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use plinth_store::TableView;
use plinth_store::provider::StoreTable;

use crate::aggregate_rule::AggregateRewrite;

const EVENTS: &str = "events";
const EVENT: &str = "event";
const TIMESTAMP: &str = "timestamp";

/// What the events are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CountKey {
    /// `event`.
    Name,
    /// `date_trunc('day', timestamp)`, UTC.
    Day,
}

/// Rows per batch read from a file: keys are 4 bytes, so large batches are cheap.
const BATCH_ROWS: usize = 64 * 1024;

/// The rule: see the module docs.
#[derive(Debug, Default)]
pub struct CountEvents;

impl AggregateRewrite for CountEvents {
    const NAME: &'static str = "plinth_count_events";

    fn rewrite_aggregate(&self, aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
        Ok(event_counts(aggregate).map(|node| {
            LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            })
        }))
    }
}

/// The counts node for `aggregate`, if it has the shape of the module docs.
fn event_counts(aggregate: &Aggregate) -> Option<EventCounts> {
    let [group] = aggregate.group_expr.as_slice() else {
        return None;
    };
    let key = count_key(group)?;
    if aggregate.aggr_expr.is_empty() || !aggregate.aggr_expr.iter().all(is_count_star) {
        return None;
    }
    let scan = match aggregate.input.as_ref() {
        LogicalPlan::TableScan(scan) => scan,
        LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. }) => match input.as_ref() {
            LogicalPlan::TableScan(scan) => scan,
            _ => return None,
        },
        _ => return None,
    };
    if !scan.filters.is_empty() || scan.fetch.is_some() {
        return None;
    }
    let provider = source_as_provider(&scan.source).ok()?;
    let table = provider.downcast_ref::<StoreTable>()?;
    (table.table().name() == EVENTS).then(|| EventCounts {
        table: table.clone(),
        key,
        schema: aggregate.schema.clone(),
    })
}

/// The key a grouping expression counts by, if it is one of the two.
fn count_key(group: &Expr) -> Option<CountKey> {
    match group {
        Expr::Column(column) if column.name == EVENT => Some(CountKey::Name),
        // The store's timestamps are UTC, and it partitions them by UTC day.
        Expr::ScalarFunction(function) if function.func.name() == "date_trunc" => {
            match function.args.as_slice() {
                [Expr::Literal(part, _), Expr::Column(column)]
                    if column.name == TIMESTAMP
                        && part
                            .try_as_str()
                            .flatten()
                            .is_some_and(|p| p.eq_ignore_ascii_case("day")) =>
                {
                    Some(CountKey::Day)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `count(*)` (DataFusion plans it as `count(1)`) or `count` of any other
/// non-null constant: the number of rows.
fn is_count_star(expr: &Expr) -> bool {
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return false;
    };
    func.name() == "count"
        && !params.distinct
        && params.filter.is_none()
        && matches!(params.args.as_slice(), [Expr::Literal(value, _)] if !value.is_null())
}

/// The logical leaf: the counts of the stored events by name or by day, in
/// the replaced aggregate's schema (the key, then one count per aggregate).
#[derive(Clone)]
pub struct EventCounts {
    table: StoreTable,
    key: CountKey,
    schema: DFSchemaRef,
}

impl fmt::Debug for EventCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        UserDefinedLogicalNodeCore::fmt_for_explain(self, f)
    }
}

impl PartialEq for EventCounts {
    fn eq(&self, other: &Self) -> bool {
        self.table.table().name() == other.table.table().name()
            && self.key == other.key
            && self.schema == other.schema
    }
}

impl Eq for EventCounts {}

impl Hash for EventCounts {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.table.table().name().hash(state);
        self.key.hash(state);
        self.schema.hash(state);
    }
}

impl PartialOrd for EventCounts {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self == other).then_some(std::cmp::Ordering::Equal)
    }
}

impl UserDefinedLogicalNodeCore for EventCounts {
    fn name(&self) -> &str {
        "EventCounts"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "EventCounts: {} by {:?}",
            self.table.table().name(),
            self.key
        )
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// DataFusion's planner, which also plans [`EventCounts`].
#[derive(Debug, Default)]
pub struct ExtensionsQueryPlanner;

#[async_trait]
impl QueryPlanner for ExtensionsQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(EventCountsPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct EventCountsPlanner;

#[async_trait]
impl ExtensionPlanner for EventCountsPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(counts) = node.as_any().downcast_ref::<EventCounts>() else {
            return Ok(None);
        };
        // The snapshot is taken when the plan is made, as the scan's is.
        Ok(Some(Arc::new(EventCountsExec::new(
            counts.table.table().view(),
            counts.key,
            Arc::new(counts.schema.as_arrow().clone()),
            session.config().target_partitions(),
        ))))
    }
}

/// Counts the events of one table view by a key; one partition, one batch.
#[derive(Debug)]
pub struct EventCountsExec {
    view: Arc<TableView>,
    key: CountKey,
    threads: usize,
    properties: Arc<PlanProperties>,
}

impl EventCountsExec {
    fn new(view: TableView, key: CountKey, schema: SchemaRef, threads: usize) -> EventCountsExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        EventCountsExec {
            view: Arc::new(view),
            key,
            threads: threads.max(1),
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for EventCountsExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "EventCountsExec: by={:?}, files={}, buffered_batches={}",
            self.key,
            self.view.snapshot.files.len(),
            self.view.buffered.len()
        )
    }
}

impl ExecutionPlan for EventCountsExec {
    fn name(&self) -> &str {
        "EventCountsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let (view, key, threads, output) =
            (self.view.clone(), self.key, self.threads, schema.clone());
        let batch = async move {
            tokio::task::spawn_blocking(move || match key {
                CountKey::Name => names_batch(&view, threads, &output),
                CountKey::Day => days_batch(&view, &output),
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(batch),
        )))
    }
}

/// Rows by event name (`None` for a null name).
type Counts = HashMap<Option<String>, i64>;

fn add(counts: &mut Counts, name: Option<&str>, rows: i64) {
    *counts.entry(name.map(str::to_owned)).or_insert(0) += rows;
}

/// The counts by name of `view` as one batch of `schema`.
fn names_batch(view: &TableView, threads: usize, schema: &SchemaRef) -> Result<RecordBatch> {
    let (names, rows): (Vec<Option<String>>, Vec<i64>) =
        count_names(view, threads)?.into_iter().unzip();
    counts_batch(Arc::new(StringArray::from(names)), rows, schema)
}

/// The counts by day of `view` as one batch of `schema`.
fn days_batch(view: &TableView, schema: &SchemaRef) -> Result<RecordBatch> {
    let (days, rows): (Vec<Option<i64>>, Vec<i64>) = count_days(view)?.into_iter().unzip();
    let starts = days
        .into_iter()
        .map(|day| day.map(plinth_store::partition_start))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    counts_batch(Arc::new(starts), rows, schema)
}

/// One batch of `schema`: the keys, then the counts repeated for each
/// `count(*)` of the query.
fn counts_batch(keys: ArrayRef, rows: Vec<i64>, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows: ArrayRef = Arc::new(Int64Array::from(rows));
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| cast(if i == 0 { &keys } else { &rows }, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn count_names(view: &TableView, threads: usize) -> Result<Counts> {
    let files = &view.snapshot.files;
    let next = AtomicUsize::new(0);
    let partials: Vec<Result<Counts>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(files.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut counts = Counts::new();
                    while let Some(file) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                        count_file(&view.table_dir.join(&file.path), &mut counts)?;
                    }
                    Ok(counts)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("event counting thread"))
            .collect()
    });
    let mut counts = Counts::new();
    for partial in partials {
        for (name, rows) in partial? {
            add(&mut counts, name.as_deref(), rows);
        }
    }
    for batch in &view.buffered {
        let column = batch
            .column_by_name(EVENT)
            .ok_or_else(|| DataFusionError::Internal("buffered events without event".into()))?;
        // As a dictionary, each name is added once, not once a row.
        let names = cast(column, &name_codes())?;
        count_keys(names.as_dictionary::<Int32Type>(), &mut counts)?;
    }
    Ok(counts)
}

/// The type `event` is counted in: dictionary keys over the names.
fn name_codes() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Adds the rows of one Parquet file, reading only `event`, as dictionary keys.
fn count_file(path: &Path, counts: &mut Counts) -> Result<()> {
    let file = File::open(path)?;
    let stored = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())?;
    let index = stored.schema().index_of(EVENT)?;
    let mut fields: Vec<Field> = stored
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[index] = fields[index].clone().with_data_type(name_codes());
    let hint = Schema::new_with_metadata(fields, stored.schema().metadata().clone());
    let metadata = ArrowReaderMetadata::try_new(
        stored.metadata().clone(),
        ArrowReaderOptions::new().with_schema(Arc::new(hint)),
    )?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()?;
    for batch in reader {
        count_keys(batch?.column(0).as_dictionary::<Int32Type>(), counts)?;
    }
    Ok(())
}

/// Adds one batch: the rows of each key, then each used key's name once.
fn count_keys(names: &DictionaryArray<Int32Type>, counts: &mut Counts) -> Result<()> {
    let values = names
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| DataFusionError::Internal("event dictionary values are not text".into()))?;
    let mut per_key = vec![0i64; values.len()];
    let mut nulls = 0;
    let keys = names.keys();
    if keys.null_count() == 0 {
        for &key in keys.values() {
            per_key[key as usize] += 1;
        }
    } else {
        for key in keys {
            match key {
                Some(key) => per_key[key as usize] += 1,
                None => nulls += 1,
            }
        }
    }
    for (key, &rows) in per_key.iter().enumerate().filter(|(_, rows)| **rows > 0) {
        add(
            counts,
            values.is_valid(key).then(|| values.value(key)),
            rows,
        );
    }
    if nulls > 0 {
        add(counts, None, nulls);
    }
    Ok(())
}

/// Rows by UTC day number: a file within one day counts from the log; any
/// other file, and the buffered rows, by their timestamps.
fn count_days(view: &TableView) -> Result<BTreeMap<Option<i64>, i64>> {
    let mut days = BTreeMap::new();
    for file in &view.snapshot.files {
        let first = file.min_micros.map(plinth_store::partition_day);
        let last = file.max_micros.map(plinth_store::partition_day);
        if first.is_some() && first == last {
            *days.entry(first).or_insert(0) += file.rows as i64;
            continue;
        }
        let path = view.table_dir.join(&file.path);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?;
        let index = reader.schema().index_of(TIMESTAMP)?;
        let mask = ProjectionMask::roots(reader.parquet_schema(), [index]);
        for batch in reader
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()?
        {
            add_days(&mut days, batch?.column(0))?;
        }
    }
    for batch in &view.buffered {
        let times = batch
            .column_by_name(TIMESTAMP)
            .ok_or_else(|| DataFusionError::Internal("buffered events without timestamp".into()))?;
        add_days(&mut days, times)?;
    }
    Ok(days)
}

/// Adds a row to the day of each of `times`.
fn add_days(days: &mut BTreeMap<Option<i64>, i64>, times: &dyn Array) -> Result<()> {
    let times = cast(times, &DataType::Int64)?;
    for micros in times.as_primitive::<datafusion::arrow::datatypes::Int64Type>() {
        *days
            .entry(micros.map(plinth_store::partition_day))
            .or_insert(0) += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;
    use plinth_store::log::{DataFile, Snapshot};

    fn times(micros: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            TIMESTAMP,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )]));
        let column = TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC");
        RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap()
    }

    #[test]
    fn days_count_from_the_log_and_read_only_files_that_span_days() {
        let dir = tempfile::tempdir().unwrap();
        let day = plinth_store::partition_start(1);
        let spanning = times(&[2 * day - 1, 2 * day, 2 * day + 5]);
        let (rows, bytes) = plinth_store::write_parquet_file(
            dir.path(),
            "spans.parquet",
            &spanning.schema(),
            &[spanning],
        )
        .unwrap();
        let file = |path: &str, rows, bytes, first, last| DataFile {
            path: path.into(),
            rows,
            bytes,
            partition: None,
            min_micros: Some(first),
            max_micros: Some(last),
            staged: false,
        };
        let view = TableView {
            table_dir: dir.path().to_path_buf(),
            snapshot: Arc::new(Snapshot {
                files: vec![
                    file("spans.parquet", rows, bytes, 2 * day - 1, 2 * day + 5),
                    // Within one day: counted without being read (it does not exist).
                    file("one-day.parquet", 40, 1, 5 * day + 1, 5 * day + 9),
                ],
                ..Snapshot::default()
            }),
            buffered: vec![times(&[5 * day, -1])],
        };
        let days = count_days(&view).unwrap();
        assert_eq!(
            days,
            BTreeMap::from([(Some(-1), 1), (Some(1), 1), (Some(2), 2), (Some(5), 41)])
        );
    }
}
