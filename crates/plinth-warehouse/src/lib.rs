//! The warehouse: the relations pipelines build (models, seeds, snapshots,
//! stored test failures), kept beside the event store and published as one
//! versioned whole.
//!
//! ```text
//! plinth-data/warehouse/
//!   _log/000…0007.json            version 7: every relation, by name
//!   orders/part-<uuidv7>.parquet  a table's files
//! ```
//!
//! A [`Version`] maps each relation name to a [`Relation`]: a table (its
//! Parquet files), a view (its SQL), or external files read in place. A build writes new files first
//! ([`Warehouse::write_table`]); they are *staged*: on disk, but named by no
//! published version, so no reader sees them. [`Warehouse::publish`] then
//! commits the next version in one put-if-absent log commit (see
//! `plinth_store::log`), which makes every relation of the build visible at
//! once, or, if another writer published first, nothing.
//!
//! Invariants:
//! - a session registers one version whole ([`Warehouse::register`]): it
//!   sees all of a build or none of it; relations are resolved only when a
//!   query names them, so a query costs what it reads, not what the
//!   warehouse holds;
//! - a staged file becomes visible only through a log commit; a writer opening
//!   the warehouse deletes files that no version or tombstone names (a build
//!   killed before publishing), so a killed build leaves production as it was;
//! - files replaced by a version are tombstoned, and deleted by
//!   [`Warehouse::vacuum`] after a grace period, so queries planned against the
//!   previous version finish.
//!
//! [`dialect`] holds the SQL semantics pipeline plans follow (DuckDB's
//! division), applied here to views and by the runner to everything else.
//!
//! This crate knows nothing of dbt projects or the engine's limits: it
//! stores relations and shows them to DataFusion.

pub mod dialect;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::execution::SessionState;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::SessionContext;
use plinth_store::log::{self, DataFile, Tombstone};
use plinth_store::write_parquet_file;
use serde::{Deserialize, Serialize};

/// The warehouse folder inside a data directory.
pub const WAREHOUSE_DIR: &str = "warehouse";

/// One relation of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Relation {
    /// Rows in Parquet files (paths relative to the warehouse folder). A
    /// table always has at least one file, so its schema is known even
    /// when it has no rows.
    Table { files: Vec<DataFile> },
    /// A query over other relations, planned when a session registers it.
    View { sql: String },
    /// CSV or Parquet files outside the warehouse, read where they are at
    /// each query (dbt-duckdb's `external_location` sources): an absolute
    /// path, globs allowed, its extension naming the format.
    External { location: String },
}

impl Relation {
    pub fn rows(&self) -> Option<u64> {
        match self {
            Relation::Table { files } => Some(files.iter().map(|f| f.rows).sum()),
            Relation::View { .. } | Relation::External { .. } => None,
        }
    }
}

/// The state of the warehouse at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub operation: String,
    pub committed_at_micros: i64,
    /// Relation name (`orders`, or `schema.name` such as
    /// `dbt_test__audit.unique_orders_id`) to relation.
    pub relations: BTreeMap<String, Relation>,
    /// Files that left the version and wait for vacuum.
    pub tombstones: Vec<Tombstone>,
}

/// The warehouse of one data directory.
#[derive(Debug, Clone)]
pub struct Warehouse {
    dir: PathBuf,
    writable: bool,
}

impl Warehouse {
    /// The warehouse of `data_dir`, for reading; touches nothing on disk.
    pub fn reader(data_dir: &Path) -> Warehouse {
        Warehouse {
            dir: data_dir.join(WAREHOUSE_DIR),
            writable: false,
        }
    }

    /// The warehouse of `data_dir`, for the one process that writes the data
    /// directory (it holds the store's writer lock). Removes what a killed
    /// build left: temporary log files and staged files no version names.
    pub fn writer(data_dir: &Path) -> Result<Warehouse> {
        let dir = data_dir.join(WAREHOUSE_DIR);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        log::remove_temporaries(&dir)?;
        let warehouse = Warehouse {
            dir,
            writable: true,
        };
        warehouse.remove_unpublished()?;
        Ok(warehouse)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest published version (version 0, empty, before the first).
    pub fn latest(&self) -> Result<Version> {
        log::read_latest_state(&self.dir)
    }

    /// Writes `batches` as one staged Parquet file of relation `name`
    /// (with `schema`, also when there are no rows). Nothing reads it until
    /// a published version names it.
    pub fn write_table(
        &self,
        name: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<DataFile> {
        self.check_writable()?;
        check_name(name)?;
        let relative = format!("{name}/part-{}.parquet", uuid::Uuid::now_v7());
        let (rows, bytes) = write_parquet_file(&self.dir, &relative, schema, batches)?;
        Ok(DataFile {
            path: relative,
            rows,
            bytes,
            partition: None,
            min_micros: None,
            max_micros: None,
            staged: false,
        })
    }

    /// Publishes `relations` as the version after `base`, in one commit.
    /// Files of `base` that `relations` no longer names are tombstoned. Fails,
    /// publishing nothing, if another writer published since `base`.
    pub fn publish(
        &self,
        base: &Version,
        relations: BTreeMap<String, Relation>,
        operation: &str,
    ) -> Result<Version> {
        self.check_writable()?;
        for name in relations.keys() {
            check_name(name)?;
        }
        let kept: HashSet<&str> = table_files(&relations).collect();
        let now = chrono::Utc::now().timestamp_micros();
        let mut tombstones = base.tombstones.clone();
        tombstones.extend(
            table_files(&base.relations)
                .filter(|path| !kept.contains(path))
                .map(|path| Tombstone {
                    path: path.to_string(),
                    removed_at_micros: now,
                }),
        );
        let version = Version {
            version: base.version + 1,
            operation: operation.to_string(),
            committed_at_micros: now,
            relations,
            tombstones,
        };
        log::commit_state(&self.dir, version.version, &version)
            .context("publishing the warehouse (did another build publish meanwhile?)")?;
        Ok(version)
    }

    /// Deletes files tombstoned more than `grace` ago; returns how many.
    pub fn vacuum(&self, grace: Duration) -> Result<usize> {
        self.check_writable()?;
        let latest = self.latest()?;
        let cutoff = chrono::Utc::now().timestamp_micros() - grace.as_micros() as i64;
        let (expired, kept): (Vec<_>, Vec<_>) = latest
            .tombstones
            .iter()
            .cloned()
            .partition(|t| t.removed_at_micros <= cutoff);
        if expired.is_empty() {
            return Ok(0);
        }
        // Forget the tombstones first: a crash in between leaves files no
        // version names, which the next writer removes.
        let next = Version {
            version: latest.version + 1,
            operation: "vacuum".to_string(),
            committed_at_micros: chrono::Utc::now().timestamp_micros(),
            tombstones: kept,
            relations: latest.relations,
        };
        log::commit_state(&self.dir, next.version, &next)?;
        log::delete_tombstoned(&self.dir, &expired)?;
        remove_empty_folders(&self.dir)?;
        Ok(expired.len())
    }

    /// Makes every relation of `version` queryable in `ctx`, resolved only
    /// when a query names it: tables as Parquet listing tables, views as
    /// DataFusion views planned against the same version. `schema.name`
    /// relations go into that schema of the default catalog. Tables already
    /// in the session (the event store's, or registered later) win over
    /// relations of the same name.
    pub fn register(&self, ctx: &SessionContext, version: &Version) -> Result<()> {
        let options = ctx.state().config_options().catalog.clone();
        let catalog = ctx
            .catalog(&options.default_catalog)
            .context("the default catalog is missing")?;
        let mut by_schema: BTreeMap<&str, BTreeMap<String, Relation>> = BTreeMap::new();
        for (name, relation) in &version.relations {
            let (schema, table) = match name.split_once('.') {
                Some((schema, table)) => (schema, table),
                None => (options.default_schema.as_str(), name.as_str()),
            };
            by_schema
                .entry(schema)
                .or_default()
                .insert(table.to_string(), relation.clone());
        }
        let mut schemas = Vec::new();
        for (schema, relations) in by_schema {
            let inner = catalog
                .schema(schema)
                .unwrap_or_else(|| Arc::new(MemorySchemaProvider::new()));
            let lazy = Arc::new(VersionSchema {
                inner,
                relations,
                dir: self.dir.clone(),
                state: OnceLock::new(),
                resolved: Mutex::new(HashMap::new()),
            });
            catalog.register_schema(schema, lazy.clone())?;
            schemas.push(lazy);
        }
        // Views are planned with the session's own state, which shares
        // the catalogs just registered.
        let state = ctx.state();
        for schema in schemas {
            let _ = schema.state.set(state.clone());
        }
        Ok(())
    }

    fn remove_unpublished(&self) -> Result<()> {
        let latest = self.latest()?;
        let known: HashSet<&str> = table_files(&latest.relations)
            .chain(latest.tombstones.iter().map(|t| t.path.as_str()))
            .collect();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() || entry.file_name() == log::LOG_DIR {
                continue;
            }
            for file in fs::read_dir(entry.path())? {
                let file = file?;
                let relative = format!(
                    "{}/{}",
                    entry.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                if !known.contains(relative.as_str()) {
                    tracing::info!(file = %relative, "removing a staged file no version names");
                    fs::remove_file(file.path())?;
                }
            }
        }
        remove_empty_folders(&self.dir)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            bail!("the warehouse {} is open read-only", self.dir.display());
        }
        Ok(())
    }
}

/// The Arrow schema stored in a Parquet file's footer.
pub fn parquet_schema(path: &Path) -> Result<SchemaRef> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)?
        .schema()
        .clone())
}

fn table_files(relations: &BTreeMap<String, Relation>) -> impl Iterator<Item = &str> {
    relations.values().flat_map(|r| match r {
        Relation::Table { files } => files.iter().map(|f| f.path.as_str()).collect(),
        Relation::View { .. } | Relation::External { .. } => Vec::new(),
    })
}

/// A relation name is a folder name too: letters, digits, `_`, and at most
/// one `.` between a schema and a name.
fn check_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        bail!(
            "{name:?} is not a valid relation name (letters, digits, _ and one optional schema.)"
        );
    }
    Ok(())
}

/// The relations of one version in one schema, over the session's own
/// tables of that schema (`inner`, which come first and take registrations).
#[derive(Debug)]
struct VersionSchema {
    inner: Arc<dyn SchemaProvider>,
    relations: BTreeMap<String, Relation>,
    dir: PathBuf,
    /// The session's state, for planning views; set right after registration.
    state: OnceLock<SessionState>,
    /// Relations resolved so far in this session.
    resolved: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl VersionSchema {
    /// The relation called `name`, ignoring case when no name matches
    /// exactly: SQL folds unquoted names to lower case, and relation names
    /// keep the case of the model's file, as in DuckDB where names are
    /// case-insensitive.
    fn relation(&self, name: &str) -> Option<(&str, &Relation)> {
        if let Some((key, relation)) = self.relations.get_key_value(name) {
            return Some((key, relation));
        }
        self.relations
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(key, relation)| (key.as_str(), relation))
    }

    fn table_provider(&self, files: &[DataFile]) -> Result<Arc<dyn TableProvider>> {
        let first = files.first().context("a table relation without files")?;
        let schema = parquet_schema(&self.dir.join(&first.path))?;
        let urls = files
            .iter()
            .map(|f| {
                let path = self.dir.join(&f.path);
                ListingTableUrl::parse(path.to_string_lossy())
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

#[async_trait]
impl SchemaProvider for VersionSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(
            self.relations
                .keys()
                .filter(|n| !self.inner.table_exist(n))
                .cloned(),
        );
        names
    }

    async fn table(&self, name: &str) -> DataFusionResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.inner.table(name).await? {
            return Ok(Some(table));
        }
        let Some((name, relation)) = self.relation(name) else {
            return Ok(None);
        };
        let cached = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if let Some(provider) = cached {
            return Ok(Some(provider));
        }
        let provider: Arc<dyn TableProvider> = match relation {
            Relation::Table { files } => self
                .table_provider(files)
                .map_err(|e| DataFusionError::External(e.into()))?,
            Relation::External { location } => {
                let state = self.state.get().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "{name} resolved before its session was ready"
                    ))
                })?;
                external_table(state, location).await.map_err(|e| {
                    DataFusionError::Plan(format!("source {name} at {location}: {}", e.find_root()))
                })?
            }
            Relation::View { sql } => {
                let state = self.state.get().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "view {name} resolved before its session was ready"
                    ))
                })?;
                let plan = state
                    .create_logical_plan(sql)
                    .await
                    .and_then(dialect::duckdb_semantics)
                    .map_err(|e| {
                        DataFusionError::Plan(format!("view {name}: {}", e.find_root()))
                    })?;
                Arc::new(ViewTable::new(plan, Some(sql.clone())))
            }
        };
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), provider.clone());
        Ok(Some(provider))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DataFusionResult<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> DataFusionResult<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || self.relation(name).is_some()
    }
}

/// A listing table over CSV (with a header) or Parquet files, by extension,
/// with the schema inferred from them.
async fn external_table(
    state: &SessionState,
    location: &str,
) -> DataFusionResult<Arc<dyn TableProvider>> {
    let extension = Path::new(location)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let format: Arc<dyn FileFormat> = match extension.as_str() {
        "csv" => Arc::new(
            CsvFormat::default()
                .with_has_header(true)
                .with_schema_infer_max_rec(1_000_000),
        ),
        "parquet" => Arc::new(ParquetFormat::default()),
        other => {
            return Err(DataFusionError::Plan(format!(
                "external files must be .csv or .parquet, not .{other}"
            )));
        }
    };
    let options = ListingOptions::new(format).with_file_extension(format!(".{extension}"));
    let config = ListingTableConfig::new(ListingTableUrl::parse(location)?)
        .with_listing_options(options)
        .infer_schema(state)
        .await?;
    Ok(Arc::new(ListingTable::try_new(config)?))
}

fn remove_empty_folders(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name() != log::LOG_DIR {
            // Fails harmlessly when the folder still has files.
            let _ = fs::remove_dir(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(values: &[i64]) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap();
        (schema, batch)
    }

    async fn count(warehouse: &Warehouse, version: &Version, sql: &str) -> usize {
        let ctx = SessionContext::new();
        warehouse.register(&ctx, version).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches.iter().map(|b| b.num_rows()).sum()
    }

    #[tokio::test]
    async fn a_published_version_shows_tables_and_views_together() {
        let data = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::writer(data.path()).unwrap();
        let (schema, rows) = batch(&[1, 2, 3]);
        let file = warehouse.write_table("numbers", &schema, &[rows]).unwrap();
        let mut relations = BTreeMap::new();
        relations.insert("numbers".to_string(), Relation::Table { files: vec![file] });
        relations.insert(
            "big".to_string(),
            Relation::View {
                sql: "select n from small where n > 1".to_string(),
            },
        );
        relations.insert(
            "small".to_string(),
            Relation::View {
                sql: "select n from numbers".to_string(),
            },
        );
        let base = warehouse.latest().unwrap();
        assert_eq!(base.version, 0);
        let published = warehouse.publish(&base, relations, "build").unwrap();
        let reader = Warehouse::reader(data.path());
        let latest = reader.latest().unwrap();
        assert_eq!(latest, published);
        assert_eq!(count(&reader, &latest, "select * from big").await, 2);
        // A second publish from the same base loses: nothing changes.
        let err = warehouse
            .publish(&base, BTreeMap::new(), "build")
            .unwrap_err();
        assert!(format!("{err:#}").contains("another"), "{err:#}");
        assert_eq!(reader.latest().unwrap().version, 1);
    }

    #[tokio::test]
    async fn a_build_killed_before_publishing_leaves_nothing_behind() {
        let data = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::writer(data.path()).unwrap();
        let (schema, rows) = batch(&[1]);
        let kept = warehouse
            .write_table("t", &schema, std::slice::from_ref(&rows))
            .unwrap();
        let mut relations = BTreeMap::new();
        relations.insert(
            "t".to_string(),
            Relation::Table {
                files: vec![kept.clone()],
            },
        );
        let published = warehouse
            .publish(&warehouse.latest().unwrap(), relations, "build")
            .unwrap();
        // Staged, never published: the process "dies" here.
        let staged = warehouse.write_table("t", &schema, &[rows]).unwrap();
        drop(warehouse);
        let reopened = Warehouse::writer(data.path()).unwrap();
        assert!(!reopened.dir().join(&staged.path).exists());
        assert!(reopened.dir().join(&kept.path).exists());
        assert_eq!(reopened.latest().unwrap(), published);
        assert_eq!(count(&reopened, &published, "select * from t").await, 1);
    }

    #[test]
    fn replaced_files_are_deleted_only_after_the_grace_period() {
        let data = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::writer(data.path()).unwrap();
        let (schema, rows) = batch(&[1]);
        let old = warehouse
            .write_table("t", &schema, std::slice::from_ref(&rows))
            .unwrap();
        let table = |file: DataFile| {
            BTreeMap::from([("t".to_string(), Relation::Table { files: vec![file] })])
        };
        let v1 = warehouse
            .publish(&warehouse.latest().unwrap(), table(old.clone()), "build")
            .unwrap();
        let new = warehouse.write_table("t", &schema, &[rows]).unwrap();
        warehouse.publish(&v1, table(new), "build").unwrap();
        assert_eq!(warehouse.vacuum(Duration::from_secs(3600)).unwrap(), 0);
        assert!(warehouse.dir().join(&old.path).exists());
        assert_eq!(warehouse.vacuum(Duration::ZERO).unwrap(), 1);
        assert!(!warehouse.dir().join(&old.path).exists());
    }

    #[test]
    fn relation_names_are_folder_names() {
        assert!(check_name("orders").is_ok());
        assert!(check_name("dbt_test__audit.unique_orders_id").is_ok());
        assert!(check_name("../etc").is_err());
        assert!(check_name("a.b.c").is_err());
        assert!(check_name("").is_err());
    }
}
