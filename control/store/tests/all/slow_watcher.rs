//! A watcher that stops reading must not hold writers back: its buffer is bounded, and
//! once it falls too far behind its stream ends with an error (the consumer re-lists).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_slow_watcher_is_cut_off_not_waited_for() {
    let backend = crate::support::embedded().await;
    let store = backend.store.clone();
    let from = store.current_revision().await.unwrap();
    let mut watch = store.watch("/slow/", from).await.unwrap();
    // Sequential writes: one committed batch each, more than the watch buffer holds.
    let writes = tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..5000 {
            store
                .create(&format!("/slow/{i}"), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
    });
    writes
        .await
        .expect("writers were held back by a watcher that does not read");
    match watch.next().await {
        Some(Err(Error::Backend(message))) => assert!(message.contains("fell behind"), "{message}"),
        other => panic!("expected the lagging watch to fail, got {other:?}"),
    }
    assert!(
        watch.next().await.is_none(),
        "the stream ends after its error"
    );
}
