//! The conformance suite: every case runs against every backend, with the same
//! expectations. A case gets a fresh store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{Error, Event, EventKind, ListOptions, MAX_VALUE_BYTES, Store, WatchStream};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(watch: &mut WatchStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no watch event within 10 s")
        .expect("watch ended")
        .expect("watch failed")
}

/// Asserts that no event arrives for a short while.
async fn no_event(watch: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), watch.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// A watch below the compacted revision fails, either at once or as its first item.
async fn watch_error(store: &dyn Store, prefix: &str, after: i64) -> Error {
    match store.watch(prefix, after).await {
        Err(e) => e,
        Ok(mut watch) => match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("expected a failed watch, got {other:?}"),
        },
    }
}

pub async fn revisions(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    let created = store.create("/r/k", b("v1")).await.unwrap();
    assert!(created.mod_revision > start);
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(created.version, 1);
    assert_eq!(
        store.current_revision().await.unwrap(),
        created.mod_revision
    );

    let updated = store
        .update("/r/k", created.mod_revision, b("v2"))
        .await
        .unwrap();
    assert_eq!(updated.mod_revision, created.mod_revision + 1);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.version, 2);
    assert_eq!(store.get("/r/k").await.unwrap(), Some(updated.clone()));

    let deleted = store.delete("/r/k", None).await.unwrap();
    assert_eq!(deleted.mod_revision, updated.mod_revision + 1);
    assert_eq!(deleted.value, b("v2"));
    assert_eq!(deleted.create_revision, created.create_revision);
    assert_eq!(
        store.current_revision().await.unwrap(),
        deleted.mod_revision
    );
    assert_eq!(store.get("/r/k").await.unwrap(), None);
}

pub async fn cas_conflicts(store: Arc<dyn Store>) {
    let v1 = store.create("/c/k", b("v1")).await.unwrap();
    let v2 = store
        .update("/c/k", v1.mod_revision, b("v2"))
        .await
        .unwrap();
    let rev = store.current_revision().await.unwrap();

    match store.update("/c/k", v1.mod_revision, b("stale")).await {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(actual, Some(v2.mod_revision));
        }
        other => panic!("stale update: {other:?}"),
    }
    match store.delete("/c/k", Some(v1.mod_revision)).await {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(v2.mod_revision)),
        other => panic!("stale delete: {other:?}"),
    }
    // Nothing changed: same value, same revision.
    assert_eq!(store.get("/c/k").await.unwrap(), Some(v2.clone()));
    assert_eq!(store.current_revision().await.unwrap(), rev);

    assert!(matches!(
        store.update("/c/missing", rev, b("x")).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.delete("/c/missing", None).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.delete("/c/missing", Some(rev)).await,
        Err(Error::NotFound)
    ));
    // An update guarded by revision 0 must not create a missing key.
    assert!(matches!(
        store.update("/c/missing", 0, b("x")).await,
        Err(Error::NotFound)
    ));
    assert_eq!(store.get("/c/missing").await.unwrap(), None);

    let deleted = store.delete("/c/k", Some(v2.mod_revision)).await.unwrap();
    assert_eq!(deleted.value, b("v2"));
}

pub async fn create_if_absent(store: Arc<dyn Store>) {
    let first = store.create("/n/k", b("first")).await.unwrap();
    assert!(matches!(
        store.create("/n/k", b("second")).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(store.get("/n/k").await.unwrap().unwrap().value, b("first"));
    store.delete("/n/k", None).await.unwrap();
    let again = store.create("/n/k", b("third")).await.unwrap();
    assert!(again.create_revision > first.create_revision);
    assert_eq!(again.version, 1);
}

pub async fn list_by_prefix(store: Arc<dyn Store>) {
    for key in ["/a/2", "/a/1", "/ab/1", "/b", "/a"] {
        store.create(key, b(key)).await.unwrap();
    }
    let list = store.list("/a/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = list.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/1", "/a/2"]);
    assert!(!list.more);
    assert_eq!(list.revision, store.current_revision().await.unwrap());
    assert_eq!(list.items[0].value, b("/a/1"));
    assert_eq!(store.count("/a/").await.unwrap(), 2);
    assert_eq!(store.count("/a").await.unwrap(), 4);
    assert_eq!(store.count("/z/").await.unwrap(), 0);

    let all = store.list("", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a", "/a/1", "/a/2", "/ab/1", "/b"]);
}

pub async fn paging_at_fixed_revision(store: Arc<dyn Store>) {
    for i in 0..25 {
        store.create(&format!("/p/{i:02}"), b("old")).await.unwrap();
    }
    let at = store.current_revision().await.unwrap();
    // Writes go on while the pages are read; the pages must not see them.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let key = format!("/p/{i:02}");
                let kv = store.get(&key).await.unwrap().unwrap();
                store.update(&key, kv.mod_revision, b("new")).await.unwrap();
                store
                    .create(&format!("/p/{i:02}x"), b("new"))
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .list(
                "/p/",
                ListOptions {
                    revision: Some(at),
                    limit: 10,
                    start_after: start_after.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, at);
        assert!(page.items.len() <= 10);
        for kv in &page.items {
            assert_eq!(kv.value, b("old"), "{} read past the page revision", kv.key);
        }
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    let expected: Vec<_> = (0..25).map(|i| format!("/p/{i:02}")).collect();
    assert_eq!(seen, expected);

    // A full page followed by nothing says so.
    let page = store
        .list(
            "/p/",
            ListOptions {
                revision: Some(at),
                limit: 25,
                start_after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 25);
    assert!(!page.more);
}

pub async fn list_at_past_revision(store: Arc<dyn Store>) {
    let v1 = store.create("/h/k", b("v1")).await.unwrap();
    let gone = store.create("/h/gone", b("g")).await.unwrap();
    store
        .update("/h/k", v1.mod_revision, b("v2"))
        .await
        .unwrap();
    store.delete("/h/gone", None).await.unwrap();
    store.create("/h/later", b("l")).await.unwrap();

    let past = store
        .list(
            "/h/",
            ListOptions {
                revision: Some(gone.mod_revision),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(past.revision, gone.mod_revision);
    let items: Vec<_> = past
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone()))
        .collect();
    assert_eq!(items, [("/h/gone", b("g")), ("/h/k", b("v1"))]);
    assert_eq!(past.items[1], v1);

    let now = store.list("/h/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/h/k", "/h/later"]);

    let current = store.current_revision().await.unwrap();
    match store
        .list(
            "/h/",
            ListOptions {
                revision: Some(current + 1),
                ..Default::default()
            },
        )
        .await
    {
        Err(Error::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!(requested, current + 1);
            assert_eq!(c, current);
        }
        other => panic!("future revision: {other:?}"),
    }
}

pub async fn watch_replay_then_live(store: Arc<dyn Store>) {
    let from = store.current_revision().await.unwrap();
    let created = store.create("/w/k", b("v1")).await.unwrap();
    let updated = store
        .update("/w/k", created.mod_revision, b("v2"))
        .await
        .unwrap();
    let deleted = store.delete("/w/k", None).await.unwrap();

    let mut watch = store.watch("/w/", from).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(
        (e.kind, e.kv.clone(), e.prev.clone()),
        (EventKind::Put, created.clone(), None)
    );
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, EventKind::Put);
    assert_eq!(e.kv, updated);
    assert_eq!(e.prev, Some(created.clone()));
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.revision(), deleted.mod_revision);
    assert_eq!(e.kv.key, "/w/k");
    assert!(e.kv.value.is_empty());
    assert_eq!(e.prev, Some(updated.clone()));

    // Live events follow, with no gap and no duplicate, also under a burst of writes.
    let mut expected = Vec::new();
    for i in 0..50 {
        expected.push(
            store
                .create(&format!("/w/live{i:02}"), b("x"))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    for rev in expected {
        assert_eq!(next_event(&mut watch).await.revision(), rev);
    }
    no_event(&mut watch).await;

    // A watch from the middle replays only what came after.
    let mut watch = store.watch("/w/", updated.mod_revision).await.unwrap();
    assert_eq!(
        next_event(&mut watch).await.revision(),
        deleted.mod_revision
    );
}

pub async fn watch_while_writing(store: Arc<dyn Store>) {
    // Writes race with the watch's start: whatever the interleaving, every revision after
    // the start arrives exactly once and in order.
    let from = store.current_revision().await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..200 {
                revs.push(
                    store
                        .create(&format!("/ww/{i:03}"), b("x"))
                        .await
                        .unwrap()
                        .mod_revision,
                );
            }
            revs
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut watch = store.watch("/ww/", from).await.unwrap();
    let revs = writer.await.unwrap();
    for rev in revs {
        assert_eq!(next_event(&mut watch).await.revision(), rev);
    }
    no_event(&mut watch).await;
}

pub async fn watch_prefix_filter(store: Arc<dyn Store>) {
    let from = store.current_revision().await.unwrap();
    let mut watch = store.watch("/a/", from).await.unwrap();
    store.create("/ab", b("no")).await.unwrap();
    store.create("/a", b("no")).await.unwrap();
    let wanted = store.create("/a/x", b("yes")).await.unwrap();
    store.create("/b/a/x", b("no")).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(e.kv, wanted);
    no_event(&mut watch).await;
}

pub async fn compaction(store: Arc<dyn Store>) {
    let kept = store.create("/k/untouched", b("keep")).await.unwrap();
    let mut revs = Vec::new();
    let mut kv = store.create("/k/k", b("v0")).await.unwrap();
    revs.push(kv.mod_revision);
    for i in 1..5 {
        kv = store
            .update("/k/k", kv.mod_revision, b(&format!("v{i}")))
            .await
            .unwrap();
        revs.push(kv.mod_revision);
    }
    store.create("/k/deleted", b("d")).await.unwrap();
    store.delete("/k/deleted", None).await.unwrap();
    let at = revs[3];
    store.compact(at).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), at);

    let below = ListOptions {
        revision: Some(revs[2]),
        ..Default::default()
    };
    match store.list("/k/", below).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, revs[2]);
            assert_eq!(compacted, at);
        }
        other => panic!("list below compaction: {other:?}"),
    }
    match watch_error(store.as_ref(), "/k/", revs[1]).await {
        Error::Compacted { compacted, .. } => assert_eq!(compacted, at),
        other => panic!("watch below compaction: {other:?}"),
    }
    // Compacting again at or below the compacted revision is refused.
    assert!(matches!(
        store.compact(revs[2]).await,
        Err(Error::Compacted { .. })
    ));
    let current = store.current_revision().await.unwrap();
    assert!(matches!(
        store.compact(current + 1).await,
        Err(Error::FutureRevision { .. })
    ));

    // The compacted revision itself is still readable, and the data is all there.
    let at_compaction = store
        .list(
            "/k/",
            ListOptions {
                revision: Some(at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let values: Vec<_> = at_compaction
        .items
        .iter()
        .map(|kv| kv.value.clone())
        .collect();
    assert_eq!(values, [b("v3"), b("keep")]);
    let now = store.list("/k/", ListOptions::default()).await.unwrap();
    assert_eq!(now.items, vec![kv.clone(), kept]);

    // A watch from the compacted revision on replays the events from it.
    let mut watch = store.watch("/k/", at - 1).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!((e.revision(), e.kv.value.clone()), (at, b("v3")));
    assert_eq!(next_event(&mut watch).await.kv, kv);
}

pub async fn concurrent_writers(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 25;
    store.create("/counter", b("0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let kv = store.get("/counter").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    match store
                        .update("/counter", kv.mod_revision, b(&(n + 1).to_string()))
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("increment: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = store.get("/counter").await.unwrap().unwrap();
    assert_eq!(kv.value, b(&(TASKS * INCREMENTS).to_string()));
    assert_eq!(kv.version as usize, TASKS * INCREMENTS + 1);
}

pub async fn large_values(store: Arc<dyn Store>) {
    let big: Bytes = (0..1 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let kv = store.create("/big/1", big.clone()).await.unwrap();
    assert_eq!(store.get("/big/1").await.unwrap().unwrap().value, big);
    let updated = store
        .update("/big/1", kv.mod_revision, big.slice(1..))
        .await
        .unwrap();
    assert_eq!(updated.value.len(), (1 << 20) - 1);

    let too_big = Bytes::from(vec![0u8; 2 << 20]);
    match store.create("/big/2", too_big).await {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!(size, 2 << 20);
            assert_eq!(limit, MAX_VALUE_BYTES);
        }
        other => panic!("2 MiB value: {other:?}"),
    }
    assert_eq!(store.get("/big/2").await.unwrap(), None);
}

pub async fn many_keys(store: Arc<dyn Store>) {
    const KEYS: usize = 10_000;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let creates = chunk.iter().map(|i| {
            let store = store.clone();
            async move { store.create(&format!("/m/{i:05}"), b(&i.to_string())).await }
        });
        for result in futures::future::join_all(creates).await {
            result.unwrap();
        }
    }
    assert_eq!(store.count("/m/").await.unwrap(), KEYS as i64);
    let mut seen = BTreeSet::new();
    let mut start_after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(
                "/m/",
                ListOptions {
                    revision: None,
                    limit: 1000,
                    start_after,
                },
            )
            .await
            .unwrap();
        pages += 1;
        for kv in &page.items {
            let i: usize = kv.key[3..].parse().unwrap();
            assert_eq!(kv.value, b(&i.to_string()));
            assert!(seen.insert(i), "{} listed twice", kv.key);
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), KEYS);
    assert_eq!(pages, KEYS / 1000);
}

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = crate::support::$backend().await;
                    super::$case(backend.store.clone()).await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($backend:ident) => {
        conformance!($backend:
            revisions,
            cas_conflicts,
            create_if_absent,
            list_by_prefix,
            paging_at_fixed_revision,
            list_at_past_revision,
            watch_replay_then_live,
            watch_while_writing,
            watch_prefix_filter,
            compaction,
            concurrent_writers,
            large_values,
            many_keys,
        );
    };
}

all_cases!(embedded);
all_cases!(etcd);

/// etcd itself refuses a request above `--max-request-bytes` (1.5 MiB by default): a value
/// right at the limit passes the store's own check but not etcd's, once the key and the
/// request's framing are added; the store reports it as too large all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_requests_over_its_limit() {
    let backend = crate::support::etcd().await;
    let value = Bytes::from(vec![0u8; MAX_VALUE_BYTES]);
    match backend.store.create("/limit", value).await {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!(size, MAX_VALUE_BYTES);
            assert_eq!(limit, MAX_VALUE_BYTES);
        }
        other => panic!("value at the limit: {other:?}"),
    }
    assert_eq!(backend.store.get("/limit").await.unwrap(), None);
}
