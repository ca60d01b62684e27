//! Metrics in CloudWatch Embedded Metric Format (EMF): their names, units and dimensions, and a
//! one-line helper for each place that records one.
//!
//! The `metrics` facade's macros do nothing until a recorder is installed. Each function's
//! `main.rs` installs the EMF collector once (`baton_aws::emf::install`) and wraps its handler
//! in `baton_aws::emf::flushed`, which writes the invocation's metrics to stdout as EMF lines
//! when it ends; CloudWatch Logs turns them into metrics of the namespace [`NAMESPACE`]. The
//! local stack and the tests install nothing, so the same calls cost nothing there and print
//! nothing.
//!
//! Dimensions are few and bounded: the function (set once per process), and at most an agent
//! name (bounded by the registry), a routing strategy or an outcome. Never a tenant, workflow,
//! task or session id.

use metrics::Unit;

use crate::store::AttemptEnd;
use baton_types::routing::RoutingStrategy;
use baton_types::task::WorkflowStatus;

pub const NAMESPACE: &str = "Baton";

/// Dimension names.
pub const FUNCTION: &str = "Function";
pub const AGENT: &str = "Agent";
pub const STRATEGY: &str = "Strategy";
pub const OUTCOME: &str = "Outcome";

/// Attempts claimed by execute-agent (a task's attempt starts running).
pub const TASKS_STARTED: &str = "TasksStarted";
/// Attempts ended: the task succeeded, failed for good, or will be retried.
pub const TASKS_SUCCEEDED: &str = "TasksSucceeded";
pub const TASKS_FAILED: &str = "TasksFailed";
pub const TASKS_RETRIED: &str = "TasksRetried";
/// One agent call's duration, per agent.
pub const AGENT_LATENCY: &str = "AgentLatency";
/// Agent calls that failed (any failure: status, time-out, unreachable, invalid answer).
pub const AGENT_ERRORS: &str = "AgentErrors";
/// Tasks routed to an agent, per strategy.
pub const ROUTING_DECISIONS: &str = "RoutingDecisions";
/// Circuits that opened or closed, per agent.
pub const CIRCUITS_OPENED: &str = "CircuitsOpened";
pub const CIRCUITS_CLOSED: &str = "CircuitsClosed";
/// How long a message waited in its queue before its function took it.
pub const QUEUE_WAIT: &str = "QueueWait";
/// A workflow's submission to its finish, per outcome (`succeeded`, `failed`, `cancelled`).
pub const WORKFLOW_DURATION: &str = "WorkflowDuration";
pub const SESSIONS_STARTED: &str = "SessionsStarted";
pub const SESSIONS_ENDED: &str = "SessionsEnded";

/// Every metric with its unit and what it means, for the collector and the docs.
pub const CATALOGUE: [(&str, Unit, &str); 13] = [
    (TASKS_STARTED, Unit::Count, "attempts claimed"),
    (
        TASKS_SUCCEEDED,
        Unit::Count,
        "attempts that ended the task succeeded",
    ),
    (
        TASKS_FAILED,
        Unit::Count,
        "attempts that ended the task failed",
    ),
    (
        TASKS_RETRIED,
        Unit::Count,
        "attempts that failed with a retry to follow",
    ),
    (AGENT_LATENCY, Unit::Milliseconds, "agent call duration"),
    (AGENT_ERRORS, Unit::Count, "agent calls that failed"),
    (ROUTING_DECISIONS, Unit::Count, "tasks routed"),
    (CIRCUITS_OPENED, Unit::Count, "circuits opened"),
    (CIRCUITS_CLOSED, Unit::Count, "circuits closed"),
    (
        QUEUE_WAIT,
        Unit::Milliseconds,
        "time a message waited in its queue",
    ),
    (
        WORKFLOW_DURATION,
        Unit::Milliseconds,
        "submission to finish",
    ),
    (SESSIONS_STARTED, Unit::Count, "sessions opened"),
    (SESSIONS_ENDED, Unit::Count, "sessions ended"),
];

/// An attempt was claimed: its task runs.
pub fn task_started() {
    metrics::counter!(TASKS_STARTED).increment(1);
}

/// An attempt ended as `end` (recorded now, not a duplicate's replay).
pub fn attempt_ended(end: &AttemptEnd) {
    let name = match end {
        AttemptEnd::Succeeded(_) => TASKS_SUCCEEDED,
        AttemptEnd::Failed(_) => TASKS_FAILED,
        AttemptEnd::Retry { .. } => TASKS_RETRIED,
    };
    metrics::counter!(name).increment(1);
}

/// One call to `agent`, and whether it failed.
pub fn agent_call(agent: &str, latency_ms: u64, failed: bool) {
    metrics::histogram!(AGENT_LATENCY, AGENT => agent.to_string()).record(latency_ms as f64);
    if failed {
        metrics::counter!(AGENT_ERRORS, AGENT => agent.to_string()).increment(1);
    }
}

/// A task was routed by `strategy`.
pub fn routed(strategy: RoutingStrategy) {
    metrics::counter!(ROUTING_DECISIONS, STRATEGY => strategy.as_str()).increment(1);
}

/// `agent`'s circuit opened (`open`) or closed.
pub fn circuit_changed(agent: &str, open: bool) {
    let name = if open {
        CIRCUITS_OPENED
    } else {
        CIRCUITS_CLOSED
    };
    metrics::counter!(name, AGENT => agent.to_string()).increment(1);
}

/// A message sent at `sent_at_ms` (SQS's `SentTimestamp`) was taken at `now_ms`.
pub fn queue_wait(sent_at_ms: Option<i64>, now_ms: i64) {
    if let Some(sent) = sent_at_ms {
        metrics::histogram!(QUEUE_WAIT).record((now_ms - sent).max(0) as f64);
    }
}

/// A workflow finished as `outcome` at `now_ms`. Its id is a UUIDv7, which carries its
/// submission time, so the duration needs no read; an id that is not one records nothing.
pub fn workflow_finished(workflow_id: &str, outcome: WorkflowStatus, now_ms: i64) {
    if let Some(created) = created_at_ms(workflow_id) {
        metrics::histogram!(WORKFLOW_DURATION, OUTCOME => outcome.as_str())
            .record((now_ms - created).max(0) as f64);
    }
}

pub fn session_started() {
    metrics::counter!(SESSIONS_STARTED).increment(1);
}

pub fn session_ended() {
    metrics::counter!(SESSIONS_ENDED).increment(1);
}

/// The creation time a UUIDv7 carries (epoch ms).
fn created_at_ms(id: &str) -> Option<i64> {
    let (seconds, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    Some(seconds as i64 * 1000 + i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_id_carries_its_submission_time() {
        let before = baton_types::clock::now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let created = created_at_ms(&id).expect("a v7 id has a time");
        assert!((before..=baton_types::clock::now_ms()).contains(&created));
        assert_eq!(created_at_ms(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(created_at_ms("diamond"), None);
    }
}
