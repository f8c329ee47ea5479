//! The API server in process, driven through its router with raw requests (as a client
//! library sends them): what comes back, and what is stored.

mod harness;
mod zero_values;
