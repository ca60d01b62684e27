//! An agent's `context_update` applied to the context its task named: merged into the context
//! as it is now, written under the version read, read again and merged again when another
//! writer came first, and applied once per attempt (see [`baton_types::contexts`]).

use baton_types::contexts::{ContextError, StoredContext};
use baton_types::ids::TenantId;
use serde_json::Value;

use crate::store::{ContextStore, StoreError};

/// Rounds of read, merge and conditional write before the store is called busy: each lost
/// round means another writer's update went in, so this bounds only a storm of them.
const MAX_ROUNDS: usize = 16;

/// What applying an update did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// Written; the context's version after it.
    Applied { version: u64 },
    /// This attempt's update was applied before (a redelivery, a lost response).
    AlreadyApplied,
    /// Merged in, the context would pass its budget: nothing is written.
    Refused(ContextError),
}

/// Merges `patch` into the tenant's context `name` as the update of attempt `key`. A context
/// that does not exist, or has expired, starts empty.
pub async fn apply_update<S>(
    store: &S,
    tenant: &TenantId,
    name: &str,
    patch: &Value,
    key: &str,
    now_ms: i64,
) -> Result<UpdateOutcome, StoreError>
where
    S: ContextStore + ?Sized,
{
    for _ in 0..MAX_ROUNDS {
        let base = match store.context(tenant, name).await? {
            Some(current) if !current.is_expired(now_ms) => current,
            // Expired: empty again, its version counting on so writes stay conditioned.
            Some(expired) => StoredContext {
                version: expired.version,
                ..StoredContext::empty(name, now_ms)
            },
            None => StoredContext::empty(name, now_ms),
        };
        if base.has_applied(key) {
            return Ok(UpdateOutcome::AlreadyApplied);
        }
        let next = match base.patched(patch, Some(key), now_ms) {
            Ok(next) => next,
            Err(refused) => return Ok(UpdateOutcome::Refused(refused)),
        };
        if store.write_context(tenant, &next).await? {
            return Ok(UpdateOutcome::Applied {
                version: next.version,
            });
        }
    }
    Err(StoreError::Busy(format!(
        "context `{name}` changed {MAX_ROUNDS} times while an update was applied"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::fixtures::tenant;
    use crate::memory::{Fault, MemoryStore};
    use serde_json::json;

    #[tokio::test]
    async fn updates_of_many_attempts_are_all_applied_and_each_once() {
        let store = MemoryStore::new();
        let updates = (0..8).map(|i| {
            let store = &store;
            async move {
                let patch = json!({ format!("k{i}"): i });
                apply_update(store, &tenant(), "shared", &patch, &format!("a{i}"), 1).await
            }
        });
        let outcomes = futures::future::join_all(updates).await;
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, Ok(UpdateOutcome::Applied { .. }))));
        let context = store.context(&tenant(), "shared").await.unwrap().unwrap();
        assert_eq!(context.version, 8);
        assert_eq!(
            context.value.as_object().unwrap().len(),
            8,
            "no update lost"
        );
        let again = apply_update(&store, &tenant(), "shared", &json!({"k0": 99}), "a0", 2).await;
        assert_eq!(again.unwrap(), UpdateOutcome::AlreadyApplied);
    }

    #[tokio::test]
    async fn a_write_whose_response_was_lost_is_not_applied_twice() {
        let store = MemoryStore::new();
        store.inject("write_context", Fault::Retried, 1);
        let outcome = apply_update(&store, &tenant(), "c", &json!({"n": 1}), "a1", 1).await;
        assert_eq!(outcome.unwrap(), UpdateOutcome::Applied { version: 1 });
        let outcome = apply_update(&store, &tenant(), "c", &json!({"n": 2}), "a1", 2).await;
        assert_eq!(outcome.unwrap(), UpdateOutcome::AlreadyApplied);
        assert_eq!(
            store.context(&tenant(), "c").await.unwrap().unwrap().value,
            json!({"n": 1})
        );
    }
}
