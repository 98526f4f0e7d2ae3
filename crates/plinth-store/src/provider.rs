//! The DataFusion table over a [`Table`]: the Parquet files of one snapshot,
//! unioned with the rows still in the in-memory buffer.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::table::{Table, TableView};

/// A DataFusion table provider that reads the newest view of a [`Table`] at
/// each scan.
#[derive(Clone)]
pub struct StoreTable {
    table: Arc<Table>,
}

/// Makes a store table queryable by DataFusion.
pub trait TableProviderExt {
    fn provider(&self) -> Arc<dyn TableProvider>;
}

impl TableProviderExt for Arc<Table> {
    fn provider(&self) -> Arc<dyn TableProvider> {
        Arc::new(StoreTable {
            table: self.clone(),
        })
    }
}

impl StoreTable {
    /// The store table this provider reads.
    pub fn table(&self) -> &Table {
        &self.table
    }
}

impl std::fmt::Debug for StoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTable")
            .field("name", &self.table.name())
            .finish()
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Parquet prunes row groups and pages with them; DataFusion still
        // applies every filter above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let view = self.table.view();
        let schema = self.table.schema();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !view.snapshot.files.is_empty() {
            inputs.push(parquet_scan(state, &view, &schema, projection, limit).await?);
        }
        let buffered: Vec<_> = view
            .buffered
            .iter()
            .filter(|b| b.num_rows() > 0)
            .cloned()
            .collect();
        if !buffered.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[buffered],
                schema.clone(),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

async fn parquet_scan(
    state: &dyn Session,
    view: &TableView,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let groups = state.config().target_partitions().max(1);
    let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
    let mut group_bytes = vec![0u64; groups];
    // Largest first into the lightest group balances the partitions.
    let mut files: Vec<_> = view.snapshot.files.iter().collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    for file in files {
        let path = view.table_dir.join(&file.path);
        let location = datafusion::object_store::path::Path::from_absolute_path(&path)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let statistics = Statistics {
            num_rows: Precision::Exact(file.rows as usize),
            total_byte_size: Precision::Inexact(file.bytes as usize),
            column_statistics: vec![ColumnStatistics::new_unknown(); schema.fields().len()],
        };
        let lightest = (0..groups)
            .min_by_key(|&g| group_bytes[g])
            .expect("groups > 0");
        group_bytes[lightest] += file.bytes;
        file_groups[lightest].push(
            PartitionedFile::new(location.to_string(), file.bytes)
                .with_statistics(Arc::new(statistics)),
        );
    }
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let source = format.file_source(schema.clone().into());
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
        .with_file_groups(
            file_groups
                .into_iter()
                .filter(|g| !g.is_empty())
                .map(FileGroup::new)
                .collect(),
        )
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    format.create_physical_plan(state, config).await
}
