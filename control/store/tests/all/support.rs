//! Backends under test: an embedded store in a temporary directory, and a real etcd
//! started on free loopback ports with its own data directory.

use std::path::PathBuf;
use std::sync::Arc;

use skiff_store::Store;
use skiff_store::embedded::EmbeddedStore;
use skiff_store::local_etcd::LocalEtcd;

/// A store and whatever must live as long as it (a directory, a process).
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub data_dir: PathBuf,
    _etcd: Option<LocalEtcd>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn embedded() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    Backend {
        store: Arc::new(store),
        data_dir: dir.path().to_owned(),
        _etcd: None,
        _dir: Some(dir),
    }
}

pub async fn etcd() -> Backend {
    let etcd = LocalEtcd::start(None).expect("start a real etcd");
    let store = etcd.connect().await.expect("connect to etcd");
    Backend {
        store: Arc::new(store),
        data_dir: etcd.data_dir(),
        _etcd: Some(etcd),
        _dir: None,
    }
}
