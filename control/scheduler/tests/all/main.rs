//! The scheduler against Skiff's real API server, started in process on an embedded store
//! in a temporary directory, driven and checked through the kube client.

mod failures;
mod harness;
mod placement;
mod spread;
