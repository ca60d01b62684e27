//! Tenants' own secrets (`PUT/GET/DELETE /v1/secrets`), kept in Secrets Manager under the
//! tenant's namespace (see [`baton_types::tenancy::Namespaces`]).
//!
//! Values are write-only: they go to Secrets Manager and nowhere else. Nothing here reads a
//! value back, logs one or puts one in an error; what comes back is a secret's name and
//! dates. The adapter calls Secrets Manager with signed requests ([`crate::signed`]) whose
//! HTTP client is built on first use, so a function that never manages a secret spends
//! nothing on it.

use async_trait::async_trait;
use aws_config::SdkConfig;
use serde_json::{json, Value};

use crate::signed::{Request, SignedClient, SECRETS_MANAGER};

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
    client: SignedClient,
}

/// An operation's refusal: Secrets Manager's error code, and its words.
struct Refusal {
    code: Option<String>,
    message: String,
}

impl Refusal {
    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    fn into_error(self) -> VaultError {
        VaultError::Service(self.message)
    }

    /// A write refused because a secret of the name is scheduled for deletion.
    fn into_write_error(self) -> VaultError {
        if self.is("InvalidRequestException") {
            VaultError::Conflict("a secret of this name is being deleted".into())
        } else {
            self.into_error()
        }
    }
}

impl SecretsManagerVault {
    pub fn new(aws: &SdkConfig) -> Self {
        SecretsManagerVault {
            client: SignedClient::new(aws.clone()),
        }
    }

    /// One operation (`Action`) of Secrets Manager's JSON API. `Ok(Err(_))` is its refusal,
    /// `Err(_)` a request that got no answer.
    async fn call(&self, action: &str, body: Value) -> Result<Result<Value, Refusal>, VaultError> {
        let target = format!("secretsmanager.{action}");
        let answer = self
            .client
            .send(Request::json_rpc(SECRETS_MANAGER, &target, &body))
            .await
            .map_err(|e| VaultError::Service(format!("{action}: {e}")))?;
        if answer.is_success() {
            return answer.json().map(Ok).map_err(|e| {
                VaultError::Service(format!("{action}: an answer that is not JSON: {e}"))
            });
        }
        let (code, message) = answer.refusal();
        let message = format!(
            "{action}: {} (HTTP {}) {}",
            code.as_deref().unwrap_or("an error"),
            answer.status,
            message.unwrap_or_default()
        );
        Ok(Err(Refusal {
            code,
            message: message.trim_end().to_string(),
        }))
    }
}

impl SecretsManagerVault {
    /// A deployment secret's value (the stream tokens' key), by ARN or name.
    pub async fn secret_string(&self, id: &str) -> Result<String, VaultError> {
        let answer = self
            .call("GetSecretValue", json!({"SecretId": id}))
            .await?
            .map_err(Refusal::into_error)?;
        answer["SecretString"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| VaultError::Service(format!("secret `{id}` has no string value")))
    }
}

/// A date as Secrets Manager's JSON has it (seconds since the epoch, with a fraction).
fn millis(date: &Value) -> Option<i64> {
    date.as_f64()
        .map(|seconds| (seconds * 1000.0).round() as i64)
}

/// What an entry of DescribeSecret or ListSecrets says of a secret; none for one being
/// deleted.
fn meta(entry: &Value) -> Option<SecretMeta> {
    if !entry["DeletedDate"].is_null() {
        return None;
    }
    let created = millis(&entry["CreatedDate"]);
    Some(SecretMeta {
        name: entry["Name"].as_str()?.to_string(),
        created_at_ms: created,
        updated_at_ms: millis(&entry["LastChangedDate"]).or(created),
    })
}

#[async_trait]
impl SecretVault for SecretsManagerVault {
    async fn put(&self, tenant: &str, name: &str, value: &str) -> Result<SecretWrite, VaultError> {
        // The new version's id, which the SDK would generate; one write's two calls share it.
        let token = uuid::Uuid::new_v4().to_string();
        let create = json!({
            "Name": name,
            "SecretString": value,
            "Tags": [{"Key": TENANT_TAG, "Value": tenant}],
            "ClientRequestToken": token,
        });
        match self.call("CreateSecret", create).await? {
            Ok(_) => return Ok(SecretWrite::Created),
            Err(refusal) if refusal.is("ResourceExistsException") => {}
            Err(refusal) => return Err(refusal.into_write_error()),
        }
        let put = json!({"SecretId": name, "SecretString": value, "ClientRequestToken": token});
        self.call("PutSecretValue", put)
            .await?
            .map_err(Refusal::into_write_error)?;
        Ok(SecretWrite::Updated)
    }

    async fn describe(&self, name: &str) -> Result<Option<SecretMeta>, VaultError> {
        let entry = match self
            .call("DescribeSecret", json!({"SecretId": name}))
            .await?
        {
            Ok(entry) => entry,
            Err(refusal) if refusal.is("ResourceNotFoundException") => return Ok(None),
            Err(refusal) => return Err(refusal.into_error()),
        };
        // Asked by name, Secrets Manager may still match a secret whose name only begins so
        // (an ARN-like suffix); only the exact name is this secret.
        Ok(meta(&entry).filter(|secret| secret.name == name))
    }

    async fn list(&self, root: &str, limit: usize) -> Result<Vec<SecretMeta>, VaultError> {
        let mut secrets = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut request = json!({
                "Filters": [{"Key": "name", "Values": [root]}],
                "MaxResults": 100,
            });
            if let Some(token) = &next {
                request["NextToken"] = json!(token);
            }
            let page = self
                .call("ListSecrets", request)
                .await?
                .map_err(Refusal::into_error)?;
            // The service's name filter is a prefix match that ignores case: only names that
            // begin with the root exactly are the tenant's.
            let entries = page["SecretList"].as_array().map(Vec::as_slice);
            secrets.extend(
                entries
                    .unwrap_or_default()
                    .iter()
                    .filter_map(meta)
                    .filter(|secret| secret.name.starts_with(root)),
            );
            next = page["NextToken"].as_str().map(str::to_string);
            if next.is_none() || secrets.len() >= limit {
                break;
            }
        }
        secrets.truncate(limit);
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(secrets)
    }

    async fn delete(&self, name: &str) -> Result<bool, VaultError> {
        let request = json!({"SecretId": name, "ForceDeleteWithoutRecovery": true});
        match self.call("DeleteSecret", request).await? {
            Ok(_) => Ok(true),
            Err(refusal) if refusal.is("ResourceNotFoundException") => Ok(false),
            Err(refusal) => Err(refusal.into_error()),
        }
    }
}
