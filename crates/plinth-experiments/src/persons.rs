//! The exposed persons of one results query, and the two aggregate
//! functions that fill them from the scans of `events`.
//!
//! A person is keyed by its `person_num` as DataFusion resolves it (merged
//! persons already resolved), or by its `person_id` when the events predate
//! numbers. Person ids are UUIDs in canonical lowercase text, which this
//! module keys by their 128-bit value (hashing and comparing 16 bytes
//! instead of 36); any other text is keyed by itself, in a map of its own,
//! so two different ids never share a person. One query keys every row by
//! the same column, so numbers and UUIDs never meet in one table.
//!
//! The table is split into shards by hash, each behind its own lock, so
//! that the scan's partitions (one per thread) fill it together: each
//! batch's rows are routed to their shards, then each shard is locked once
//! per batch. The aggregate functions are sinks: each partition's
//! accumulator writes into the shared table, and their value is only the
//! number of rows taken, which the query checks.
//!
//! Its memory is reserved in the query's pool as it grows, and every batch
//! checks the query's deadline.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    Signature, TypeSignature, Volatility,
};

use crate::flag_json;

/// Shards of the person table; a power of two.
const SHARDS: usize = 64;

/// The error a batch returns past the query's deadline.
#[derive(Debug)]
pub struct PastDeadline;

impl std::fmt::Display for PastDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the query is past its deadline")
    }
}

impl std::error::Error for PastDeadline {}

/// One exposed person.
#[derive(Debug, Clone, Copy)]
struct Person {
    /// First exposure, UTC microseconds.
    first: i64,
    /// Its row in the shard's metric accumulators.
    slot: u32,
    /// The smallest and largest variant served (positions in the definition).
    variant_min: u16,
    variant_max: u16,
}

/// A multiply-fold hash of 128-bit keys with a per-table random seed.
#[derive(Clone)]
struct FoldHash {
    seeds: [u64; 2],
}

impl FoldHash {
    fn new() -> FoldHash {
        let random = RandomState::new();
        FoldHash {
            seeds: [random.hash_one(1u64), random.hash_one(2u64) | 1],
        }
    }

    fn key(&self, key: u128) -> u64 {
        fold(
            key as u64 ^ self.seeds[0],
            (key >> 64) as u64 ^ self.seeds[1],
        )
    }
}

fn fold(a: u64, b: u64) -> u64 {
    let product = (a as u128).wrapping_mul(b as u128);
    product as u64 ^ (product >> 64) as u64
}

/// The 128-bit value of a canonical lowercase UUID text, else `None`.
fn uuid_key(text: &[u8]) -> Option<u128> {
    if text.len() != 36
        || text[8] != b'-'
        || text[13] != b'-'
        || text[18] != b'-'
        || text[23] != b'-'
    {
        return None;
    }
    // Two 64-bit halves of 16 digits each (u128 shifts are slower).
    let half = |ranges: [std::ops::Range<usize>; 3]| -> (u64, u8) {
        let (mut value, mut bad) = (0u64, 0u8);
        for range in ranges {
            for &byte in &text[range] {
                let digit = HEX[byte as usize];
                bad |= digit;
                value = (value << 4) | (digit & 0x0f) as u64;
            }
        }
        (value, bad)
    };
    let (high, bad_high) = half([0..8, 9..13, 14..18]);
    let (low, bad_low) = half([19..23, 24..36, 36..36]);
    ((bad_high | bad_low) & 0xf0 == 0).then_some(((high as u128) << 64) | low as u128)
}

/// Lowercase hexadecimal digits to their value; anything else has 0xf0 set.
const HEX: [u8; 256] = {
    let mut table = [0xf0u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// One exposed person keyed by its UUID, in [`UuidTable`].
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: u128,
    first: i64,
    /// The person's slot plus one; 0 marks an empty entry.
    slot: u32,
    variant_min: u16,
    variant_max: u16,
}

/// Open addressing with linear probing over 32-byte entries (two per
/// cache line, with the person's data beside its key), so that a lookup
/// is one cache miss, which callers prefetch a few rows ahead.
struct UuidTable {
    entries: Vec<Entry>,
    len: usize,
    hash: FoldHash,
}

impl UuidTable {
    fn new(hash: FoldHash) -> UuidTable {
        UuidTable {
            entries: vec![Entry::default(); 1024],
            len: 0,
            hash,
        }
    }

    fn start(&self, hash: u64) -> usize {
        hash as usize & (self.entries.len() - 1)
    }

    fn prefetch(&self, hash: u64) {
        prefetch(&self.entries[self.start(hash)]);
    }

    fn get(&self, key: u128, hash: u64) -> Option<&Entry> {
        let mask = self.entries.len() - 1;
        let mut i = self.start(hash);
        loop {
            let entry = &self.entries[i];
            if entry.slot == 0 {
                return None;
            }
            if entry.key == key {
                return Some(entry);
            }
            i = (i + 1) & mask;
        }
    }

    /// The entry of `key`, inserted with `new` when absent.
    fn entry(&mut self, key: u128, hash: u64, new: impl FnOnce() -> Entry) -> &mut Entry {
        // At most 70% full, so probes stay short.
        if (self.len + 1) * 10 > self.entries.len() * 7 {
            self.grow();
        }
        let mask = self.entries.len() - 1;
        let mut i = self.start(hash);
        loop {
            if self.entries[i].slot == 0 {
                self.entries[i] = new();
                self.len += 1;
                return &mut self.entries[i];
            }
            if self.entries[i].key == key {
                return &mut self.entries[i];
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let doubled = vec![Entry::default(); self.entries.len() * 2];
        let old = std::mem::replace(&mut self.entries, doubled);
        let mask = self.entries.len() - 1;
        for entry in old.into_iter().filter(|e| e.slot != 0) {
            let mut i = self.hash.key(entry.key) as usize & mask;
            while self.entries[i].slot != 0 {
                i = (i + 1) & mask;
            }
            self.entries[i] = entry;
        }
    }

    fn bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// Asks the CPU to bring `value`'s cache line in: a hint, with no effect
/// on results.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing into the program;
    // the pointer comes from a reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(value as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

struct Shard {
    uuids: UuidTable,
    others: std::collections::HashMap<Box<str>, Person>,
    /// Per person (by slot), its counters and its sums.
    counts: Vec<u32>,
    sums: Vec<f64>,
    /// Bytes reserved for this shard.
    reserved: usize,
}

impl Shard {
    fn new(hash: FoldHash) -> Shard {
        Shard {
            uuids: UuidTable::new(hash),
            others: Default::default(),
            counts: Vec::new(),
            sums: Vec::new(),
            reserved: 0,
        }
    }

    fn persons(&self) -> usize {
        self.uuids.len + self.others.len()
    }

    fn bytes(&self) -> usize {
        let entry = std::mem::size_of::<Box<str>>() + std::mem::size_of::<Person>() + 1;
        self.uuids.bytes()
            + self.others.capacity() * entry
            + self.others.keys().map(|k| k.len()).sum::<usize>()
            + self.counts.capacity() * 4
            + self.sums.capacity() * 8
    }

    /// Numbers the persons in the order [`Shard::each_person`] visits
    /// them, so that summing over persons reads the accumulators in order.
    fn renumber(&mut self) {
        let mut slot = 0;
        for entry in self.uuids.entries.iter_mut().filter(|e| e.slot != 0) {
            slot += 1;
            entry.slot = slot;
        }
        for person in self.others.values_mut() {
            person.slot = slot;
            slot += 1;
        }
    }

    /// Every person's variants and slot.
    fn each_person(&self) -> impl Iterator<Item = Person> + '_ {
        let uuids = self
            .uuids
            .entries
            .iter()
            .filter(|e| e.slot != 0)
            .map(|e| Person {
                first: e.first,
                slot: e.slot - 1,
                variant_min: e.variant_min,
                variant_max: e.variant_max,
            });
        uuids.chain(self.others.values().copied())
    }

    fn expose_uuid(&mut self, key: u128, hash: u64, at: i64, variant: u16) {
        let slot = self.persons() as u32 + 1;
        let entry = self.uuids.entry(key, hash, || Entry {
            key,
            first: at,
            slot,
            variant_min: variant,
            variant_max: variant,
        });
        entry.first = entry.first.min(at);
        entry.variant_min = entry.variant_min.min(variant);
        entry.variant_max = entry.variant_max.max(variant);
    }

    fn expose_other(&mut self, key: &str, at: i64, variant: u16) {
        let slot = self.persons() as u32;
        let person = self.others.entry(key.into()).or_insert(Person {
            first: at,
            slot,
            variant_min: variant,
            variant_max: variant,
        });
        person.first = person.first.min(at);
        person.variant_min = person.variant_min.min(variant);
        person.variant_max = person.variant_max.max(variant);
    }
}

/// The exposed persons of one query.
pub struct Persons {
    shards: Vec<Mutex<Shard>>,
    hash: FoldHash,
    other_hash: RandomState,
    reservation: MemoryReservation,
    deadline: Instant,
    /// Accumulators created, to start each at another shard.
    accumulators: AtomicUsize,
}

impl std::fmt::Debug for Persons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persons").finish_non_exhaustive()
    }
}

impl Persons {
    pub fn new(reservation: MemoryReservation, deadline: Instant) -> Persons {
        let hash = FoldHash::new();
        Persons {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(hash.clone())))
                .collect(),
            hash,
            other_hash: RandomState::new(),
            reservation,
            deadline,
            accumulators: AtomicUsize::new(0),
        }
    }

    fn check_deadline(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            return Err(DataFusionError::External(Box::new(PastDeadline)));
        }
        Ok(())
    }

    /// The shard of a hash: not the bits the shard's table uses (the
    /// lowest).
    fn shard_of(hash: u64) -> usize {
        (hash >> 40) as usize & (SHARDS - 1)
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic elsewhere fails the query; the data is not reused.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves what `shard` holds beyond what it had reserved.
    fn account(&self, shard: &mut Shard) -> Result<()> {
        let bytes = shard.bytes();
        if bytes > shard.reserved {
            self.reservation.try_grow(bytes - shard.reserved)?;
            shard.reserved = bytes;
        }
        Ok(())
    }

    /// Sizes every person's metric accumulators: `counts` counters and
    /// `sums` sums each, zeroed.
    pub fn prepare_metrics(&self, counts: usize, sums: usize) -> Result<()> {
        for shard in 0..SHARDS {
            let mut shard = self.lock(shard);
            shard.renumber();
            let persons = shard.persons();
            shard.counts = vec![0; persons * counts];
            shard.sums = vec![0.0; persons * sums];
            self.account(&mut shard)?;
        }
        Ok(())
    }

    /// Calls `f` with every person's smallest and largest variant and
    /// metric accumulators, on up to `threads` threads (each with its own
    /// `T`), and returns each thread's `T`.
    pub fn fold<T: Send>(
        &self,
        threads: usize,
        counts: usize,
        sums: usize,
        init: impl Fn() -> T + Sync,
        f: impl Fn(&mut T, u16, u16, &[u32], &[f64]) + Sync,
    ) -> Vec<T> {
        let threads = threads.clamp(1, SHARDS);
        let (init, f) = (&init, &f);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        let mut state = init();
                        for shard in (t..SHARDS).step_by(threads) {
                            let shard = self.lock(shard);
                            for person in shard.each_person() {
                                let slot = person.slot as usize;
                                f(
                                    &mut state,
                                    person.variant_min,
                                    person.variant_max,
                                    &shard.counts[slot * counts..(slot + 1) * counts],
                                    &shard.sums[slot * sums..(slot + 1) * sums],
                                );
                            }
                        }
                        state
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a results thread panicked"))
                .collect()
        })
    }
}

/// A row whose person id is a UUID: its key, the key's hash and the row.
#[derive(Clone, Copy)]
struct Routed {
    key: u128,
    hash: u64,
    row: u32,
}

/// How many rows ahead lookups prefetch.
const AHEAD: usize = 8;

/// A batch's rows grouped by the shard of their person.
struct Router {
    uuids: Vec<Vec<Routed>>,
    others: Vec<Vec<u32>>,
    /// The shard this accumulator locks first.
    first: usize,
}

impl Router {
    fn new(persons: &Persons) -> Router {
        Router {
            uuids: vec![Vec::new(); SHARDS],
            others: vec![Vec::new(); SHARDS],
            first: persons.accumulators.fetch_add(1, Ordering::Relaxed) * (SHARDS / 2 + 1),
        }
    }

    /// Routes the rows `keep` accepts that have a person.
    fn route(&mut self, table: &Persons, persons: &PersonColumn, keep: impl Fn(usize) -> bool) {
        for list in &mut self.uuids {
            list.clear();
        }
        for list in &mut self.others {
            list.clear();
        }
        let mut keyed = |key: u128, row: usize| {
            let hash = table.hash.key(key);
            self.uuids[Persons::shard_of(hash)].push(Routed {
                key,
                hash,
                row: row as u32,
            });
        };
        let person_ids = match persons {
            PersonColumn::Ids(ids) => ids,
            PersonColumn::Nums(nums) => {
                for row in 0..nums.len() {
                    if nums.is_valid(row) && keep(row) {
                        keyed(nums.value(row) as u64 as u128, row);
                    }
                }
                return;
            }
        };
        for row in 0..person_ids.len() {
            if person_ids.is_null(row) || !keep(row) {
                continue;
            }
            let text = person_ids.value(row);
            match uuid_key(text.as_bytes()) {
                Some(key) => keyed(key, row),
                None => {
                    let hash = table.other_hash.hash_one(text);
                    self.others[Persons::shard_of(hash)].push(row as u32);
                }
            }
        }
    }

    /// Calls `f` on each shard with its rows, the shard locked, then
    /// reserves what it grew by.
    fn each_shard(
        &self,
        table: &Persons,
        mut f: impl FnMut(&mut Shard, &[Routed], &[u32]) -> Result<()>,
    ) -> Result<()> {
        for i in 0..SHARDS {
            let s = (self.first + i) % SHARDS;
            if self.uuids[s].is_empty() && self.others[s].is_empty() {
                continue;
            }
            let mut shard = table.lock(s);
            f(&mut shard, &self.uuids[s], &self.others[s])?;
            table.account(&mut shard)?;
        }
        Ok(())
    }
}

fn utf8(array: &ArrayRef) -> Result<StringArray> {
    Ok(datafusion::arrow::compute::cast(array, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

/// A batch's persons: `events.person_num`, or `events.person_id` for
/// events stored before numbers existed.
enum PersonColumn {
    Nums(Int64Array),
    Ids(StringArray),
}

impl PersonColumn {
    fn new(array: &ArrayRef) -> Result<PersonColumn> {
        Ok(match array.data_type() {
            DataType::Int64 => PersonColumn::Nums(array.as_primitive::<Int64Type>().clone()),
            _ => PersonColumn::Ids(utf8(array)?),
        })
    }

    /// The id of a row routed to the map of other ids.
    fn id(&self, row: usize) -> &str {
        match self {
            PersonColumn::Ids(ids) => ids.value(row),
            PersonColumn::Nums(_) => unreachable!("numbers are never routed as other ids"),
        }
    }
}

/// The two ways of naming the person in a sink's first argument.
fn person_signatures(rest: &[DataType]) -> Signature {
    let with = |person: DataType| TypeSignature::Exact([vec![person], rest.to_vec()].concat());
    Signature::one_of(
        vec![with(DataType::Int64), with(DataType::Utf8)],
        Volatility::Volatile,
    )
}

/// Which exposures count: the flag and variant properties, the flag's
/// name and the declared variants.
#[derive(Debug, Clone)]
pub struct ExposureRule {
    pub flag_property: String,
    pub variant_property: String,
    pub flag: String,
    pub variants: Vec<String>,
    /// `json_as_text`, for the properties [`flag_json`] leaves to it.
    pub json_as_text: Arc<ScalarUDF>,
}

/// `plinth_experiment_exposures(person_num | person_id, micros, properties)`: records
/// each exposure to the flag with a declared variant; returns the rows taken.
pub fn exposures_udaf(persons: Arc<Persons>, rule: ExposureRule) -> AggregateUDF {
    AggregateUDF::new_from_impl(Sink {
        name: "plinth_experiment_exposures",
        signature: person_signatures(&[DataType::Int64, DataType::Utf8]),
        persons,
        kind: SinkKind::Exposures(Arc::new(rule)),
    })
}

/// How one metric event updates a person's accumulators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// Sets counter `i` to 1.
    Flag(usize),
    /// Adds 1 to counter `i`.
    Count(usize),
    /// Adds value column `value` to sum `i`.
    Sum { sum: usize, value: usize },
}

/// When, relative to first exposure, an update applies (microseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    After(Option<i64>),
    Before(i64),
}

impl Window {
    fn contains(self, first: i64, at: i64) -> bool {
        match self {
            Window::After(None) => at >= first,
            Window::After(Some(length)) => at >= first && at < first.saturating_add(length),
            Window::Before(length) => at < first && at >= first.saturating_sub(length),
        }
    }
}

/// What metric events do to a person's accumulators.
#[derive(Debug, Clone, Default)]
pub struct MetricRule {
    /// The metric events, by name; an event's position is its code.
    pub events: Vec<String>,
    /// Per event code, its updates.
    pub updates: Vec<Vec<(Window, Update)>>,
    pub counts: usize,
    pub sums: usize,
    /// Value columns passed after the event's timestamp.
    pub values: usize,
}

/// `plinth_experiment_metrics(person_num | person_id, event, micros, value...)`: adds
/// each metric event of an exposed person to its accumulators; returns the
/// rows taken.
pub fn metrics_udaf(persons: Arc<Persons>, rule: MetricRule) -> AggregateUDF {
    let mut arguments = vec![DataType::Utf8, DataType::Int64];
    arguments.extend(std::iter::repeat_n(DataType::Float64, rule.values));
    AggregateUDF::new_from_impl(Sink {
        name: "plinth_experiment_metrics",
        signature: person_signatures(&arguments),
        persons,
        kind: SinkKind::Metrics(Arc::new(rule)),
    })
}

#[derive(Debug, Clone)]
enum SinkKind {
    Exposures(Arc<ExposureRule>),
    Metrics(Arc<MetricRule>),
}

#[derive(Debug)]
struct Sink {
    name: &'static str,
    signature: Signature,
    persons: Arc<Persons>,
    kind: SinkKind,
}

// Two instances are the same function when they fill one table.
impl PartialEq for Sink {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.persons, &other.persons)
    }
}

impl Eq for Sink {}

impl Hash for Sink {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        Arc::as_ptr(&self.persons).hash(state);
    }
}

impl AggregateUDFImpl for Sink {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SinkAccumulator {
            router: Router::new(&self.persons),
            persons: self.persons.clone(),
            kind: self.kind.clone(),
            rows: 0,
        }))
    }
}

/// One partition's share of a sink: it fills the shared table of persons
/// and answers how many rows it took.
struct SinkAccumulator {
    persons: Arc<Persons>,
    kind: SinkKind,
    router: Router,
    rows: u64,
}

impl std::fmt::Debug for SinkAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkAccumulator").finish_non_exhaustive()
    }
}

impl Accumulator for SinkAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let persons = &*self.persons;
        persons.check_deadline()?;
        match &self.kind {
            SinkKind::Exposures(rule) => expose(persons, rule, &mut self.router, values)?,
            SinkKind::Metrics(rule) => add_metrics(persons, rule, &mut self.router, values)?,
        }
        self.rows += values[0].len() as u64;
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::UInt64(Some(self.rows)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt64(Some(self.rows))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states[0].as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        self.rows += rows.iter().flatten().sum::<u64>();
        Ok(())
    }
}

impl ExposureRule {
    /// Each row's variant position, or `None` when the row is not an
    /// exposure to the flag with a declared variant.
    fn variants(&self, properties: &StringArray) -> Result<Vec<Option<u16>>> {
        let rule = self;
        let keys = [rule.flag_property.as_str(), rule.variant_property.as_str()];
        let variant = |flag: Option<&str>, variant: Option<&str>| -> Option<u16> {
            if flag? != rule.flag {
                return None;
            }
            let variant = variant?;
            rule.variants
                .iter()
                .position(|v| v == variant)
                .map(|i| i as u16)
        };
        let mut variants = Vec::with_capacity(properties.len());
        let mut undecided = Vec::new();
        for row in 0..properties.len() {
            if properties.is_null(row) {
                variants.push(None);
                continue;
            }
            match flag_json::top_level_strings(properties.value(row), keys) {
                Some([flag, v]) => variants.push(variant(flag, v)),
                None => {
                    undecided.push(row as u32);
                    variants.push(None);
                }
            }
        }
        if !undecided.is_empty() {
            let rows = datafusion::arrow::array::UInt32Array::from(undecided);
            let texts = datafusion::arrow::compute::take(properties, &rows, None)?;
            let flags = self.text_of(&texts, keys[0])?;
            let named = self.text_of(&texts, keys[1])?;
            for (i, row) in rows.values().iter().enumerate() {
                let flag = flags.is_valid(i).then(|| flags.value(i));
                let name = named.is_valid(i).then(|| named.value(i));
                variants[*row as usize] = variant(flag, name);
            }
        }
        Ok(variants)
    }

    fn text_of(&self, texts: &ArrayRef, key: &str) -> Result<StringArray> {
        let field = |name: &str| Arc::new(Field::new(name, DataType::Utf8, true));
        let result = self.json_as_text.invoke_with_args(ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(texts.clone()),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(key.to_string()))),
            ],
            arg_fields: vec![field("properties"), field("key")],
            number_rows: texts.len(),
            return_field: field("value"),
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        utf8(&result.into_array(texts.len())?)
    }
}

/// Records each exposure row in its person's entry.
fn expose(
    persons: &Persons,
    rule: &ExposureRule,
    router: &mut Router,
    values: &[ArrayRef],
) -> Result<()> {
    let person_column = PersonColumn::new(&values[0])?;
    let micros = values[1].as_primitive::<Int64Type>();
    let properties = utf8(&values[2])?;
    let variants = rule.variants(&properties)?;
    router.route(persons, &person_column, |row| {
        variants[row].is_some() && micros.is_valid(row)
    });
    router.each_shard(persons, |shard, uuids, others| {
        for (i, routed) in uuids.iter().enumerate() {
            if let Some(ahead) = uuids.get(i + AHEAD) {
                shard.uuids.prefetch(ahead.hash);
            }
            let row = routed.row as usize;
            let variant = variants[row].expect("routed rows have a variant");
            shard.expose_uuid(routed.key, routed.hash, micros.value(row), variant);
        }
        for &row in others {
            let row = row as usize;
            let variant = variants[row].expect("routed rows have a variant");
            shard.expose_other(person_column.id(row), micros.value(row), variant);
        }
        Ok(())
    })?;
    Ok(())
}

/// Adds each metric event row to its exposed person's quantities.
fn add_metrics(
    persons: &Persons,
    rule: &MetricRule,
    router: &mut Router,
    values: &[ArrayRef],
) -> Result<()> {
    let person_column = PersonColumn::new(&values[0])?;
    let events = utf8(&values[1])?;
    let micros = values[2].as_primitive::<Int64Type>();
    let columns: Vec<_> = values[3..]
        .iter()
        .map(|v| v.as_primitive::<Float64Type>())
        .collect();
    // Rows come in runs of one event (the files are sorted by event).
    let mut codes = Vec::with_capacity(events.len());
    let mut last: Option<(&str, Option<usize>)> = None;
    for row in 0..events.len() {
        let code = if events.is_null(row) {
            None
        } else {
            let event = events.value(row);
            match last {
                Some((name, code)) if name == event => code,
                _ => {
                    let code = rule.events.iter().position(|e| e == event);
                    last = Some((event, code));
                    code
                }
            }
        };
        codes.push(code);
    }
    router.route(persons, &person_column, |row| {
        codes[row].is_some() && micros.is_valid(row)
    });
    let (counts, sums) = (rule.counts, rule.sums);
    // The person of each routed row: its first exposure and slot.
    let mut found: Vec<Option<(i64, usize)>> = Vec::new();
    router.each_shard(persons, |shard, uuids, others| {
        found.clear();
        for (i, routed) in uuids.iter().enumerate() {
            if let Some(ahead) = uuids.get(i + AHEAD) {
                shard.uuids.prefetch(ahead.hash);
            }
            let entry = shard.uuids.get(routed.key, routed.hash);
            let person = entry.map(|e| (e.first, e.slot as usize - 1));
            if let Some((_, slot)) = person {
                if counts > 0 {
                    prefetch(&shard.counts[slot * counts]);
                }
                if sums > 0 {
                    prefetch(&shard.sums[slot * sums]);
                }
            }
            found.push(person);
        }
        for &row in others {
            let person = shard.others.get(person_column.id(row as usize));
            found.push(person.map(|p| (p.first, p.slot as usize)));
        }
        let rows = uuids.iter().map(|r| r.row).chain(others.iter().copied());
        for (row, person) in rows.zip(&found) {
            let Some((first, slot)) = *person else {
                continue;
            };
            let row = row as usize;
            let at = micros.value(row);
            for &(window, update) in &rule.updates[codes[row].expect("routed")] {
                if !window.contains(first, at) {
                    continue;
                }
                match update {
                    Update::Flag(i) => shard.counts[slot * counts + i] = 1,
                    Update::Count(i) => {
                        let count = &mut shard.counts[slot * counts + i];
                        *count = count.checked_add(1).ok_or_else(|| {
                            DataFusionError::Execution(
                                "a person has more than 4294967295 events of one metric".into(),
                            )
                        })?;
                    }
                    Update::Sum { sum, value } => {
                        // Never null on rows of the value's event.
                        let column = columns[value];
                        if column.is_valid(row) {
                            shard.sums[slot * sums + sum] += column.value(row);
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_lowercase_uuids_are_keyed_by_value() {
        assert_eq!(
            uuid_key(b"0123abcd-4567-89ef-0a1b-2c3d4e5f6789"),
            Some(0x0123abcd_4567_89ef_0a1b_2c3d4e5f6789)
        );
        assert_eq!(
            uuid_key(b"ffffffff-ffff-ffff-ffff-ffffffffffff"),
            Some(u128::MAX)
        );
        for text in [
            "0123ABCD-4567-89ef-0a1b-2c3d4e5f6789",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f678",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f6789a",
            "0123abcd+4567-89ef-0a1b-2c3d4e5f6789",
            "0123abcdx4567-89ef-0a1b-2c3d4e5f6789",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f678g",
            "user-1",
        ] {
            assert_eq!(uuid_key(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn the_uuid_table_finds_every_key_across_growth() {
        let hash = FoldHash::new();
        let mut table = UuidTable::new(hash.clone());
        // Keys sharing their low bits, and the zero key.
        let keys: Vec<u128> = (0..5_000u128).map(|i| i << 64).collect();
        for (n, &key) in keys.iter().enumerate() {
            let h = hash.key(key);
            table.entry(key, h, || Entry {
                key,
                first: n as i64,
                slot: n as u32 + 1,
                variant_min: 0,
                variant_max: 0,
            });
            table.entry(key, h, || unreachable!("present")).first -= 1;
        }
        assert_eq!(table.len, keys.len());
        for (n, &key) in keys.iter().enumerate() {
            let entry = table.get(key, hash.key(key)).unwrap();
            assert_eq!((entry.first, entry.slot), (n as i64 - 1, n as u32 + 1));
        }
        assert!(table.get(1, hash.key(1)).is_none());
    }

    #[test]
    fn windows_match_the_sql_conditions() {
        let first = 1_000;
        assert!(Window::After(None).contains(first, 1_000));
        assert!(!Window::After(None).contains(first, 999));
        assert!(Window::After(Some(10)).contains(first, 1_009));
        assert!(!Window::After(Some(10)).contains(first, 1_010));
        assert!(Window::Before(10).contains(first, 990));
        assert!(!Window::Before(10).contains(first, 989));
        assert!(!Window::Before(10).contains(first, 1_000));
    }
}
