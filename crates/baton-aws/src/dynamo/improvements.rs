//! Suggestions in the memory table: one item each under `{tenant}#IMPROVEMENTS`, the record
//! whole as JSON beside its `version`. A create is conditioned on the id being free, an
//! update on the version it read; a write that meets its own earlier effect (the SDK resent
//! a request whose response was lost) is recognised by the record it finds.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

use super::*;
use baton_chain::store::ImprovementStore;
use baton_types::ids::TenantId;
use baton_types::suggestions::{StoredSuggestion, MAX_KEPT};

const RECORD: &str = "record";
const VERSION: &str = "version";

fn suggestions_pk(tenant: &TenantId) -> String {
    format!("{tenant}#IMPROVEMENTS")
}

impl DynamoStore {
    /// Puts the suggestion under `condition`; true if written now or by this same write before.
    async fn put_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
        condition: &str,
        previous: Option<u64>,
    ) -> Result<bool, StoreError> {
        let record = json_text(suggestion)?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.memory_table)
            .item(PK, s(suggestions_pk(tenant)))
            .item(SK, s(suggestion.id.as_str()))
            .item(RECORD, s(record.as_str()))
            .item(VERSION, n(suggestion.version))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(previous) = previous {
            request = request.expression_attribute_values(":previous", n(previous));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(err))
                if err.err().is_conditional_check_failed_exception() =>
            {
                let existing = match err.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                Ok(
                    existing
                        .is_some_and(|item| Attrs(&item).opt_s(RECORD) == Some(record.as_str())),
                )
            }
            Err(e) => Err(dynamo_error(e)),
        }
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
        self.put_suggestion(tenant, suggestion, "attribute_not_exists(pk)", None)
            .await
    }

    async fn update_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError> {
        let previous = suggestion.version.saturating_sub(1);
        self.put_suggestion(tenant, suggestion, "version = :previous", Some(previous))
            .await
    }
}
