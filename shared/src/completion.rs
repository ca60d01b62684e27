//! What follows the end of a task attempt, whoever ended it (execute-agent after calling the
//! agent, route when no agent can take the task, cleanup when leases ran out):
//! - a retryable failure with attempts left queues the next attempt and sends it to routing
//!   as a delayed message;
//! - a final end counts the task on its workflow, releases or skips its dependents, and
//!   finishes the workflow once every task has ended.
//!
//! Every step is a conditional write, so a redelivered message, or the scheduled repair that
//! trusts no message, can run this again from the start: only the steps that did not happen
//! yet take effect.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::config::Settings;
use crate::domain::retry::RetryPolicy;
use crate::domain::task::{
    AttemptOutcome, AttemptRecord, FailureKind, TaskFailure, TaskStatus, TokenUsage,
};
use crate::messages::{RouteMessage, TaskRef};
use crate::payload::MAX_PAYLOAD_BYTES;
use crate::queue::{QueueError, TaskQueue};
use crate::store::{
    AttemptEnd, AttemptHolder, ChainStore, Ended, Finish, Release, StoreError, TaskRecord,
    WorkflowProgress, WorkflowStore, WorkflowView,
};

/// The errors of the chain's handlers: a step's store or queue request failed. SQS delivers
/// the message again and the handler resumes where the conditions say it stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A step ran out of the time it is given; every step being conditional, it resumes later.
    #[error("{0} ran out of its time budget; it resumes later")]
    OutOfTime(&'static str),
}

/// The size of a value as stored JSON.
pub fn stored_bytes(value: &Value) -> usize {
    serde_json::to_string(value).map_or(usize::MAX, |text| text.len())
}

fn output_too_large(bytes: usize) -> TaskFailure {
    TaskFailure::new(
        FailureKind::OutputTooLarge,
        format!(
            "the output is {bytes} bytes as stored JSON; a task's output may be at most \
             {MAX_PAYLOAD_BYTES} bytes"
        ),
    )
}

/// How many dependents are released at once.
const RELEASE_CONCURRENCY: usize = 16;

/// The timestamps of a terminal write at `now_ms` under the configured retention.
pub fn finish_at(settings: &Settings, now_ms: i64) -> Finish {
    Finish {
        now_ms,
        expires_at_s: now_ms / 1000 + settings.retention.as_secs() as i64,
    }
}

/// A uniform draw in [0, 1) for backoff jitter.
pub fn jitter_fraction() -> f64 {
    // A v4 UUID's low 56 bits are random (its version and variant bits sit higher).
    const BITS: u32 = 53;
    let random = uuid::Uuid::new_v4().as_u128() as u64 & ((1 << BITS) - 1);
    random as f64 / (1u64 << BITS) as f64
}

/// Who ran an attempt: what its record keeps besides the result.
#[derive(Debug, Clone, Default)]
pub struct AttemptRun {
    pub agent: Option<String>,
    pub started_at_ms: Option<i64>,
    pub claims: u32,
    /// How long the agent call took, when one was made.
    pub call_ms: Option<u64>,
    /// The tokens the call used, when the agent reported them.
    pub usage: Option<TokenUsage>,
}

/// What ending an attempt came to.
#[derive(Debug, Clone)]
pub enum Concluded {
    /// The task ended (now, or before this delivery): its follow-up has run.
    Final(TaskRecord),
    /// Another attempt follows (queued now, or before): it was sent to routing.
    Retrying(TaskRecord),
    /// The attempt was no longer this holder's to end: nothing was written.
    Superseded,
}

impl Concluded {
    /// The record of the attempt that ended, if this holder's end (or an earlier one) stands.
    pub fn ended_attempt(&self, attempt: u32) -> Option<&AttemptRecord> {
        match self {
            Concluded::Final(r) | Concluded::Retrying(r) => {
                r.attempts.iter().rev().find(|a| a.attempt == attempt)
            }
            Concluded::Superseded => None,
        }
    }
}

/// Everything needed to end one attempt.
pub struct AttemptConclusion<'a> {
    pub task: &'a TaskRef,
    pub capability: &'a str,
    pub holder: AttemptHolder<'a>,
    pub result: Result<Value, TaskFailure>,
    pub run: AttemptRun,
    pub policy: RetryPolicy,
    /// Agents the next attempt should try first, if there is one.
    pub prefer: Vec<String>,
    /// Attempts before the workflow's last redrive (the task profile's `prior_attempts`).
    pub prior_attempts: u32,
    pub now_ms: i64,
}

impl<'a> AttemptConclusion<'a> {
    /// A queued attempt that ends without calling an agent (no agent could take it, or its
    /// deadline passed first).
    pub fn queued_failure(
        task: &'a TaskRef,
        capability: &'a str,
        failure: TaskFailure,
        policy: RetryPolicy,
        prefer: Vec<String>,
        prior_attempts: u32,
        now_ms: i64,
    ) -> Self {
        AttemptConclusion {
            task,
            capability,
            holder: AttemptHolder::Queued,
            result: Err(failure),
            run: AttemptRun::default(),
            policy,
            prefer,
            prior_attempts,
            now_ms,
        }
    }
}

/// Ends an attempt: records it, and then either runs the task's follow-up (a final end) or
/// sends the next attempt to routing after its backoff (a retry).
pub async fn conclude_attempt<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    conclusion: AttemptConclusion<'_>,
) -> Result<Concluded, ChainError>
where
    S: ChainStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let AttemptConclusion {
        task,
        capability,
        holder,
        result,
        run,
        policy,
        prefer,
        prior_attempts,
        now_ms,
    } = conclusion;
    let drive_attempt = task.attempt.saturating_sub(prior_attempts).max(1);
    // An output is kept as stored JSON, which can be larger than the answer was (`1e15` is
    // stored as `1000000000000000.0`): past the limit the task fails at once, never retried.
    let result = result.and_then(|output| match stored_bytes(&output) {
        bytes if bytes > MAX_PAYLOAD_BYTES => Err(output_too_large(bytes)),
        _ => Ok(output),
    });
    let mut entry = AttemptRecord {
        attempt: task.attempt,
        agent: run.agent,
        started_at_ms: run.started_at_ms,
        finished_at_ms: now_ms,
        outcome: AttemptOutcome::Succeeded,
        error: None,
        claims: run.claims,
        retry_delay_ms: None,
        call_ms: run.call_ms,
        usage: run.usage,
        late: false,
    };
    let mut end = match result {
        Ok(output) => AttemptEnd::Succeeded(output),
        Err(failure) => {
            entry.outcome = AttemptOutcome::Failed;
            let retry = (failure.retryable && policy.allows_retry_after(drive_attempt))
                .then(|| policy.delay_ms(drive_attempt, failure.retry_after_ms, jitter_fraction()));
            entry.error = Some(failure.clone());
            match retry {
                Some(delay_ms) => {
                    entry.retry_delay_ms = Some(delay_ms);
                    let not_before_ms = now_ms + delay_ms as i64;
                    AttemptEnd::Retry {
                        not_before_ms,
                        lease_until_ms: not_before_ms + dispatch_timeout_ms(settings),
                    }
                }
                None => AttemptEnd::Failed(failure),
            }
        }
    };
    let finish = finish_at(settings, now_ms);
    let ended = match store.end_attempt(task, holder, &end, &entry, finish).await {
        // The item refused the output (no bucket to take it, or an item over its budget):
        // the attempt fails for good rather than being written again and again.
        Err(StoreError::TooLarge(why)) if matches!(end, AttemptEnd::Succeeded(_)) => {
            tracing::warn!(%why, "the output does not fit its item; the task fails");
            let failure = TaskFailure::new(
                FailureKind::OutputTooLarge,
                format!("the output does not fit the task's record: {why}"),
            );
            entry.outcome = AttemptOutcome::Failed;
            entry.error = Some(failure.clone());
            // What was ended is the failure, for the metrics too.
            end = AttemptEnd::Failed(failure);
            store
                .end_attempt(task, holder, &end, &entry, finish)
                .await?
        }
        other => other?,
    };
    let record = match ended {
        Ended::Now(record) => {
            crate::metrics::attempt_ended(&end);
            record
        }
        Ended::Before(record) => record,
        Ended::Superseded => return Ok(Concluded::Superseded),
    };
    if record.status.is_terminal() {
        complete_task(store, queue, settings, &record, now_ms).await?;
        return Ok(Concluded::Final(record));
    }
    // The workflow was paused or cancelled while the attempt ran: no retry may run now.
    if let Some(hold) = record.hold {
        return Ok(
            match crate::control::honour_hold(store, queue, settings, &record, hold, now_ms).await?
            {
                Some(cancelled) => Concluded::Final(cancelled),
                None => Concluded::Retrying(record),
            },
        );
    }
    send_retry(queue, &record, task.attempt, capability, prefer, now_ms).await?;
    Ok(Concluded::Retrying(record))
}

/// Sends the attempt that follows `failed_attempt` to routing, after the delay its record
/// asked for. Sending it twice is harmless: the claim absorbs the duplicate.
/// Sends the task round again after a backoff because every agent that could take it is at
/// its limits. Waiting spends no attempt; the dispatch lease moves with the wait so that
/// cleanup does not take the task for lost. A copy that is no longer the task's newest send
/// is dropped.
pub async fn wait_for_capacity<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    message: &RouteMessage,
    now_ms: i64,
) -> Result<(), ChainError>
where
    S: WorkflowStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let wait_ms = capacity_backoff_ms(message.waits, &message.task.idempotency_key());
    let due = now_ms + wait_ms;
    let lease_until = due + settings.dispatch_timeout.as_millis() as i64;
    if !store
        .extend_dispatch(&message.task, message.dispatch, lease_until)
        .await?
    {
        tracing::info!("the attempt moved on or was sent again; this waiting copy is dropped");
        return Ok(());
    }
    let mut later = message.clone();
    later.waits = message.waits.saturating_add(1);
    later.not_before_ms = Some(due);
    tracing::info!(
        wait_ms,
        waits = later.waits,
        "agents at their limits; the task waits"
    );
    queue
        .send_route_after(&later, delay_until(due, now_ms))
        .await?;
    Ok(())
}

/// Exponential from 0.5–1 s up to 15–30 s, jittered by the task's key so that waiting tasks
/// come back spread out rather than together.
pub fn capacity_backoff_ms(waits: u32, key: &str) -> i64 {
    let ceiling = (1_000_i64 << waits.min(5)).min(30_000);
    let jitter = i64::from(crate::domain::routing::stable_shard(key, 1_000)) * ceiling / 2_000;
    ceiling / 2 + jitter
}

pub async fn send_retry<Q>(
    queue: &Q,
    record: &TaskRecord,
    failed_attempt: u32,
    capability: &str,
    prefer: Vec<String>,
    now_ms: i64,
) -> Result<(), QueueError>
where
    Q: TaskQueue + ?Sized,
{
    let ended = record
        .attempts
        .iter()
        .rev()
        .find(|a| a.attempt == failed_attempt);
    let not_before_ms = ended.map_or(now_ms, |a| {
        a.finished_at_ms + a.retry_delay_ms.unwrap_or(0) as i64
    });
    let mut message = RouteMessage::new(record.task_ref(), capability, record.profile.clone());
    message.prefer = prefer;
    message.not_before_ms = Some(not_before_ms);
    tracing::info!(
        next_attempt = record.attempt,
        delay_ms = (not_before_ms - now_ms).max(0),
        "attempt failed; retry scheduled"
    );
    queue
        .send_route_after(&message, delay_until(not_before_ms, now_ms))
        .await
}

/// The SQS delay of a message due at `due_ms`: SQS delays stop at 15 minutes, so a longer
/// wait is chained (route sends the message again until it is due).
pub fn delay_until(due_ms: i64, now_ms: i64) -> Duration {
    const SQS_MAX_DELAY_MS: i64 = 900_000;
    Duration::from_millis((due_ms - now_ms).clamp(0, SQS_MAX_DELAY_MS) as u64)
}

fn dispatch_timeout_ms(settings: &Settings) -> i64 {
    settings.dispatch_timeout.as_millis() as i64
}

/// Runs the steps after `record`'s task ended (succeeded, failed, skipped or cancelled):
/// count it on its workflow, release or skip its dependents, finish the workflow.
pub async fn complete_task<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    record: &TaskRecord,
    now_ms: i64,
) -> Result<WorkflowProgress, ChainError>
where
    S: ChainStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    // Before the task is counted: a count proves this step ran (the repair goes by counts).
    crate::conversation::on_task_ended(store, record, now_ms).await?;
    let finish = finish_at(settings, now_ms);
    let (tenant, workflow_id) = (&record.tenant, &record.workflow_id);
    let progress = count_task(
        store,
        tenant,
        workflow_id,
        &record.id,
        record.status == TaskStatus::Failed,
        finish,
    )
    .await?;
    if progress.cancelling {
        // The cancel cancels what has not started (`control::reconcile`); nothing is released.
        return Ok(progress);
    }
    if record.status != TaskStatus::Succeeded || progress.failing {
        // Nothing new starts in a workflow that will fail.
        skip_descendants(store, tenant, workflow_id, &record.dependents, finish).await?;
        return Ok(progress);
    }

    let dispatch_until = now_ms + dispatch_timeout_ms(settings);
    // Fan-out DAGs can have many dependents: release them a few at a time, not one by one.
    let mut ready = Vec::new();
    for chunk in record.dependents.chunks(RELEASE_CONCURRENCY) {
        let released = join_all(chunk.iter().map(|dependent| {
            store.release_dependent(tenant, workflow_id, dependent, &record.id, dispatch_until)
        }))
        .await;
        for (dependent, release) in chunk.iter().zip(released) {
            if let Release::Ready {
                attempt,
                capability,
                profile,
            } = release?
            {
                tracing::info!(dependent = %dependent, "dependent released");
                let task = TaskRef {
                    tenant: tenant.clone(),
                    workflow_id: workflow_id.clone(),
                    task_id: dependent.clone(),
                    attempt,
                };
                if let Some(turn) = profile.paced_until_ms.filter(|at| *at > now_ms) {
                    // Its turn at the tenant's pace comes after its release: the dispatch
                    // lease follows the turn, so the sweep does not take it for lost.
                    let until = turn + dispatch_timeout_ms(settings);
                    store.extend_dispatch(&task, 0, until).await?;
                }
                ready.push(RouteMessage::new(task, capability, profile));
            }
        }
    }
    queue.send_route(&ready).await?;
    Ok(progress)
}

/// Counts one ended task on its workflow, and finishes the workflow if it was the last.
async fn count_task<S>(
    store: &S,
    tenant: &str,
    workflow_id: &str,
    task_id: &str,
    failed: bool,
    finish: Finish,
) -> Result<WorkflowProgress, StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let progress = store
        .count_finished_task(tenant, workflow_id, task_id, failed, finish.now_ms)
        .await?;
    tracing::debug!(
        task = task_id,
        tasks_remaining = progress.tasks_remaining,
        failing = progress.failing,
        "task counted on its workflow"
    );
    if progress.tasks_remaining == 0
        && store
            .finish_workflow(tenant, workflow_id, progress.outcome(), finish)
            .await?
    {
        tracing::info!(
            workflow = %workflow_id,
            status = %progress.outcome(),
            "workflow finished"
        );
        crate::metrics::workflow_finished(workflow_id, progress.outcome(), finish.now_ms);
    }
    Ok(progress)
}

/// Marks every task downstream of `dependents` skipped, and counts each on the workflow. Each
/// task is visited once, whatever the number of paths that lead to it: the walk is linear in
/// the tasks and edges below (a chain of diamonds has twice as many paths per diamond).
async fn skip_descendants<S>(
    store: &S,
    tenant: &str,
    workflow_id: &str,
    dependents: &[String],
    finish: Finish,
) -> Result<(), StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let mut visited: std::collections::HashSet<String> = dependents.iter().cloned().collect();
    let mut frontier = dependents.to_vec();
    while let Some(task_id) = frontier.pop() {
        if let Some(next) = store
            .skip_task(tenant, workflow_id, &task_id, finish)
            .await?
        {
            count_task(store, tenant, workflow_id, &task_id, false, finish).await?;
            frontier.extend(next.into_iter().filter(|d| visited.insert(d.clone())));
        }
    }
    Ok(())
}

/// Whether an ended task's follow-up may not have run to its end, judged from what is
/// stored: the task is not counted on its workflow, or a dependent still waits on it.
pub fn follow_up_incomplete(view: &WorkflowView, task: &TaskRecord) -> bool {
    if !task.status.is_terminal() {
        return false;
    }
    // Waiting to be reset by a redrive cut short, not to be counted.
    if task.drive < view.workflow.drive && task.status != TaskStatus::Succeeded {
        return false;
    }
    if !view.workflow.tasks_done.contains(&task.id) {
        return true;
    }
    let releases = task.status == TaskStatus::Succeeded
        && !view.workflow.is_failing()
        && !view.workflow.is_cancelling();
    task.dependents.iter().any(|id| {
        view.tasks.iter().any(|d| {
            &d.id == id
                && d.status == TaskStatus::Waiting
                // A dependent must be skipped, or must have counted this task, and be queued
                // once every dependency has been counted.
                && (!releases || !d.deps_done.contains(&task.id) || d.deps_remaining == 0)
        })
    })
}

/// Finishes a workflow whose tasks have all been counted (its finishing write was lost).
pub async fn finish_if_done<S>(
    store: &S,
    settings: &Settings,
    view: &WorkflowView,
    now_ms: i64,
) -> Result<bool, StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let w = &view.workflow;
    if w.status.is_terminal() || w.tasks_remaining != 0 {
        return Ok(false);
    }
    let finished = store
        .finish_workflow(&w.tenant, &w.id, w.outcome(), finish_at(settings, now_ms))
        .await?;
    if finished {
        crate::metrics::workflow_finished(&w.id, w.outcome(), now_ms);
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::WorkflowStatus;

    /// An ended task (finished at 0) with these dependents, from the graph tests' fixture.
    fn task(id: &str, status: TaskStatus, dependents: &[&str]) -> TaskRecord {
        TaskRecord {
            dependents: dependents.iter().map(|d| d.to_string()).collect(),
            finished_at_ms: Some(0),
            ..crate::graph::tests::task(id, &[], status, None)
        }
    }

    /// A running workflow that counted `done` and maybe failed.
    fn view(tasks: Vec<TaskRecord>, done: &[&str], failed_task: Option<&str>) -> WorkflowView {
        let mut view = crate::graph::tests::view(tasks);
        let w = &mut view.workflow;
        w.status = WorkflowStatus::Running;
        w.tasks_remaining = w.task_count - done.len() as u32;
        w.tasks_done = done.iter().map(|d| d.to_string()).collect();
        w.failed_task = failed_task.map(str::to_string);
        w.finished_at_ms = None;
        view
    }

    #[test]
    fn an_uncounted_ended_task_needs_its_follow_up() {
        let v = view(vec![task("a", TaskStatus::Succeeded, &[])], &[], None);
        assert!(follow_up_incomplete(&v, &v.tasks[0]));
        let v = view(vec![task("a", TaskStatus::Running, &[])], &[], None);
        assert!(
            !follow_up_incomplete(&v, &v.tasks[0]),
            "a running task has a lease"
        );
    }

    #[test]
    fn a_counted_task_whose_dependent_still_waits_on_it_needs_its_follow_up() {
        let mut b = task("b", TaskStatus::Waiting, &[]);
        b.deps_remaining = 1;
        let v = view(
            vec![task("a", TaskStatus::Succeeded, &["b"]), b.clone()],
            &["a"],
            None,
        );
        assert!(follow_up_incomplete(&v, &v.tasks[0]), "b never counted a");

        b.deps_done = vec!["a".into()];
        b.deps_remaining = 0;
        let v = view(
            vec![task("a", TaskStatus::Succeeded, &["b"]), b.clone()],
            &["a"],
            None,
        );
        assert!(
            follow_up_incomplete(&v, &v.tasks[0]),
            "b counted a but was never queued"
        );

        b.status = TaskStatus::Queued;
        let v = view(
            vec![task("a", TaskStatus::Succeeded, &["b"]), b],
            &["a"],
            None,
        );
        assert!(!follow_up_incomplete(&v, &v.tasks[0]));
    }

    #[test]
    fn in_a_failing_workflow_waiting_dependents_are_left_to_be_skipped() {
        let mut b = task("b", TaskStatus::Waiting, &[]);
        b.deps_done = vec!["a".into()];
        b.deps_remaining = 1;
        let v = view(
            vec![
                task("a", TaskStatus::Succeeded, &["b"]),
                b,
                task("x", TaskStatus::Failed, &[]),
            ],
            &["a", "x"],
            Some("x"),
        );
        assert!(follow_up_incomplete(&v, &v.tasks[0]));
        assert!(!follow_up_incomplete(&v, &v.tasks[2]));
    }

    #[test]
    fn delays_beyond_fifteen_minutes_are_chained() {
        assert_eq!(delay_until(1_000, 0), Duration::from_secs(1));
        assert_eq!(delay_until(3_600_000, 0), Duration::from_secs(900));
        assert_eq!(delay_until(0, 5_000), Duration::ZERO);
    }

    #[test]
    fn jitter_draws_fall_in_the_unit_interval() {
        for _ in 0..1000 {
            let f = jitter_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
    }
}
