//! Skiff's key-value store: one trait with etcd's semantics, two backends.
//!
//! * [`embedded`]: the default, durable on local disk, one process.
//! * [`etcd`]: a real etcd cluster through `etcd-client`, for high availability.
//!
//! Both pass the same conformance suite (`tests/all`). The API server talks only to
//! [`Store`]; it never knows which backend it has.
//!
//! Semantics, as etcd defines them:
//! * one global revision counter; every successful write (create, update, delete) takes the
//!   next revision, and that revision is the written key's `mod_revision`;
//! * `create_revision` is the revision that created the key, `version` counts writes to
//!   the key since its creation (1 after create);
//! * updates and deletes may be guarded by the key's current `mod_revision`
//!   (compare-and-swap); a mismatch is [`Error::Conflict`] and changes nothing;
//! * a watch from revision `R` replays every event with revision `> R` in revision order,
//!   then follows live; if `R` is below the compacted revision it fails with
//!   [`Error::Compacted`];
//! * compaction at revision `C` forgets the history before `C`; the latest value of every
//!   live key is kept.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub mod bench;
pub mod embedded;
pub mod etcd;
pub mod local_etcd;

/// The largest value a write accepts, in bytes: etcd's default request limit
/// (`--max-request-bytes`, 1.5 MiB), so that both backends refuse the same writes.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// A revision of the store: etcd's `int64` revision. The first write is revision 1 or more
/// (an empty store has revision 0 in the embedded backend; etcd starts at 1).
pub type Revision = i64;

/// One key with its value and revision metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key.
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create).
    pub version: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A create or an update. `prev` is `None` for a create.
    Put,
    /// A delete. `kv.value` is empty; `kv.mod_revision` is the revision of the delete;
    /// `prev` holds the value that was deleted.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's value before this event (always set for `Delete`, set for updates).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read the state as of this revision; `None` reads the current state.
    pub revision: Option<Revision>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Only keys strictly greater than this one (for paging: the last key of the previous
    /// page). It must start with the prefix being listed.
    pub start_after: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at: the current revision, or the one asked for.
    pub revision: Revision,
    /// True when keys past the last returned one remain under the prefix.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key not found")]
    NotFound,
    #[error("key already exists")]
    AlreadyExists,
    /// The guard failed: the key's mod revision is not the expected one.
    #[error("revision mismatch: expected {expected}, key is at {actual:?}")]
    Conflict {
        expected: Revision,
        /// The key's current mod revision (`None` if it is gone).
        actual: Option<Revision>,
    },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted revision is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current one.
    #[error("required revision {requested} is a future revision (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The value is larger than the backend accepts.
    #[error("value of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// Anything the backend reports that is not one of the above (I/O, connection).
    #[error("store backend: {0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of watch events, in revision order. It ends with `Err(Error::Compacted)` if the
/// backend cancels the watch because its revision was compacted, or `Err(Error::Backend)`
/// on a broken connection; the consumer should then re-list.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// A store with etcd's semantics. Cheap to share: backends are `Arc` inside or behind one.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the last write (the store's current revision).
    async fn current_revision(&self) -> Result<Revision>;

    /// The revision below which history is gone (0 if never compacted).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// The current value of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order, at the current or a past revision.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Number of keys under `prefix` at the current revision.
    async fn count(&self, prefix: &str) -> Result<i64>;

    /// Creates `key` if it does not exist ([`Error::AlreadyExists`] otherwise).
    /// Returns the new key-value, whose `mod_revision` is the write's revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces the value of `key` if its mod revision is `expected_mod_revision`
    /// ([`Error::Conflict`] otherwise, [`Error::NotFound`] if the key does not exist).
    async fn update(
        &self,
        key: &str,
        expected_mod_revision: Revision,
        value: Bytes,
    ) -> Result<KeyValue>;

    /// Deletes `key`, guarded by its mod revision when one is given. Returns the deleted
    /// key-value with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue>;

    /// Events under `prefix` with revision greater than `after_revision`, then live ones.
    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream>;

    /// Forgets history before `revision` (which must not exceed the current revision).
    async fn compact(&self, revision: Revision) -> Result<()>;
}
