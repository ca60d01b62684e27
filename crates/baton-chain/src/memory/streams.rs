//! Tasks' streams in memory: batches keyed by their first event's number, as the adapter
//! keys its items, so two writers of one number collide the same way.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{StoreError, StreamLog, StreamSlots, MAX_BATCH_EVENTS};
use baton_types::ids::{TaskId, TenantId, WorkflowId};
use baton_types::stream::StreamEvent;

#[async_trait]
impl StreamLog for MemoryStore {
    async fn last_event(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<StreamEvent>, StoreError> {
        let key = (tenant.clone(), workflow_id.clone(), task_id.clone());
        self.run("last_event", |state| {
            Ok(state
                .streams
                .get(&key)
                .and_then(|batches| batches.values().next_back())
                .and_then(|events| events.last())
                .cloned())
        })
    }

    async fn append_events(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        events: &[StreamEvent],
        _expires_at_s: i64,
    ) -> Result<bool, StoreError> {
        let Some(first) = events.first() else {
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
        let key = (tenant.clone(), workflow_id.clone(), task_id.clone());
        self.run("append_events", |state| {
            let batches = state.streams.entry(key.clone()).or_default();
            match batches.get(&first.seq) {
                Some(kept) => Ok(kept.as_slice() == events),
                None => {
                    batches.insert(first.seq, events.to_vec());
                    Ok(true)
                }
            }
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
        let key = (tenant.clone(), workflow_id.clone(), task_id.clone());
        self.run("events_after", |state| {
            let from = after.saturating_sub(MAX_BATCH_EVENTS);
            Ok(state
                .streams
                .get(&key)
                .into_iter()
                .flat_map(|batches| batches.range(from..))
                .flat_map(|(_, events)| events)
                .filter(|e| e.seq > after)
                .take(limit)
                .cloned()
                .collect())
        })
    }
}

#[async_trait]
impl StreamSlots for MemoryStore {
    async fn take_stream_slot(
        &self,
        tenant: &TenantId,
        id: &str,
        limit: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run("take_stream_slot", |state| {
            let open = state.stream_slots.entry(tenant.clone()).or_default();
            match baton_types::stream_token::take_slot(open, id, limit, now_ms, until_ms) {
                Some(taken) => {
                    *open = taken;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    async fn free_stream_slot(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        self.run("free_stream_slot", |state| {
            if let Some(open) = state.stream_slots.get_mut(tenant) {
                open.remove(id);
            }
            Ok(())
        })
    }
}
