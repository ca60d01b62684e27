//! Payloads too large to sit on an item: task inputs and outputs past [`INLINE_LIMIT`] bytes of
//! stored JSON go to the stack's S3 bucket, and the item keeps a pointer ([`StoredPayload`]).
//! Small payloads stay inline, so the happy path makes no request here.
//!
//! A payload's key names its tenant, workflow, task and attempt, so writing it again (a
//! retried write, a redelivered message) writes the same object, and one tenant's objects
//! never share a key with another's. The bucket is encrypted, blocks public access and expires
//! objects after the retention; the repair refreshes the objects of a workflow that lives
//! longer (see [`PayloadStore::refresh`]). The S3 client is built on first use.

use async_trait::async_trait;

/// Stored JSON up to this many bytes stays on its item; larger goes to S3. Where the costs
/// meet: DynamoDB bills every write of an item by its size (a write unit per KB, each read a
/// read unit per 4 KB), an S3 PUT costs as much as 8 write units; and the workflow's view
/// shows no output past 8 KiB anyway (docs/BENCHMARKS.md has the measurements).
pub const INLINE_LIMIT: usize = 8 * 1024;
/// The most a task's output may be, as stored JSON: Lambda's own response limit, and what a
/// call to a dependent can carry. Beyond it the task fails `output_too_large`, not retried.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

pub use baton_types::records::StoredPayload;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("a payload of {bytes} bytes needs the payload bucket, and none is configured")]
    NoBucket { bytes: usize },
    /// The object store refused the request or did not answer; its error is the source.
    #[error("the payload request failed: {}", crate::causes::with_causes(.0.as_ref()))]
    Request(#[source] crate::causes::BoxError),
    #[error("the payload at `{0}` is missing")]
    Missing(String),
}

/// The key of one attempt's output as written by one holder of it (`writer`: its claim).
/// A repeat of the same write (an SDK retry, a redelivery to the same holder) writes the same
/// object; a second holder of the attempt (a handler that outlived its lease, with the attempt
/// claimed again meanwhile) writes its own, so it can never change an output already recorded.
pub fn output_key(
    tenant: &str,
    workflow_id: &str,
    task_id: &str,
    attempt: u32,
    writer: &str,
) -> String {
    format!("{tenant}/{workflow_id}/{task_id}/{attempt}/{writer}.json")
}

/// The key of a task's input.
pub fn input_key(tenant: &str, workflow_id: &str, task_id: &str) -> String {
    format!("{tenant}/{workflow_id}/{task_id}/input.json")
}

#[async_trait]
pub trait PayloadStore: Send + Sync + std::fmt::Debug {
    /// Writes `json` under `key` (again, harmlessly, if it is there).
    async fn put(&self, key: &str, json: Vec<u8>) -> Result<(), PayloadError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, PayloadError>;
    /// Restarts the object's age, so the bucket's expiry does not take it from a workflow
    /// that still runs (it copies the object onto itself).
    async fn refresh(&self, key: &str) -> Result<(), PayloadError>;
}
