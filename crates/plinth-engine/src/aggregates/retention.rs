//! `retention_periods(timestamp, unit)`: the periods in which a group
//! (usually a person) was active, counted from its first.
//!
//! The result is a sorted list of distinct offsets: `[0, 1, 4]` means active
//! in its first period, the one after, and the fifth. `unit` is a constant,
//! `'hour'`, `'day'`, `'week'` or `'month'`, in UTC; periods start where
//! `date_trunc(unit, timestamp)` starts them (weeks on Mondays), so
//! `date_trunc(unit, min(timestamp))` is the group's cohort. A cohort table:
//!
//! ```sql
//! SELECT cohort, count(*) AS users,
//!        sum(CASE WHEN array_has(periods, 1) THEN 1 ELSE 0 END) AS returned_next_week
//! FROM (SELECT date_trunc('week', min(timestamp)) AS cohort,
//!              retention_periods(timestamp, 'week') AS periods
//!       FROM events GROUP BY person_id)
//! GROUP BY cohort ORDER BY cohort
//! ```
//!
//! It answers in one pass over the events what otherwise takes a self-join
//! of each person's first period with their activity. The state is each
//! group's absolute period numbers (consecutive repeats dropped on arrival).

use std::sync::Arc;

use chrono::Datelike;
use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

use super::{GroupVecs, check_state, list_of, lists, passes, timestamp_micros};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Hour,
    Day,
    Week,
    Month,
}

impl Unit {
    fn parse(text: &str) -> Result<Unit> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            other => {
                return plan_err!(
                    "retention_periods' unit must be 'hour', 'day', 'week' or 'month', not '{other}'"
                );
            }
        })
    }

    /// The number of the period holding `micros`, counted from 1970.
    fn period(self, micros: i64) -> i64 {
        match self {
            Unit::Hour => micros.div_euclid(HOUR),
            Unit::Day => micros.div_euclid(DAY),
            // 1970-01-01 was a Thursday; weeks start on Monday the 5th.
            Unit::Week => (micros - 4 * DAY).div_euclid(7 * DAY),
            Unit::Month => {
                let date = chrono::DateTime::from_timestamp_micros(micros)
                    .expect("microseconds since 1970 fit a date")
                    .date_naive();
                date.year() as i64 * 12 + date.month0() as i64
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RetentionPeriods {
    signature: Signature,
}

impl RetentionPeriods {
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(RetentionPeriods {
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

fn periods_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, false)))
}

impl AggregateUDFImpl for RetentionPeriods {
    fn name(&self) -> &str {
        "retention_periods"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !matches!(arg_types[0], DataType::Timestamp(..)) {
            return plan_err!(
                "retention_periods' first argument must be a timestamp, not {}",
                arg_types[0]
            );
        }
        Ok(periods_type())
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[periods]", args.name),
            periods_type(),
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PeriodsAccumulator {
            unit: unit_of(&args)?,
            periods: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PeriodsGroups {
            unit: unit_of(&args)?,
            groups: GroupVecs::new(),
        }))
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &[],
            &DataType::Int64,
        )))
    }
}

fn unit_of(args: &AccumulatorArgs) -> Result<Unit> {
    let unit = args.exprs[1]
        .downcast_ref::<Literal>()
        .and_then(|literal| match literal.value() {
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)) => Some(text.clone()),
            _ => None,
        });
    match unit {
        Some(text) => Unit::parse(text.as_str()),
        None => plan_err!("retention_periods' unit must be a constant such as 'week'"),
    }
}

/// Hands each row's period (an absolute number) and group to `add`.
fn add_periods(
    unit: Unit,
    values: &[ArrayRef],
    mut group_of: impl FnMut(usize) -> Option<usize>,
    mut add: impl FnMut(usize, i64),
) -> Result<()> {
    let times = timestamp_micros(&values[0])?;
    for (row, micros) in times.iter().enumerate() {
        if let (Some(micros), Some(group)) = (micros, group_of(row)) {
            add(group, unit.period(micros));
        }
    }
    Ok(())
}

/// Appends `period` unless it repeats the last one: events arrive mostly
/// in time order.
fn append_period(periods: &mut Vec<i64>, period: i64) {
    if periods.last() != Some(&period) {
        periods.push(period);
    }
}

/// A group's absolute periods as offsets from its first.
fn offsets(mut periods: Vec<i64>) -> Vec<i64> {
    periods.sort_unstable();
    periods.dedup();
    let first = periods.first().copied().unwrap_or_default();
    periods.iter().map(|p| p - first).collect()
}

struct PeriodsGroups {
    unit: Unit,
    groups: GroupVecs<i64>,
}

impl GroupsAccumulator for PeriodsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.ensure(total_num_groups);
        let groups = &mut self.groups;
        add_periods(
            self.unit,
            values,
            |row| passes(opt_filter, row).then(|| group_indices[row]),
            |group, period| groups.update(group, |periods| append_period(periods, period)),
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.groups.take(emit_to);
        Ok(Arc::new(list_of::<Int64Type>(
            groups.into_iter().map(offsets).collect(),
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(list_of::<Int64Type>(
            self.groups.take(emit_to),
        ))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.ensure(total_num_groups);
        check_state(&values[0], &DataType::Int64)?;
        for (periods, &group) in lists::<Int64Type>(&values[0]).zip(group_indices) {
            self.groups
                .update(group, |held| held.extend_from_slice(periods));
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut rows = vec![Vec::new(); values[0].len()];
        add_periods(
            self.unit,
            values,
            |row| passes(opt_filter, row).then_some(row),
            |row, period| append_period(&mut rows[row], period),
        )?;
        Ok(vec![Arc::new(list_of::<Int64Type>(rows))])
    }

    fn size(&self) -> usize {
        self.groups.size()
    }
}

#[derive(Debug)]
struct PeriodsAccumulator {
    unit: Unit,
    periods: Vec<i64>,
}

impl Accumulator for PeriodsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let periods = &mut self.periods;
        add_periods(
            self.unit,
            values,
            |_| Some(0),
            |_, period| append_period(periods, period),
        )
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let list = list_of::<Int64Type>(vec![offsets(self.periods.clone())]);
        ScalarValue::try_from_array(&list, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.periods.capacity() * std::mem::size_of::<i64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = list_of::<Int64Type>(vec![std::mem::take(&mut self.periods)]);
        Ok(vec![ScalarValue::try_from_array(&list, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        check_state(&states[0], &DataType::Int64)?;
        for periods in lists::<Int64Type>(&states[0]) {
            self.periods.extend_from_slice(periods);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn weeks_start_on_monday_as_date_trunc_does() {
        let sunday = Unit::Week.period(micros("2026-11-22T23:59:59Z"));
        let monday = Unit::Week.period(micros("2026-11-23T00:00:00Z"));
        assert_eq!(monday, sunday + 1);
        assert_eq!(Unit::Week.period(micros("1970-01-05T00:00:00Z")), 0);
        assert_eq!(Unit::Week.period(micros("1970-01-04T23:00:00Z")), -1);
    }

    #[test]
    fn months_follow_the_calendar() {
        let january = Unit::Month.period(micros("2026-01-31T23:00:00Z"));
        assert_eq!(
            Unit::Month.period(micros("2026-02-01T00:00:00Z")),
            january + 1
        );
        assert_eq!(
            Unit::Month.period(micros("2027-01-01T00:00:00Z")),
            january + 12
        );
    }

    #[test]
    fn offsets_count_from_the_first_period() {
        assert_eq!(offsets(vec![7, 5, 5, 9, 6]), [0, 1, 2, 4]);
        assert_eq!(offsets(vec![]), Vec::<i64>::new());
    }
}
