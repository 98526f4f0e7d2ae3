//! `date_trunc` for UTC timestamps at the speed of zone-less ones.
//!
//! Every timestamp in the store is `Timestamp(µs, "UTC")`. DataFusion's
//! `date_trunc` takes its arithmetic fast path (hour, day) only for
//! timestamps without a zone; with one, even UTC, it converts each value
//! through chrono's time-zone machinery, about five times slower on "events
//! per day". In UTC both give the same instants, so this wrapper truncates a
//! UTC value as zone-less and puts the zone back; any other zone, and every
//! other part of the function (types, ordering, docs), is DataFusion's own.
//!
//! The zone is changed by relabelling the type, never by `cast`: arrow casts
//! a zone-less timestamp to a zoned one by reading each value as local time
//! in that zone, through chrono, which would bring back the cost this
//! wrapper exists to avoid.

use std::sync::Arc;

use datafusion::arrow::array::make_array;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::error::Result;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// The same timestamps under another zone label (`None` for zone-less):
/// an array keeps its values and buffers, only its type changes. A scalar
/// is one value, so `cast` serves.
fn relabel(value: &ColumnarValue, data_type: &DataType) -> Result<ColumnarValue> {
    match value {
        ColumnarValue::Array(array) => Ok(ColumnarValue::Array(make_array(
            array
                .to_data()
                .into_builder()
                .data_type(data_type.clone())
                .build()?,
        ))),
        ColumnarValue::Scalar(_) => value.cast_to(data_type, None),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl UtcDateTrunc {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(UtcDateTrunc {
            inner: datafusion::functions::datetime::date_trunc(),
        })
    }
}

/// Whether `zone` names UTC.
fn is_utc(zone: &str) -> bool {
    matches!(
        zone.to_ascii_uppercase().as_str(),
        "UTC" | "Z" | "+00:00" | "+00" | "+0000" | "ETC/UTC"
    )
}

/// The zone-less type of a UTC timestamp type, or `None`.
fn zoneless(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Timestamp(unit, Some(zone)) if is_utc(zone) => {
            Some(DataType::Timestamp(*unit, None))
        }
        _ => None,
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(plain) = args.args.get(1).and_then(|a| zoneless(&a.data_type())) else {
            return self.inner.invoke_with_args(args);
        };
        let zoned = args.args[1].data_type();
        let mut values = args.args;
        values[1] = relabel(&values[1], &plain)?;
        let mut arg_fields = args.arg_fields;
        arg_fields[1] = Arc::new(arg_fields[1].as_ref().clone().with_data_type(plain.clone()));
        let return_field = Arc::new(Field::new(
            args.return_field.name(),
            plain,
            args.return_field.is_nullable(),
        ));
        let truncated = self.inner.invoke_with_args(ScalarFunctionArgs {
            args: values,
            arg_fields,
            number_rows: args.number_rows,
            return_field,
            config_options: args.config_options,
        })?;
        // Back to the caller's zone: the same instants, relabelled.
        relabel(&truncated, &zoned)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
