//! Reading streams, for the API's reads and the streaming endpoint alike.
//!
//! - A task's stream is its log ([`crate::stream`] writes it) closed by an `end` derived from
//!   the final task, numbered after its last event.
//! - A workflow's stream is its tasks' milestones ([`baton_types::progress`]), appended to the
//!   workflow's own log by whoever watches it: a watcher reads the log, then the workflow, and
//!   appends what is missing, each batch only where its first number is free. Two watchers
//!   that race number the same events once (the loser reads the winner's and looks again), so
//!   every reader sees one order. A workflow nobody watches costs nothing.

use std::collections::HashSet;

use baton_types::clock::now_ms;
use baton_types::ids::{TaskId, TenantId, WorkflowId};
use baton_types::progress;
use baton_types::records::TaskRecord;
use baton_types::results;
use baton_types::stream::{EventKind, StreamEvent, MAX_EVENTS_PER_READ};

use crate::store::{StoreError, StreamLog, WorkflowStore, MAX_BATCH_EVENTS};

/// What one read of a stream answers.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRead {
    /// The events after the one asked from, in order.
    pub events: Vec<StreamEvent>,
    /// The last event's number (or the one asked from, when none came).
    pub next_after: u64,
    /// The stream has ended: its `end` is in this read or an earlier one.
    pub done: bool,
}

/// How often a watcher that lost a race for a number reads again before it gives the turn
/// to the next read.
const MAX_APPEND_RACES: usize = 4;

/// A task's stream after `after` (None: no such task).
pub async fn task_stream<S>(
    store: &S,
    tenant: &TenantId,
    workflow_id: &WorkflowId,
    task_id: &TaskId,
    after: u64,
) -> Result<Option<StreamRead>, StoreError>
where
    S: WorkflowStore + StreamLog + ?Sized,
{
    // The task's state first: every event written before it was final is then in the log.
    let Some(record) = store.task(tenant, workflow_id, task_id).await? else {
        return Ok(None);
    };
    let mut events = store
        .events_after(tenant, workflow_id, task_id, after, MAX_EVENTS_PER_READ)
        .await?;
    let mut done = false;
    if record.status.is_terminal() && events.len() < MAX_EVENTS_PER_READ {
        let last = store
            .last_event(tenant, workflow_id, task_id)
            .await?
            .map_or(0, |e| e.seq);
        let end_seq = last + 1;
        let read_to = events.last().map_or(after, |e| e.seq);
        if after >= end_seq {
            done = true;
        } else if read_to == last {
            events.push(task_end(&record, end_seq));
            done = true;
        }
    }
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Some(StreamRead {
        events,
        next_after,
        done,
    }))
}

/// The `end` of a final task's stream.
fn task_end(record: &TaskRecord, seq: u64) -> StreamEvent {
    StreamEvent {
        seq,
        at_ms: record.finished_at_ms.unwrap_or_else(now_ms),
        attempt: record.attempt,
        kind: EventKind::End {
            status: record.status.to_string(),
            output_preview: record.output.as_ref().map(results::preview),
        },
    }
}

/// One watcher's knowledge of a workflow's log: the events' keys up to its last number.
#[derive(Debug, Default, Clone)]
pub struct WorkflowWatch {
    last_seq: u64,
    keys: HashSet<String>,
    /// The log holds the `end` of the workflow's current drive.
    ended: bool,
}

impl WorkflowWatch {
    /// Reads what the log holds past what this watch knows.
    async fn read_on<S>(
        &mut self,
        store: &S,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> Result<(), StoreError>
    where
        S: StreamLog + ?Sized,
    {
        let log = TaskId::workflow_stream();
        loop {
            let events = store
                .events_after(
                    tenant,
                    workflow_id,
                    &log,
                    self.last_seq,
                    MAX_EVENTS_PER_READ,
                )
                .await?;
            let full = events.len() == MAX_EVENTS_PER_READ;
            for event in events {
                self.last_seq = event.seq;
                self.ended = progress::is_end(&event);
                self.keys.extend(progress::key(&event));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Brings the workflow's log up to its tasks' records: false when there is no such
    /// workflow. The log's items expire at `expires_at_s`.
    pub async fn catch_up<S>(
        &mut self,
        store: &S,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        expires_at_s: i64,
    ) -> Result<bool, StoreError>
    where
        S: WorkflowStore + StreamLog + ?Sized,
    {
        let log = TaskId::workflow_stream();
        for _ in 0..MAX_APPEND_RACES {
            self.read_on(store, tenant, workflow_id).await?;
            let Some(view) = store.workflow(tenant, workflow_id).await? else {
                return Ok(false);
            };
            let missing = progress::unlogged(&view, &self.keys, self.last_seq, now_ms());
            if missing.is_empty() {
                return Ok(true);
            }
            let mut raced = false;
            for batch in missing.chunks(MAX_BATCH_EVENTS as usize) {
                let written = store
                    .append_events(tenant, workflow_id, &log, batch, expires_at_s)
                    .await?;
                if !written {
                    raced = true;
                    break;
                }
                for event in batch {
                    self.last_seq = event.seq;
                    self.ended = progress::is_end(event);
                    self.keys.extend(progress::key(event));
                }
            }
            if !raced {
                return Ok(true);
            }
        }
        // Others keep taking the numbers: what they wrote is read next time.
        Ok(true)
    }

    /// The last number of the workflow's log this watch has read.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the log this watch has read ends with the workflow's `end`.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// A workflow's stream after `after`, brought up to date first (None: no such workflow).
pub async fn workflow_stream<S>(
    store: &S,
    watch: &mut WorkflowWatch,
    tenant: &TenantId,
    workflow_id: &WorkflowId,
    after: u64,
    expires_at_s: i64,
) -> Result<Option<StreamRead>, StoreError>
where
    S: WorkflowStore + StreamLog + ?Sized,
{
    if !watch
        .catch_up(store, tenant, workflow_id, expires_at_s)
        .await?
    {
        return Ok(None);
    }
    let events = store
        .events_after(
            tenant,
            workflow_id,
            &TaskId::workflow_stream(),
            after,
            MAX_EVENTS_PER_READ,
        )
        .await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    let done = watch.ended() && next_after >= watch.last_seq;
    Ok(Some(StreamRead {
        events,
        next_after,
        done,
    }))
}
