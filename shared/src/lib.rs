//! Baton's shared library.
//!
//! It owns everything the five functions have in common:
//! - [`domain`]: pure logic (workflow DAGs, agents, task states, routing, learning), no I/O;
//! - [`messages`]: the SQS message formats that chain the functions;
//! - [`store`], [`queue`], [`invoker`], [`prober`]: the ports the handlers use, with their
//!   DynamoDB, SQS and HTTP adapters;
//! - [`completion`]: how an attempt ends (a retry, or the follow-up of a final end), shared
//!   by the handlers that end attempts and by the scheduled repair;
//! - [`conversation`]: what the chain does for a conversation turn's tasks;
//! - [`batch`]: the one SQS batch helper every queue-driven function uses;
//! - [`config`] and [`telemetry`]: start-up wiring shared by the thin `main.rs` files.
//! - [`metrics`]: the CloudWatch EMF metrics and their one-line helpers.

pub mod batch;
pub mod clock;
pub mod completion;
pub mod config;
pub mod control;
pub mod conversation;
pub mod domain;
pub mod graph;
pub mod history;
pub mod invoker;
pub mod messages;
pub mod metrics;
pub mod payload;
pub mod prober;
pub mod queue;
pub mod signed;
pub mod store;
pub mod telemetry;
pub mod vault;
