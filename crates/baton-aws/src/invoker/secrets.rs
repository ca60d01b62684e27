//! API keys for `openai` agents, read from where the registration points: a Secrets Manager
//! secret or an SSM parameter (decrypted), always in the calling tenant's namespace. A key is
//! kept in memory for a few minutes, per tenant and reference, so that one tenant's entry
//! never serves another and a rotated key is read again; it is never logged, stored or
//! returned, and its `Debug` hides it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::aws::{self, ErrorCodes};
use crate::signed::{Request, Service, SignedClient, SECRETS_MANAGER, SSM};
use baton_types::agent::SecretSource;
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::tenancy::TenancyPolicy;

/// How long a key read is used before it is read again: a key rotated through
/// `PUT /v1/secrets` reaches every process within this time (at once after a 401).
pub const KEY_TTL: Duration = Duration::from_secs(300);
/// Keys kept at most; the oldest are dropped first.
const MAX_KEYS: usize = 256;

/// A key's place in the cache: whose it is and where it was read from.
type KeyId = (String, String);
/// A key being read or read, and when its entry was made.
type KeyEntry = (Instant, Arc<OnceCell<ApiKey>>);

/// An API key. Only [`ApiKey::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

/// Errors reading a secret, by whether another try can succeed.
const SECRET_CODES: ErrorCodes = ErrorCodes {
    retryable: &[
        "ThrottlingException",
        "InternalServiceError",
        "InternalServerError",
    ],
    permanent: &[
        "ResourceNotFoundException",
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "AccessDeniedException",
        "InvalidKeyId",
        "DecryptionFailure",
        "InvalidRequestException",
        "InvalidParameterException",
    ],
};

/// What a read is for, in failures: the reference is the tenant's own (checked), but
/// failures are shown and stored, so they say which kind of store, not the name.
const SUBJECT: &str = "the agent's API key";

/// Reads keys (Secrets Manager's GetSecretValue, SSM's GetParameter) and keeps them.
#[derive(Debug)]
pub struct SecretReader {
    aws: Arc<SignedClient>,
    tenancy: TenancyPolicy,
    keys: Mutex<HashMap<KeyId, KeyEntry>>,
}

impl SecretReader {
    pub fn new(aws: Arc<SignedClient>, tenancy: TenancyPolicy) -> Self {
        SecretReader {
            aws,
            tenancy,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The key `reference` points at for `tenant`, read on first use and again after
    /// [`KEY_TTL`]. A reference outside the tenant's namespace is refused before any read. A
    /// failed read is not kept: the next call reads again.
    pub async fn api_key(&self, tenant: &str, reference: &str) -> Result<ApiKey, TaskFailure> {
        let source = self
            .tenancy
            .check_secret(tenant, reference)
            .map_err(|refusal| {
                TaskFailure::new(
                    FailureKind::ForbiddenReference,
                    format!("the agent's {refusal}"),
                )
            })?;
        let cell = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            baton_chain::cache::make_room(&mut keys, KEY_TTL, MAX_KEYS);
            let id = (tenant.to_string(), reference.to_string());
            keys.entry(id)
                .or_insert_with(|| (Instant::now(), Arc::default()))
                .1
                .clone()
        };
        cell.get_or_try_init(|| self.read(source)).await.cloned()
    }

    /// Forgets a key the API refused, so that a rotated key is read again.
    pub fn forget(&self, tenant: &str, reference: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(&(tenant.to_string(), reference.to_string()));
    }

    async fn read(&self, source: SecretSource<'_>) -> Result<ApiKey, TaskFailure> {
        let text = match source {
            SecretSource::SecretsManager(id) => {
                let answer = self
                    .call(
                        SECRETS_MANAGER,
                        "secretsmanager.GetSecretValue",
                        json!({"SecretId": id}),
                    )
                    .await?;
                answer["SecretString"].as_str().map(str::to_string)
            }
            SecretSource::SsmParameter(name) => {
                let body = json!({"Name": name, "WithDecryption": true});
                let answer = self.call(SSM, "AmazonSSM.GetParameter", body).await?;
                answer["Parameter"]["Value"].as_str().map(str::to_string)
            }
        };
        text.as_deref().and_then(key_in_secret).ok_or_else(|| {
            TaskFailure::new(
                FailureKind::InvalidInput,
                format!("{SUBJECT} holds no text key (a string, or JSON with `api_key`)"),
            )
        })
    }

    /// The answer of one of the services' JSON 1.1 operations (`target`).
    async fn call(
        &self,
        service: Service,
        target: &str,
        body: Value,
    ) -> Result<Value, TaskFailure> {
        let request = Request::json_rpc(service, target, &body);
        let answer = aws::call(&self.aws, request, SUBJECT, &SECRET_CODES).await?;
        aws::json_body(&answer, service.label, SUBJECT)
    }
}

/// The key in a secret's text: the `api_key` field of a JSON object, or the whole text.
pub fn key_in_secret(text: &str) -> Option<ApiKey> {
    let key = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => fields.get("api_key")?.as_str()?.trim().to_string(),
        _ => text.trim().to_string(),
    };
    (!key.is_empty()).then_some(ApiKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_text_or_its_api_key_field() {
        assert_eq!(key_in_secret(" sk-local \n").unwrap().expose(), "sk-local");
        assert_eq!(
            key_in_secret(r#"{"api_key": "sk-json", "org": "o"}"#)
                .unwrap()
                .expose(),
            "sk-json"
        );
        assert!(key_in_secret(r#"{"token": "x"}"#).is_none());
        assert!(key_in_secret("  ").is_none());
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let key = key_in_secret("sk-very-secret").unwrap();
        assert!(!format!("{key:?}").contains("sk-very-secret"));
    }
}
