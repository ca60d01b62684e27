//! The streaming endpoint's key: read once, at a function's start, from the deployment's
//! secret (see `StreamKeySecret` in the template).

use baton_chain::config::StreamSettings;
use baton_types::stream_token::MIN_KEY_BYTES;

use crate::vault::{SecretsManagerVault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum StreamKeyError {
    #[error("the stream key secret cannot be read: {0}")]
    Read(#[from] VaultError),
    #[error("the stream key secret holds {0} bytes; stream tokens need at least {MIN_KEY_BYTES}")]
    Weak(usize),
}

/// The key stream tokens are signed with; None when the deployment names no secret.
pub async fn stream_key(
    vault: &SecretsManagerVault,
    settings: &StreamSettings,
) -> Result<Option<Vec<u8>>, StreamKeyError> {
    let Some(secret) = &settings.key_secret else {
        return Ok(None);
    };
    let key = vault.secret_string(secret).await?.into_bytes();
    if key.len() < MIN_KEY_BYTES {
        return Err(StreamKeyError::Weak(key.len()));
    }
    Ok(Some(key))
}
