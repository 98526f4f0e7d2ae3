//! Rendering query results: JSON rows, CSV, Arrow IPC and text tables.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde_json::{Value, json};

use crate::QueryResult;

/// `{"columns": [{"name", "type"}], "rows": [[...], ...]}`: rows as arrays in
/// column order, so duplicate column names survive.
pub fn json(result: &QueryResult) -> Result<Value, ArrowError> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(result.rows());
    for batch in &result.batches {
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
        for column in batch.columns() {
            // One column at a time under a fixed name: arrow-json renders each
            // type (lists, structs, timestamps) the way JSON clients expect.
            let field = Field::new("v", column.data_type().clone(), true);
            let single = RecordBatch::try_new(
                std::sync::Arc::new(Schema::new(vec![field])),
                vec![column.clone()],
            )?;
            let mut buffer = Vec::new();
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buffer);
            writer.write(&single)?;
            writer.finish()?;
            let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&buffer)
                .map_err(|e| ArrowError::JsonError(e.to_string()))?;
            for (row, mut object) in objects.into_iter().enumerate() {
                rows[start + row].push(object.remove("v").unwrap_or(Value::Null));
            }
        }
    }
    Ok(json!({"columns": columns, "rows": rows}))
}

/// CSV with a header line.
pub fn csv(result: &QueryResult) -> Result<Vec<u8>, ArrowError> {
    let mut buffer = Vec::new();
    {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buffer);
        if result.batches.is_empty() {
            writer.write(&RecordBatch::new_empty(result.schema.clone()))?;
        }
        for batch in &result.batches {
            writer.write(batch)?;
        }
    }
    Ok(buffer)
}

/// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
pub fn arrow_ipc(result: &QueryResult) -> Result<Vec<u8>, ArrowError> {
    let mut buffer = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut buffer, &result.schema)?;
        for batch in &result.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(buffer)
}

/// A text table for terminals.
pub fn table(result: &QueryResult) -> Result<String, ArrowError> {
    if result.batches.is_empty() {
        return Ok(
            pretty_format_batches(&[RecordBatch::new_empty(result.schema.clone())])?.to_string(),
        );
    }
    Ok(pretty_format_batches(&result.batches)?.to_string())
}
