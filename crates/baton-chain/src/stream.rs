//! One attempt's part of its task's stream (see [`baton_types::stream`]): the text an agent
//! streams, collected in batches and appended to the task's log, numbered on from its last
//! event. The first batch opens the attempt (closing one left open); writing never fails the
//! call: a batch that cannot be written is logged and the call goes on, and its text is still
//! in the answer.
//!
//! Before each batch the task is read again: once its workflow is paused or cancelled, the
//! stream stops (the invoker closes the agent's stream, and the attempt ends as stopped, for
//! the hold to settle), so no model writes on for nobody for longer than one batch.

use async_trait::async_trait;
use futures::lock::Mutex;

use baton_types::clock::now_ms;
use baton_types::messages::TaskRef;
use baton_types::stream::{opening, Batcher, EventKind, StreamEvent};

use crate::invoker::{StreamSink, StreamStopped};
use baton_types::control::Hold;

use crate::store::{StoreError, StreamLog, WorkflowStore};

/// The stream of one attempt of one task.
pub struct AttemptStream<'a, S: ?Sized> {
    store: &'a S,
    /// The task and the attempt that streams.
    task: TaskRef,
    agent: String,
    expires_at_s: i64,
    state: Mutex<Written>,
}

/// What the attempt has written: its events' next number once it has opened, and the text
/// waiting for its batch.
#[derive(Debug, Default)]
struct Written {
    next_seq: Option<u64>,
    batcher: Batcher,
    /// A batch could not be written: the rest of the attempt's text is not logged.
    broken: bool,
}

impl<S: ?Sized> std::fmt::Debug for AttemptStream<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptStream")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl<'a, S> AttemptStream<'a, S>
where
    S: StreamLog + WorkflowStore + ?Sized,
{
    /// The stream of `task`'s attempt, by `agent`; its events expire at `expires_at_s`.
    pub fn new(store: &'a S, task: TaskRef, agent: String, expires_at_s: i64) -> Self {
        AttemptStream {
            store,
            task,
            agent,
            expires_at_s,
            state: Mutex::new(Written::default()),
        }
    }

    /// Writes `text` as the attempt's next chunk, opening the attempt first if it has not.
    async fn write(&self, written: &mut Written, text: Option<String>) -> Result<(), StoreError> {
        let now = now_ms();
        let mut events = match written.next_seq {
            Some(_) => Vec::new(),
            None => {
                let last = self
                    .store
                    .last_event(
                        &self.task.tenant,
                        &self.task.workflow_id,
                        &self.task.task_id,
                    )
                    .await?;
                opening(last.as_ref(), self.task.attempt, &self.agent, now)
            }
        };
        let next = written
            .next_seq
            .unwrap_or_else(|| events.last().map_or(1, |e| e.seq + 1));
        if let Some(text) = text {
            events.push(StreamEvent {
                seq: next,
                at_ms: now,
                attempt: self.task.attempt,
                kind: EventKind::Chunk { text },
            });
        }
        let Some(last) = events.last() else {
            return Ok(());
        };
        let following = last.seq + 1;
        let appended = self
            .store
            .append_events(
                &self.task.tenant,
                &self.task.workflow_id,
                &self.task.task_id,
                &events,
                self.expires_at_s,
            )
            .await?;
        if appended {
            written.next_seq = Some(following);
        } else {
            // Another writer holds these numbers: a handler of this attempt that was thought
            // lost. Its stream stands; this one's text is still in the answer.
            tracing::warn!(task = %self.task.task_id, attempt = self.task.attempt, "another writer streams this task; the rest is not logged");
            written.broken = true;
        }
        Ok(())
    }

    /// The hold a pause or a cancel put on the task since the call began, if any.
    async fn held(&self) -> Result<Option<Hold>, StoreError> {
        let task = self
            .store
            .task(
                &self.task.tenant,
                &self.task.workflow_id,
                &self.task.task_id,
            )
            .await?;
        Ok(task.and_then(|t| t.hold))
    }

    async fn flush(
        &self,
        written: &mut Written,
        text: Option<String>,
    ) -> Result<(), StreamStopped> {
        match self.held().await {
            Ok(Some(hold)) => {
                return Err(StreamStopped {
                    reason: format!(
                        "the workflow was {}d while the agent streamed",
                        hold.as_str()
                    ),
                })
            }
            Ok(None) => {}
            // Not known: the stream goes on, and the next batch looks again.
            Err(error) => {
                tracing::warn!(%error, task = %self.task.task_id, "the task not read before a batch")
            }
        }
        if written.broken {
            return Ok(());
        }
        if let Err(error) = self.write(written, text).await {
            tracing::warn!(%error, task = %self.task.task_id, "a stream batch not written; the rest is not logged");
            written.broken = true;
        }
        Ok(())
    }
}

#[async_trait]
impl<S> StreamSink for AttemptStream<'_, S>
where
    S: StreamLog + WorkflowStore + ?Sized,
{
    async fn text(&self, text: &str) -> Result<(), StreamStopped> {
        let mut written = self.state.lock().await;
        let due = written.batcher.push(text, now_ms());
        // The attempt opens with its first text, so a client sees it start at once.
        if due.is_some() || written.next_seq.is_none() {
            let batch = due.or_else(|| written.batcher.take());
            self.flush(&mut written, batch).await?;
        }
        Ok(())
    }

    async fn tick(&self) -> Result<(), StreamStopped> {
        let mut written = self.state.lock().await;
        if let Some(batch) = written.batcher.due(now_ms()) {
            self.flush(&mut written, Some(batch)).await?;
        }
        Ok(())
    }

    async fn close(&self) {
        let mut written = self.state.lock().await;
        if written.broken {
            return;
        }
        // What the agent wrote before its stream ended or was stopped.
        if let Some(rest) = written.batcher.take() {
            if let Err(error) = self.write(&mut written, Some(rest)).await {
                tracing::warn!(%error, task = %self.task.task_id, "the last stream batch not written");
            }
        }
    }
}
