//! The durable capture pipeline: what makes "acknowledged" mean "stored,
//! exactly once".
//!
//! ```text
//! submit ─► channel ─► writer thread ─────────► applier thread ─► ack
//!                      dedup by id               persons, rows into
//!                      one WAL record/request    the in-memory buffer
//!                      one fsync per group       (queryable at once)
//!                                 flusher thread: buffer ─► Parquet commit
//!                                 with checkpoint `wal_lsn`, then deletes
//!                                 the WAL segments that commit covers
//! ```
//!
//! Group commit: the writer takes every request waiting in the channel,
//! writes them as consecutive log records and syncs once; nobody is
//! answered before that sync. The applier then resolves persons and buffers
//! the rows, in log order, and only then answers, so an acknowledged event
//! is queryable at once.
//!
//! Exactly once:
//! - each flush writes the first *n* buffered batches (all that were
//!   buffered when it started) and records, in the same table commit, the
//!   LSN up to which every applied record's rows are in Parquet
//!   (`checkpoints["wal_lsn"]`); recovery replays only records above it, so
//!   a crash between the commit and the segment deletion re-applies nothing;
//! - events are deduplicated by id (`uuid` / `messageId`, a new UUIDv7 when
//!   the client sent none, assigned before the log so replay keeps it)
//!   against a bounded set of recent ids, rebuilt at start from the log and
//!   from Parquet files written within the dedup window. SDK retries are
//!   therefore not double counted; an id seen again after the window is.
//!
//! Quarantined items travel in the same records, so they are as durable as
//! events. This module owns no HTTP: the server decodes requests and hands
//! over [`CaptureRequest`]s.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use plinth_tracking_plan::{Mode as TrackingMode, TrackingPlan};

use crate::groups::GroupUpdate;
use crate::rows::{EventInput, Ingestor, QuarantineInput, quarantine_batch};
use crate::wal::{self, WalWriter};

/// The checkpoint, in `events` and `quarantine` commits, naming the last
/// write-ahead log record whose rows that table holds in Parquet.
pub const WAL_CHECKPOINT: &str = "wal_lsn";

/// Most requests one group commit takes from the channel.
const MAX_GROUP_REQUESTS: usize = 4096;

/// How the pipeline trades latency, memory and file sizes.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// The write-ahead log folder (`<data>/wal` by default).
    pub wal_dir: PathBuf,
    /// Buffered rows are written to Parquet at least this often...
    pub flush_interval: Duration,
    /// ...or as soon as this many event rows are buffered.
    pub flush_rows: usize,
    /// A log segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Persons and groups are saved, and log segments Parquet covers are
    /// deleted, at most this often (and at shutdown). The log keeps the
    /// records in between, so recovery re-derives identities from them; a
    /// flush of events does not rewrite the whole `persons` table.
    pub identity_save_interval: Duration,
    /// Ids received within this window are recognised as duplicates...
    pub dedup_window: Duration,
    /// ...up to this many ids (the oldest are forgotten first).
    pub dedup_capacity: usize,
    /// Requests waiting for the writer; senders wait beyond it.
    pub queue_requests: usize,
}

impl CaptureConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: &Path) -> CaptureConfig {
        CaptureConfig {
            wal_dir: data_dir.join("wal"),
            flush_interval: Duration::from_secs(1),
            identity_save_interval: Duration::from_secs(30),
            flush_rows: 250_000,
            segment_bytes: 64 << 20,
            dedup_window: Duration::from_secs(3600),
            dedup_capacity: 4_000_000,
            queue_requests: 16_384,
        }
    }
}

/// The accepted content of one request.
#[derive(Debug, Clone, Default)]
pub struct CaptureRequest {
    pub received_at_micros: i64,
    pub events: Vec<EventInput>,
    pub quarantine: Vec<QuarantineInput>,
}

/// What happened to a request that was made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receipt {
    pub stored: usize,
    /// Events whose id was already received (an SDK retry).
    pub duplicates: usize,
    pub quarantined: usize,
}

/// The request could not be made durable; the client should retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture unavailable: {0}")]
pub struct CaptureUnavailable(pub String);

/// What recovery found at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Log records read.
    pub records: usize,
    /// Events replayed into the store (not already in Parquet).
    pub events: usize,
    pub quarantined: usize,
    /// Ids loaded into the deduplication set.
    pub known_ids: usize,
}

/// Counters for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub requests: u64,
    pub events: u64,
    pub duplicates: u64,
    pub fsyncs: u64,
    pub flushes: u64,
}

/// The running pipeline. [`CapturePipeline::shutdown`] drains it.
pub struct CapturePipeline {
    sender: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

enum Message {
    Request(Pending),
    Stop,
}

struct Pending {
    request: CaptureRequest,
    reply: oneshot::Sender<Result<Receipt, CaptureUnavailable>>,
}

/// A request after deduplication, with its log position.
struct Logged {
    lsn: Option<u64>,
    request: CaptureRequest,
    receipt: Receipt,
    reply: oneshot::Sender<Result<Receipt, CaptureUnavailable>>,
}

/// What the buffer holds that is not yet in Parquet. Only the applier adds
/// to the tables' buffers, under this lock, so counts and LSN agree.
#[derive(Default)]
struct Buffered {
    event_batches: usize,
    event_rows: usize,
    quarantine_batches: usize,
    /// The last record applied to the buffers.
    applied_lsn: u64,
    flush_now: bool,
    stopping: bool,
}

struct Shared {
    ingestor: Arc<Ingestor>,
    config: CaptureConfig,
    buffered: Mutex<Buffered>,
    flush_wanted: Condvar,
    /// Set when applying failed: the log holds records the buffer lacks, so
    /// nothing more is accepted and no segment is deleted until a restart
    /// replays them.
    failed: Mutex<Option<String>>,
    rotate_requested: AtomicBool,
    active_segment_first_lsn: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    duplicates: AtomicU64,
    fsyncs: AtomicU64,
    flushes: AtomicU64,
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failed.lock().expect("failure lock").clone()
    }

    fn fail(&self, reason: String) {
        tracing::error!("capture stopped accepting events: {reason}");
        let mut failed = self.failed.lock().expect("failure lock");
        if failed.is_none() {
            *failed = Some(reason);
        }
    }
}

impl CapturePipeline {
    /// Recovers the log into the store (replay, flush, delete covered
    /// segments), rebuilds the deduplication set, and starts the threads.
    pub fn open(
        ingestor: Arc<Ingestor>,
        config: CaptureConfig,
    ) -> Result<(CapturePipeline, Recovery)> {
        let mut dedup = RecentIds::new(config.dedup_window, config.dedup_capacity);
        let known_from_parquet = load_recent_ids(&ingestor, &config, &mut dedup)?;
        let (next_lsn, mut recovery) = recover(&ingestor, &config, &mut dedup)?;
        recovery.known_ids += known_from_parquet;
        let wal = WalWriter::create(&config.wal_dir, next_lsn)?;
        wal::remove_covered(&config.wal_dir, next_lsn - 1, wal.segment_first_lsn())?;

        let (sender, receiver) = mpsc::channel(config.queue_requests.max(1));
        let shared = Arc::new(Shared {
            ingestor,
            buffered: Mutex::new(Buffered {
                applied_lsn: next_lsn - 1,
                ..Buffered::default()
            }),
            flush_wanted: Condvar::new(),
            failed: Mutex::new(None),
            rotate_requested: AtomicBool::new(false),
            active_segment_first_lsn: AtomicU64::new(wal.segment_first_lsn()),
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            config,
        });
        let (to_applier, applier_inbox) = std_mpsc::channel();
        let threads = vec![
            spawn("plinth-wal-writer", {
                let shared = shared.clone();
                move || write_loop(&shared, receiver, wal, dedup, &to_applier)
            })?,
            spawn("plinth-wal-applier", {
                let shared = shared.clone();
                move || apply_loop(&shared, &applier_inbox)
            })?,
            spawn("plinth-flusher", {
                let shared = shared.clone();
                move || flush_loop(&shared)
            })?,
        ];
        Ok((
            CapturePipeline {
                sender,
                shared,
                threads: Mutex::new(threads),
            },
            recovery,
        ))
    }

    /// Makes `request` durable and visible; answers once it is both. Events
    /// without an id get one here, before the log, so that replay keeps it.
    pub async fn submit(&self, mut request: CaptureRequest) -> Result<Receipt, CaptureUnavailable> {
        if let Some(reason) = self.shared.failure() {
            return Err(CaptureUnavailable(reason));
        }
        for event in &mut request.events {
            if event.uuid.is_none() {
                event.uuid = Some(crate::rows::new_event_id());
            }
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Message::Request(Pending { request, reply }))
            .await
            .map_err(|_| CaptureUnavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| CaptureUnavailable("the capture pipeline stopped".into()))?
    }

    pub fn stats(&self) -> CaptureStats {
        let shared = &self.shared;
        CaptureStats {
            requests: shared.requests.load(Ordering::Relaxed),
            events: shared.events.load(Ordering::Relaxed),
            duplicates: shared.duplicates.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            flushes: shared.flushes.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, answers every request already queued, writes the
    /// buffer to Parquet and deletes the covered log. Blocks; call it from a
    /// blocking thread.
    pub fn shutdown(&self) -> Result<()> {
        // A closed channel means the writer already stopped.
        let _ = self.sender.blocking_send(Message::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for thread in threads {
            if thread.join().is_err() {
                bail!("a capture thread panicked");
            }
        }
        match self.shared.failure() {
            Some(reason) => bail!("capture stopped with records left in the log: {reason}"),
            None => Ok(()),
        }
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(work)
        .with_context(|| format!("starting thread {name}"))
}

/// The log record of one request: [`RECORD_FORMAT`], then a little-endian
/// `u32` length and a JSON header ([`WalRequest`]: every field but the
/// events' properties), then each event's properties as a length-prefixed
/// run of bytes. Properties are already JSON text; copying them as they are,
/// instead of escaping them into a JSON string, was a fifth of the writer's
/// work. Records that start with `{` are the earlier all-JSON format, still
/// read on recovery.
const RECORD_FORMAT: u8 = 1;

/// The JSON header of a log record. Field names are short: every event pays
/// for them in the log.
#[derive(Serialize, Deserialize)]
struct WalRequest<'a> {
    at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty", borrow)]
    ev: Vec<WalEvent<'a>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", borrow)]
    q: Vec<WalQuarantine<'a>>,
}

#[derive(Serialize, Deserialize)]
struct WalEvent<'a> {
    #[serde(borrow)]
    uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    distinct_id: Cow<'a, str>,
    ts: i64,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    /// Only in the earlier all-JSON records; now after the header.
    #[serde(default, skip_serializing, borrow)]
    properties: Option<Cow<'a, str>>,
    #[serde(borrow)]
    lib: Option<Cow<'a, str>>,
    set: Option<Cow<'a, Map<String, Value>>>,
    set_once: Option<Cow<'a, Map<String, Value>>>,
    #[serde(borrow)]
    merge_with: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<Cow<'a, GroupUpdate>>,
}

#[derive(Serialize, Deserialize)]
struct WalQuarantine<'a> {
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

fn borrowed(text: &Option<String>) -> Option<Cow<'_, str>> {
    text.as_deref().map(Cow::Borrowed)
}

fn encode_request(request: &CaptureRequest) -> Result<Vec<u8>> {
    let header = WalRequest {
        at: request.received_at_micros,
        ev: request
            .events
            .iter()
            .map(|e| WalEvent {
                uuid: borrowed(&e.uuid),
                event: Cow::Borrowed(&e.event),
                distinct_id: Cow::Borrowed(&e.distinct_id),
                ts: e.timestamp_micros,
                session_id: borrowed(&e.session_id),
                properties: None,
                lib: borrowed(&e.lib),
                set: e.set.as_ref().map(Cow::Borrowed),
                set_once: e.set_once.as_ref().map(Cow::Borrowed),
                merge_with: borrowed(&e.merge_with),
                group: e.group.as_ref().map(Cow::Borrowed),
            })
            .collect(),
        q: request
            .quarantine
            .iter()
            .map(|q| WalQuarantine {
                source: Cow::Borrowed(&q.source),
                reason: Cow::Borrowed(&q.reason),
                payload: Cow::Borrowed(&q.payload),
            })
            .collect(),
    };
    let properties_bytes: usize = request.events.iter().map(|e| 4 + e.properties.len()).sum();
    let mut record = Vec::with_capacity(5 + 128 * request.events.len() + properties_bytes);
    record.push(RECORD_FORMAT);
    record.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut record, &header)?;
    let header_len = u32::try_from(record.len() - 5).context("log record header over 4 GiB")?;
    record[1..5].copy_from_slice(&header_len.to_le_bytes());
    for event in &request.events {
        let len = u32::try_from(event.properties.len()).context("properties over 4 GiB")?;
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(event.properties.as_bytes());
    }
    Ok(record)
}

fn decode_request(payload: &[u8]) -> Result<CaptureRequest> {
    let (header, mut rest): (WalRequest<'_>, &[u8]) = match payload.first() {
        Some(b'{') => (serde_json::from_slice(payload)?, &[]),
        Some(&RECORD_FORMAT) => {
            let header_len = read_len(payload.get(1..5))?;
            let header = payload
                .get(5..5 + header_len)
                .context("log record header cut short")?;
            (serde_json::from_slice(header)?, &payload[5 + header_len..])
        }
        _ => bail!("unknown log record format"),
    };
    let mut events = Vec::with_capacity(header.ev.len());
    for e in header.ev {
        let properties = match e.properties {
            Some(inline) => inline.into_owned(),
            None => {
                let len = read_len(rest.get(..4))?;
                let bytes = rest.get(4..4 + len).context("log record cut short")?;
                rest = &rest[4 + len..];
                String::from_utf8(bytes.to_vec()).context("properties are not UTF-8")?
            }
        };
        let owned = |text: Option<Cow<'_, str>>| text.map(Cow::into_owned);
        events.push(EventInput {
            uuid: owned(e.uuid),
            event: e.event.into_owned(),
            distinct_id: e.distinct_id.into_owned(),
            timestamp_micros: e.ts,
            session_id: owned(e.session_id),
            properties,
            lib: owned(e.lib),
            set: e.set.map(Cow::into_owned),
            set_once: e.set_once.map(Cow::into_owned),
            merge_with: owned(e.merge_with),
            group: e.group.map(Cow::into_owned),
        });
    }
    Ok(CaptureRequest {
        received_at_micros: header.at,
        events,
        quarantine: header
            .q
            .into_iter()
            .map(|q| QuarantineInput {
                source: q.source.into_owned(),
                reason: q.reason.into_owned(),
                payload: q.payload.into_owned(),
            })
            .collect(),
    })
}

fn read_len(bytes: Option<&[u8]>) -> Result<usize> {
    let bytes: [u8; 4] = bytes
        .and_then(|b| b.try_into().ok())
        .context("log record cut short")?;
    Ok(u32::from_le_bytes(bytes) as usize)
}

/// The writer: dedup, one log record per request, one sync per group.
fn write_loop(
    shared: &Shared,
    mut inbox: mpsc::Receiver<Message>,
    mut wal: WalWriter,
    mut dedup: RecentIds,
    to_applier: &std_mpsc::Sender<Vec<Logged>>,
) {
    let mut stopping = false;
    while !stopping {
        let mut group = Vec::new();
        match inbox.blocking_recv() {
            Some(Message::Request(pending)) => group.push(pending),
            Some(Message::Stop) | None => stopping = true,
        }
        while group.len() < MAX_GROUP_REQUESTS {
            match inbox.try_recv() {
                Ok(Message::Request(pending)) => group.push(pending),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if stopping {
            // Nothing new gets in; what is queued is still answered.
            inbox.close();
            while let Ok(message) = inbox.try_recv() {
                if let Message::Request(pending) = message {
                    group.push(pending);
                }
            }
        }
        if !group.is_empty() {
            write_group(shared, &mut wal, &mut dedup, group, to_applier);
        }
    }
    // Close the last segment so the final flush can delete it.
    if let Err(e) = wal.rotate() {
        tracing::warn!("closing the last write-ahead log segment: {e:#}");
    }
    shared
        .active_segment_first_lsn
        .store(wal.segment_first_lsn(), Ordering::Release);
}

fn write_group(
    shared: &Shared,
    wal: &mut WalWriter,
    dedup: &mut RecentIds,
    group: Vec<Pending>,
    to_applier: &std_mpsc::Sender<Vec<Logged>>,
) {
    if let Some(reason) = shared.failure() {
        for pending in group {
            let _ = pending.reply.send(Err(CaptureUnavailable(reason.clone())));
        }
        return;
    }
    if shared.rotate_requested.swap(false, Ordering::AcqRel)
        || wal.segment_bytes() >= shared.config.segment_bytes
    {
        if let Err(e) = wal.rotate() {
            tracing::warn!("rotating the write-ahead log: {e:#}");
        }
        shared
            .active_segment_first_lsn
            .store(wal.segment_first_lsn(), Ordering::Release);
    }

    let mut new_ids = Vec::new();
    let mut logged = Vec::with_capacity(group.len());
    let mut payloads = Vec::new();
    let mut encode_error = None;
    for Pending { mut request, reply } in group {
        let before = request.events.len();
        request.events.retain(|event| {
            let id = id_key(event.uuid.as_deref().expect("submit assigns ids"));
            let fresh = dedup.insert(id, request.received_at_micros);
            if fresh {
                new_ids.push(id);
            }
            fresh
        });
        let receipt = Receipt {
            stored: request.events.len(),
            duplicates: before - request.events.len(),
            quarantined: request.quarantine.len(),
        };
        let mut lsn = None;
        if !request.events.is_empty() || !request.quarantine.is_empty() {
            match encode_request(&request) {
                Ok(payload) => {
                    lsn = Some(wal.next_lsn() + payloads.len() as u64);
                    payloads.push(payload);
                }
                Err(e) => encode_error = Some(e),
            }
        }
        logged.push(Logged {
            lsn,
            request,
            receipt,
            reply,
        });
    }

    let written = match encode_error {
        Some(e) => Err(e),
        None if payloads.is_empty() => Ok(()),
        None => wal.append(&payloads).and_then(|_| {
            shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            wal.sync()
        }),
    };
    if let Err(error) = written {
        // Not durable: forget the ids so the client's retry is accepted, and
        // leave the segment whose content is now uncertain.
        for id in new_ids {
            dedup.forget(id);
        }
        tracing::error!("capture could not make events durable: {error:#}");
        if let Err(e) = wal.rotate() {
            tracing::error!("rotating the write-ahead log after a failure: {e:#}");
        }
        shared
            .active_segment_first_lsn
            .store(wal.segment_first_lsn(), Ordering::Release);
        let reason = format!("the write-ahead log could not be written: {error:#}");
        for item in logged {
            let _ = item.reply.send(Err(CaptureUnavailable(reason.clone())));
        }
        return;
    }
    if to_applier.send(logged).is_err() {
        shared.fail("the applier thread stopped".into());
    }
}

/// The applier: rows into the buffers in log order, then the answers.
fn apply_loop(shared: &Shared, inbox: &std_mpsc::Receiver<Vec<Logged>>) {
    for group in inbox {
        if let Some(reason) = shared.failure() {
            for item in group {
                let _ = item.reply.send(Err(CaptureUnavailable(reason.clone())));
            }
            continue;
        }
        match apply_group(shared, &group) {
            Ok(()) => {
                let mut events = 0;
                let mut duplicates = 0;
                for item in &group {
                    events += item.receipt.stored as u64;
                    duplicates += item.receipt.duplicates as u64;
                }
                shared
                    .requests
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                shared.events.fetch_add(events, Ordering::Relaxed);
                shared.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                for item in group {
                    let _ = item.reply.send(Ok(item.receipt));
                }
            }
            Err(error) => {
                shared.fail(format!("applying logged events failed: {error:#}"));
                for item in group {
                    let _ = item
                        .reply
                        .send(Err(CaptureUnavailable("applying events failed".into())));
                }
            }
        }
    }
    let mut buffered = shared.buffered.lock().expect("buffer lock");
    buffered.stopping = true;
    shared.flush_wanted.notify_all();
}

fn apply_group(shared: &Shared, group: &[Logged]) -> Result<()> {
    let ingestor = &shared.ingestor;
    let store = ingestor.store();
    let mut requests = Vec::with_capacity(group.len());
    let mut quarantine_batches = Vec::new();
    let mut last_lsn = None;
    for item in group {
        let Some(lsn) = item.lsn else { continue };
        last_lsn = Some(lsn);
        let request = &item.request;
        if !request.events.is_empty() {
            requests.push((request.events.as_slice(), request.received_at_micros));
        }
        if !request.quarantine.is_empty() {
            quarantine_batches.push(quarantine_batch(
                &request.quarantine,
                request.received_at_micros,
            )?);
        }
    }
    let Some(last_lsn) = last_lsn else {
        return Ok(());
    };
    let events = if requests.is_empty() {
        None
    } else {
        Some(ingestor.requests_batch(&requests)?)
    };
    let mut buffered = shared.buffered.lock().expect("buffer lock");
    if let Some(batch) = events {
        buffered.event_rows += batch.num_rows();
        store.events.buffer(batch)?;
        buffered.event_batches += 1;
    }
    if !quarantine_batches.is_empty() {
        store.quarantine.buffer(concat_batches(
            &store.quarantine.schema(),
            &quarantine_batches,
        )?)?;
        buffered.quarantine_batches += 1;
    }
    buffered.applied_lsn = last_lsn;
    if buffered.event_rows >= shared.config.flush_rows {
        buffered.flush_now = true;
        shared.flush_wanted.notify_all();
    }
    Ok(())
}

/// The flusher: buffer to Parquet on a timer or a row count, then log
/// segments out; a last flush once the applier has stopped.
fn flush_loop(shared: &Shared) {
    let mut identities_saved = std::time::Instant::now();
    loop {
        let stopping = {
            let buffered = shared.buffered.lock().expect("buffer lock");
            let (mut buffered, _) = shared
                .flush_wanted
                .wait_timeout_while(buffered, shared.config.flush_interval, |b| {
                    !b.flush_now && !b.stopping
                })
                .expect("buffer lock");
            buffered.flush_now = false;
            buffered.stopping
        };
        let truncate =
            stopping || identities_saved.elapsed() >= shared.config.identity_save_interval;
        match flush_once(shared, truncate) {
            Ok(()) if truncate => identities_saved = std::time::Instant::now(),
            Ok(()) => {}
            Err(e) => {
                // The rows stay buffered and logged; the next round retries.
                tracing::error!("flushing captured events failed: {e:#}");
                if stopping {
                    shared.fail(format!("the last flush failed: {e:#}"));
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Moves the buffer to Parquet. With `truncate`, also saves persons and
/// groups and deletes the log segments Parquet covers; without, the log
/// keeps them, and recovery re-derives identities from it.
fn flush_once(shared: &Shared, truncate: bool) -> Result<()> {
    let ingestor = &shared.ingestor;
    let store = ingestor.store();
    let (event_batches, event_rows, quarantine_batches, covered) = {
        let b = shared.buffered.lock().expect("buffer lock");
        (
            b.event_batches,
            b.event_rows,
            b.quarantine_batches,
            b.applied_lsn,
        )
    };
    // Persons first when the log is about to lose records: a crash before
    // the events commit leaves persons that replay derives again.
    if truncate {
        ingestor.save_identities()?;
    }
    let checkpoint = BTreeMap::from([(WAL_CHECKPOINT.to_string(), covered)]);
    if event_batches > 0 {
        store.events.flush_prefix(event_batches, &checkpoint)?;
        let mut b = shared.buffered.lock().expect("buffer lock");
        b.event_batches -= event_batches;
        b.event_rows -= event_rows;
    }
    if quarantine_batches > 0 {
        store
            .quarantine
            .flush_prefix(quarantine_batches, &checkpoint)?;
        shared
            .buffered
            .lock()
            .expect("buffer lock")
            .quarantine_batches -= quarantine_batches;
    }
    if event_batches > 0 || quarantine_batches > 0 {
        shared.flushes.fetch_add(1, Ordering::Relaxed);
    }
    if truncate {
        // Close the active segment, so the next truncation can delete it.
        shared.rotate_requested.store(true, Ordering::Release);
    }
    if truncate && shared.failure().is_none() {
        wal::remove_covered(
            &shared.config.wal_dir,
            covered,
            shared.active_segment_first_lsn.load(Ordering::Acquire),
        )?;
    }
    Ok(())
}

/// Replays the log records that Parquet does not cover into the buffers,
/// flushes them, and returns the next LSN.
fn recover(
    ingestor: &Ingestor,
    config: &CaptureConfig,
    dedup: &mut RecentIds,
) -> Result<(u64, Recovery)> {
    let store = ingestor.store();
    let checkpoint = |table: &plinth_store::Table| {
        table
            .snapshot()
            .checkpoints
            .get(WAL_CHECKPOINT)
            .copied()
            .unwrap_or(0)
    };
    let events_covered = checkpoint(&store.events);
    let quarantine_covered = checkpoint(&store.quarantine);
    let records = wal::read_all(&config.wal_dir)?;
    let mut recovery = Recovery {
        records: records.len(),
        ..Recovery::default()
    };
    let mut last_lsn = events_covered.max(quarantine_covered);
    let (mut event_batches, mut quarantine_batches) = (0, 0);
    for record in records {
        last_lsn = last_lsn.max(record.lsn);
        let mut request = decode_request(&record.payload)
            .with_context(|| format!("write-ahead log record {} is unreadable", record.lsn))?;
        if record.lsn <= events_covered {
            // In Parquet already, but persons may not have been saved since:
            // applying identities again is idempotent and restores them.
            ingestor.apply_identities(&request.events);
        }
        request.events.retain(|event| {
            let id = id_key(event.uuid.as_deref().unwrap_or_default());
            // Ids at or below the checkpoint are already stored: remember
            // them, apply nothing. Above it, an id seen before is a retry
            // logged after a failed sync.
            let fresh = dedup.insert(id, request.received_at_micros);
            recovery.known_ids += usize::from(fresh);
            fresh && record.lsn > events_covered
        });
        if !request.events.is_empty() {
            let batch = ingestor.events_batch(&request.events, request.received_at_micros)?;
            store.events.buffer(batch)?;
            event_batches += 1;
            recovery.events += request.events.len();
        }
        if record.lsn > quarantine_covered && !request.quarantine.is_empty() {
            store.quarantine.buffer(quarantine_batch(
                &request.quarantine,
                request.received_at_micros,
            )?)?;
            quarantine_batches += 1;
            recovery.quarantined += request.quarantine.len();
        }
    }
    ingestor.save_identities()?;
    let checkpoint = BTreeMap::from([(WAL_CHECKPOINT.to_string(), last_lsn)]);
    if event_batches > 0 {
        store.events.flush_prefix(event_batches, &checkpoint)?;
    }
    if quarantine_batches > 0 {
        store
            .quarantine
            .flush_prefix(quarantine_batches, &checkpoint)?;
    }
    Ok((last_lsn + 1, recovery))
}

/// Loads the ids of events received within the dedup window from Parquet
/// files written within it (their names are UUIDv7s, which carry the time).
fn load_recent_ids(
    ingestor: &Ingestor,
    config: &CaptureConfig,
    dedup: &mut RecentIds,
) -> Result<usize> {
    let table = &ingestor.store().events;
    let now = chrono::Utc::now().timestamp_micros();
    let since = now - config.dedup_window.as_micros() as i64;
    let mut loaded = 0;
    for file in &table.snapshot().files {
        let written_at = Path::new(&file.path)
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("part-"))
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .and_then(|u| u.get_timestamp())
            .map(|t| {
                let (seconds, nanos) = t.to_unix();
                seconds as i64 * 1_000_000 + i64::from(nanos / 1000)
            });
        if written_at.is_none_or(|at| at < since) {
            continue;
        }
        let path = table.dir().join(&file.path);
        let reader =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(reader)?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["uuid", "received_at"]);
        for batch in builder.with_projection(mask).build()? {
            loaded += remember_ids(&batch?, since, dedup)?;
        }
    }
    Ok(loaded)
}

fn remember_ids(batch: &RecordBatch, since: i64, dedup: &mut RecentIds) -> Result<usize> {
    let ids = batch
        .column_by_name("uuid")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .context("events.uuid")?;
    let received = batch
        .column_by_name("received_at")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .context("events.received_at")?;
    let mut loaded = 0;
    for row in 0..batch.num_rows() {
        if ids.is_valid(row) && received.value(row) >= since {
            loaded += usize::from(dedup.insert(id_key(ids.value(row)), received.value(row)));
        }
    }
    Ok(loaded)
}

/// A 128-bit digest of an id: two SipHash runs with different seeds.
/// Storing digests instead of strings keeps millions of ids in tens of MB;
/// two ids collide with probability about 2^-128 per pair.
fn id_key(id: &str) -> u128 {
    let half = |seed: u8| {
        let mut hasher = DefaultHasher::new();
        seed.hash(&mut hasher);
        id.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// The ids received recently, bounded by age and by count.
struct RecentIds {
    known: HashSet<u128>,
    order: VecDeque<(i64, u128)>,
    window_micros: i64,
    capacity: usize,
}

impl RecentIds {
    fn new(window: Duration, capacity: usize) -> RecentIds {
        RecentIds {
            known: HashSet::new(),
            order: VecDeque::new(),
            window_micros: window.as_micros() as i64,
            capacity: capacity.max(1),
        }
    }

    /// Remembers `id`; false if it was already known.
    fn insert(&mut self, id: u128, received_at_micros: i64) -> bool {
        if !self.known.insert(id) {
            return false;
        }
        self.order.push_back((received_at_micros, id));
        let horizon = received_at_micros - self.window_micros;
        while let Some(&(at, oldest)) = self.order.front() {
            if self.order.len() <= self.capacity && at >= horizon {
                break;
            }
            self.order.pop_front();
            self.known.remove(&oldest);
        }
        true
    }

    /// Forgets an id that was not made durable after all.
    fn forget(&mut self, id: u128) {
        self.known.remove(&id);
    }
}

/// The checkpoint, in the `events` commit of a quarantine replay, naming
/// the `quarantine` version it replayed: if the process dies before the
/// quarantine table is rewritten, the re-run sees it and does not append
/// the same events again.
const QUARANTINE_REPLAY_CHECKPOINT: &str = "quarantine_replayed_version";

/// One quarantined item, with an id stable across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// UUIDv5 of (received_at, source, payload).
    pub id: String,
    pub received_at_micros: i64,
    pub source: String,
    pub reason: String,
    pub payload: String,
}

/// What a quarantine replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineReplay {
    /// Items that now pass and moved to `events`.
    pub replayed: usize,
    /// Selected items that still fail, with today's reason.
    pub still_failing: Vec<(String, String)>,
}

/// Every row of the `quarantine` table, oldest first.
pub fn quarantined(store: &plinth_store::Store) -> Result<Vec<Quarantined>> {
    let mut items = Vec::new();
    for batch in store.quarantine.read_all()? {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .with_context(|| format!("quarantine.{name}"))
        };
        let (source, reason, payload) = (text("source")?, text("reason")?, text("payload")?);
        let received = batch
            .column_by_name("received_at")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .context("quarantine.received_at")?;
        for row in 0..batch.num_rows() {
            let identity = format!(
                "{}\n{}\n{}",
                received.value(row),
                source.value(row),
                payload.value(row)
            );
            items.push(Quarantined {
                id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.as_bytes()).to_string(),
                received_at_micros: received.value(row),
                source: source.value(row).to_string(),
                reason: reason.value(row).to_string(),
                payload: payload.value(row).to_string(),
            });
        }
    }
    items.sort_by_key(|item| item.received_at_micros);
    Ok(items)
}

/// Normalises the selected quarantined payloads again, as capture would
/// today; those that pass move to `events` (one commit), then the
/// `quarantine` table is rewritten without them. The caller holds the
/// writer lock and has replayed the write-ahead log.
pub fn replay_quarantine(
    ingestor: &Ingestor,
    plan: Option<&TrackingPlan>,
    selected: impl Fn(&Quarantined) -> bool,
) -> Result<QuarantineReplay> {
    let store = ingestor.store();
    let version = store.quarantine.snapshot().version;
    let mut report = QuarantineReplay::default();
    let mut events = Vec::new();
    let mut kept = Vec::new();
    for item in quarantined(store)? {
        if !selected(&item) {
            kept.push(item);
            continue;
        }
        let value: Value = match serde_json::from_str(&item.payload) {
            Ok(value) => value,
            Err(e) => {
                report
                    .still_failing
                    .push((item.id.clone(), format!("payload is not JSON: {e}")));
                kept.push(item);
                continue;
            }
        };
        match plinth_capture::normalize_json_event(value, item.received_at_micros) {
            Ok(mut event) => {
                // A plan refusal stays refused until the event or the plan is fixed.
                if let Some(verdict) =
                    plan.and_then(|plan| plan.check_and_mark(&event.event, &mut event.properties))
                    && verdict.mode == TrackingMode::Enforce
                {
                    let reason = verdict.quarantine_reason();
                    report.still_failing.push((item.id.clone(), reason.clone()));
                    kept.push(Quarantined { reason, ..item });
                    continue;
                }
                let mut input = EventInput::from(event);
                // A stable id: replaying twice must not store twice.
                if input.uuid.is_none() {
                    input.uuid = Some(item.id.clone());
                }
                events.push(input);
            }
            Err(rejected) => {
                report
                    .still_failing
                    .push((item.id.clone(), rejected.reason));
                kept.push(item);
            }
        }
    }
    report.replayed = events.len();
    if events.is_empty() {
        return Ok(report);
    }
    let already_appended = store
        .events
        .snapshot()
        .checkpoints
        .get(QUARANTINE_REPLAY_CHECKPOINT)
        == Some(&version);
    if !already_appended {
        let checkpoint = BTreeMap::from([(QUARANTINE_REPLAY_CHECKPOINT.to_string(), version)]);
        ingestor.append(&events, chrono::Utc::now().timestamp_micros(), &checkpoint)?;
    }
    let mut batches = Vec::new();
    for item in &kept {
        let input = QuarantineInput {
            source: item.source.clone(),
            reason: item.reason.clone(),
            payload: item.payload.clone(),
        };
        batches.push(quarantine_batch(&[input], item.received_at_micros)?);
    }
    store.quarantine.replace(&batches, &BTreeMap::new())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_by_age_and_by_count() {
        let mut ids = RecentIds::new(Duration::from_secs(10), 3);
        assert!(ids.insert(1, 0));
        assert!(!ids.insert(1, 5));
        assert!(ids.insert(2, 1));
        assert!(ids.insert(3, 2));
        assert!(ids.insert(4, 3));
        // Capacity 3: id 1 was forgotten first.
        assert!(ids.insert(1, 4));
        // Age: everything before 20 s - 10 s is gone.
        assert!(ids.insert(5, 20_000_000));
        assert!(ids.insert(2, 20_000_001));
    }

    #[test]
    fn log_records_round_trip() {
        let request = CaptureRequest {
            received_at_micros: 42,
            events: vec![EventInput {
                uuid: Some("u-1".into()),
                event: "$identify".into(),
                distinct_id: "user".into(),
                timestamp_micros: 7,
                properties: r#"{"a":1}"#.into(),
                set: Some(serde_json::from_str(r#"{"plan":"pro"}"#).unwrap()),
                merge_with: Some("anon".into()),
                group: Some(GroupUpdate {
                    group_type: "company".into(),
                    group_key: "acme".into(),
                    set: serde_json::from_str(r#"{"seats":5}"#).unwrap(),
                }),
                ..EventInput::default()
            }],
            quarantine: vec![QuarantineInput {
                source: "posthog /batch/".into(),
                reason: "missing distinct_id".into(),
                payload: "{}".into(),
            }],
        };
        let encoded = encode_request(&request).unwrap();
        let decoded = decode_request(&encoded).unwrap();
        assert_eq!(decoded.events, request.events);
        assert_eq!(decoded.quarantine, request.quarantine);
        assert_eq!(decoded.received_at_micros, 42);
        for cut in [1, 5, encoded.len() - 1] {
            assert!(decode_request(&encoded[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Logs written before properties moved out of the JSON header are
    /// still replayed after an upgrade.
    #[test]
    fn earlier_all_json_records_still_decode() {
        let record = br#"{"at":42,"ev":[{"uuid":"u-1","event":"signed up","distinct_id":"user","ts":7,"session_id":null,"properties":"{\"a\":1}","lib":null,"set":null,"set_once":null,"merge_with":"anon"}],"q":[{"source":"s","reason":"r","payload":"{}"}]}"#;
        let decoded = decode_request(record).unwrap();
        assert_eq!(decoded.events.len(), 1);
        assert_eq!(decoded.events[0].properties, r#"{"a":1}"#);
        assert_eq!(decoded.events[0].merge_with.as_deref(), Some("anon"));
        assert_eq!(decoded.quarantine[0].reason, "r");
    }
}
