//! Disk use of the embedded store under lease churn with Kubernetes' compaction: freed
//! pages are reused, so the file stops growing.

use skiff_store::bench::{ChurnOptions, churn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_disk_use_plateaus_under_churn() {
    let backend = crate::support::embedded().await;
    let sizes = churn(
        backend.store.clone(),
        &backend.data_dir,
        ChurnOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        sizes.len(),
        61,
        "one sample per simulated minute: {sizes:?}"
    );
    // After the first compactions (minute 10) the size must stop growing: the last half
    // hour may not exceed the first peak by more than a little.
    let settled = sizes[10..=20].iter().map(|(_, s)| *s).max().unwrap();
    let end = sizes[30..].iter().map(|(_, s)| *s).max().unwrap();
    assert!(
        end <= settled + settled / 4,
        "disk use keeps growing: {settled} bytes by minute 20, {end} later; {sizes:?}"
    );
}
