//! Suggestions in memory: one map per tenant, writes conditioned on the version as the
//! adapter's are, and a write that meets its own earlier effect taken as done.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{ImprovementStore, StoreError};
use baton_types::ids::TenantId;
use baton_types::suggestions::{StoredSuggestion, MAX_KEPT};

#[async_trait]
impl ImprovementStore for MemoryStore {
    async fn suggestions(&self, tenant: &TenantId) -> Result<Vec<StoredSuggestion>, StoreError> {
        self.run("suggestions", |state| {
            let mut all: Vec<StoredSuggestion> = state
                .suggestions
                .get(tenant)
                .into_iter()
                .flat_map(|kept| kept.values().cloned())
                .collect();
            all.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
            all.truncate(MAX_KEPT);
            Ok(all)
        })
    }

    async fn create_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError> {
        self.run("create_suggestion", |state| {
            let kept = state.suggestions.entry(tenant.clone()).or_default();
            if let Some(stored) = kept.get(&suggestion.id) {
                // Its own earlier effect counts as created.
                return Ok(stored == suggestion);
            }
            kept.insert(suggestion.id.clone(), suggestion.clone());
            Ok(true)
        })
    }

    async fn update_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError> {
        self.run("update_suggestion", |state| {
            let kept = state.suggestions.entry(tenant.clone()).or_default();
            match kept.get(&suggestion.id) {
                Some(stored) if stored.version + 1 == suggestion.version => {
                    kept.insert(suggestion.id.clone(), suggestion.clone());
                    Ok(true)
                }
                // Its own earlier effect, met again when the SDK resent a lost response.
                Some(stored) => Ok(stored == suggestion),
                None => Ok(false),
            }
        })
    }
}
