//! Skiff's scheduler: binds pending pods to nodes through the public API, as
//! kube-scheduler does, with its default filters and scores.

pub mod framework;
mod quantity;
