//! Baton's chain: the ports its handlers reach the world through, and the steps they share.
//!
//! Ports (traits; `baton_aws` adapts them to DynamoDB, SQS, S3 and HTTP, `memory` to a
//! process's memory for tests): [`store`], [`queue`], [`payload`], [`invoker`], [`prober`].
//!
//! Steps, each calling only those after it: [`attempt`] (how an attempt ends: a retry, or a
//! final end) → [`hold`] (what a pause, cancel or redrive asks of a task) → [`finish`] (the
//! follow-up of a final end: count, release, finish the workflow) → [`turn`] (what a
//! conversation turn's task changes in its session).
//!
//! Around them: [`config`] (the one typed configuration), [`cache`] (short-lived caches of
//! the registry and tenant settings), [`metrics`] (the names and helpers of every metric) and
//! [`error`] (the steps' one error type).

pub mod attempt;
pub mod cache;
pub mod causes;
pub mod config;
pub mod context;
pub mod error;
pub mod finish;
pub mod hold;
pub mod improve;
pub mod invoker;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod metrics;
pub mod payload;
pub mod prober;
pub mod queue;
pub mod store;
pub mod stream;
pub mod turn;
pub mod watch;
