//! Contexts: named, versioned JSON that related tasks share across workflows. Pure.
//!
//! A context is replaced whole (`PUT`) or changed by a JSON merge patch (RFC 7396: `PATCH`,
//! or an agent's `context_update`), each write under the version it read, so two writers never
//! lose one another's change. An agent's update is applied once per attempt: the context keeps
//! the keys of the last [`MAX_APPLIED`] updates, and one it holds already is not applied again
//! (a redelivered message, a write whose response was lost).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most a context's value may take, as JSON text: 32 KiB (written whole on every change).
pub const MAX_CONTEXT_BYTES: usize = 32 * 1024;
/// The updates a context remembers having applied.
pub const MAX_APPLIED: usize = 32;
/// The longest a context may be kept: 90 days.
pub const MAX_TTL_S: u64 = 90 * 86_400;

/// The body of `PUT /v1/contexts/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContextInput {
    /// Any JSON, at most 32 KiB written.
    pub value: Value,
    /// Seconds until it expires (1 to 7,776,000); none: it does not.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 7_776_000))]
    pub ttl_s: Option<u64>,
}

/// A context as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredContext {
    pub name: String,
    /// 1 for the first write, one more for each after.
    pub version: u64,
    pub value: Value,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// The keys of the last updates applied, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("the context would take {bytes} bytes; at most {MAX_CONTEXT_BYTES} are kept")]
    TooLarge { bytes: usize },
    #[error("ttl_s must be from 1 to {MAX_TTL_S}, got {0}")]
    BadTtl(u64),
}

/// The bytes `value` takes as JSON text.
pub fn size_of(value: &Value) -> usize {
    value.to_string().len()
}

fn fits(value: &Value) -> Result<(), ContextError> {
    match size_of(value) {
        bytes if bytes > MAX_CONTEXT_BYTES => Err(ContextError::TooLarge { bytes }),
        _ => Ok(()),
    }
}

impl StoredContext {
    /// Whether it has expired by `now_ms`: it reads as absent from then on.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// `input` written over `current` (none, or expired: a new context) at `now_ms`.
    pub fn replace(
        name: &str,
        current: Option<&StoredContext>,
        input: ContextInput,
        now_ms: i64,
    ) -> Result<StoredContext, ContextError> {
        fits(&input.value)?;
        let expires_at_ms = input
            .ttl_s
            .map(|ttl| {
                if (1..=MAX_TTL_S).contains(&ttl) {
                    Ok(now_ms + ttl as i64 * 1000)
                } else {
                    Err(ContextError::BadTtl(ttl))
                }
            })
            .transpose()?;
        Ok(StoredContext {
            name: name.to_string(),
            version: current.map_or(0, |c| c.version) + 1,
            value: input.value,
            updated_at_ms: now_ms,
            expires_at_ms,
            applied: current.map(|c| c.applied.clone()).unwrap_or_default(),
        })
    }

    /// This context with `patch` merged in (RFC 7396), recorded under `key` when an agent's
    /// update made it. Its expiry stays.
    pub fn patched(
        &self,
        patch: &Value,
        key: Option<&str>,
        now_ms: i64,
    ) -> Result<StoredContext, ContextError> {
        let mut value = self.value.clone();
        json_patch::merge(&mut value, patch);
        fits(&value)?;
        let mut applied = self.applied.clone();
        if let Some(key) = key {
            applied.push(key.to_string());
            let excess = applied.len().saturating_sub(MAX_APPLIED);
            applied.drain(..excess);
        }
        Ok(StoredContext {
            version: self.version + 1,
            value,
            updated_at_ms: now_ms,
            applied,
            ..self.clone()
        })
    }

    /// A context that does not exist yet, for an agent's update to be merged into.
    pub fn empty(name: &str, now_ms: i64) -> StoredContext {
        StoredContext {
            name: name.to_string(),
            version: 0,
            value: Value::Object(Default::default()),
            updated_at_ms: now_ms,
            expires_at_ms: None,
            applied: Vec::new(),
        }
    }

    /// Whether the update of `key` was applied to it already.
    pub fn has_applied(&self, key: &str) -> bool {
        self.applied.iter().any(|k| k == key)
    }

    /// What an agent receives with its call.
    pub fn for_call(&self) -> Value {
        serde_json::json!({ "name": self.name, "version": self.version, "value": self.value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> ContextInput {
        ContextInput { value, ttl_s: None }
    }

    #[test]
    fn a_merge_patch_changes_what_it_names_and_counts_a_version() {
        let first =
            StoredContext::replace("c", None, input(json!({"a": 1, "b": {"x": 1}})), 10).unwrap();
        assert_eq!(first.version, 1);
        let patched = first
            .patched(&json!({"b": {"y": 2}, "a": null}), Some("k1"), 20)
            .unwrap();
        assert_eq!(patched.value, json!({"b": {"x": 1, "y": 2}}));
        assert_eq!((patched.version, patched.has_applied("k1")), (2, true));
        let replaced = StoredContext::replace("c", Some(&patched), input(json!([1])), 30).unwrap();
        assert_eq!((replaced.version, replaced.value.clone()), (3, json!([1])));
    }

    #[test]
    fn a_context_stays_within_its_budget_and_expires() {
        let big = json!({ "text": "x".repeat(MAX_CONTEXT_BYTES) });
        assert!(matches!(
            StoredContext::replace("c", None, input(big.clone()), 0),
            Err(ContextError::TooLarge { .. })
        ));
        let small = StoredContext::replace("c", None, input(json!({})), 0).unwrap();
        assert!(
            small.patched(&big, None, 1).is_err(),
            "a patch may not grow it past the budget"
        );
        let ttl = ContextInput {
            value: json!({}),
            ttl_s: Some(60),
        };
        let expiring = StoredContext::replace("c", None, ttl, 1_000).unwrap();
        assert!(!expiring.is_expired(60_999) && expiring.is_expired(61_000));
        let bad = ContextInput {
            value: json!({}),
            ttl_s: Some(0),
        };
        assert_eq!(
            StoredContext::replace("c", None, bad, 0),
            Err(ContextError::BadTtl(0))
        );
    }

    #[test]
    fn only_the_last_updates_are_remembered() {
        let mut context = StoredContext::empty("c", 0);
        for i in 0..(MAX_APPLIED + 5) {
            context = context
                .patched(&json!({ "n": i }), Some(&format!("k{i}")), 1)
                .unwrap();
        }
        assert_eq!(context.applied.len(), MAX_APPLIED);
        assert!(
            !context.has_applied("k0") && context.has_applied(&format!("k{}", MAX_APPLIED + 4))
        );
    }
}
