//! Stream tokens: what lets a client open a stream where it cannot send its credentials (a
//! browser's `EventSource` sends no headers). The authenticated API mints one for a tenant and
//! one stream path, valid for minutes; the streaming endpoint accepts nothing else. A token is
//! the claims in base64url, a dot, and their HMAC-SHA256 under the deployment's key. Pure: the
//! key is given.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use std::collections::BTreeMap;

use crate::ids::{TaskId, WorkflowId};

/// How long a token opens streams: a client that reconnects later asks for a new one.
pub const TOKEN_TTL_S: i64 = 15 * 60;
/// The shortest key accepted: HMAC-SHA256's block is 64 bytes; 32 random bytes are its
/// security.
pub const MIN_KEY_BYTES: usize = 32;

/// What a token says: whose stream, which one, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamClaims {
    /// The tenant.
    pub t: String,
    /// The stream's path, e.g. `/v1/workflows/{id}/tasks/{task}/events`.
    pub p: String,
    /// When it stops opening streams (epoch s).
    pub e: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the stream token is malformed")]
    Malformed,
    #[error("the stream token's signature does not match")]
    BadSignature,
    #[error("the stream token has expired; ask for a new one")]
    Expired,
    #[error("the stream token is for another stream")]
    OtherStream,
    #[error("the stream key is shorter than {MIN_KEY_BYTES} bytes")]
    WeakKey,
}

fn mac(key: &[u8]) -> Result<Hmac<Sha256>, TokenError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(TokenError::WeakKey);
    }
    Hmac::<Sha256>::new_from_slice(key).map_err(|_| TokenError::WeakKey)
}

/// A token for `claims`, signed with `key`.
pub fn mint(key: &[u8], claims: &StreamClaims) -> Result<String, TokenError> {
    let body =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?);
    let mut mac = mac(key)?;
    mac.update(body.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{body}.{signature}"))
}

/// The claims of `token` if `key` signed it, it has not expired at `now_s`, and it is for
/// `path`; the signature is compared in constant time.
pub fn verify(key: &[u8], token: &str, path: &str, now_s: i64) -> Result<StreamClaims, TokenError> {
    let (body, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(key)?;
    mac.update(body.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: StreamClaims = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if now_s >= claims.e {
        return Err(TokenError::Expired);
    }
    if claims.p != path {
        return Err(TokenError::OtherStream);
    }
    Ok(claims)
}

/// How many streams one tenant may have open at once, unless the deployment says otherwise.
pub const DEFAULT_STREAMS_PER_TENANT: u32 = 20;

/// The tenant's open streams (`open`: each one's id and when its slot lapses, epoch ms) with
/// `id` added until `until_ms`, lapsed slots dropped; None when `limit` live ones are open.
/// Taking a slot one already holds renews it.
pub fn take_slot(
    open: &BTreeMap<String, i64>,
    id: &str,
    limit: u32,
    now_ms: i64,
    until_ms: i64,
) -> Option<BTreeMap<String, i64>> {
    let mut live: BTreeMap<String, i64> = open
        .iter()
        .filter(|(other, lapses)| **lapses > now_ms && other.as_str() != id)
        .map(|(other, lapses)| (other.clone(), *lapses))
        .collect();
    if live.len() >= limit as usize {
        return None;
    }
    live.insert(id.to_string(), until_ms);
    Some(live)
}

/// A stream a token may open: a workflow's events, or one task's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPath {
    Workflow(WorkflowId),
    Task(WorkflowId, TaskId),
}

impl StreamPath {
    /// `/v1/workflows/{id}/events` or `/v1/workflows/{id}/tasks/{task}/events`; None for any
    /// other path.
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path
            .strip_prefix("/v1/workflows/")?
            .strip_suffix("/events")?;
        match rest.split('/').collect::<Vec<_>>()[..] {
            [id] => Some(StreamPath::Workflow(WorkflowId::parse(id).ok()?)),
            [id, "tasks", task] => Some(StreamPath::Task(
                WorkflowId::parse(id).ok()?,
                TaskId::parse(task).ok()?,
            )),
            _ => None,
        }
    }

    pub fn workflow_id(&self) -> &WorkflowId {
        match self {
            StreamPath::Workflow(id) | StreamPath::Task(id, _) => id,
        }
    }

    /// The path it was read from.
    pub fn path(&self) -> String {
        match self {
            StreamPath::Workflow(id) => format!("/v1/workflows/{id}/events"),
            StreamPath::Task(id, task) => format!("/v1/workflows/{id}/tasks/{task}/events"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const PATH: &str = "/v1/workflows/w1/tasks/t/events";

    fn claims() -> StreamClaims {
        StreamClaims {
            t: "acme".into(),
            p: PATH.into(),
            e: 1_000,
        }
    }

    #[test]
    fn a_token_opens_its_stream_until_it_expires() {
        let token = mint(KEY, &claims()).unwrap();
        assert_eq!(verify(KEY, &token, PATH, 999), Ok(claims()));
        assert_eq!(verify(KEY, &token, PATH, 1_000), Err(TokenError::Expired));
        assert_eq!(
            verify(KEY, &token, "/v1/workflows/w2/tasks/t/events", 999),
            Err(TokenError::OtherStream)
        );
    }

    #[test]
    fn a_tenant_holds_at_most_its_limit_of_live_slots() {
        let open = BTreeMap::from([("a".to_string(), 100), ("b".to_string(), 50)]);
        // b lapsed at 50: one live slot of two.
        let taken = take_slot(&open, "c", 2, 60, 200).unwrap();
        assert_eq!(
            taken,
            BTreeMap::from([("a".into(), 100), ("c".into(), 200)])
        );
        assert_eq!(take_slot(&taken, "d", 2, 60, 200), None);
        // Renewing one's own slot needs no room.
        assert_eq!(take_slot(&taken, "a", 2, 60, 300).unwrap()["a"], 300);
        assert_eq!(take_slot(&BTreeMap::new(), "x", 0, 0, 1), None);
    }

    #[test]
    fn only_stream_paths_are_streams() {
        let task = StreamPath::parse(PATH).unwrap();
        assert_eq!(task.path(), PATH);
        assert_eq!(task.workflow_id().as_str(), "w1");
        let workflow = StreamPath::parse("/v1/workflows/w1/events").unwrap();
        assert_eq!(workflow, StreamPath::Workflow("w1".parse().unwrap()));
        for other in [
            "/v1/workflows/w1",
            "/v1/workflows//events",
            "/v1/workflows/w1/tasks/events",
            "/v1/workflows/w1/tasks/t/x/events",
            "/v1/workflows/../events",
            "/v1/agents/a/events",
        ] {
            assert_eq!(StreamPath::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_changed_token_or_another_key_is_refused() {
        let token = mint(KEY, &claims()).unwrap();
        let other_key = b"fedcba9876543210fedcba9876543210";
        assert_eq!(
            verify(other_key, &token, PATH, 1),
            Err(TokenError::BadSignature)
        );
        // Another tenant's claims under the same signature.
        let (_, signature) = token.split_once('.').unwrap();
        let forged_claims = StreamClaims {
            t: "other".into(),
            ..claims()
        };
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        let forged = format!("{forged_body}.{signature}");
        assert_eq!(verify(KEY, &forged, PATH, 1), Err(TokenError::BadSignature));
        for bad in ["", "abc", "abc.", ".abc", "a.b.c", "!!.??"] {
            assert!(verify(KEY, bad, PATH, 1).is_err(), "{bad}");
        }
        assert_eq!(mint(b"short", &claims()), Err(TokenError::WeakKey));
    }
}
