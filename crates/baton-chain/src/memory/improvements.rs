//! Suggestions, patterns and contexts in memory: one map per tenant, writes conditioned on the version as the
//! adapter's are, and a write that meets its own earlier effect taken as done.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{AnalysisSchedule, ContextStore, ImprovementStore, PatternStore, StoreError};
use baton_types::contexts::StoredContext;
use baton_types::ids::TenantId;
use baton_types::patterns::{Pattern, MAX_HISTORY};
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

fn pattern_key(pattern: &Pattern) -> (String, String, i64) {
    (
        pattern.kind.as_str().to_string(),
        pattern.subject.clone(),
        pattern.valid_from_ms,
    )
}

#[async_trait]
impl PatternStore for MemoryStore {
    async fn patterns(
        &self,
        tenant: &TenantId,
        task_type: &str,
    ) -> Result<Vec<Pattern>, StoreError> {
        self.run("patterns", |state| {
            let mut all: Vec<Pattern> = state
                .patterns
                .get(&(tenant.clone(), task_type.to_string()))
                .into_iter()
                .flat_map(|kept| kept.values().cloned())
                .collect();
            all.sort_by_key(|p| std::cmp::Reverse(p.valid_from_ms));
            all.truncate(MAX_HISTORY);
            Ok(all)
        })
    }

    async fn open_pattern(
        &self,
        tenant: &TenantId,
        task_type: &str,
        pattern: &Pattern,
    ) -> Result<(), StoreError> {
        self.run("open_pattern", |state| {
            let kept = state
                .patterns
                .entry((tenant.clone(), task_type.to_string()))
                .or_default();
            kept.entry(pattern_key(pattern))
                .or_insert_with(|| pattern.clone());
            Ok(())
        })
    }

    async fn close_pattern(
        &self,
        tenant: &TenantId,
        task_type: &str,
        pattern: &Pattern,
    ) -> Result<(), StoreError> {
        self.run("close_pattern", |state| {
            let kept = state
                .patterns
                .entry((tenant.clone(), task_type.to_string()))
                .or_default();
            if let Some(stored) = kept.get_mut(&pattern_key(pattern)) {
                if stored.valid_to_ms.is_none() {
                    stored.valid_to_ms = pattern.valid_to_ms;
                }
            }
            Ok(())
        })
    }
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn context(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredContext>, StoreError> {
        self.run("context", |state| {
            Ok(state
                .contexts
                .get(&(tenant.clone(), name.to_string()))
                .cloned())
        })
    }

    async fn write_context(
        &self,
        tenant: &TenantId,
        context: &StoredContext,
    ) -> Result<bool, StoreError> {
        self.run("write_context", |state| {
            let key = (tenant.clone(), context.name.clone());
            let stored = state.contexts.get(&key);
            let current = stored.map_or(0, |c| c.version);
            if current + 1 == context.version {
                state.contexts.insert(key, context.clone());
                Ok(true)
            } else {
                Ok(stored == Some(context))
            }
        })
    }

    async fn delete_context(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        self.run("delete_context", |state| {
            let key = (tenant.clone(), name.to_string());
            match state.contexts.get(&key) {
                Some(stored) if stored.version == version => {
                    state.contexts.remove(&key);
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }
}

#[async_trait]
impl AnalysisSchedule for MemoryStore {
    async fn schedule_analysis(&self, tenant: &TenantId, due_at_ms: i64) -> Result<(), StoreError> {
        self.run("schedule_analysis", |state| {
            state.analyses.entry(tenant.clone()).or_insert(due_at_ms);
            Ok(())
        })
    }

    async fn due_analyses(&self, now_ms: i64, limit: usize) -> Result<Vec<TenantId>, StoreError> {
        self.run("due_analyses", |state| {
            let mut due: Vec<(i64, TenantId)> = state
                .analyses
                .iter()
                .filter(|(_, at)| **at < now_ms)
                .map(|(tenant, at)| (*at, tenant.clone()))
                .collect();
            due.sort();
            Ok(due
                .into_iter()
                .take(limit)
                .map(|(_, tenant)| tenant)
                .collect())
        })
    }

    async fn reschedule_analysis(
        &self,
        tenant: &TenantId,
        due_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.run("reschedule_analysis", |state| {
            state.analyses.insert(tenant.clone(), due_at_ms);
            Ok(())
        })
    }
}
