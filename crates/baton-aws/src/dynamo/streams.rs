//! Tasks' streams in the state table: one item per batch under the task's own partition
//! (`{tenant}#WF#{workflow}#STREAM#{task}`, outside the partition a workflow's view reads), its
//! sort key the first event's number, zero-padded, so batches read in order and two writers of
//! one number collide on one key.

use super::*;
use async_trait::async_trait;
use baton_chain::store::{StreamLog, MAX_BATCH_EVENTS};
use baton_types::ids::{TaskId, TenantId, WorkflowId};
use baton_types::stream::StreamEvent;

const EVENTS: &str = "events";
const LAST_SEQ: &str = "last_seq";

fn stream_pk(tenant: &TenantId, workflow_id: &WorkflowId, task_id: &TaskId) -> String {
    format!(
        "{}#STREAM#{task_id}",
        keys::workflow_pk(tenant.as_str(), workflow_id.as_str())
    )
}

fn seq_sk(seq: u64) -> String {
    format!("{seq:012}")
}

#[async_trait]
impl StreamLog for DynamoStore {
    async fn last_event(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<StreamEvent>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.state_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(stream_pk(tenant, workflow_id, task_id)))
            .projection_expression(EVENTS)
            .scan_index_forward(false)
            .limit(1)
            // The writer numbers on from it: it must see the last batch written.
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        let last = out.items.unwrap_or_default();
        let Some(item) = last.first() else {
            return Ok(None);
        };
        let events: Vec<StreamEvent> = Attrs(item).json(EVENTS)?.unwrap_or_default();
        Ok(events.into_iter().last())
    }

    async fn append_events(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        events: &[StreamEvent],
        expires_at_s: i64,
    ) -> Result<bool, StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(true);
        };
        if events.len() as u64 > MAX_BATCH_EVENTS {
            return Err(StoreError::Request(
                format!(
                    "a batch of {} events; at most {MAX_BATCH_EVENTS}",
                    events.len()
                )
                .into(),
            ));
        }
        let text = json_text(&events)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .item(PK, s(stream_pk(tenant, workflow_id, task_id)))
            .item(SK, s(seq_sk(first.seq)))
            .item(EVENTS, s(text.as_str()))
            .item(LAST_SEQ, n(last.seq))
            .item(EXPIRES_AT, n(expires_at_s))
            .condition_expression("attribute_not_exists(pk)");
        // Refused: ours, its response lost, or another writer's (nothing written).
        Ok(match conditional_put(put).await? {
            None => true,
            Some(found) => Attrs(&found).opt_s(EVENTS) == Some(text.as_str()),
        })
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        // The batch holding `after + 1` starts at most MAX_BATCH_EVENTS - 1 before it.
        let from = seq_sk(after.saturating_sub(MAX_BATCH_EVENTS));
        let mut found = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.state_table)
                .key_condition_expression("pk = :pk AND sk > :from")
                .expression_attribute_values(":pk", s(stream_pk(tenant, workflow_id, task_id)))
                .expression_attribute_values(":from", s(from.as_str()))
                .projection_expression(EVENTS)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                let events: Vec<StreamEvent> = Attrs(&item).json(EVENTS)?.unwrap_or_default();
                found.extend(events.into_iter().filter(|e| e.seq > after));
            }
            start_key = out.last_evaluated_key;
            if start_key.is_none() || found.len() >= limit {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }
}
