//! Suggestions, patterns and contexts in the memory table: one item each under `{tenant}#IMPROVEMENTS`, the record
//! whole as JSON beside its `version`. A create is conditioned on the id being free, an
//! update on the version it read; a write that meets its own earlier effect (the SDK resent
//! a request whose response was lost) is recognised by the record it finds.

use async_trait::async_trait;

use super::*;
use baton_chain::store::{AnalysisSchedule, ContextStore, ImprovementStore, PatternStore};
use baton_types::contexts::StoredContext;
use baton_types::ids::TenantId;
use baton_types::patterns::{Pattern, MAX_HISTORY};
use baton_types::suggestions::{StoredSuggestion, MAX_KEPT};

const RECORD: &str = "record";
const VERSION: &str = "version";
/// How long a suggestion is kept after its last change.
const SUGGESTION_LIFETIME_S: i64 = 182 * 86_400;
/// How long a pattern is kept after it began.
const PATTERN_LIFETIME_S: i64 = 365 * 86_400;

fn suggestions_pk(tenant: &TenantId) -> String {
    format!("{tenant}#IMPROVEMENTS")
}

/// A record's key in the memory table, its JSON and its version.
struct Versioned {
    pk: String,
    sk: String,
    record: String,
    version: u64,
    /// The version it replaces; None: it is new, and no record may be there.
    previous: Option<u64>,
    /// When DynamoDB's TTL may delete it (epoch s).
    expires_at_s: Option<i64>,
}

impl DynamoStore {
    /// Puts a versioned record: a new one only where none is, a later one only over the
    /// version it replaces. True if written now, or by this same write before (the SDK resent a
    /// request whose response was lost: the record found is this one).
    async fn put_versioned(&self, versioned: Versioned) -> Result<bool, StoreError> {
        let Versioned {
            pk,
            sk,
            record,
            version,
            previous,
            expires_at_s,
        } = versioned;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.memory_table)
            .item(PK, s(pk))
            .item(SK, s(sk))
            .item(RECORD, s(record.as_str()))
            .item(VERSION, n(version));
        if let Some(at) = expires_at_s {
            request = request.item(EXPIRES_AT, n(at));
        }
        request = match previous {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(previous) => request
                .condition_expression("version = :previous")
                .expression_attribute_values(":previous", n(previous)),
        };
        // Refused: by this same write before (the record found is this one), or another's.
        Ok(match conditional_put(request).await? {
            None => true,
            Some(found) => Attrs(&found).opt_s(RECORD) == Some(record.as_str()),
        })
    }

    async fn put_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
        previous: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.put_versioned(Versioned {
            pk: suggestions_pk(tenant),
            sk: suggestion.id.clone(),
            record: json_text(suggestion)?,
            version: suggestion.version,
            previous,
            // Kept half a year after its last change.
            expires_at_s: Some(suggestion.updated_at_ms / 1000 + SUGGESTION_LIFETIME_S),
        })
        .await
    }
}

#[async_trait]
impl ImprovementStore for DynamoStore {
    async fn suggestions(&self, tenant: &TenantId) -> Result<Vec<StoredSuggestion>, StoreError> {
        let mut kept = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.memory_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(suggestions_pk(tenant)))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                match Attrs(&item).json::<StoredSuggestion>(RECORD) {
                    Ok(Some(suggestion)) => kept.push(suggestion),
                    Ok(None) | Err(_) => tracing::warn!("an unreadable suggestion; skipped"),
                }
            }
            start_key = out.last_evaluated_key;
            if start_key.is_none() || kept.len() >= MAX_KEPT * 2 {
                break;
            }
        }
        kept.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
        kept.truncate(MAX_KEPT);
        Ok(kept)
    }

    async fn create_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError> {
        self.put_suggestion(tenant, suggestion, None).await
    }

    async fn update_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError> {
        let previous = suggestion.version.saturating_sub(1);
        self.put_suggestion(tenant, suggestion, Some(previous))
            .await
    }
}

fn patterns_pk(tenant: &TenantId, task_type: &str) -> String {
    format!("{tenant}#PATTERNS#{task_type}")
}

/// A pattern's sort key: its kind, subject and start; the same pattern is the same item.
fn pattern_sk(pattern: &Pattern) -> String {
    format!(
        "{}#{}#{}",
        pattern.kind.as_str(),
        pattern.subject,
        keys::result_time(pattern.valid_from_ms)
    )
}

#[async_trait]
impl PatternStore for DynamoStore {
    async fn patterns(
        &self,
        tenant: &TenantId,
        task_type: &str,
    ) -> Result<Vec<Pattern>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.memory_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(patterns_pk(tenant, task_type)))
            .send()
            .await
            .map_err(dynamo_error)?;
        let mut patterns: Vec<Pattern> = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                let mut pattern: Pattern = Attrs(item).json(RECORD).ok().flatten()?;
                pattern.valid_to_ms = Attrs(item).opt_n("valid_to").ok().flatten();
                Some(pattern)
            })
            .collect();
        patterns.sort_by_key(|p| std::cmp::Reverse(p.valid_from_ms));
        patterns.truncate(MAX_HISTORY);
        Ok(patterns)
    }

    async fn open_pattern(
        &self,
        tenant: &TenantId,
        task_type: &str,
        pattern: &Pattern,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.memory_table)
            .item(PK, s(patterns_pk(tenant, task_type)))
            .item(SK, s(pattern_sk(pattern)))
            .item(RECORD, s(json_text(pattern)?))
            // Long-term, yet bounded: a pattern goes a year after it began.
            .item(
                EXPIRES_AT,
                n(pattern.valid_from_ms / 1000 + PATTERN_LIFETIME_S),
            )
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Opened before: by this write whose response was lost, or a concurrent analysis.
            Err(SdkError::ServiceError(err))
                if err.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo_error(e)),
        }
    }

    async fn close_pattern(
        &self,
        tenant: &TenantId,
        task_type: &str,
        pattern: &Pattern,
    ) -> Result<(), StoreError> {
        let Some(valid_to) = pattern.valid_to_ms else {
            return Ok(());
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.memory_table)
            .key(PK, s(patterns_pk(tenant, task_type)))
            .key(SK, s(pattern_sk(pattern)))
            .update_expression("SET valid_to = :to")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(valid_to)")
            .expression_attribute_values(":to", n(valid_to))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Closed before, or gone: what it says stands.
            Err(SdkError::ServiceError(err))
                if err.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo_error(e)),
        }
    }
}

fn contexts_pk(tenant: &TenantId) -> String {
    format!("{tenant}#CONTEXTS")
}

#[async_trait]
impl ContextStore for DynamoStore {
    async fn context(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredContext>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.memory_table)
            .key(PK, s(contexts_pk(tenant)))
            .key(SK, s(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item
            .map(|item| {
                Attrs(&item)
                    .json::<StoredContext>(RECORD)?
                    .ok_or_else(|| StoreError::Corrupt(format!("context `{name}` has no record")))
            })
            .transpose()
    }

    async fn write_context(
        &self,
        tenant: &TenantId,
        context: &StoredContext,
    ) -> Result<bool, StoreError> {
        self.put_versioned(Versioned {
            pk: contexts_pk(tenant),
            sk: context.name.clone(),
            record: json_text(context)?,
            version: context.version,
            previous: (context.version > 1).then(|| context.version - 1),
            // DynamoDB's TTL deletes it some time after; reads treat it as gone at once.
            expires_at_s: context.expires_at_ms.map(|at| at / 1000 + 1),
        })
        .await
    }

    async fn delete_context(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.memory_table)
            .key(PK, s(contexts_pk(tenant)))
            .key(SK, s(name))
            .condition_expression("version = :version")
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(err))
                if err.err().is_conditional_check_failed_exception() =>
            {
                Ok(false)
            }
            Err(e) => Err(dynamo_error(e)),
        }
    }
}

impl DynamoStore {
    fn analysis_put(
        &self,
        tenant: &TenantId,
        due_at_ms: i64,
    ) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.state_table)
            .item(PK, s(keys::config_pk(tenant)))
            .item(SK, s(keys::ANALYSIS_SK))
            .item(keys::SWEEP_SHARD, s(keys::ANALYSIS_SWEEP))
            .item(keys::SWEEP_AT, n(due_at_ms))
    }
}

#[async_trait]
impl AnalysisSchedule for DynamoStore {
    async fn schedule_analysis(&self, tenant: &TenantId, due_at_ms: i64) -> Result<(), StoreError> {
        let result = self
            .analysis_put(tenant, due_at_ms)
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Marked already: it keeps its time.
            Err(SdkError::ServiceError(err))
                if err.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo_error(e)),
        }
    }

    async fn due_analyses(&self, now_ms: i64, limit: usize) -> Result<Vec<TenantId>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX).max(1);
        let due = self
            .due_in_sweeps(keys::ANALYSIS_SWEEP.to_string(), now_ms, limit)
            .await?;
        Ok(due
            .iter()
            .filter_map(|item| keys::parse_config_pk(Attrs(item).opt_s(PK)?))
            .filter_map(|tenant| stored_tenant(tenant).ok())
            .collect())
    }

    async fn reschedule_analysis(
        &self,
        tenant: &TenantId,
        due_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.analysis_put(tenant, due_at_ms)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }
}
