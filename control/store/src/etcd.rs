//! The etcd backend: the same trait over a real etcd cluster through `etcd-client`.
//!
//! Every guarded write is one etcd transaction: the guard is the transaction's compare, and
//! the failure branch reads the key so that a conflict reports the key's actual revision
//! in the same round trip.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::StreamExt;

use crate::{
    Error, Event, EventKind, KeyValue, ListOptions, ListResult, MAX_VALUE_BYTES, Result, Revision,
    Store, WatchStream,
};

/// A store backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (for example `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| Error::Backend(format!("connect to etcd: {e}")))?;
        Ok(EtcdStore { client })
    }

    /// Maps an etcd error; `size` is the value size of the failed write, if it was one.
    async fn map_error(
        &self,
        e: etcd_client::Error,
        requested: Option<Revision>,
        size: usize,
    ) -> Error {
        let message = match &e {
            etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
            other => other.to_string(),
        };
        if message.contains("required revision has been compacted") {
            let compacted = self.compacted_revision().await.unwrap_or(0);
            return Error::Compacted {
                requested: requested.unwrap_or(0),
                compacted,
            };
        }
        if message.contains("required revision is a future revision") {
            let current = self.current_revision().await.unwrap_or(0);
            return Error::FutureRevision {
                requested: requested.unwrap_or(0),
                current,
            };
        }
        // etcd refuses a request above --max-request-bytes itself; far above it, gRPC
        // refuses the message before etcd sees it.
        if message.contains("request is too large") || message.contains("message larger than max") {
            return Error::TooLarge {
                size,
                limit: MAX_VALUE_BYTES,
            };
        }
        Error::Backend(format!("etcd: {e}"))
    }

    async fn txn(&self, txn: Txn, size: usize) -> Result<TxnResponse> {
        let mut kv = self.client.kv_client();
        match kv.txn(txn).await {
            Ok(resp) => Ok(resp),
            Err(e) => Err(self.map_error(e, None, size).await),
        }
    }
}

fn convert(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_revision(resp: &TxnResponse) -> Revision {
    resp.header().map(|h| h.revision()).unwrap_or(0)
}

/// The key-value the failure branch's read found, if any.
fn failed_read(resp: &TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(convert),
        _ => None,
    })
}

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let bytes = prefix.as_bytes();
    for i in (0..bytes.len()).rev() {
        if bytes[i] < 0xff {
            let mut end = bytes[..=i].to_vec();
            end[i] += 1;
            return end;
        }
    }
    // An empty prefix (or all 0xff) covers every key from the start key on.
    vec![0]
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

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| Error::Backend(format!("etcd: {e}")))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// etcd does not report its compacted revision directly, but a read at a revision
    /// fails exactly when that revision is compacted: the compacted revision is the oldest
    /// readable one, found by bisection (about log2(current) reads; not a hot path).
    async fn compacted_revision(&self) -> Result<Revision> {
        let current = self.current_revision().await?;
        let kv = self.client.kv_client();
        let readable = |rev: Revision| {
            let mut kv = kv.clone();
            async move {
                match kv
                    .get(
                        "\0",
                        Some(GetOptions::new().with_count_only().with_revision(rev)),
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.to_string().contains("has been compacted") => Ok(false),
                    Err(e) => Err(Error::Backend(format!("etcd: {e}"))),
                }
            }
        };
        if readable(1).await? {
            return Ok(0);
        }
        // Invariant: `low` is compacted away, `high` is readable.
        let (mut low, mut high) = (1, current);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if readable(mid).await? {
                high = mid;
            } else {
                low = mid;
            }
        }
        Ok(high)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.client.kv_client();
        match kv.get(key, None).await {
            Ok(resp) => Ok(resp.kvs().first().map(convert)),
            Err(e) => Err(self.map_error(e, None, 0).await),
        }
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let start = match &opts.start_after {
            Some(after) if after.as_str() >= prefix => {
                let mut start = after.clone().into_bytes();
                start.push(0);
                start
            }
            _ if prefix.is_empty() => vec![0],
            _ => prefix.as_bytes().to_vec(),
        };
        let mut get = GetOptions::new().with_range(prefix_end(prefix));
        if opts.limit > 0 {
            get = get.with_limit(opts.limit as i64);
        }
        if let Some(rev) = opts.revision {
            get = get.with_revision(rev);
        }
        let mut kv = self.client.kv_client();
        let resp = match kv.get(start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.map_error(e, opts.revision, 0).await),
        };
        let current = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(ListResult {
            items: resp.kvs().iter().map(convert).collect(),
            revision: opts.revision.unwrap_or(current),
            more: resp.more(),
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let mut kv = self.client.kv_client();
        match kv
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        {
            Ok(resp) => Ok(resp.count()),
            Err(e) => Err(self.map_error(e, None, 0).await),
        }
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_value(&value)?;
        let size = value.len();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let resp = self.txn(txn, size).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists);
        }
        let rev = header_revision(&resp);
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        })
    }

    async fn update(
        &self,
        key: &str,
        expected_mod_revision: Revision,
        value: Bytes,
    ) -> Result<KeyValue> {
        check_value(&value)?;
        let size = value.len();
        // The version guard keeps an update from creating a missing key (whose mod
        // revision compares as 0).
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision),
            ])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn, size).await?;
        if !resp.succeeded() {
            return Err(match failed_read(&resp) {
                None => Error::NotFound,
                Some(kv) => Error::Conflict {
                    expected: expected_mod_revision,
                    actual: Some(kv.mod_revision),
                },
            });
        }
        let rev = header_revision(&resp);
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Put(put) => put.prev_key().map(convert),
            _ => None,
        });
        let (create_revision, version) = prev
            .map(|p| (p.create_revision, p.version + 1))
            .unwrap_or((rev, 1));
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: rev,
            version,
        })
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue> {
        let mut guard = vec![Compare::version(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected_mod_revision {
            guard.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(guard)
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn, 0).await?;
        if !resp.succeeded() {
            return Err(match (failed_read(&resp), expected_mod_revision) {
                (None, _) => Error::NotFound,
                (Some(kv), Some(expected)) => Error::Conflict {
                    expected,
                    actual: Some(kv.mod_revision),
                },
                (Some(_), None) => Error::Backend("etcd refused an unguarded delete".into()),
            });
        }
        let rev = header_revision(&resp);
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(del) => del.prev_kvs().first().map(convert),
            _ => None,
        });
        // A concurrent delete between the guard and here is impossible (one transaction);
        // no previous value means the key vanished, which etcd reports as no deletion.
        let prev = prev.ok_or(Error::NotFound)?;
        Ok(KeyValue {
            mod_revision: rev,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream> {
        let start = after_revision.max(0) + 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_prev_key();
        let mut client = self.client.watch_client();
        let (watcher, stream) = client
            .watch(prefix, Some(options))
            .await
            .map_err(|e| Error::Backend(format!("etcd watch: {e}")))?;
        struct State {
            // Dropping the watcher would close the request side of the watch stream.
            _watcher: etcd_client::Watcher,
            stream: etcd_client::WatchStream,
            pending: std::collections::VecDeque<Event>,
            start: Revision,
            done: bool,
        }
        let state = State {
            _watcher: watcher,
            stream,
            pending: Default::default(),
            start,
            done: false,
        };
        let events = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(event) = st.pending.pop_front() {
                    return Some((Ok(event), st));
                }
                if st.done {
                    return None;
                }
                let message = match st.stream.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(Error::Backend(format!("etcd watch: {e}"))), st));
                    }
                    None => {
                        st.done = true;
                        let e = Error::Backend("etcd watch stream closed".into());
                        return Some((Err(e), st));
                    }
                };
                if message.compact_revision() > 0 {
                    st.done = true;
                    let e = Error::Compacted {
                        requested: st.start,
                        compacted: message.compact_revision(),
                    };
                    return Some((Err(e), st));
                }
                if message.canceled() {
                    st.done = true;
                    let e = Error::Backend(format!(
                        "etcd canceled the watch: {}",
                        message.cancel_reason()
                    ));
                    return Some((Err(e), st));
                }
                for event in message.events() {
                    let Some(kv) = event.kv() else { continue };
                    let kind = match event.event_type() {
                        EventType::Put => EventKind::Put,
                        EventType::Delete => EventKind::Delete,
                    };
                    st.pending.push_back(Event {
                        kind,
                        kv: convert(kv),
                        prev: event.prev_kv().map(convert),
                    });
                }
            }
        });
        Ok(Box::pin(events))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.client.kv_client();
        // Physical: return once the history is really gone, as the embedded store does.
        match kv
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_error(e, Some(revision), 0).await),
        }
    }
}
