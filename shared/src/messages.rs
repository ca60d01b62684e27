//! The SQS message formats that chain the functions.
//!
//! Messages carry ids, an attempt number and, for execution, a routing decision; never task
//! inputs or outputs, which live in DynamoDB. Every message has a format version `v`.

use serde::{Deserialize, Serialize};

use crate::domain::circuit::BreakerSettings;
use crate::domain::routing::RouteDecision;
use crate::domain::task::FailureKind;

pub const FORMAT_VERSION: u32 = 1;

/// One attempt at one task. The unit of idempotency: every state change is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub tenant: String,
    pub workflow_id: String,
    pub task_id: String,
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
    /// Agents to try first, in order: a retry's remaining fallbacks, or the agent whose
    /// handler died (so it sees the same `Idempotency-Key` again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<String>,
    /// Agents found deleted or disabled since the previous decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
    /// Not to be routed before this time: a backoff longer than SQS's 900 s delay limit is
    /// chained through route, which sends the message again until it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
}

impl RouteMessage {
    /// A task ready to be routed now, with no preference.
    pub fn new(task: TaskRef, capability: impl Into<String>) -> Self {
        RouteMessage {
            v: FORMAT_VERSION,
            task,
            capability: capability.into(),
            prefer: Vec::new(),
            avoid: Vec::new(),
            not_before_ms: None,
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
    pub route: RouteDecision,
}

/// execute-agent → learn: how one agent did on one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeMessage {
    pub v: u32,
    #[serde(flatten)]
    pub task: TaskRef,
    pub agent: String,
    /// The task type the outcome is learned under (today, the capability).
    pub task_type: String,
    pub success: bool,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    pub finished_at_ms: i64,
    /// Whether the call counts for the agent's circuit: a success, or a failure of the agent
    /// (server error, 408, 429, time-out, unreachable, invalid answer); not a 4xx refusal.
    #[serde(default)]
    pub counts_for_circuit: bool,
    /// The agent's own breaker settings, when it has some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSettings>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::RoutingStrategy;

    #[test]
    fn execute_message_is_flat_and_carries_no_payload() {
        let msg = ExecuteMessage {
            v: FORMAT_VERSION,
            task: TaskRef {
                tenant: "acme".into(),
                workflow_id: "w".into(),
                task_id: "t".into(),
                attempt: 2,
            },
            capability: "sum".into(),
            route: RouteDecision {
                primary: "a".into(),
                fallbacks: vec!["b".into()],
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
}
