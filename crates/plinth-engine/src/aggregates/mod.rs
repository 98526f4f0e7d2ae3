//! Product-analytics aggregate functions: the questions a PM asks most,
//! answered in one pass over a person's events instead of self-joins.
//!
//! - [`funnel::WindowFunnel`]: `window_funnel(window, timestamp, step1, step2, ...)`,
//!   the furthest step of an ordered funnel a group (usually a person)
//!   reached within the conversion window;
//! - [`retention::RetentionPeriods`]: `retention_periods(timestamp, 'week')`,
//!   the periods after its first one in which a group was active.
//!
//! Both keep a small per-group state, implement DataFusion's
//! `GroupsAccumulator` (one vector per group, no per-group objects) and
//! carry their state between partial and final aggregation as lists.

pub mod funnel;
pub mod retention;

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, ListArray, PrimitiveArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit, TimestampMicrosecondType};
use datafusion::error::Result;
use datafusion::logical_expr::EmitTo;
use datafusion::prelude::SessionContext;

/// Registers every function of this module on a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(funnel::WindowFunnel::udaf());
    ctx.register_udaf(retention::RetentionPeriods::udaf());
}

/// Timestamps of any unit and zone as UTC microseconds; nulls stay null.
fn timestamp_micros(array: &ArrayRef) -> Result<PrimitiveArray<TimestampMicrosecondType>> {
    let micros =
        datafusion::arrow::compute::cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(micros.as_primitive::<TimestampMicrosecondType>().clone())
}

/// One list per group, as a `List<T>` array.
fn list_of<T: ArrowPrimitiveType>(groups: Vec<Vec<T::Native>>) -> ListArray {
    let lengths = groups.iter().map(Vec::len);
    let offsets = OffsetBuffer::from_lengths(lengths);
    let values: PrimitiveArray<T> = PrimitiveArray::from_iter_values(groups.into_iter().flatten());
    ListArray::new(
        Arc::new(Field::new_list_field(T::DATA_TYPE, false)),
        offsets,
        Arc::new(values),
        None,
    )
}

/// Each row of a `List<T>` array, for merging partial states.
fn lists<T: ArrowPrimitiveType>(array: &ArrayRef) -> impl Iterator<Item = &[T::Native]> {
    let list = array.as_list::<i32>();
    let values = list.values().as_primitive::<T>().values();
    list.offsets()
        .windows(2)
        .map(move |w| &values[w[0] as usize..w[1] as usize])
}

/// Whether row `row` passes an aggregate's `FILTER (WHERE ...)`.
fn passes(filter: Option<&datafusion::arrow::array::BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// One vector per group that keeps the sum of their capacities: DataFusion
/// asks for an accumulator's size after every batch, and summing millions
/// of groups each time made the aggregate quadratic in the groups.
struct GroupVecs<T> {
    groups: Vec<Vec<T>>,
    /// Items of capacity over all the groups' vectors.
    capacity: usize,
}

impl<T> GroupVecs<T> {
    fn new() -> GroupVecs<T> {
        GroupVecs {
            groups: Vec::new(),
            capacity: 0,
        }
    }

    /// Grows to `total` groups.
    fn ensure(&mut self, total: usize) {
        if self.groups.len() < total {
            self.groups.resize_with(total, Vec::new);
        }
    }

    /// Changes the vector of `group`, keeping count of its capacity.
    fn update(&mut self, group: usize, change: impl FnOnce(&mut Vec<T>)) {
        let vector = &mut self.groups[group];
        let before = vector.capacity();
        change(vector);
        self.capacity += vector.capacity() - before;
    }

    /// Takes the groups `emit_to` names.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<T>> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.capacity -= taken.iter().map(Vec::capacity).sum::<usize>();
        taken
    }

    /// Bytes held, without walking the groups.
    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Vec<T>>()
            + self.capacity * std::mem::size_of::<T>()
    }
}

/// `array` must be a list column with the given item type (a state column).
fn check_state(array: &ArrayRef, item: &DataType) -> Result<()> {
    match array.data_type() {
        DataType::List(field) if field.data_type() == item => Ok(()),
        other => datafusion::common::internal_err!("unexpected state type {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn group_vectors_count_the_capacity_they_hold() {
        let walked = |g: &GroupVecs<i64>| {
            g.groups.capacity() * std::mem::size_of::<Vec<i64>>()
                + g.groups.iter().map(|v| v.capacity() * 8).sum::<usize>()
        };
        let mut groups = GroupVecs::new();
        groups.ensure(5);
        for i in 0..1000 {
            groups.update(i % 5, |v| v.push(i as i64));
            groups.update(i % 3, |v| v.extend([1, 2, 3]));
        }
        assert_eq!(groups.size(), walked(&groups));
        let first_two = groups.take(EmitTo::First(2));
        assert_eq!(first_two.len(), 2);
        assert_eq!(groups.size(), walked(&groups));
        assert_eq!(groups.take(EmitTo::All).len(), 3);
        assert_eq!(groups.capacity, 0);
    }

    #[test]
    fn lists_read_back_what_list_of_wrote() {
        let array: ArrayRef = Arc::new(list_of::<Int64Type>(vec![vec![1, 2], vec![], vec![3]]));
        check_state(&array, &DataType::Int64).unwrap();
        let read: Vec<Vec<i64>> = lists::<Int64Type>(&array).map(<[i64]>::to_vec).collect();
        assert_eq!(read, [vec![1, 2], vec![], vec![3]]);
        assert_eq!(array.len(), 3);
    }
}
