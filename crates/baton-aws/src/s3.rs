//! The S3 adapter of the payload port: one bucket of the stack.

use std::sync::OnceLock;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;

use baton_chain::payload::{PayloadError, PayloadStore};

/// The S3 adapter: one bucket of the stack.
#[derive(Debug)]
pub struct S3Payloads {
    aws: SdkConfig,
    bucket: String,
    client: OnceLock<aws_sdk_s3::Client>,
    counter: Option<crate::counter::ApiCallCounter>,
}

impl S3Payloads {
    /// `counter`, when given, counts the bucket's requests (the local stack's benchmarks).
    pub fn new(
        aws: &SdkConfig,
        bucket: impl Into<String>,
        counter: Option<crate::counter::ApiCallCounter>,
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

fn s3_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> PayloadError {
    PayloadError::Request(Box::new(error))
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
