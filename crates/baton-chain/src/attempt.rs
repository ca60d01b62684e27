//! How a task attempt ends: a retryable failure with attempts left queues the next attempt
//! and sends it to routing as a delayed message; a final end goes to [`crate::finish`], after
//! the hold a control put on the task ([`crate::hold`]) is honoured.

use serde_json::Value;

use crate::config::Settings;
use crate::error::ChainError;
use crate::finish::{
    complete_task, dispatch_timeout_ms, finish_at, output_too_large, stored_bytes,
};
use crate::payload::MAX_PAYLOAD_BYTES;
use crate::queue::{delay_until, QueueError, TaskQueue};
use crate::store::{AttemptEnd, AttemptHolder, ChainStore, Ended, StoreError, WorkflowStore};
use baton_types::ids::AgentName;
use baton_types::messages::{RouteMessage, TaskRef};
use baton_types::outcome::{FailureKind, TaskFailure, TokenUsage};
use baton_types::records::TaskRecord;
use baton_types::retry::RetryPolicy;
use baton_types::task::{AttemptOutcome, AttemptRecord};

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
    pub agent: Option<AgentName>,
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
    pub prefer: Vec<AgentName>,
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
        prefer: Vec<AgentName>,
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
            // A call a control stopped (its stream was closed on a pause or a cancel) is not
            // the agent's failure: the task waits as for a retry, and the hold decides what
            // follows, whatever attempts the policy has left.
            let stopped = failure.kind == FailureKind::Cancelled;
            let retry = if stopped {
                Some(0)
            } else {
                (failure.retryable && policy.allows_retry_after(drive_attempt)).then(|| {
                    policy.delay_ms(drive_attempt, failure.retry_after_ms, jitter_fraction())
                })
            };
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
            match crate::hold::honour_hold(store, queue, settings, &record, hold, now_ms).await? {
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
    let jitter = i64::from(baton_types::routing::stable_shard(key, 1_000)) * ceiling / 2_000;
    ceiling / 2 + jitter
}

pub async fn send_retry<Q>(
    queue: &Q,
    record: &TaskRecord,
    failed_attempt: u32,
    capability: &str,
    prefer: Vec<AgentName>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_draws_fall_in_the_unit_interval() {
        for _ in 0..1000 {
            let f = jitter_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
    }
}

/// How attempts end, on the memory store.
#[cfg(test)]
mod on_the_memory_store {
    use super::*;
    use crate::memory::fixtures::{final_failure, id, retryable_failure, tenant, Harness};
    use crate::memory::Fault;
    use crate::store::WorkflowControls;
    use baton_types::task::{TaskStatus, WorkflowStatus};
    use serde_json::json;

    const CHAIN: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];

    #[tokio::test]
    async fn a_success_ends_the_task_and_runs_its_follow_up() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let concluded = h.run("w", "a", Ok(json!({"answer": 42})), 2_000).await;
        let Concluded::Final(a) = &concluded else {
            panic!("a final end: {concluded:?}");
        };
        assert_eq!(a.status, TaskStatus::Succeeded);
        assert_eq!(a.output, Some(json!({"answer": 42})));
        assert_eq!(
            a.lease_until_ms, None,
            "an ended task leaves the lease index"
        );
        assert_eq!(
            concluded.ended_attempt(1).map(|e| e.outcome),
            Some(AttemptOutcome::Succeeded)
        );
        assert_eq!(h.routed(), ["b"]);
        assert_eq!(h.view("w").await.workflow.tasks_done, ["a"]);
    }

    #[tokio::test]
    async fn a_retryable_failure_with_attempts_left_sends_the_next_attempt_after_its_backoff() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let concluded = h.run("w", "a", Err(retryable_failure()), 2_000).await;
        assert!(matches!(concluded, Concluded::Retrying(_)), "{concluded:?}");
        let a = h.task("w", "a").await;
        assert_eq!((a.status, a.attempt, a.claims), (TaskStatus::Queued, 2, 0));
        let delay = a.attempts[0].retry_delay_ms.expect("a retry has its delay");
        assert_eq!(
            a.lease_until_ms,
            Some(2_000 + delay as i64 + h.settings.dispatch_timeout.as_millis() as i64)
        );
        let sent = h.queue.drain_route();
        assert_eq!(sent.len(), 1);
        let (message, sent_delay) = &sent[0];
        assert_eq!(
            (message.task.task_id.as_str(), message.task.attempt),
            ("a", 2)
        );
        assert_eq!(message.not_before_ms, Some(2_000 + delay as i64));
        assert_eq!(*sent_delay, delay_until(2_000 + delay as i64, 2_000));
        assert_eq!(
            h.view("w").await.workflow.tasks_remaining,
            2,
            "nothing is counted yet"
        );
    }

    #[tokio::test]
    async fn the_last_attempt_fails_for_good_and_its_dependents_are_skipped() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        for (attempt, now) in [(1, 2_000), (2, 3_000)] {
            let concluded = h.run("w", "a", Err(retryable_failure()), now).await;
            assert!(
                matches!(concluded, Concluded::Retrying(_)),
                "attempt {attempt}"
            );
        }
        h.queue.drain();
        let concluded = h.run("w", "a", Err(retryable_failure()), 4_000).await;
        assert!(matches!(&concluded, Concluded::Final(a) if a.status == TaskStatus::Failed));
        assert!(h.routed().is_empty(), "no retry after the last attempt");
        let view = h.view("w").await;
        assert_eq!(view.tasks[0].attempts.len(), 3);
        assert_eq!(view.tasks[1].status, TaskStatus::Skipped);
        assert_eq!(view.workflow.status, WorkflowStatus::Failed);
    }

    #[tokio::test]
    async fn a_duplicate_conclusion_changes_nothing() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let a = h.claim("w", "a", "tok", 2_000).await;
        h.conclude(&a, "tok", Err(final_failure()), 2_000).await;
        let before = h.view("w").await;
        h.queue.drain();
        // The same end again (a redelivery), then another result for the same claim.
        let again = h.conclude(&a, "tok", Err(final_failure()), 3_000).await;
        let other = h.conclude(&a, "tok", Ok(json!("late")), 3_000).await;
        for concluded in [again, other] {
            assert!(matches!(&concluded, Concluded::Final(t) if t.status == TaskStatus::Failed));
        }
        let after = h.view("w").await;
        assert_eq!(after.tasks, before.tasks);
        assert_eq!(
            after.workflow.tasks_remaining,
            before.workflow.tasks_remaining
        );
        assert_eq!(h.store.calls("end_attempt"), 3);
    }

    #[tokio::test]
    async fn a_holder_whose_claim_was_superseded_writes_nothing() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let a = h.claim("w", "a", "first", 2_000).await;
        let concluded = h.conclude(&a, "someone-else", Ok(json!(1)), 3_000).await;
        assert!(matches!(concluded, Concluded::Superseded));
        let task = h.task("w", "a").await;
        assert_eq!((task.status, task.attempts.len()), (TaskStatus::Running, 0));
    }

    #[tokio::test]
    async fn an_end_whose_response_was_lost_is_recognised_by_its_retry() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        h.store.inject("end_attempt", Fault::Retried, 1);
        let concluded = h.run("w", "a", Ok(json!(1)), 2_000).await;
        assert!(matches!(&concluded, Concluded::Final(t) if t.status == TaskStatus::Succeeded));
        assert_eq!(h.routed(), ["b"], "the follow-up ran");
        assert_eq!(h.task("w", "a").await.attempts.len(), 1);
    }

    #[tokio::test]
    async fn an_output_the_item_refuses_fails_the_task_for_good() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        h.store.refuse_outputs_over(16);
        let concluded = h
            .run(
                "w",
                "a",
                Ok(json!({"text": "far more than sixteen bytes"})),
                2_000,
            )
            .await;
        let Concluded::Final(a) = concluded else {
            panic!("a final end");
        };
        assert_eq!(a.status, TaskStatus::Failed);
        assert_eq!(a.failure.map(|f| f.kind), Some(FailureKind::OutputTooLarge));
        assert_eq!(h.task("w", "b").await.status, TaskStatus::Skipped);
    }

    #[tokio::test]
    async fn a_retry_of_a_paused_workflow_waits_parked_for_the_resume() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let a = h.claim("w", "a", "tok", 2_000).await;
        h.store
            .hold_task(
                &tenant(),
                &id("w"),
                &id("a"),
                baton_types::control::Hold::Pause,
            )
            .await
            .unwrap();
        let concluded = h.conclude(&a, "tok", Err(retryable_failure()), 3_000).await;
        assert!(matches!(concluded, Concluded::Retrying(_)));
        assert!(h.routed().is_empty(), "no retry runs while paused");
        let task = h.task("w", "a").await;
        assert_eq!(
            (task.status, task.attempt, task.lease_until_ms),
            (TaskStatus::Queued, 2, None)
        );
    }
}
