//! `window_funnel(window, timestamp, step1, step2, ...)`: how far along an
//! ordered funnel a group got within the conversion window.
//!
//! The semantics are ClickHouse's `windowFunnel` and PostHog's ordered
//! funnels: the result is the largest `k` such that the group has events
//! `e1, ..., ek` matching steps `1..k`, at non-decreasing times, with `ek` no
//! later than `window` after `e1`; 0 if no event matches step 1. Any step-1
//! event may start the chain. One event advances the chain by at most one
//! step even when it matches several; events at the same instant count in
//! the order of the first step they match (then of the steps they match),
//! so the answer never depends on the order rows arrive in.
//!
//! `window` is a constant: an interval without months (`INTERVAL '14 days'`)
//! or a number of seconds. Steps are boolean expressions, at most 32;
//! a null step is false.
//!
//! The per-group state is each matching event's time and the set of steps
//! it matches. At the end the events are sorted by time and walked once,
//! keeping per step the latest start of a chain that reached it: a later
//! start leaves more of the window, so it dominates.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, UInt32Type};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

use super::{GroupVecs, check_state, list_of, lists, passes, timestamp_micros};

const MAX_STEPS: usize = 32;

/// One event that matched at least one step.
#[derive(Debug, Clone, Copy)]
struct Hit {
    micros: i64,
    /// Bit `i` set: the event matches step `i + 1`.
    steps: u32,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnel {
    signature: Signature,
}

impl WindowFunnel {
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(WindowFunnel {
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }
}

impl AggregateUDFImpl for WindowFunnel {
    fn name(&self) -> &str {
        "window_funnel"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() < 3 {
            return plan_err!(
                "window_funnel(window, timestamp, step1, step2, ...) needs a window, a timestamp and at least one step"
            );
        }
        if arg_types.len() - 2 > MAX_STEPS {
            return plan_err!("window_funnel takes at most {MAX_STEPS} steps");
        }
        if !matches!(arg_types[1], DataType::Timestamp(..)) {
            return plan_err!(
                "window_funnel's second argument must be a timestamp, not {}",
                arg_types[1]
            );
        }
        for (i, step) in arg_types[2..].iter().enumerate() {
            if !matches!(step, DataType::Boolean | DataType::Null) {
                return plan_err!(
                    "window_funnel's step {} must be a condition (boolean), not {step}",
                    i + 1
                );
            }
        }
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |suffix: &str, item: DataType| {
            Arc::new(Field::new(
                format!("{}[{suffix}]", args.name),
                DataType::List(Arc::new(Field::new_list_field(item, false))),
                false,
            ))
        };
        Ok(vec![
            list("times", DataType::Int64),
            list("steps", DataType::UInt32),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(FunnelAccumulator {
            funnel: Funnel::from_args(&args)?,
            hits: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FunnelGroups {
            funnel: Funnel::from_args(&args)?,
            groups: GroupVecs::new(),
        }))
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// The constant parts of one call: the window and the number of steps.
#[derive(Debug, Clone, Copy)]
struct Funnel {
    window_micros: i64,
    steps: usize,
}

impl Funnel {
    fn from_args(args: &AccumulatorArgs) -> Result<Funnel> {
        let window = args.exprs[0]
            .downcast_ref::<Literal>()
            .map(|literal| literal.value().clone());
        let window_micros = match window {
            Some(value) => window_micros(&value)?,
            None => {
                return plan_err!(
                    "window_funnel's window must be a constant, such as INTERVAL '14 days'"
                );
            }
        };
        Ok(Funnel {
            window_micros,
            steps: args.exprs.len() - 2,
        })
    }

    /// The hits among `values` (window, timestamp, steps...), row by row.
    fn hits(&self, values: &[ArrayRef]) -> Result<Vec<Option<Hit>>> {
        let times = timestamp_micros(&values[1])?;
        // A literal NULL step arrives as the Null type: never true.
        let steps = values[2..]
            .iter()
            .map(|v| datafusion::arrow::compute::cast(v, &DataType::Boolean))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let steps: Vec<&BooleanArray> = steps.iter().map(|v| v.as_boolean()).collect();
        let rows = times.len();
        let mut hits = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut matched = 0u32;
            for (i, step) in steps.iter().enumerate() {
                if step.is_valid(row) && step.value(row) {
                    matched |= 1 << i;
                }
            }
            hits.push((matched != 0 && times.is_valid(row)).then(|| Hit {
                micros: times.value(row),
                steps: matched,
            }));
        }
        Ok(hits)
    }

    /// The furthest step `hits` reach (see the module docs).
    fn level(&self, hits: &mut [Hit]) -> i64 {
        hits.sort_unstable_by_key(|h| (h.micros, h.steps.trailing_zeros(), h.steps));
        let mut latest_start: [Option<i64>; MAX_STEPS] = [None; MAX_STEPS];
        let mut reached = 0;
        for hit in hits.iter() {
            // From the last step down, so one event advances a chain once.
            for step in (0..self.steps).rev() {
                if hit.steps & (1 << step) == 0 {
                    continue;
                }
                let start = if step == 0 {
                    Some(hit.micros)
                } else {
                    latest_start[step - 1].filter(|s| hit.micros - s <= self.window_micros)
                };
                if let Some(start) = start {
                    latest_start[step] = Some(start);
                    reached = reached.max(step + 1);
                }
            }
            if reached == self.steps {
                break;
            }
        }
        reached as i64
    }
}

fn window_micros(value: &ScalarValue) -> Result<i64> {
    const DAY: i64 = 86_400_000_000;
    let micros = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            v.days as i64 * DAY + v.nanoseconds / 1_000
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            v.days as i64 * DAY + v.milliseconds as i64 * 1_000
        }
        ScalarValue::DurationSecond(Some(s)) => s * 1_000_000,
        ScalarValue::DurationMillisecond(Some(ms)) => ms * 1_000,
        ScalarValue::DurationMicrosecond(Some(us)) => *us,
        ScalarValue::DurationNanosecond(Some(ns)) => ns / 1_000,
        ScalarValue::Int64(Some(seconds)) => seconds * 1_000_000,
        ScalarValue::Int32(Some(seconds)) => *seconds as i64 * 1_000_000,
        other => {
            return plan_err!(
                "window_funnel's window must be an interval of days or less (INTERVAL '14 days') or seconds, not {other}"
            );
        }
    };
    if micros < 0 {
        return plan_err!("window_funnel's window must not be negative");
    }
    Ok(micros)
}

/// The state columns of some groups' hits.
fn state_of(groups: Vec<Vec<Hit>>) -> Vec<ArrayRef> {
    let times = groups
        .iter()
        .map(|g| g.iter().map(|h| h.micros).collect())
        .collect();
    let steps = groups
        .iter()
        .map(|g| g.iter().map(|h| h.steps).collect())
        .collect();
    vec![
        Arc::new(list_of::<Int64Type>(times)),
        Arc::new(list_of::<UInt32Type>(steps)),
    ]
}

/// Each row of state columns as hits.
fn hits_of_state(values: &[ArrayRef]) -> Result<impl Iterator<Item = Vec<Hit>>> {
    check_state(&values[0], &DataType::Int64)?;
    check_state(&values[1], &DataType::UInt32)?;
    Ok(lists::<Int64Type>(&values[0])
        .zip(lists::<UInt32Type>(&values[1]))
        .map(|(times, steps)| {
            times
                .iter()
                .zip(steps)
                .map(|(&micros, &steps)| Hit { micros, steps })
                .collect()
        }))
}

struct FunnelGroups {
    funnel: Funnel,
    groups: GroupVecs<Hit>,
}

impl GroupsAccumulator for FunnelGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.ensure(total_num_groups);
        let hits = self.funnel.hits(values)?;
        for (row, (hit, &group)) in hits.into_iter().zip(group_indices).enumerate() {
            if let Some(hit) = hit
                && passes(opt_filter, row)
            {
                self.groups.update(group, |hits| hits.push(hit));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.groups.take(emit_to);
        let levels: Int64Array = groups
            .into_iter()
            .map(|mut hits| self.funnel.level(&mut hits))
            .collect();
        Ok(Arc::new(levels))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(state_of(self.groups.take(emit_to)))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.ensure(total_num_groups);
        for (hits, &group) in hits_of_state(values)?.zip(group_indices) {
            self.groups.update(group, |held| held.extend(hits));
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let hits = self.funnel.hits(values)?;
        let groups = hits
            .into_iter()
            .enumerate()
            .map(|(row, hit)| {
                hit.filter(|_| passes(opt_filter, row))
                    .into_iter()
                    .collect()
            })
            .collect();
        Ok(state_of(groups))
    }

    fn size(&self) -> usize {
        self.groups.size()
    }
}

#[derive(Debug)]
struct FunnelAccumulator {
    funnel: Funnel,
    hits: Vec<Hit>,
}

impl Accumulator for FunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let hits = self.funnel.hits(values)?;
        self.hits.extend(hits.into_iter().flatten());
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(self.funnel.level(&mut self.hits))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.hits.capacity() * std::mem::size_of::<Hit>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_of(vec![std::mem::take(&mut self.hits)])
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for hits in hits_of_state(states)? {
            self.hits.extend(hits);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(window: i64, steps: usize, hits: &[(i64, u32)]) -> i64 {
        let funnel = Funnel {
            window_micros: window,
            steps,
        };
        let mut hits: Vec<Hit> = hits
            .iter()
            .map(|&(micros, steps)| Hit { micros, steps })
            .collect();
        funnel.level(&mut hits)
    }

    #[test]
    fn a_later_start_can_finish_what_an_earlier_one_could_not() {
        // Step 1 at 0 and at 100; step 2 at 120, step 3 at 130; window 50.
        assert_eq!(level(50, 3, &[(0, 1), (100, 1), (120, 2), (130, 4)]), 3);
        // From the first start only, step 2 is out of the window.
        assert_eq!(level(50, 3, &[(0, 1), (120, 2), (130, 4)]), 1);
    }

    #[test]
    fn steps_must_come_in_order_and_one_event_is_one_step() {
        assert_eq!(level(100, 2, &[(10, 2), (20, 1)]), 1);
        // One event matching both steps reaches step 1 only.
        assert_eq!(level(100, 2, &[(10, 3)]), 1);
        // Two events at the same instant count in step order.
        assert_eq!(level(100, 2, &[(10, 2), (10, 1)]), 2);
        assert_eq!(level(100, 2, &[]), 0);
        assert_eq!(level(100, 2, &[(5, 2)]), 0);
    }

    /// The largest chain by trying every one, for events at distinct times.
    fn brute_force(window: i64, steps: usize, hits: &[(i64, u32)]) -> i64 {
        fn extend(
            hits: &[(i64, u32)],
            from: usize,
            step: usize,
            start: i64,
            window: i64,
            steps: usize,
        ) -> usize {
            if step == steps {
                return step;
            }
            let mut best = step;
            for i in from..hits.len() {
                let (micros, matched) = hits[i];
                if matched & (1 << step) != 0 && micros - start <= window {
                    best = best.max(extend(hits, i + 1, step + 1, start, window, steps));
                }
            }
            best
        }
        let mut sorted = hits.to_vec();
        sorted.sort();
        let mut best = 0;
        for (i, &(micros, matched)) in sorted.iter().enumerate() {
            if matched & 1 != 0 {
                best = best.max(extend(&sorted, i + 1, 1, micros, window, steps));
            }
        }
        best as i64
    }

    proptest::proptest! {
        #[test]
        fn the_single_pass_finds_the_longest_chain(
            times in proptest::collection::hash_set(0i64..200, 0..12),
            masks in proptest::collection::vec(1u32..16, 12),
            window in 0i64..120,
            steps in 1usize..5,
        ) {
            let hits: Vec<(i64, u32)> = times
                .into_iter()
                .zip(masks)
                .map(|(t, m)| (t, m & ((1 << steps) - 1)))
                .filter(|&(_, m)| m != 0)
                .collect();
            proptest::prop_assert_eq!(level(window, steps, &hits), brute_force(window, steps, &hits));
        }
    }

    #[test]
    fn the_window_is_inclusive() {
        assert_eq!(level(10, 2, &[(0, 1), (10, 2)]), 2);
        assert_eq!(level(10, 2, &[(0, 1), (11, 2)]), 1);
    }
}
