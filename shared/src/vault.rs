//! Tenants' own secrets (`PUT/GET/DELETE /v1/secrets`), kept in Secrets Manager under the
//! tenant's namespace (see [`crate::domain::tenancy::Namespaces`]).
//!
//! Values are write-only: they go to Secrets Manager and nowhere else. Nothing here reads a
//! value back, logs one or puts one in an error; what comes back is a secret's name and
//! dates. The adapter's client is built on first use, so a function that never manages a
//! secret spends nothing on it.

use std::sync::OnceLock;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_smithy_types::error::display::DisplayErrorContext;

/// Most secrets one tenant may keep (each costs the operator a monthly fee).
pub const MAX_SECRETS_PER_TENANT: usize = 50;
/// Secrets Manager's own limit on a secret's value.
pub const MAX_SECRET_BYTES: usize = 65_536;
/// The tag every secret Baton creates carries, naming its tenant.
pub const TENANT_TAG: &str = "baton:tenant";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The name is taken by a secret Baton cannot overwrite now (one scheduled for deletion
    /// outside Baton).
    #[error("the secret cannot be written now: {0}")]
    Conflict(String),
    #[error("Secrets Manager request failed: {0}")]
    Service(String),
}

/// What is known of a secret without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// Its full Secrets Manager name (`baton/acme/openai`).
    pub name: String,
    pub created_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
}

/// Whether a write created the secret or gave it a new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretWrite {
    Created,
    Updated,
}

#[async_trait]
pub trait SecretVault: Send + Sync {
    /// Writes `value` as the secret `name` (its full name), tagged with `tenant`.
    async fn put(&self, tenant: &str, name: &str, value: &str) -> Result<SecretWrite, VaultError>;
    /// The secret `name`, if it exists and is not being deleted.
    async fn describe(&self, name: &str) -> Result<Option<SecretMeta>, VaultError>;
    /// Every secret whose name starts with `root` (case as given), at most `limit`.
    async fn list(&self, root: &str, limit: usize) -> Result<Vec<SecretMeta>, VaultError>;
    /// Deletes the secret at once (no recovery window, so its name is free again). False if
    /// there was none.
    async fn delete(&self, name: &str) -> Result<bool, VaultError>;
}

/// The Secrets Manager adapter.
#[derive(Debug)]
pub struct SecretsManagerVault {
    aws: SdkConfig,
    client: OnceLock<aws_sdk_secretsmanager::Client>,
}

impl SecretsManagerVault {
    pub fn new(aws: &SdkConfig) -> Self {
        SecretsManagerVault {
            aws: aws.clone(),
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> &aws_sdk_secretsmanager::Client {
        self.client
            .get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.aws))
    }
}

fn service_error<E: std::error::Error + 'static>(error: E) -> VaultError {
    VaultError::Service(DisplayErrorContext(error).to_string())
}

fn millis(date: Option<&aws_smithy_types::DateTime>) -> Option<i64> {
    date.and_then(|d| d.to_millis().ok())
}

#[async_trait]
impl SecretVault for SecretsManagerVault {
    async fn put(&self, tenant: &str, name: &str, value: &str) -> Result<SecretWrite, VaultError> {
        // The SDK's idempotency token makes a retried create meet its own first write.
        let created = self
            .client()
            .create_secret()
            .name(name)
            .secret_string(value)
            .tags(Tag::builder().key(TENANT_TAG).value(tenant).build())
            .send()
            .await;
        match created {
            Ok(_) => return Ok(SecretWrite::Created),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) => {}
            Err(e) => {
                return Err(match e.as_service_error() {
                    Some(e) if e.is_invalid_request_exception() => {
                        VaultError::Conflict("a secret of this name is being deleted".into())
                    }
                    _ => service_error(e),
                })
            }
        }
        self.client()
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(e) if e.is_invalid_request_exception() => {
                    VaultError::Conflict("a secret of this name is being deleted".into())
                }
                _ => service_error(e),
            })?;
        Ok(SecretWrite::Updated)
    }

    async fn describe(&self, name: &str) -> Result<Option<SecretMeta>, VaultError> {
        let out = match self.client().describe_secret().secret_id(name).send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(service_error(e)),
        };
        // Asked by name, Secrets Manager may still match a secret whose name only begins so
        // (an ARN-like suffix); only the exact name is this secret.
        if out.deleted_date().is_some() || out.name() != Some(name) {
            return Ok(None);
        }
        Ok(Some(SecretMeta {
            name: name.to_string(),
            created_at_ms: millis(out.created_date()),
            updated_at_ms: millis(out.last_changed_date()).or(millis(out.created_date())),
        }))
    }

    async fn list(&self, root: &str, limit: usize) -> Result<Vec<SecretMeta>, VaultError> {
        let mut secrets = Vec::new();
        let mut next = None;
        loop {
            let out = self
                .client()
                .list_secrets()
                .filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(root)
                        .build(),
                )
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(service_error)?;
            // The service's name filter is a prefix match that ignores case: only names that
            // begin with the root exactly are the tenant's.
            secrets.extend(out.secret_list().iter().filter_map(|entry| {
                let name = entry.name()?;
                (name.starts_with(root) && entry.deleted_date().is_none()).then(|| SecretMeta {
                    name: name.to_string(),
                    created_at_ms: millis(entry.created_date()),
                    updated_at_ms: millis(entry.last_changed_date())
                        .or(millis(entry.created_date())),
                })
            }));
            next = out.next_token().map(str::to_string);
            if next.is_none() || secrets.len() >= limit {
                break;
            }
        }
        secrets.truncate(limit);
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(secrets)
    }

    async fn delete(&self, name: &str) -> Result<bool, VaultError> {
        let deleted = self
            .client()
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(service_error(e)),
        }
    }
}
