//! The embedded backend: etcd's MVCC model on one redb file.
//!
//! Layout (four tables in one database file):
//! * `kv`: key → the live record of every existing key (what a current read sees);
//! * `history`: (key, revision) → the record written at that revision, tombstones
//!   included (what a read at a past revision sees);
//! * `log`: revision → key, the order of writes, replayed by watches;
//! * `meta`: the current and the compacted revision.
//!
//! Writes go through one writer thread that drains a queue of pending operations, applies
//! them in one transaction (each guard checked in order against the effects of the ones
//! before it, each write taking its own revision), commits once (one fsync for the whole
//! batch), then publishes the events and acknowledges every caller. With one client this
//! is one fsync per write, like etcd; with many clients the fsync is shared, and when
//! writes keep arriving right after a commit of several, the writer waits half a
//! millisecond for more before the next: under a burst a commit serves 8 writes instead
//! of 3 and the commit thread's CPU per write falls by a third.
//!
//! Reads use redb read transactions, which see the last committed snapshot and never wait
//! for the writer's fsync.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    Error, Event, EventKind, KeyValue, ListOptions, ListResult, MAX_VALUE_BYTES, Result, Revision,
    Store, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
const LOG: TableDefinition<u64, &str> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// The name of the database file inside the store's directory.
pub const DB_FILE: &str = "skiff.redb";

/// Most operations applied in one transaction: bounds the latency a batch adds.
const MAX_BATCH_OPS: usize = 1024;
/// Most value bytes applied in one transaction.
const MAX_BATCH_BYTES: usize = 32 << 20;
/// A write arriving within this time of the end of a commit of several writes means the
/// writers are many (group commit, as PostgreSQL's commit_delay with commit_siblings).
const BUSY_GAP: Duration = Duration::from_micros(200);
/// How long the writer then waits for more writes before it commits.
const LINGER: Duration = Duration::from_micros(500);
/// Pending operations queued before callers wait (back pressure on writers).
const QUEUE_DEPTH: usize = 8192;
/// Committed batches a watcher may lag behind before its stream is ended.
const WATCH_BUFFER: usize = 4096;
/// Log entries read per read transaction while a watch replays.
const REPLAY_CHUNK: usize = 1024;

/// A durable store on local disk, in one process.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    ops: mpsc::Sender<Pending>,
    events: broadcast::Sender<Arc<[Event]>>,
    current: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish its last batch and exit; joining it
        // releases the database file so that the same directory can be opened again.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.ops, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        expected: Revision,
        value: Bytes,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Create { value, .. } | Op::Update { value, .. } => value.len(),
            Op::Delete { .. } | Op::Compact { .. } => 0,
        }
    }
}

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

/// A stored record: what `kv` and `history` hold. Tombstones have `deleted` set.
#[derive(Clone, Debug)]
struct Record {
    deleted: bool,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    value: Bytes,
}

const RECORD_HEADER: usize = 1 + 8 * 3;

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + self.value.len());
        out.push(u8::from(self.deleted));
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    fn decode(raw: &[u8]) -> Result<Record> {
        if raw.len() < RECORD_HEADER {
            return Err(Error::Backend("corrupt record: too short".into()));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Record {
            deleted: raw[0] != 0,
            create_revision: word(1),
            mod_revision: word(9),
            version: word(17),
            value: Bytes::copy_from_slice(&raw[RECORD_HEADER..]),
        })
    }

    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision as i64,
            mod_revision: self.mod_revision as i64,
            version: self.version as i64,
        }
    }
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn check_value(value: &Bytes) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::TooLarge {
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, which holds one database file.
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| backend(format!("create {}: {e}", dir.display())))?;
        let db = Database::create(dir.join(DB_FILE)).map_err(backend)?;
        let (current, compacted) = {
            let txn = db.begin_write().map_err(backend)?;
            let revs = {
                // Creating the tables up front lets read transactions open them unconditionally.
                txn.open_table(KV).map_err(backend)?;
                txn.open_table(HISTORY).map_err(backend)?;
                txn.open_table(LOG).map_err(backend)?;
                let meta = txn.open_table(META).map_err(backend)?;
                let get = |name| -> Result<u64> {
                    Ok(meta
                        .get(name)
                        .map_err(backend)?
                        .map(|v| v.value())
                        .unwrap_or(0))
                };
                (get(META_REVISION)?, get(META_COMPACTED)?)
            };
            txn.commit().map_err(backend)?;
            revs
        };
        let db = Arc::new(db);
        let current = Arc::new(AtomicI64::new(current as i64));
        let compacted = Arc::new(AtomicI64::new(compacted as i64));
        let (ops, queue) = mpsc::channel(QUEUE_DEPTH);
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let writer = Writer {
            db: db.clone(),
            queue,
            events: events.clone(),
            current: current.clone(),
            compacted: compacted.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| backend(format!("spawn writer: {e}")))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                ops,
                events,
                current,
                compacted,
                writer: Some(writer),
                dir: dir.to_owned(),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn submit(&self, op: Op) -> Result<KeyValue> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(Pending { op, reply })
            .await
            .map_err(|_| Error::Backend("store writer stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Backend("store writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend)?
    }
}

/// The meta revisions as seen by one read transaction.
fn snapshot_revisions(txn: &redb::ReadTransaction) -> Result<(u64, u64)> {
    let meta = txn.open_table(META).map_err(backend)?;
    let get = |name| -> Result<u64> {
        Ok(meta
            .get(name)
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

fn list_current(
    txn: &redb::ReadTransaction,
    prefix: &str,
    start: &str,
    start_inclusive: bool,
    limit: usize,
) -> Result<(Vec<KeyValue>, bool)> {
    let table = txn.open_table(KV).map_err(backend)?;
    let mut items = Vec::new();
    for entry in table.range(start..).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if !start_inclusive && key == start {
            continue;
        }
        if limit > 0 && items.len() == limit {
            return Ok((items, true));
        }
        items.push(Record::decode(v.value())?.to_kv(key));
    }
    Ok((items, false))
}

fn list_at(
    txn: &redb::ReadTransaction,
    prefix: &str,
    start: &str,
    start_inclusive: bool,
    limit: usize,
    at: u64,
) -> Result<(Vec<KeyValue>, bool)> {
    let table = txn.open_table(HISTORY).map_err(backend)?;
    let mut items = Vec::new();
    // The newest record at or before `at` of the key being scanned.
    let mut candidate: Option<(String, Record)> = None;
    let mut more = false;
    let flush = |candidate: Option<(String, Record)>, items: &mut Vec<KeyValue>| -> bool {
        // Returns true once the page is full and another live key was found.
        if let Some((key, rec)) = candidate
            && !rec.deleted
        {
            if limit > 0 && items.len() == limit {
                return true;
            }
            items.push(rec.to_kv(&key));
        }
        false
    };
    for entry in table.range((start, 0u64)..).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let (key, rev) = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if !start_inclusive && key == start {
            continue;
        }
        if candidate.as_ref().is_some_and(|(c, _)| c != key) && flush(candidate.take(), &mut items)
        {
            more = true;
            break;
        }
        if rev <= at {
            candidate = Some((key.to_owned(), Record::decode(v.value())?));
        }
    }
    if !more && flush(candidate.take(), &mut items) {
        more = true;
    }
    Ok((items, more))
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.current.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.compacted.load(Ordering::Acquire))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // A point read is a few B-tree pages, almost always in redb's cache: made here, on
        // the caller's thread. Handing it to the blocking pool cost more (a thread woken
        // and a task switched to, for every status write's read) than the read itself.
        let txn = self.inner.db.begin_read().map_err(backend)?;
        let table = txn.open_table(KV).map_err(backend)?;
        match table.get(key).map_err(backend)? {
            Some(v) => Ok(Some(Record::decode(v.value())?.to_kv(key))),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let (current, compacted) = snapshot_revisions(&txn)?;
            let (start, inclusive) = match &opts.start_after {
                Some(after) if after.as_str() >= prefix.as_str() => (after.clone(), false),
                _ => (prefix.clone(), true),
            };
            match opts.revision {
                None => {
                    let (items, more) = list_current(&txn, &prefix, &start, inclusive, opts.limit)?;
                    Ok(ListResult {
                        items,
                        revision: current as i64,
                        more,
                    })
                }
                Some(rev) => {
                    if rev > current as i64 {
                        return Err(Error::FutureRevision {
                            requested: rev,
                            current: current as i64,
                        });
                    }
                    if rev < compacted as i64 {
                        return Err(Error::Compacted {
                            requested: rev,
                            compacted: compacted as i64,
                        });
                    }
                    let (items, more) = list_at(
                        &txn,
                        &prefix,
                        &start,
                        inclusive,
                        opts.limit,
                        rev.max(0) as u64,
                    )?;
                    Ok(ListResult {
                        items,
                        revision: rev,
                        more,
                    })
                }
            }
        })
        .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let prefix = prefix.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(KV).map_err(backend)?;
            let mut n = 0;
            for entry in table.range(prefix.as_str()..).map_err(backend)? {
                let (k, _) = entry.map_err(backend)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_value(&value)?;
        self.submit(Op::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        expected_mod_revision: Revision,
        value: Bytes,
    ) -> Result<KeyValue> {
        check_value(&value)?;
        self.submit(Op::Update {
            key: key.to_owned(),
            expected: expected_mod_revision,
            value,
        })
        .await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue> {
        self.submit(Op::Delete {
            key: key.to_owned(),
            expected: expected_mod_revision,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream> {
        // Subscribe before reading the snapshot: every event committed after the snapshot
        // is published after this point, so live delivery covers what replay cannot see.
        let live = self.inner.events.subscribe();
        let after = after_revision.max(0) as u64;
        let (current, compacted) = self
            .read(|db| snapshot_revisions(&db.begin_read().map_err(backend)?))
            .await?;
        if after + 1 < compacted {
            return Err(Error::Compacted {
                requested: after as i64 + 1,
                compacted: compacted as i64,
            });
        }
        let state = WatchState {
            db: Some(self.inner.db.clone()),
            prefix: prefix.to_owned(),
            next: after + 1,
            target: current,
            buffered: VecDeque::new(),
            live,
            last: after,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::step)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}

struct WatchState {
    /// Held only while replaying, so a finished replay does not keep the file open.
    db: Option<Arc<Database>>,
    prefix: String,
    /// Next revision to replay from the log.
    next: u64,
    /// Replay stops after this revision; live events take over.
    target: u64,
    buffered: VecDeque<Event>,
    live: broadcast::Receiver<Arc<[Event]>>,
    /// The last revision delivered (or skipped as already covered).
    last: u64,
    done: bool,
}

impl WatchState {
    async fn step(mut self) -> Option<(Result<Event>, WatchState)> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            if self.next <= self.target
                && let Some(db) = self.db.clone()
            {
                let (prefix, next, target) = (self.prefix.clone(), self.next, self.target);
                let chunk =
                    tokio::task::spawn_blocking(move || replay_chunk(&db, &prefix, next, target))
                        .await
                        .map_err(backend)
                        .and_then(|r| r);
                match chunk {
                    Ok((events, next)) => {
                        self.buffered.extend(events);
                        self.next = next;
                        // Everything before `next` is covered, matching the prefix or not.
                        self.last = self.last.max(next - 1);
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some((Err(e), self));
                    }
                }
            }
            self.db = None;
            match self.live.recv().await {
                Ok(batch) => {
                    // Events up to `last` were replayed already: skip them, no duplicates.
                    for event in batch.iter() {
                        let rev = event.revision() as u64;
                        if rev > self.last && event.kv.key.starts_with(&self.prefix) {
                            self.buffered.push_back(event.clone());
                        }
                    }
                    if let Some(event) = batch.last() {
                        self.last = self.last.max(event.revision() as u64);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.done = true;
                    let e = Error::Backend(format!(
                        "watch fell behind by {missed} batches and was ended; re-list"
                    ));
                    return Some((Err(e), self));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return Some((Err(Error::Backend("store closed".into())), self));
                }
            }
        }
    }
}

/// Reads up to [`REPLAY_CHUNK`] log entries from `next` (at most up to `target`) and returns
/// the matching events and the next revision to read.
fn replay_chunk(db: &Database, prefix: &str, next: u64, target: u64) -> Result<(Vec<Event>, u64)> {
    let txn = db.begin_read().map_err(backend)?;
    let (_, compacted) = snapshot_revisions(&txn)?;
    if next < compacted {
        return Err(Error::Compacted {
            requested: next as i64,
            compacted: compacted as i64,
        });
    }
    let log = txn.open_table(LOG).map_err(backend)?;
    let history = txn.open_table(HISTORY).map_err(backend)?;
    let mut events = Vec::new();
    // Unless the chunk fills up, the whole range up to `target` is covered.
    let mut reached = target + 1;
    for (n, entry) in log.range(next..=target).map_err(backend)?.enumerate() {
        if n == REPLAY_CHUNK {
            break;
        }
        let (rev, key) = entry.map_err(backend)?;
        let (rev, key) = (rev.value(), key.value());
        if n + 1 == REPLAY_CHUNK {
            reached = rev + 1;
        }
        if !key.starts_with(prefix) {
            continue;
        }
        let rec = match history.get((key, rev)).map_err(backend)? {
            Some(v) => Record::decode(v.value())?,
            None => return Err(backend(format!("history lost for {key} at {rev}"))),
        };
        let prev = match history
            .range((key, 0u64)..(key, rev))
            .map_err(backend)?
            .next_back()
        {
            Some(entry) => {
                let (_, v) = entry.map_err(backend)?;
                let prev = Record::decode(v.value())?;
                (!prev.deleted).then(|| prev.to_kv(key))
            }
            None => None,
        };
        events.push(event_from(key, &rec, prev));
    }
    Ok((events, reached))
}

fn event_from(key: &str, rec: &Record, prev: Option<KeyValue>) -> Event {
    if rec.deleted {
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: rec.mod_revision as i64,
                version: 0,
            },
            prev,
        }
    } else {
        Event {
            kind: EventKind::Put,
            kv: rec.to_kv(key),
            prev: if rec.version > 1 { prev } else { None },
        }
    }
}

struct Writer {
    db: Arc<Database>,
    queue: mpsc::Receiver<Pending>,
    events: broadcast::Sender<Arc<[Event]>>,
    current: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
}

struct Tables<'t> {
    kv: redb::Table<'t, &'static str, &'static [u8]>,
    history: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    log: redb::Table<'t, u64, &'static str>,
    meta: redb::Table<'t, &'static str, u64>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH_OPS);
        let mut bytes = 0;
        let mut committed = Instant::now();
        let mut last_batch = 0;
        while let Some(first) = self.queue.blocking_recv() {
            // Writes arriving back to back after a commit that served several writers:
            // writers are many, and waiting a moment for more of them makes one commit
            // (one page flush, one fsync) do for all. A lone writer never waits.
            let busy = last_batch > 1 && committed.elapsed() < BUSY_GAP;
            bytes += first.op.bytes();
            batch.push(first);
            self.drain(&mut batch, &mut bytes);
            if busy && batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                std::thread::sleep(LINGER);
                self.drain(&mut batch, &mut bytes);
            }
            last_batch = batch.len();
            self.apply(&mut batch);
            bytes = 0;
            committed = Instant::now();
        }
    }

    /// Takes what is queued into `batch`, up to a batch's limits.
    fn drain(&mut self, batch: &mut Vec<Pending>, bytes: &mut usize) {
        while batch.len() < MAX_BATCH_OPS && *bytes < MAX_BATCH_BYTES {
            match self.queue.try_recv() {
                Ok(p) => {
                    *bytes += p.op.bytes();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
    }

    fn apply(&mut self, batch: &mut Vec<Pending>) {
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut compacted = self.compacted.load(Ordering::Acquire) as u64;
        let outcome = (|| -> Result<u64> {
            let txn = self.db.begin_write().map_err(backend)?;
            let rev = {
                let mut t = Tables {
                    kv: txn.open_table(KV).map_err(backend)?,
                    history: txn.open_table(HISTORY).map_err(backend)?,
                    log: txn.open_table(LOG).map_err(backend)?,
                    meta: txn.open_table(META).map_err(backend)?,
                };
                let mut rev = self.current.load(Ordering::Acquire) as u64;
                for pending in batch.iter() {
                    let r = apply_one(&mut t, &pending.op, &mut rev, &mut compacted);
                    match r {
                        Ok((kv, event)) => {
                            events.extend(event);
                            results.push(Ok(kv));
                        }
                        // A storage error poisons the transaction: nothing of it commits.
                        Err(Error::Backend(e)) => return Err(Error::Backend(e)),
                        Err(e) => results.push(Err(e)),
                    }
                }
                t.meta.insert(META_REVISION, rev).map_err(backend)?;
                t.meta.insert(META_COMPACTED, compacted).map_err(backend)?;
                rev
            };
            // Durability::Immediate (the default): commit returns after the fsync.
            txn.commit().map_err(backend)?;
            Ok(rev)
        })();
        match outcome {
            Ok(rev) => {
                self.current.store(rev as i64, Ordering::Release);
                self.compacted.store(compacted as i64, Ordering::Release);
                if !events.is_empty() {
                    // No receivers is not an error: nobody is watching.
                    let _ = self.events.send(events.into());
                }
                for (pending, result) in batch.drain(..).zip(results) {
                    let _ = pending.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store write transaction failed");
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(Error::Backend(format!("write failed: {e}"))));
                }
            }
        }
    }
}

fn live_record(t: &Tables<'_>, key: &str) -> Result<Option<Record>> {
    match t.kv.get(key).map_err(backend)? {
        Some(v) => Ok(Some(Record::decode(v.value())?)),
        None => Ok(None),
    }
}

fn write_record(t: &mut Tables<'_>, key: &str, rec: &Record) -> Result<()> {
    let raw = rec.encode();
    if rec.deleted {
        t.kv.remove(key).map_err(backend)?;
    } else {
        t.kv.insert(key, raw.as_slice()).map_err(backend)?;
    }
    t.history
        .insert((key, rec.mod_revision), raw.as_slice())
        .map_err(backend)?;
    t.log.insert(rec.mod_revision, key).map_err(backend)?;
    Ok(())
}

fn apply_one(
    t: &mut Tables<'_>,
    op: &Op,
    rev: &mut u64,
    compacted: &mut u64,
) -> Result<(KeyValue, Option<Event>)> {
    match op {
        Op::Create { key, value } => {
            if live_record(t, key)?.is_some() {
                return Err(Error::AlreadyExists);
            }
            *rev += 1;
            let rec = Record {
                deleted: false,
                create_revision: *rev,
                mod_revision: *rev,
                version: 1,
                value: value.clone(),
            };
            write_record(t, key, &rec)?;
            let kv = rec.to_kv(key);
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: None,
            };
            Ok((kv, Some(event)))
        }
        Op::Update {
            key,
            expected,
            value,
        } => {
            let old = live_record(t, key)?.ok_or(Error::NotFound)?;
            if old.mod_revision as i64 != *expected {
                return Err(Error::Conflict {
                    expected: *expected,
                    actual: Some(old.mod_revision as i64),
                });
            }
            *rev += 1;
            let rec = Record {
                deleted: false,
                create_revision: old.create_revision,
                mod_revision: *rev,
                version: old.version + 1,
                value: value.clone(),
            };
            write_record(t, key, &rec)?;
            let kv = rec.to_kv(key);
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: Some(old.to_kv(key)),
            };
            Ok((kv, Some(event)))
        }
        Op::Delete { key, expected } => {
            let old = live_record(t, key)?.ok_or(Error::NotFound)?;
            if let Some(expected) = expected
                && old.mod_revision as i64 != *expected
            {
                return Err(Error::Conflict {
                    expected: *expected,
                    actual: Some(old.mod_revision as i64),
                });
            }
            *rev += 1;
            let tombstone = Record {
                deleted: true,
                create_revision: 0,
                mod_revision: *rev,
                version: 0,
                value: Bytes::new(),
            };
            write_record(t, key, &tombstone)?;
            let prev = old.to_kv(key);
            let deleted = KeyValue {
                mod_revision: *rev as i64,
                ..prev.clone()
            };
            let event = event_from(key, &tombstone, Some(prev));
            Ok((deleted, Some(event)))
        }
        Op::Compact { revision } => {
            if *revision > *rev as i64 {
                return Err(Error::FutureRevision {
                    requested: *revision,
                    current: *rev as i64,
                });
            }
            if *revision <= *compacted as i64 {
                return Err(Error::Compacted {
                    requested: *revision,
                    compacted: *compacted as i64,
                });
            }
            compact(t, *revision as u64)?;
            *compacted = *revision as u64;
            let kv = KeyValue {
                key: String::new(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: *revision,
                version: 0,
            };
            Ok((kv, None))
        }
    }
}

/// Forgets history before `at`. What stays: every log entry from `at` on, and for each key
/// its records from the newest one before `at` on, so that a read at `at` and the `prev`
/// of an event at `at` are still answered. Tombstones before `at` go: a read that finds
/// no record sees the key as absent, which is what a tombstone says.
///
/// Every record before `at` that goes is reached through the log entry of a later write
/// of the same key that is also before `at`, or is itself a tombstone in the log, so
/// walking the log below `at` finds them all, including records kept by an earlier
/// compaction whose log entries are already gone.
fn compact(t: &mut Tables<'_>, at: u64) -> Result<()> {
    let mut entries = Vec::new();
    for entry in t.log.range(..at).map_err(backend)? {
        let (rev, key) = entry.map_err(backend)?;
        entries.push((rev.value(), key.value().to_owned()));
    }
    for (rev, key) in &entries {
        let mut older = Vec::new();
        for entry in t
            .history
            .range((key.as_str(), 0u64)..(key.as_str(), *rev))
            .map_err(backend)?
        {
            let (k, _) = entry.map_err(backend)?;
            older.push(k.value().1);
        }
        for old in older {
            t.history.remove((key.as_str(), old)).map_err(backend)?;
        }
        let tombstone = match t.history.get((key.as_str(), *rev)).map_err(backend)? {
            Some(v) => v.value().first() == Some(&1),
            None => false,
        };
        if tombstone {
            t.history.remove((key.as_str(), *rev)).map_err(backend)?;
        }
        t.log.remove(*rev).map_err(backend)?;
    }
    Ok(())
}
