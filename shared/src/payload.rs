//! Payloads too large to sit on an item: task inputs and outputs past [`INLINE_LIMIT`] bytes of
//! stored JSON go to the stack's S3 bucket, and the item keeps a pointer ([`StoredPayload`]).
//! Small payloads stay inline, so the happy path makes no request here.
//!
//! A payload's key names its tenant, workflow, task and attempt, so writing it again (a
//! retried write, a redelivered message) writes the same object, and one tenant's objects
//! never share a key with another's. The bucket is encrypted, blocks public access and expires
//! objects after the retention; the repair refreshes the objects of a workflow that lives
//! longer (see [`PayloadStore::refresh`]). The S3 client is built on first use.

use std::sync::OnceLock;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::{Deserialize, Serialize};

/// Stored JSON up to this many bytes stays on its item; larger goes to S3. Where the costs
/// meet: DynamoDB bills every write of an item by its size (a write unit per KB, each read a
/// read unit per 4 KB), an S3 PUT costs as much as 8 write units; and the workflow's view
/// shows no output past 8 KiB anyway (docs/BENCHMARKS.md has the measurements).
pub const INLINE_LIMIT: usize = 8 * 1024;
/// The most a task's output may be, as stored JSON: Lambda's own response limit, and what a
/// call to a dependent can carry. Beyond it the task fails `output_too_large`, not retried.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Where a payload went, as its item keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPayload {
    pub key: String,
    /// Its size as stored JSON.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("a payload of {bytes} bytes needs the payload bucket, and none is configured")]
    NoBucket { bytes: usize },
    #[error("S3 request failed: {0}")]
    S3(String),
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

/// The S3 adapter: one bucket of the stack.
#[derive(Debug)]
pub struct S3Payloads {
    aws: SdkConfig,
    bucket: String,
    client: OnceLock<aws_sdk_s3::Client>,
    counter: Option<crate::telemetry::ApiCallCounter>,
}

impl S3Payloads {
    /// `counter`, when given, counts the bucket's requests (the local stack's benchmarks).
    pub fn new(
        aws: &SdkConfig,
        bucket: impl Into<String>,
        counter: Option<crate::telemetry::ApiCallCounter>,
    ) -> Self {
        S3Payloads {
            aws: aws.clone(),
            bucket: bucket.into(),
            client: OnceLock::new(),
            counter,
        }
    }

    fn client(&self) -> &aws_sdk_s3::Client {
        self.client.get_or_init(|| {
            // An emulator behind `AWS_ENDPOINT_URL` serves buckets by path, not by host name.
            let path_style = self.aws.endpoint_url().is_some();
            let mut config =
                aws_sdk_s3::config::Builder::from(&self.aws).force_path_style(path_style);
            if let Some(counter) = &self.counter {
                config = config.interceptor(counter.clone());
            }
            aws_sdk_s3::Client::from_conf(config.build())
        })
    }
}

fn s3_error<E: std::error::Error + 'static>(error: E) -> PayloadError {
    PayloadError::S3(DisplayErrorContext(error).to_string())
}

#[async_trait]
impl PayloadStore for S3Payloads {
    async fn put(&self, key: &str, json: Vec<u8>) -> Result<(), PayloadError> {
        self.client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(json))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PayloadError> {
        let out = match self
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(PayloadError::Missing(key.to_string()))
            }
            Err(e) => return Err(s3_error(e)),
        };
        let body = out.body.collect().await.map_err(s3_error)?;
        Ok(body.into_bytes().to_vec())
    }

    async fn refresh(&self, key: &str) -> Result<(), PayloadError> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        match self
            .client()
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(format!("{}/{key}", self.bucket))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type("application/json")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("NoSuchKey") => {
                Err(PayloadError::Missing(key.to_string()))
            }
            Err(e) => Err(s3_error(e)),
        }
    }
}
