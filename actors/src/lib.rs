//! subkeeper's core: what a provider and its subscription are, the lifecycle state
//! machine that decides when to register, renew or recreate, the ports the outside
//! world is reached through, and the actix actors that drive it all.
//!
//! This crate performs no I/O of its own and must never depend on sqlx, reqwest or
//! async-nats: adapters in the `subkeeper` crate implement the ports.

pub mod alerting;
pub mod attempt;
pub mod board;
pub mod catchup;
pub mod delivery;
pub mod domain;
pub mod fleet;
pub mod lifecycle;
pub mod memory;
pub mod notification;
pub mod ownership;
pub mod permits;
pub mod pool;
pub mod ports;
pub mod supervisor;
pub mod telemetry;
