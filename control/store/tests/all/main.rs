//! One integration test binary for the store: the conformance suite run against every
//! backend, plus the embedded store's crash and disk-churn tests.

mod churn;
mod conformance;
mod crash;
mod slow_watcher;
mod support;
