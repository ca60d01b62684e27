//! The JSON bodies the API answers with, as types: the handlers serialize these, and the
//! OpenAPI document (docs/openapi.json, see `openapi.rs`) describes the same types, so the two
//! cannot drift apart. Times are RFC 3339 strings with milliseconds.

use std::collections::BTreeMap;

use baton_types::agent::{AgentKind, InferenceSettings};
use baton_types::circuit::{BreakerSettings, CircuitState};
use baton_types::conversation::{
    Analysis, Checkpoint, ProgressChange, StackTask, TurnPlan, TurnSummary,
};
use baton_types::dag::Plan;
use baton_types::health::{HealthCheck, HealthStatus};
use baton_types::registry::Category;
use baton_types::retry::RetryPolicySpec;
use baton_types::routing::RoutingStrategy;
use baton_types::turn::{TurnStatus, TurnTiming};
use serde::Serialize;
use serde_json::{Map, Value};

/// Every error: a code for programs, a message for people, and details naming what was wrong
/// (`field`, `header`, `parameter`, `task_index`…).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// `invalid_json`, `invalid_request`, `unauthorized`, `not_found`, `method_not_allowed`,
    /// `conflict`, `dependency_guard`, `concurrent_change`, `turn_in_progress`, `not_paused`,
    /// `no_core_agent`, `version_mismatch`, `precondition_required`, `payload_too_large` or
    /// `unavailable`.
    pub code: String,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}

/// `GET /health`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// A registered agent: its registration as stored (the kind's own fields beside the others;
/// an `api_key` is a reference, never a key), its health, its circuit and its load.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentView {
    pub name: String,
    /// How Baton reaches it; the fields of its kind are set, the others absent.
    pub kind: AgentKind,
    /// http: the URL Baton POSTs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// lambda: the function's name or ARN, with an optional `:qualifier`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// openai: the API's base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// openai: the model asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// bedrock: the model or inference profile asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// openai and bedrock: the system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// openai: the fields merged into each request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// openai: the reference of the secret holding the API key (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// bedrock: the inference configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceSettings>,
    pub capabilities: Vec<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    /// The agents this one needs registered and enabled (the registry's guard).
    pub requires: Vec<String>,
    pub timeout_ms: u64,
    pub enabled: bool,
    /// Raised by every change; the `ETag` is this number in quotes.
    pub version: u64,
    pub retry: Option<RetryPolicySpec>,
    pub health_check: Option<HealthCheck>,
    /// The agent's own settings, or the defaults.
    pub circuit_breaker: BreakerSettings,
    pub weight: f64,
    pub max_concurrency: Option<u32>,
    /// What the agent can hold at once, by resource name.
    pub resources: BTreeMap<String, u64>,
    /// Calls running on the agent now (counted for agents with limits, and `least_loaded`).
    pub in_flight: u32,
    /// What the calls running on it hold, by resource name.
    pub resources_in_use: BTreeMap<String, u64>,
    /// Null until the first probe.
    pub health: Option<HealthView>,
    pub circuit: CircuitView,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// What the last health probes found.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthView {
    pub status: HealthStatus,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub checked_at: String,
    pub consecutive_failures: u32,
    pub detail: Option<String>,
}

/// The agent's circuit breaker now.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CircuitView {
    pub state: CircuitState,
    /// The share of failures among the agent's last `window` calls.
    pub failure_rate: f64,
    pub consecutive_failures: u32,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub opened_at: Option<String>,
    /// A half-open circuit's probe call is out now.
    pub probe_out: bool,
}

/// `GET /v1/agents`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// `GET /v1/agents/categories`: agents without a category are under `uncategorized`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CategoryList {
    pub categories: Vec<Category>,
}

/// `DELETE /v1/agents/{name}`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentDeleted {
    pub name: String,
    /// Always `deleted`.
    pub status: String,
}

/// A capability's routing defaults.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilityView {
    pub capability: String,
    /// The strategy of its tasks that name none.
    pub routing: RoutingStrategy,
    pub latency_target_ms: Option<u64>,
    /// False: nothing was set for it, these are the defaults.
    pub configured: bool,
}

/// `GET /v1/capabilities`: the capabilities with defaults set.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilityList {
    pub capabilities: Vec<CapabilityView>,
}

/// The priority levels, the tenant's multipliers by task type over the defaults, and the
/// score at which each band starts. A task's score is its level times its type's multiplier.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrioritiesView {
    pub levels: Levels,
    pub multipliers: BTreeMap<String, f64>,
    /// The multiplier of a task type not listed.
    pub default_multiplier: f64,
    pub bands: Bands,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Levels {
    pub critical: f64,
    pub high: f64,
    pub normal: f64,
    pub low: f64,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bands {
    pub urgent: BandStart,
    pub high: BandStart,
    pub standard: BandStart,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BandStart {
    pub from_score: f64,
}

/// `POST /v1/workflows`: the workflow was stored and its first tasks sent to routing.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowAccepted {
    pub workflow_id: String,
    /// Always `running`.
    pub status: String,
    pub plan: Plan,
    /// Present when tasks beyond the tenant's burst wait for their turn at its pace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing: Option<Pacing>,
    /// Urgent tasks past the tenant's urgent share, which run in the `high` band instead.
    #[serde(skip_serializing_if = "is_zero")]
    pub demoted_from_urgent: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a submission's tasks are paced.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pacing {
    /// Tasks that reach the queues at their turn rather than at once.
    pub paced_tasks: u32,
    /// The last of those turns (RFC 3339): when the last task may start at the earliest.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_start_at: String,
    /// The tenant's pace.
    pub tasks_per_second: f64,
}

/// `POST /v1/sessions`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionCreated {
    pub session_id: String,
    /// When it ends unless a turn comes first.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
}

/// `DELETE /v1/sessions/{id}`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionEnded {
    pub session_id: String,
    /// Always `ended`.
    pub status: String,
}

/// A session: its record, its conversation and its agents' instances.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    pub session_id: String,
    pub agents: Vec<String>,
    /// The client's own data, as given.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub metadata: Value,
    pub idle_timeout_s: u64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_active_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
    /// Turns started so far.
    pub turns: u32,
    /// The turn running now, if one is.
    pub active_turn: Option<u32>,
    /// The current task's checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    pub task_stack: Vec<StackTask>,
    /// The earlier turns agents receive word for word, oldest first: those the summary does
    /// not cover.
    pub recent_turns: Vec<TurnSummary>,
    /// How many earlier turns agents receive word for word.
    pub history_turns: u32,
    /// The running summary of the older turns, kept by the tenant's `summarize` agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<baton_types::recall::RunningSummary>,
    pub requires_human: bool,
    pub is_paused: bool,
    pub instances: Vec<InstanceView>,
    /// Async results waiting to be shown with the next turn.
    pub pending_async_results: usize,
}

/// One agent's state in one session.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceView {
    /// `{agent}#{session}`.
    pub instance_id: String,
    pub agent: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub state: Value,
    pub calls: u32,
    pub last_turn: u32,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// `POST /v1/sessions/{id}/resume`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionResumed {
    pub session_id: String,
    pub is_paused: bool,
    pub requires_human: bool,
    /// The human's reply, shown to the agents with the next turn.
    pub reply: Option<String>,
}

/// A turn (the `/orchestrate` answer's fields included).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnView {
    pub session_id: String,
    /// The session again, under the name `/orchestrate` callers use.
    pub conversation_id: String,
    pub turn: u32,
    pub status: TurnStatus,
    /// The answering agent's text.
    pub response: Option<String>,
    /// What the agents received of the conversation before this turn: how many earlier turns
    /// word for word, through which turn a running summary covered the older ones, and
    /// through which they were dropped (absent on the first turn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<baton_types::recall::HistoryNote>,
    /// The answering agent's answer (its `state` kept out); past 96 KiB, `{"truncated": true,
    /// "bytes", "preview", "url"}` with the url that serves it whole.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub answer: Option<Value>,
    /// Why the turn failed: `{agent, kind, message}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub error: Option<Value>,
    pub analysis: Analysis,
    /// Which agents answer the turn, in what order.
    pub agents: TurnPlan,
    pub workflow_id: String,
    /// Where the answering agent's answer streams as it is written: its task's events
    /// (`GET` it with `?after=N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// The turn's whole stream for the streaming endpoint: its helpers' milestones and the
    /// answer's tokens. Pass it as `path` to `POST /v1/stream-tokens` for a link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    pub async_workflow_id: Option<String>,
    pub checkpoints: Vec<Checkpoint>,
    pub checkpoint_progress: Vec<ProgressChange>,
    pub task_stack: Vec<StackTask>,
    /// The sync agents' answers, by agent.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub sync_agent_results: Map<String, Value>,
    /// Async agents' answers of earlier turns, by agent: `{turn, result}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub async_agent_results: Map<String, Value>,
    pub requires_human: bool,
    pub is_paused: bool,
    /// Sync agents answered too.
    pub is_enriched: bool,
    pub timing_metrics: TimingMetrics,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub answered_at: Option<String>,
    /// While the turn runs (202): where to fetch it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The answer to a message sent while the session is paused for a human: no agent ran.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PausedTurnView {
    pub session_id: String,
    pub conversation_id: String,
    /// Always null: no turn was started.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>))]
    pub turn: Option<u32>,
    pub status: Paused,
    /// Always null.
    pub response: Option<String>,
    pub checkpoints: Vec<Checkpoint>,
    pub checkpoint_progress: Vec<ProgressChange>,
    pub task_stack: Vec<StackTask>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub sync_agent_results: Map<String, Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub async_agent_results: Map<String, Value>,
    pub requires_human: bool,
    pub is_paused: bool,
    pub is_enriched: bool,
    pub timing_metrics: TimingMetrics,
}

/// The status of a message's answer while its session is paused.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Paused {
    Paused,
}

/// What a message is answered with: the turn, or the session paused for a human.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum TurnAnswer {
    Turn(Box<TurnView>),
    Paused(Box<PausedTurnView>),
}

/// Where a turn's time went, in milliseconds.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimingMetrics {
    #[serde(flatten)]
    pub timing: TurnTiming,
    /// This request's own time, from arrival to answer (in a message's answer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_ms: Option<u64>,
}
