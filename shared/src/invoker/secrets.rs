//! API keys for `openai` agents, read from where the registration points: a Secrets Manager
//! secret or an SSM parameter (decrypted). Each key is read once per process and kept in
//! memory only; it is never logged, stored or returned, and its `Debug` hides it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use aws_config::SdkConfig;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::aws::{sdk_failure, ErrorCodes};
use crate::domain::agent::{secret_source, SecretSource};
use crate::domain::task::{FailureKind, TaskFailure};

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

/// Reads keys and keeps them; the Secrets Manager and SSM clients are built on first use.
#[derive(Debug)]
pub struct SecretReader {
    aws: SdkConfig,
    secrets_manager: OnceLock<aws_sdk_secretsmanager::Client>,
    ssm: OnceLock<aws_sdk_ssm::Client>,
    keys: Mutex<HashMap<String, Arc<OnceCell<ApiKey>>>>,
}

impl SecretReader {
    pub fn new(aws: SdkConfig) -> Self {
        SecretReader {
            aws,
            secrets_manager: OnceLock::new(),
            ssm: OnceLock::new(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The key `reference` points at, read on first use. A failed read is not kept: the next
    /// call reads again.
    pub async fn api_key(&self, reference: &str) -> Result<ApiKey, TaskFailure> {
        let cell = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.entry(reference.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| self.read(reference)).await.cloned()
    }

    /// Which of its clients have been built so far.
    pub fn built_clients(&self) -> Vec<&'static str> {
        [
            ("secretsmanager", self.secrets_manager.get().is_some()),
            ("ssm", self.ssm.get().is_some()),
        ]
        .into_iter()
        .filter(|(_, built)| *built)
        .map(|(name, _)| name)
        .collect()
    }

    /// Forgets a key the API refused, so that a rotated key is read again.
    pub fn forget(&self, reference: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(reference);
    }

    async fn read(&self, reference: &str) -> Result<ApiKey, TaskFailure> {
        let subject = format!("the API key at `{reference}`");
        let source = secret_source(reference)
            .map_err(|e| TaskFailure::new(FailureKind::InvalidInput, format!("{subject}: {e}")))?;
        let text = match source {
            SecretSource::SecretsManager(id) => {
                let client = self
                    .secrets_manager
                    .get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.aws));
                let out = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("Secrets Manager", &subject, e, &SECRET_CODES))?;
                out.secret_string().map(str::to_string)
            }
            SecretSource::SsmParameter(name) => {
                let client = self.ssm.get_or_init(|| aws_sdk_ssm::Client::new(&self.aws));
                let out = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("SSM", &subject, e, &SECRET_CODES))?;
                out.parameter().and_then(|p| p.value()).map(str::to_string)
            }
        };
        text.as_deref().and_then(key_in_secret).ok_or_else(|| {
            TaskFailure::new(
                FailureKind::InvalidInput,
                format!("{subject} holds no text key (a string, or JSON with `api_key`)"),
            )
        })
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
