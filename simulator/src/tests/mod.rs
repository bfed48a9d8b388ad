//! End-to-end tests of the simulator over real HTTP on 127.0.0.1: a client calls
//! the token endpoint and Graph, a small receiver stands in for the subscriber
//! (answers handshakes, records notifications), and every subscription body and
//! notification body is checked against the vendor JSON Schemas.

mod change_delivery;
mod control_api;
mod discovery;
mod faults;
mod google_api;
mod google_sync;
mod graph_api;
mod graph_delta;
mod limits;
mod refusals;
mod support;
mod tokens;
