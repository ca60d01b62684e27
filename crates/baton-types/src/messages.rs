//! The SQS message formats that chain the functions.
//!
//! Messages carry ids, an attempt number and, for execution, a routing decision; never task
//! inputs or outputs, which live in DynamoDB. Every message has a format version `v`.

use serde::{Deserialize, Serialize};

use crate::circuit::BreakerSettings;
use crate::ids::{AgentName, TaskId, TenantId, WorkflowId};
use crate::outcome::{FailureKind, TokenUsage};
use crate::results::{CallDetails, PastResult};
use crate::routing::RouteDecision;
use crate::task::{TaskProfile, TaskStatus};

pub const FORMAT_VERSION: u32 = 1;

/// One attempt at one task. The unit of idempotency: every state change is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub tenant: TenantId,
    pub workflow_id: WorkflowId,
    pub task_id: TaskId,
    pub attempt: u32,
}

impl TaskRef {
    /// The span a handler works on this attempt in: the fields every log line carries.
    /// `agent` is declared empty for handlers that know it to record.
    pub fn span(&self, step: &'static str) -> tracing::Span {
        tracing::info_span!(
            "task",
            step,
            tenant = %self.tenant,
            workflow = %self.workflow_id,
            task = %self.task_id,
            attempt = self.attempt,
            agent = tracing::field::Empty,
        )
    }

    /// The key an agent receives as `Idempotency-Key`: stable for one attempt (also when a
    /// handler died holding it and the attempt is claimed again), new for the next attempt.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.tenant, self.workflow_id, self.task_id, self.attempt
        )
    }
}

/// orchestrate / execute-agent / cleanup → route: this task is ready to be routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteMessage {
    pub v: u32,
    #[serde(flatten)]
    pub task: TaskRef,
    pub capability: String,
    #[serde(flatten)]
    pub profile: TaskProfile,
    /// Agents to try first, in order: a retry's remaining fallbacks, or the agent whose
    /// handler died (so it sees the same `Idempotency-Key` again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<AgentName>,
    /// Agents found deleted or disabled since the previous decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<AgentName>,
    /// Not to be routed before this time: a backoff longer than SQS's 900 s delay limit is
    /// chained through route, which sends the message again until it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// Which send of this attempt the message is: 0 for the first, then cleanup's resends of
    /// an attempt nobody took. A copy older than a later send is dropped by route.
    #[serde(default, skip_serializing_if = "is_first_send")]
    pub dispatch: u32,
    /// Times the task found every agent that could take it at its limits; it waits longer
    /// each time, without spending an attempt.
    #[serde(default, skip_serializing_if = "is_first_send")]
    pub waits: u32,
    /// When the attempt became ready, kept while it waits for room: what its queue wait is
    /// counted from. Set by route on the attempt's first pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at_ms: Option<i64>,
}

fn is_first_send(dispatch: &u32) -> bool {
    *dispatch == 0
}

impl RouteMessage {
    /// Whether a task's stored state shows this copy as the attempt's live message: the task
    /// still waits to be routed for this attempt, and no later send of it has been made.
    /// Anything else is a late copy whose work is done or on its way in a newer message.
    pub fn is_live_for(&self, status: TaskStatus, attempt: u32, dispatches: u32) -> bool {
        status == TaskStatus::Queued && attempt == self.task.attempt && dispatches <= self.dispatch
    }

    /// A task ready to be routed, with no preference: now, or at its turn at the tenant's
    /// pace if that is later.
    pub fn new(task: TaskRef, capability: impl Into<String>, profile: TaskProfile) -> Self {
        RouteMessage {
            v: FORMAT_VERSION,
            task,
            capability: capability.into(),
            not_before_ms: profile.paced_until_ms,
            profile,
            prefer: Vec::new(),
            avoid: Vec::new(),
            dispatch: 0,
            waits: 0,
            ready_at_ms: None,
        }
    }
}

/// route → execute-agent: run this task on the decided agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteMessage {
    pub v: u32,
    #[serde(flatten)]
    pub task: TaskRef,
    pub capability: String,
    #[serde(flatten)]
    pub profile: TaskProfile,
    pub route: RouteDecision,
    /// Times the task waited for room on an agent so far (see [`RouteMessage::waits`]).
    #[serde(default, skip_serializing_if = "is_first_send")]
    pub waits: u32,
    /// The send of the route message this came from (see [`RouteMessage::dispatch`]): a task
    /// sent back to wait keeps it, so it is not taken for a late copy.
    #[serde(default, skip_serializing_if = "is_first_send")]
    pub dispatch: u32,
    /// When the attempt became ready (see [`RouteMessage::ready_at_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at_ms: Option<i64>,
}

/// A message of one tenant's: SQS fair queues keep one tenant's backlog from delaying
/// another's by this (`MessageGroupId`).
pub trait TenantMessage {
    fn tenant(&self) -> &TenantId;
}

impl TenantMessage for RouteMessage {
    fn tenant(&self) -> &TenantId {
        &self.task.tenant
    }
}

impl TenantMessage for ExecuteMessage {
    fn tenant(&self) -> &TenantId {
        &self.task.tenant
    }
}

impl TenantMessage for OutcomeMessage {
    fn tenant(&self) -> &TenantId {
        &self.task.tenant
    }
}

impl<M: TenantMessage + ?Sized> TenantMessage for &M {
    fn tenant(&self) -> &TenantId {
        (**self).tenant()
    }
}

/// execute-agent → learn: how one agent did on one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeMessage {
    pub v: u32,
    #[serde(flatten)]
    pub task: TaskRef,
    pub agent: AgentName,
    /// The task type the outcome is learned under: the task's `type`, else its capability.
    pub task_type: String,
    pub success: bool,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// The tokens the call used, when the agent reported them (absent in older messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    pub finished_at_ms: i64,
    /// Whether the call counts for the agent's circuit: a success, or a failure of the agent
    /// (server error, 408, 429, time-out, unreachable, invalid answer); not a 4xx refusal.
    #[serde(default)]
    pub counts_for_circuit: bool,
    /// The agent's own breaker settings, when it has some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSettings>,
    /// What is remembered of the call besides its outcome (absent in older messages).
    #[serde(flatten)]
    pub details: CallDetails,
}

impl OutcomeMessage {
    /// The call as memory keeps it.
    pub fn past_result(&self) -> PastResult {
        PastResult {
            workflow_id: self.task.workflow_id.clone(),
            task_id: self.task.task_id.clone(),
            attempt: self.task.attempt,
            agent: self.agent.clone(),
            task_type: self.task_type.clone(),
            success: self.success,
            failure: self.failure,
            latency_ms: self.latency_ms,
            usage: self.usage,
            finished_at_ms: self.finished_at_ms,
            details: self.details.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RoutingStrategy;

    fn route_message(attempt: u32, dispatch: u32) -> RouteMessage {
        let task = TaskRef {
            tenant: "acme".parse().unwrap(),
            workflow_id: "w".parse().unwrap(),
            task_id: "t".parse().unwrap(),
            attempt,
        };
        RouteMessage {
            dispatch,
            ..RouteMessage::new(task, "summarize", TaskProfile::default())
        }
    }

    #[test]
    fn only_the_newest_send_of_a_queued_attempt_is_live() {
        let first = route_message(1, 0);
        assert!(first.is_live_for(TaskStatus::Queued, 1, 0));
        // Cleanup sent the attempt again: the first copy is late, the resend is live.
        assert!(!first.is_live_for(TaskStatus::Queued, 1, 1));
        assert!(route_message(1, 1).is_live_for(TaskStatus::Queued, 1, 1));
        // Claimed, finished or moved on to the next attempt: no copy is live.
        assert!(!first.is_live_for(TaskStatus::Running, 1, 0));
        assert!(!first.is_live_for(TaskStatus::Succeeded, 1, 0));
        assert!(!first.is_live_for(TaskStatus::Queued, 2, 0));
    }

    #[test]
    fn a_first_send_carries_no_dispatch_number() {
        let body = serde_json::to_value(route_message(1, 0)).unwrap();
        assert!(body.get("dispatch").is_none());
        let resend = serde_json::to_value(route_message(1, 3)).unwrap();
        assert_eq!(resend["dispatch"], 3);
        let decoded: RouteMessage = serde_json::from_value(body).unwrap();
        assert_eq!(decoded.dispatch, 0);
    }

    #[test]
    fn execute_message_is_flat_and_carries_no_payload() {
        let msg = ExecuteMessage {
            v: FORMAT_VERSION,
            task: TaskRef {
                tenant: "acme".parse().unwrap(),
                workflow_id: "w".parse().unwrap(),
                task_id: "t".parse().unwrap(),
                attempt: 2,
            },
            capability: "sum".into(),
            profile: TaskProfile::default(),
            waits: 0,
            dispatch: 0,
            ready_at_ms: None,
            route: RouteDecision {
                primary: "a".parse().unwrap(),
                fallbacks: vec!["b".parse().unwrap()],
                strategy: RoutingStrategy::Learned,
                confidence: 0.7,
                reasoning: "r".into(),
                probe: false,
            },
        };
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["task_id"], "t");
        assert_eq!(json["attempt"], 2);
        assert_eq!(json["route"]["strategy"], "learned");
        assert!(json.get("input").is_none());
        assert!(json["route"].get("probe").is_none(), "false is left out");
        let back: ExecuteMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn an_outcome_carries_its_usage_and_an_older_one_without_it_still_parses() {
        let older = serde_json::json!({"v": 1, "tenant": "acme", "workflow_id": "w",
            "task_id": "t", "attempt": 1, "agent": "a", "task_type": "sum", "success": true,
            "latency_ms": 5, "finished_at_ms": 9});
        let outcome: OutcomeMessage = serde_json::from_value(older).unwrap();
        assert_eq!(outcome.usage, None);
        let with_usage = OutcomeMessage {
            usage: Some(TokenUsage {
                input_tokens: 30,
                output_tokens: 7,
            }),
            ..outcome
        };
        let json = serde_json::to_value(&with_usage).unwrap();
        assert_eq!(json["usage"]["input_tokens"], 30);
        assert_eq!(
            serde_json::from_value::<OutcomeMessage>(json).unwrap(),
            with_usage
        );
    }
}
