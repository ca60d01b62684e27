//! One conversation turn as stored and answered: what was asked, how it was analysed and
//! planned, and what came back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::conversation::{Analysis, ConversationState, ProgressChange, TurnPlan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    Running,
    Answered,
    Failed,
}

impl TurnStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Running => "running",
            TurnStatus::Answered => "answered",
            TurnStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for TurnStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "running" => Ok(TurnStatus::Running),
            "answered" => Ok(TurnStatus::Answered),
            "failed" => Ok(TurnStatus::Failed),
            _ => Err(()),
        }
    }
}

/// Where a turn's time went, in milliseconds (seed 001's `timing_metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnTiming {
    /// Reading the session, its instances and its async results.
    pub state_load_ms: u64,
    /// The query analysis (the classifier's call included).
    pub analysis_ms: u64,
    /// Writing the turn, its workflows and the session's lock in one transaction.
    pub save_ms: u64,
    /// Each agent's call, by agent (the last attempt's).
    #[serde(default)]
    pub agents: BTreeMap<String, u64>,
    /// The answering agent's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ms: Option<u64>,
    /// From the message's arrival to the answer being recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// `total_ms` less the time the turn's critical path spent inside agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_ms: Option<u64>,
}

/// A turn as stored under its session.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub session_id: String,
    pub turn: u32,
    pub text: String,
    pub channel: Option<String>,
    pub services: Option<Vec<String>>,
    pub analysis: Analysis,
    pub plan: TurnPlan,
    /// The workflow of the agents the turn waits for.
    pub workflow_id: String,
    /// The workflow of its async agents, if it has any.
    pub async_workflow_id: Option<String>,
    pub status: TurnStatus,
    pub response: Option<String>,
    /// The answering agent's whole answer (its `state` kept out).
    pub answer: Option<Value>,
    pub sync_agent_results: Map<String, Value>,
    /// Async results of earlier turns, delivered with this one.
    pub async_agent_results: Map<String, Value>,
    /// Why the turn failed: `{agent, kind, message}`.
    pub error: Option<Value>,
    pub checkpoint_progress: Vec<ProgressChange>,
    /// The conversation as this turn left it (its recent turns left out).
    pub state: Option<ConversationState>,
    pub timing: TurnTiming,
    pub created_at_ms: i64,
    pub answered_at_ms: Option<i64>,
}

/// One agent's state in one session (seed 003's `agent_id#session_id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentInstance {
    pub agent: String,
    pub state: Value,
    pub calls: u32,
    pub last_turn: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What an async agent came back with, waiting to be shown with the next turn.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncResult {
    pub turn: u32,
    pub agent: String,
    /// The agent's answer, or `{"error": {kind, message}}`.
    pub result: Value,
    pub finished_at_ms: i64,
}

/// An agent's answer as the turn shows it: its private `state` stays with its instance.
pub fn public_answer(output: &Value) -> Value {
    match output {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "state")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}
