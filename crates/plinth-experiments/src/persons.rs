//! The exposed persons of one results query, and the two aggregate
//! functions that fill them from the scans of `events`.
//!
//! A person is keyed by its `person_num` as DataFusion resolves it (merged
//! persons already resolved), or by its `person_id` when the events predate
//! numbers. One query keys every row by the same column.
//!
//! Each exposed person has one record holding everything the query keeps
//! of it: its first exposure, its variants, its counters and its sums, so
//! that a metric event costs one cache miss. Numbers are dense, so a
//! plain array indexes the records by number (4 bytes a person, one load,
//! no hashing); ids go through a hash map, keyed by a UUID's 128 bits
//! where the text is one.
//!
//! The persons are split into shards (by number, or by the id's hash),
//! each behind its own lock, so that the scan's partitions (one per
//! thread) fill them together: each batch's rows are routed to their
//! shards, then each shard is locked once per batch. The aggregate
//! functions are sinks: each partition's accumulator writes into the
//! shared shards, and their value is only the number of rows taken, which
//! the query checks.
//!
//! Its memory is reserved in the query's pool as it grows, and every batch
//! checks the query's deadline.

use std::collections::HashMap;
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
const SHARDS: usize = 16;

/// The error a batch returns past the query's deadline.
#[derive(Debug)]
pub struct PastDeadline;

impl std::fmt::Display for PastDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the query is past its deadline")
    }
}

impl std::error::Error for PastDeadline {}

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

/// 64-bit words in a cache line.
const WORDS_PER_LINE: usize = 8;

/// Where a person's fields lie in its record, in 64-bit words: its first
/// exposure (UTC microseconds), then 32-bit halves (its variants, then
/// its counters), then its sums. A person's data is all in one place so
/// that updating it is one cache miss, or two where it crosses a line.
#[derive(Debug, Clone, Copy)]
struct Layout {
    counts: usize,
    stride: usize,
}

impl Layout {
    fn new(counts: usize, sums: usize) -> Layout {
        let words = 1 + Layout::halves_words(counts) + sums;
        // Packed, not widened to divide a cache line: memory is touched
        // once per record and first touches are the costly part (see
        // `Records::push`); the prefetch covers both ends of a record.
        Layout {
            counts,
            stride: words,
        }
    }

    /// Words holding the variants and `counts` counters, two a word.
    fn halves_words(counts: usize) -> usize {
        (1 + counts).div_ceil(2)
    }

    /// The word and bit shift of half `i`: 0 is the variants, 1 onwards
    /// the counters.
    fn half(i: usize) -> (usize, u32) {
        (1 + i / 2, (i % 2) as u32 * 32)
    }

    fn sum(&self, i: usize) -> usize {
        1 + Layout::halves_words(self.counts) + i
    }
}

/// Records in the first segment; a power of two.
const FIRST_SEGMENT: usize = 256;

/// One allocation of records, never moved or grown: its words start at a
/// cache line.
struct Segment {
    words: Vec<u64>,
    start: usize,
}

/// Person records laid out by a [`Layout`], numbered in the order persons
/// were first exposed. They live in segments of doubling size, so that
/// growing never copies a record and memory is first touched by the
/// records that use it.
struct Records {
    segments: Vec<Segment>,
    layout: Layout,
    len: usize,
}

impl Records {
    fn new(layout: Layout) -> Records {
        Records {
            segments: Vec::new(),
            layout,
            len: 0,
        }
    }

    /// The segment of record `n` and its position there: segment `s`
    /// holds `FIRST_SEGMENT << s` records.
    fn locate(n: usize) -> (usize, usize) {
        let shifted = n + FIRST_SEGMENT;
        let segment = shifted.ilog2() - FIRST_SEGMENT.ilog2();
        (segment as usize, shifted - (FIRST_SEGMENT << segment))
    }

    /// Adds an empty record and returns its number.
    fn push(&mut self) -> usize {
        let (segment, _) = Records::locate(self.len);
        if segment == self.segments.len() {
            let words = (FIRST_SEGMENT << segment) * self.layout.stride;
            // Zeroed by the allocator: fresh pages, touched only when used.
            let mut segment = vec![0u64; words + WORDS_PER_LINE - 1];
            advise_huge_pages(&mut segment);
            let start = segment.as_ptr().align_offset(WORDS_PER_LINE * 8);
            self.segments.push(Segment {
                words: segment,
                start,
            });
        }
        self.len += 1;
        // Written before it is read: a read would first map the shared
        // zero page, and the write after it would cost a second fault and
        // a TLB flush on every core.
        self.get_mut(self.len - 1).words[0] = 0;
        self.len - 1
    }

    /// The segment of record `n` and the range of its words there.
    fn place(&self, n: usize) -> (usize, std::ops::Range<usize>) {
        let (segment, i) = Records::locate(n);
        let at = self.segments[segment].start + i * self.layout.stride;
        (segment, at..at + self.layout.stride)
    }

    fn get(&self, n: usize) -> Record<'_> {
        let (segment, words) = self.place(n);
        Record {
            words: &self.segments[segment].words[words],
            layout: self.layout,
        }
    }

    fn get_mut(&mut self, n: usize) -> RecordMut<'_> {
        let (segment, words) = self.place(n);
        RecordMut {
            words: &mut self.segments[segment].words[words],
            layout: self.layout,
        }
    }

    /// Every record, in order, walking the segments rather than placing
    /// each record.
    fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        let stride = self.layout.stride;
        let mut left = self.len;
        self.segments
            .iter()
            .enumerate()
            .flat_map(move |(s, segment)| {
                let here = left.min(FIRST_SEGMENT << s);
                left -= here;
                segment.words[segment.start..]
                    .chunks_exact(stride)
                    .take(here)
            })
            .map(move |words| Record {
                words,
                layout: self.layout,
            })
    }

    fn prefetch(&self, n: usize) {
        let record = self.get(n).words;
        prefetch(&record[0]);
        prefetch(&record[self.layout.stride - 1]);
    }

    fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.words.capacity() * 8).sum()
    }
}

/// One person's record, read from its words, which a [`Layout`] places.
#[derive(Clone, Copy)]
struct Record<'a> {
    words: &'a [u64],
    layout: Layout,
}

impl Record<'_> {
    /// The smallest and largest variant served, or `None` for an empty
    /// record. Kept as smallest plus one, so that the half is never zero.
    fn variants(self) -> Option<(u16, u16)> {
        let half = self.half(0);
        (half != 0).then(|| ((half & 0xffff) as u16 - 1, (half >> 16) as u16))
    }

    fn first(self) -> i64 {
        self.words[0] as i64
    }

    fn half(self, i: usize) -> u32 {
        let (w, shift) = Layout::half(i);
        (self.words[w] >> shift) as u32
    }

    fn count(self, i: usize) -> u32 {
        self.half(1 + i)
    }

    fn sum(self, i: usize) -> f64 {
        f64::from_bits(self.words[self.layout.sum(i)])
    }
}

/// One person's record, to update.
struct RecordMut<'a> {
    words: &'a mut [u64],
    layout: Layout,
}

impl RecordMut<'_> {
    fn get(&self) -> Record<'_> {
        Record {
            words: self.words,
            layout: self.layout,
        }
    }

    /// Records an exposure at `at` to `variant`.
    fn expose(&mut self, at: i64, variant: u16) {
        let record = self.get();
        let (first, min, max) = match record.variants() {
            None => (at, variant, variant),
            Some((min, max)) => (record.first().min(at), min.min(variant), max.max(variant)),
        };
        self.words[0] = first as u64;
        self.set_half(0, (min as u32 + 1) | (max as u32) << 16);
    }

    fn set_half(&mut self, i: usize, value: u32) {
        let (w, shift) = Layout::half(i);
        let word = &mut self.words[w];
        *word = (*word & !(0xffff_ffff << shift)) | (value as u64) << shift;
    }

    fn set_count(&mut self, i: usize, value: u32) {
        self.set_half(1 + i, value);
    }

    fn add_sum(&mut self, i: usize, value: f64) {
        let word = &mut self.words[self.layout.sum(i)];
        *word = (f64::from_bits(*word) + value).to_bits();
    }
}

/// Grows `vec` to `len` items of `fill`, doubling its capacity when it
/// must, and asks for 2 MiB pages for the new room.
fn grow_zeroed<T: Copy>(vec: &mut Vec<T>, len: usize, fill: T) {
    if len <= vec.len() {
        return;
    }
    if len > vec.capacity() {
        vec.reserve(len.max(2 * vec.len()) - vec.len());
        advise_huge_pages(vec.spare_capacity_mut());
    }
    vec.resize(len, fill);
}

/// Asks the kernel to back `room` with 2 MiB pages: the person tables
/// are read at random, and with 4 KiB pages nearly every lookup also
/// misses the TLB, and first touching their memory costs a fault every
/// 4 KiB (several times dearer in a virtual machine). Advice only:
/// results never depend on it.
fn advise_huge_pages<T>(room: &mut [T]) {
    const HUGE_PAGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(room);
    if bytes < 2 * HUGE_PAGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = room.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(PAGE);
        let length = (start + bytes - aligned) / PAGE * PAGE;
        // SAFETY: the range lies inside the vector's own allocation, and
        // MADV_HUGEPAGE changes how its pages are backed, never their
        // contents.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, length, libc::MADV_HUGEPAGE);
        }
    }
}

/// A person id of the events that predate numbers: a canonical UUID by
/// its 128 bits (16 bytes instead of 36), any other text as itself, so
/// that two different ids never share a person.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IdKey {
    Uuid(u128),
    Text(Box<str>),
}

impl IdKey {
    fn new(text: &str) -> IdKey {
        match uuid_key(text.as_bytes()) {
            Some(key) => IdKey::Uuid(key),
            None => IdKey::Text(text.into()),
        }
    }
}

/// Where a shard finds a person's record.
enum Index {
    /// By person number: the shard's numbers divided by [`SHARDS`] index
    /// the record's position plus one (0: not exposed). Numbers are dense
    /// (given in order, never reused), so this is 4 bytes a person and a
    /// lookup is one load.
    Numbers(Vec<u32>),
    /// By person id, for events that predate numbers.
    Ids(HashMap<IdKey, u32>),
}

/// One shard of the exposed persons.
struct Shard {
    index: Index,
    records: Records,
    /// Bytes reserved for this shard.
    reserved: usize,
}

impl Shard {
    fn new(keys: PersonKeys, layout: Layout) -> Shard {
        Shard {
            index: match keys {
                PersonKeys::Numbers => Index::Numbers(Vec::new()),
                PersonKeys::Ids => Index::Ids(HashMap::new()),
            },
            records: Records::new(layout),
            reserved: 0,
        }
    }

    fn bytes(&self) -> usize {
        let index = match &self.index {
            Index::Numbers(slots) => slots.capacity() * 4,
            Index::Ids(ids) => {
                let text: usize = ids
                    .keys()
                    .map(|key| match key {
                        IdKey::Uuid(_) => 0,
                        IdKey::Text(text) => text.len(),
                    })
                    .sum();
                ids.capacity() * (std::mem::size_of::<(IdKey, u32)>() + 1) + text
            }
        };
        index + self.records.bytes()
    }

    /// The record of a shard-local person number, if exposed.
    fn numbered(&self, local: usize) -> Option<usize> {
        let Index::Numbers(slots) = &self.index else {
            unreachable!("numbers are routed only to shards indexed by number")
        };
        let slot = *slots.get(local)?;
        (slot != 0).then(|| slot as usize - 1)
    }

    /// The record of a shard-local person number, added when new.
    fn numbered_or_new(&mut self, local: usize) -> usize {
        let Index::Numbers(slots) = &mut self.index else {
            unreachable!("numbers are routed only to shards indexed by number")
        };
        grow_zeroed(slots, local + 1, 0);
        match slots[local] {
            0 => {
                let record = self.records.push();
                slots[local] = self.records.len as u32;
                record
            }
            slot => slot as usize - 1,
        }
    }

    /// Prefetches the index entry of a shard-local person number.
    fn prefetch_index(&self, local: usize) {
        if let Index::Numbers(slots) = &self.index
            && let Some(slot) = slots.get(local)
        {
            prefetch(slot);
        }
    }

    fn identified(&self, id: &str) -> Option<usize> {
        let Index::Ids(ids) = &self.index else {
            unreachable!("ids are routed only to shards indexed by id")
        };
        ids.get(&IdKey::new(id)).map(|&slot| slot as usize)
    }

    fn identified_or_new(&mut self, id: &str) -> usize {
        let Index::Ids(ids) = &mut self.index else {
            unreachable!("ids are routed only to shards indexed by id")
        };
        let records = &mut self.records;
        *ids.entry(IdKey::new(id))
            .or_insert_with(|| records.push() as u32) as usize
    }
}

/// How one query names its persons: by `person_num`, or by `person_id`
/// when some of its events predate numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonKeys {
    Numbers,
    Ids,
}

/// One exposed person's variants and accumulators, for [`Persons::fold`].
pub struct Person<'a>(Record<'a>);

impl Person<'_> {
    /// The smallest and largest variant the person was served.
    pub fn variants(&self) -> (u16, u16) {
        self.0
            .variants()
            .expect("every record is of an exposed person")
    }

    pub fn count(&self, i: usize) -> u32 {
        self.0.count(i)
    }

    pub fn sum(&self, i: usize) -> f64 {
        self.0.sum(i)
    }
}

/// The exposed persons of one query.
pub struct Persons {
    shards: Vec<Mutex<Shard>>,
    keys: PersonKeys,
    id_hash: RandomState,
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
    /// An empty table of persons named by `keys`, each with `counts`
    /// counters and `sums` sums.
    pub fn new(
        keys: PersonKeys,
        counts: usize,
        sums: usize,
        reservation: MemoryReservation,
        deadline: Instant,
    ) -> Persons {
        let layout = Layout::new(counts, sums);
        Persons {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(keys, layout)))
                .collect(),
            keys,
            id_hash: RandomState::new(),
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

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic elsewhere fails the query; the data is not reused.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves, before `shard`'s index of numbers grows to hold `local`,
    /// the bytes it will take, so that a wild number fails the query
    /// instead of the process.
    fn reserve_index(&self, shard: &mut Shard, local: usize) -> Result<()> {
        if let Index::Numbers(slots) = &shard.index
            && local >= slots.capacity()
        {
            let grown = ((local + 1).max(2 * slots.len()) - slots.capacity()) * 4;
            self.reservation.try_grow(grown)?;
            shard.reserved += grown;
        }
        Ok(())
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

    /// Calls `f` with every exposed person, on up to `threads` threads
    /// (each with its own `T`), and returns each thread's `T`.
    pub fn fold<T: Send>(
        &self,
        threads: usize,
        init: impl Fn() -> T + Sync,
        f: impl Fn(&mut T, Person<'_>) + Sync,
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
                            for record in shard.records.iter() {
                                f(&mut state, Person(record));
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

/// A routed row: its position in the batch, and its person number
/// divided by [`SHARDS`] (0 for persons named by id).
#[derive(Clone, Copy)]
struct Routed {
    row: u32,
    local: usize,
}

/// How many rows ahead lookups prefetch: the index entry twice as far,
/// the record this far.
const AHEAD: usize = 16;

/// A batch's rows grouped by the shard of their person.
struct Router {
    shards: Vec<Vec<Routed>>,
    /// The shard this accumulator locks first.
    first: usize,
}

impl Router {
    fn new(persons: &Persons) -> Router {
        Router {
            shards: vec![Vec::new(); SHARDS],
            first: persons.accumulators.fetch_add(1, Ordering::Relaxed) * (SHARDS / 2 + 1),
        }
    }

    /// Routes the rows `keep` accepts that have a person.
    fn route(
        &mut self,
        table: &Persons,
        persons: &PersonColumn,
        keep: impl Fn(usize) -> bool,
    ) -> Result<()> {
        for list in &mut self.shards {
            list.clear();
        }
        match (persons, table.keys) {
            (PersonColumn::Nums(nums), PersonKeys::Numbers) => {
                for row in 0..nums.len() {
                    if nums.is_valid(row) && keep(row) {
                        let num = nums.value(row);
                        let num = usize::try_from(num).map_err(|_| {
                            DataFusionError::Execution(format!("negative person_num {num}"))
                        })?;
                        self.shards[num % SHARDS].push(Routed {
                            row: row as u32,
                            local: num / SHARDS,
                        });
                    }
                }
            }
            (PersonColumn::Ids(ids), PersonKeys::Ids) => {
                for row in 0..ids.len() {
                    if ids.is_valid(row) && keep(row) {
                        let hash = table.id_hash.hash_one(ids.value(row));
                        self.shards[(hash >> 40) as usize % SHARDS].push(Routed {
                            row: row as u32,
                            local: 0,
                        });
                    }
                }
            }
            _ => {
                return Err(DataFusionError::Internal(
                    "a sink was given persons of another kind than its table's".into(),
                ));
            }
        }
        Ok(())
    }

    /// Calls `f` on each shard with its rows, the shard locked, then
    /// reserves what it grew by.
    fn each_shard(
        &self,
        table: &Persons,
        mut f: impl FnMut(&mut Shard, &[Routed]) -> Result<()>,
    ) -> Result<()> {
        for i in 0..SHARDS {
            let s = (self.first + i) % SHARDS;
            if self.shards[s].is_empty() {
                continue;
            }
            let mut shard = table.lock(s);
            f(&mut shard, &self.shards[s])?;
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

/// `plinth_experiment_metrics(person_num | person_id, code, micros, value...)`: adds
/// each metric event (`code`: its position in [`MetricRule::events`]) of an
/// exposed person to its accumulators; returns the rows taken.
pub fn metrics_udaf(persons: Arc<Persons>, rule: MetricRule) -> AggregateUDF {
    let mut arguments = vec![DataType::Int64, DataType::Int64];
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

/// How many distinct exposure texts [`ExposureRule::variants`] remembers.
const RECENT_TEXTS: usize = 4;

/// What [`flag_json`] decided of a text: its variant position, if any; or
/// `None` when the text is left to `json_as_text`.
type Decided = Option<Option<u16>>;

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
        // Exposure texts repeat (often one per variant), so the answers for
        // the last few distinct texts are kept: comparing a text costs far
        // less than parsing it.
        let mut recent: [Option<(&str, Decided)>; RECENT_TEXTS] = [None; RECENT_TEXTS];
        let mut next_slot = 0;
        for row in 0..properties.len() {
            if properties.is_null(row) {
                variants.push(None);
                continue;
            }
            let text = properties.value(row);
            let known = recent
                .iter()
                .flatten()
                .find(|(seen, _)| *seen == text)
                .map(|(_, answer)| *answer);
            let answer = known.unwrap_or_else(|| {
                let answer =
                    flag_json::top_level_strings(text, keys).map(|[flag, v]| variant(flag, v));
                recent[next_slot] = Some((text, answer));
                next_slot = (next_slot + 1) % RECENT_TEXTS;
                answer
            });
            match answer {
                Some(position) => variants.push(position),
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

/// Prefetches, for the row at `i` of a shard's routed rows, the index
/// entry of the row `2 * AHEAD` on and the record of the row `AHEAD` on.
fn prefetch_ahead(shard: &Shard, routed: &[Routed], i: usize) {
    if let Some(far) = routed.get(i + 2 * AHEAD) {
        shard.prefetch_index(far.local);
    }
    if let Some(near) = routed.get(i + AHEAD)
        && let Index::Numbers(_) = shard.index
        && let Some(record) = shard.numbered(near.local)
    {
        shard.records.prefetch(record);
    }
}

/// Records each exposure row in its person's record.
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
    })?;
    router.each_shard(persons, |shard, routed| {
        for (i, r) in routed.iter().enumerate() {
            prefetch_ahead(shard, routed, i);
            let row = r.row as usize;
            let record = match &person_column {
                PersonColumn::Nums(_) => {
                    persons.reserve_index(shard, r.local)?;
                    shard.numbered_or_new(r.local)
                }
                PersonColumn::Ids(ids) => shard.identified_or_new(ids.value(row)),
            };
            let variant = variants[row].expect("routed rows have a variant");
            shard
                .records
                .get_mut(record)
                .expose(micros.value(row), variant);
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
    let codes = values[1].as_primitive::<Int64Type>();
    let micros = values[2].as_primitive::<Int64Type>();
    let columns: Vec<_> = values[3..]
        .iter()
        .map(|v| v.as_primitive::<Float64Type>())
        .collect();
    router.route(persons, &person_column, |row| {
        codes.is_valid(row) && micros.is_valid(row)
    })?;
    let add = |mut record: RecordMut<'_>, row: usize| -> Result<()> {
        let first = record.get().first();
        let at = micros.value(row);
        let updates = usize::try_from(codes.value(row))
            .ok()
            .and_then(|code| rule.updates.get(code))
            .ok_or_else(|| {
                DataFusionError::Internal(format!("no metric event has code {}", codes.value(row)))
            })?;
        for &(window, update) in updates {
            if !window.contains(first, at) {
                continue;
            }
            match update {
                Update::Flag(i) => record.set_count(i, 1),
                Update::Count(i) => {
                    let count = record.get().count(i).checked_add(1).ok_or_else(|| {
                        DataFusionError::Execution(
                            "a person has more than 4294967295 events of one metric".into(),
                        )
                    })?;
                    record.set_count(i, count);
                }
                Update::Sum { sum, value } => {
                    // Never null on rows of the value's event.
                    let column = columns[value];
                    if column.is_valid(row) {
                        record.add_sum(sum, column.value(row));
                    }
                }
            }
        }
        Ok(())
    };
    router.each_shard(persons, |shard, routed| {
        for (i, r) in routed.iter().enumerate() {
            prefetch_ahead(shard, routed, i);
            let row = r.row as usize;
            let record = match &person_column {
                PersonColumn::Nums(_) => shard.numbered(r.local),
                PersonColumn::Ids(ids) => shard.identified(ids.value(row)),
            };
            if let Some(record) = record {
                add(shard.records.get_mut(record), row)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::FunctionRegistry;

    fn exposure_rule() -> ExposureRule {
        let dir = tempfile::tempdir().unwrap();
        let store = plinth_store::Store::open(dir.path(), plinth_store::Mode::Writer, "test");
        let engine =
            plinth_engine::Engine::new(Arc::new(store.unwrap()), plinth_engine::Limits::default());
        ExposureRule {
            flag_property: "$feature_flag".into(),
            variant_property: "$feature_flag_response".into(),
            flag: "f".into(),
            variants: vec!["a".into(), "b".into()],
            json_as_text: engine.context().unwrap().udf("json_as_text").unwrap(),
        }
    }

    #[test]
    fn remembered_texts_answer_as_parsing_each_row_would() {
        let rule = exposure_rule();
        let text = |flag: &str, variant: &str| {
            format!(r#"{{"$feature_flag":"{flag}","$feature_flag_response":"{variant}"}}"#)
        };
        // More distinct texts than are remembered, repeated, an escaped
        // variant that only json_as_text decides, other flags and variants.
        let distinct = [
            (Some(text("f", "a")), Some(0)),
            (Some(text("f", "b")), Some(1)),
            (Some(text("f", r"\u0062")), Some(1)),
            (Some(text("g", "a")), None),
            (Some(text("f", "c")), None),
            (Some(r#"{"$feature_flag":"f"}"#.to_string()), None),
            (None, None),
        ];
        let mut texts = Vec::new();
        let mut expected = Vec::new();
        for round in 0..3 {
            for i in 0..distinct.len() {
                let (text, variant) = &distinct[(i * (round + 1)) % distinct.len()];
                texts.push(text.clone());
                expected.push(*variant);
            }
        }
        // The escaped one is really left to json_as_text.
        let escaped = distinct[2].0.as_deref().unwrap();
        let keys = ["$feature_flag", "$feature_flag_response"];
        assert_eq!(flag_json::top_level_strings(escaped, keys), None);
        let properties = StringArray::from(texts);
        assert_eq!(rule.variants(&properties).unwrap(), expected);
    }

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

    /// Fills a shard with `n` persons through `record_of`, exposing each
    /// three times and setting its accumulators, then checks every field
    /// through `find`.
    fn check_shard(
        keys: PersonKeys,
        counts: usize,
        sums: usize,
        n: usize,
        record_of: impl Fn(&mut Shard, usize) -> usize,
        find: impl Fn(&Shard, usize) -> Option<usize>,
    ) {
        let mut shard = Shard::new(keys, Layout::new(counts, sums));
        for p in 0..n {
            for (at, variant) in [(p as i64, 3), (p as i64 - 1, 1), (p as i64 + 1, 2)] {
                let record = record_of(&mut shard, p);
                shard.records.get_mut(record).expose(at, variant);
            }
            let record = find(&shard, p).unwrap();
            let mut record = shard.records.get_mut(record);
            for i in 0..counts {
                record.set_count(i, (p + i) as u32);
            }
            for i in 0..sums {
                record.add_sum(i, p as f64 + i as f64 / 2.0);
            }
        }
        assert_eq!(shard.records.len, n);
        for p in 0..n {
            let record = shard.records.get(find(&shard, p).unwrap());
            assert_eq!(record.first(), p as i64 - 1);
            assert_eq!(record.variants(), Some((1, 3)));
            for i in 0..counts {
                assert_eq!(record.count(i), (p + i) as u32);
            }
            for i in 0..sums {
                assert_eq!(record.sum(i), p as f64 + i as f64 / 2.0);
            }
        }
    }

    #[test]
    fn shards_keep_every_persons_fields_across_growth() {
        // One line a record, no accumulators, and records over a line.
        for (counts, sums) in [(7, 2), (0, 0), (3, 8)] {
            // Sparse numbers, so that the index has holes.
            check_shard(
                PersonKeys::Numbers,
                counts,
                sums,
                5_000,
                |shard, p| shard.numbered_or_new(3 * p),
                |shard, p| shard.numbered(3 * p),
            );
            // UUIDs and other texts.
            let id = |p: usize| match p % 2 {
                0 => format!("{:08x}-0000-0000-0000-{:012x}", p, p),
                _ => format!("user-{p}"),
            };
            check_shard(
                PersonKeys::Ids,
                counts,
                sums,
                5_000,
                |shard, p| shard.identified_or_new(&id(p)),
                |shard, p| shard.identified(&id(p)),
            );
        }
        let mut shard = Shard::new(PersonKeys::Numbers, Layout::new(1, 1));
        shard.numbered_or_new(10);
        assert_eq!(shard.numbered(9), None);
        assert_eq!(shard.numbered(11), None);
        assert_eq!(shard.numbered(1_000_000), None);
    }

    #[test]
    fn records_are_packed_and_segments_start_at_a_line() {
        assert_eq!(Layout::new(7, 2).stride, 7);
        assert_eq!(Layout::new(1, 1).stride, 3);
        assert_eq!(Layout::new(0, 0).stride, 2);
        assert_eq!(Layout::new(3, 8).stride, 11);
        let mut records = Records::new(Layout::new(7, 2));
        for n in 0..=3 * FIRST_SEGMENT {
            assert_eq!(records.push(), n);
        }
        let start = |n: usize| records.get(n).words.as_ptr() as usize;
        // Segments 0, 1 and 2 start at records 0, 256 and 768.
        for first in [0, FIRST_SEGMENT, 3 * FIRST_SEGMENT] {
            assert_eq!(start(first) % 64, 0);
        }
        assert_eq!(
            start(FIRST_SEGMENT - 1) - start(0),
            (FIRST_SEGMENT - 1) * 56
        );
    }

    #[test]
    fn segments_double_and_hold_consecutive_records() {
        assert_eq!(Records::locate(0), (0, 0));
        assert_eq!(Records::locate(FIRST_SEGMENT - 1), (0, FIRST_SEGMENT - 1));
        assert_eq!(Records::locate(FIRST_SEGMENT), (1, 0));
        assert_eq!(
            Records::locate(3 * FIRST_SEGMENT - 1),
            (1, 2 * FIRST_SEGMENT - 1)
        );
        assert_eq!(Records::locate(3 * FIRST_SEGMENT), (2, 0));
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
