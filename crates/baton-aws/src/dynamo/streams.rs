//! Tasks' streams in the state table: one item per batch under the task's own partition
//! (`{tenant}#WF#{workflow}#STREAM#{task}`, outside the partition a workflow's view reads), its
//! sort key the first event's number, zero-padded, so batches read in order and two writers of
//! one number collide on one key.
//!
//! A tenant's open streams are one item in its config partition (`STREAM_SLOTS`): the open
//! streams and when each lapses, as JSON, rewritten under its version.

use super::*;
use async_trait::async_trait;
use std::collections::BTreeMap;

use baton_chain::store::{StreamLog, StreamSlots, MAX_BATCH_EVENTS};
use baton_types::ids::{TaskId, TenantId, WorkflowId};
use baton_types::stream::StreamEvent;
use baton_types::stream_token::take_slot;

const EVENTS: &str = "events";
const LAST_SEQ: &str = "last_seq";
const SLOTS_SK: &str = "STREAM_SLOTS";
const OPEN: &str = "open";
const VERSION: &str = "version";
/// Rounds of read and conditional write before a slot is given up as contended.
const MAX_SLOT_ROUNDS: usize = 8;

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

impl DynamoStore {
    /// The tenant's open streams and their item's version (None: no item yet).
    async fn stream_slots(
        &self,
        pk: &str,
    ) -> Result<(BTreeMap<String, i64>, Option<u64>), StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(pk))
            .key(SK, s(SLOTS_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?
            .item;
        Ok(match &found {
            Some(item) => (
                Attrs(item).json(OPEN)?.unwrap_or_default(),
                Attrs(item).opt_n(VERSION)?,
            ),
            None => (BTreeMap::new(), None),
        })
    }

    /// Writes `open` over the version read; false when another open or close came first.
    async fn put_stream_slots(
        &self,
        pk: &str,
        open: &BTreeMap<String, i64>,
        version: Option<u64>,
    ) -> Result<bool, StoreError> {
        let text = json_text(open)?;
        // The item goes once its last slot has lapsed.
        let lapses_s = open.values().max().copied().unwrap_or(0) / 1000 + 60;
        let put = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .item(PK, s(pk))
            .item(SK, s(SLOTS_SK))
            .item(OPEN, s(text.as_str()))
            .item(VERSION, n(version.unwrap_or(0) + 1))
            .item(EXPIRES_AT, n(lapses_s));
        let put = match version {
            Some(version) => put
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":version", n(version)),
            None => put.condition_expression("attribute_not_exists(pk)"),
        };
        Ok(match conditional_put(put).await? {
            None => true,
            // Ours, its response lost.
            Some(found) => Attrs(&found).opt_s(OPEN) == Some(text.as_str()),
        })
    }
}

#[async_trait]
impl StreamSlots for DynamoStore {
    async fn take_stream_slot(
        &self,
        tenant: &TenantId,
        id: &str,
        limit: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let pk = keys::config_pk(tenant.as_str());
        for _ in 0..MAX_SLOT_ROUNDS {
            let (open, version) = self.stream_slots(&pk).await?;
            let Some(taken) = take_slot(&open, id, limit, now_ms, until_ms) else {
                return Ok(false);
            };
            if self.put_stream_slots(&pk, &taken, version).await? {
                return Ok(true);
            }
        }
        Err(StoreError::Busy(format!(
            "tenant {tenant}'s stream slots kept changing"
        )))
    }

    async fn free_stream_slot(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        let pk = keys::config_pk(tenant.as_str());
        for _ in 0..MAX_SLOT_ROUNDS {
            let (mut open, version) = self.stream_slots(&pk).await?;
            if open.remove(id).is_none() || self.put_stream_slots(&pk, &open, version).await? {
                return Ok(());
            }
        }
        // Others kept changing the slots: this one lapses by itself.
        Ok(())
    }
}
