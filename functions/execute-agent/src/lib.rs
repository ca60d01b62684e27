//! execute-agent: runs one attempt of a task on its routed agent.
//!
//! The order is what makes duplicates and crashes safe:
//! 1. claim the attempt with a conditional write (one attempt, one lease);
//! 2. call the agent once, with the dependencies' outputs and an `Idempotency-Key`;
//! 3. record the output or the failure, conditioned on still holding the attempt;
//! 4. release the dependents that became ready, 5. finish the workflow if this was its last
//!    task (both in [`baton::completion`]), and 6. send the outcome to the learner.
//!
//! A redelivered message whose attempt already ended resumes at step 4: every later step is
//! conditional or idempotent, so nothing happens twice. A handler that dies while holding a
//! lease leaves the task to cleanup, which hands it back to routing with a new attempt.

use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton::batch::process_sqs_batch;
use baton::clock::now_ms;
use baton::completion::{complete_task, finish_at, ChainError};
use baton::config::Settings;
use baton::domain::task::{FailureKind, TaskFailure, TaskStatus};
use baton::invoker::{AgentCall, AgentInvoker};
use baton::messages::{ExecuteMessage, OutcomeMessage, FORMAT_VERSION};
use baton::queue::TaskQueue;
use baton::store::agent_cache::AgentCache;
use baton::store::{AgentRegistry, ClaimOutcome, Recorded, TaskRecord, TaskResult, WorkflowStore};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Map;
use tracing::Instrument;

/// Time a lease grants beyond the agent's own timeout, for recording the result.
pub const LEASE_MARGIN_MS: i64 = 30_000;

pub struct ExecuteDeps<S, Q, I> {
    pub store: S,
    pub queue: Q,
    pub invoker: I,
    pub settings: Settings,
    pub agents: AgentCache,
}

impl<S, Q, I> ExecuteDeps<S, Q, I> {
    pub fn new(store: S, queue: Q, invoker: I, settings: Settings) -> Self {
        ExecuteDeps {
            store,
            queue,
            invoker,
            settings,
            agents: AgentCache::default(),
        }
    }
}

pub async fn handle_batch<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error>
where
    S: WorkflowStore + AgentRegistry,
    Q: TaskQueue,
    I: AgentInvoker,
{
    Ok(process_sqs_batch(event.payload, |message: ExecuteMessage| {
        execute(deps, message)
    })
    .await)
}

async fn execute<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    message: ExecuteMessage,
) -> Result<(), ChainError>
where
    S: WorkflowStore + AgentRegistry,
    Q: TaskQueue,
    I: AgentInvoker,
{
    let task = &message.task;
    let agent_name = &message.route.primary;
    let span = task.span("execute");
    span.record("agent", agent_name.as_str());
    async {
        let agent = deps.agents.agent(&deps.store, &task.tenant, agent_name).await?;
        let timeout_ms = agent.as_ref().map_or(0, |a| a.timeout_ms as i64);
        let now = now_ms();
        let claimed = match deps
            .store
            .claim_task(task, agent_name, now + timeout_ms + LEASE_MARGIN_MS, now)
            .await?
        {
            ClaimOutcome::Claimed(record) => record,
            ClaimOutcome::AlreadyFinished(record) => {
                tracing::info!("duplicate delivery of a finished attempt; resuming its follow-up");
                return follow_up(deps, &record).await;
            }
            ClaimOutcome::NotClaimable(record) => {
                tracing::info!(
                    status = %record.status,
                    current_attempt = record.attempt,
                    "attempt is held elsewhere or superseded; acknowledged"
                );
                return Ok(());
            }
            ClaimOutcome::Missing => {
                tracing::warn!("task does not exist; acknowledged");
                return Ok(());
            }
        };

        let result = match &agent {
            None => TaskResult::Failed(TaskFailure::new(
                FailureKind::AgentNotFound,
                format!("agent `{agent_name}` is no longer registered"),
            )),
            Some(agent) => {
                let outputs = deps
                    .store
                    .task_outputs(&task.tenant, &task.workflow_id, &claimed.depends_on)
                    .await?;
                let call = AgentCall {
                    task,
                    workflow_id: &task.workflow_id,
                    task_id: &task.task_id,
                    attempt: task.attempt,
                    capability: &claimed.capability,
                    input: &claimed.input,
                    dependencies: outputs.into_iter().collect::<Map<_, _>>(),
                };
                let started = Instant::now();
                let result = deps.invoker.invoke(agent, &call).await;
                let latency_ms = started.elapsed().as_millis() as u64;
                match result {
                    Ok(output) => {
                        tracing::info!(latency_ms, "agent succeeded");
                        TaskResult::Succeeded(output)
                    }
                    Err(failure) => {
                        // The message may quote the agent's answer: it is stored, not logged.
                        tracing::warn!(latency_ms, kind = ?failure.kind, http_status = ?failure.http_status, "agent failed");
                        TaskResult::Failed(failure)
                    }
                }
            }
        };

        let finish = finish_at(&deps.settings, now_ms());
        match deps.store.record_result(task, TaskStatus::Running, &result, finish).await? {
            Recorded::Now(record) | Recorded::Earlier(record) => follow_up(deps, &record).await,
            Recorded::Superseded => {
                tracing::warn!("lease lost before the result was recorded; a newer attempt owns the task");
                Ok(())
            }
        }
    }
    .instrument(span)
    .await
}

/// Steps 4 to 6, from the recorded task: the same whether this delivery ran the attempt or
/// found it already finished.
async fn follow_up<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    record: &TaskRecord,
) -> Result<(), ChainError>
where
    S: WorkflowStore + AgentRegistry,
    Q: TaskQueue,
    I: AgentInvoker,
{
    let task = record.task_ref();
    let finished_at = record.finished_at_ms.unwrap_or_else(now_ms);
    complete_task(
        &deps.store,
        &deps.queue,
        &deps.settings,
        &task,
        &record.dependents,
        record.failure.as_ref(),
        finished_at,
    )
    .await?;
    // Failures that say nothing about the agent's own behaviour are not learned from.
    let says_something_about_agent = record.failure.as_ref().is_none_or(|f| {
        !matches!(
            f.kind,
            FailureKind::AgentNotFound | FailureKind::LeaseExpired | FailureKind::NoCapableAgent
        )
    });
    if let (Some(agent), true) = (&record.agent, says_something_about_agent) {
        let latency_ms = record
            .started_at_ms
            .map_or(0, |started| (finished_at - started).max(0) as u64);
        deps.queue
            .send_outcome(&OutcomeMessage {
                v: FORMAT_VERSION,
                task,
                agent: agent.clone(),
                task_type: record.capability.clone(),
                success: record.status == TaskStatus::Succeeded,
                latency_ms,
                failure: record.failure.as_ref().map(|f| f.kind),
                finished_at_ms: finished_at,
            })
            .await?;
    }
    Ok(())
}
