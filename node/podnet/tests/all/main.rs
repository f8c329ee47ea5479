//! Pod networking against the real kernel: run as root. Each test has its own bridge,
//! CIDR and state dir, so tests run in parallel, and each first clears what a crashed
//! earlier run of itself may have left.

mod connectivity;
mod lifecycle;
mod support;
