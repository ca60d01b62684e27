//! Task and workflow states, and how a failed agent call is classified.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};

use super::conversation::TurnTask;
use super::priority::{Band, Priority};
use super::resources::Resources;
use super::routing::RoutingStrategy;
use std::fmt;
use std::str::FromStr;

/// A task's life: `waiting` for dependencies → `queued` for routing and execution →
/// `running` under a lease → `succeeded` or `failed`, or back to `queued` for a retry. Tasks
/// behind a failure end `skipped`; tasks a workflow's deadline stopped end `cancelled`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Waiting,
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::Skipped
                | TaskStatus::Cancelled
        )
    }

    /// An attempt ran (or was refused) and its result is recorded; skipped tasks have none.
    pub const fn has_result(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed)
    }
}

/// How a task is scheduled and routed beyond its capability. Set at submission, kept on the
/// task and carried by every message of it, so no handler reads the task to learn it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProfile {
    /// The task type it is learned and prioritised under (default: its capability).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Its routing strategy; None: the capability's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingStrategy>,
    /// What one call of it holds on its agent.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The queues it travels through, from its priority's score.
    #[serde(default, skip_serializing_if = "Band::is_standard")]
    pub band: Band,
    /// When it fails `deadline_exceeded` if it has not started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_ms: Option<i64>,
    /// The one agent that may run it (a conversation turn's agents are named, not routed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The conversation turn it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnTask>,
    /// Attempts made before the workflow's last redrive: the retry policy counts from there.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prior_attempts: u32,
    /// Not routed before this time: its turn at the tenant's pace (see
    /// [`crate::domain::quota`]). Only on tasks admitted beyond the tenant's burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_until_ms: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TaskProfile {
    /// The task type outcomes are learned under.
    pub fn learning_type<'a>(&'a self, capability: &'a str) -> &'a str {
        self.task_type.as_deref().unwrap_or(capability)
    }

    pub fn is_default(&self) -> bool {
        *self == TaskProfile::default()
    }

    /// The attempt's number within the current drive of the workflow (1-based), which the
    /// retry policy counts.
    pub fn drive_attempt(&self, attempt: u32) -> u32 {
        attempt.saturating_sub(self.prior_attempts).max(1)
    }

    /// Whether the deadline passed before `now_ms`.
    pub fn missed_deadline(&self, now_ms: i64) -> bool {
        self.deadline_at_ms.is_some_and(|at| now_ms > at)
    }
}

/// A workflow runs from creation until every task has ended: it succeeds if they all
/// succeeded, fails if any failed or its deadline passed, and is cancelled if a cancel was
/// asked for. (Paused and cancelling are controls on a running workflow, see
/// [`super::control`].) A redrive makes a failed or cancelled workflow run again.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    pub const fn is_terminal(self) -> bool {
        !matches!(self, WorkflowStatus::Running)
    }
}

macro_rules! impl_str_conversions {
    ($ty:ty, [$($variant:ident),*]) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s == <$ty>::$variant.as_str() {
                    return Ok(<$ty>::$variant);
                })*
                Err(UnknownState(s.to_string()))
            }
        }
    };
}

impl_str_conversions!(
    TaskStatus,
    [Waiting, Queued, Running, Succeeded, Failed, Skipped, Cancelled]
);
impl_str_conversions!(WorkflowStatus, [Running, Succeeded, Failed, Cancelled]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state `{0}`")]
pub struct UnknownState(pub String);

/// Why a task failed. The kind decides whether a retry could help.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The agent answered with a non-2xx status.
    HttpStatus,
    /// The agent did not answer within its timeout.
    Timeout,
    /// The agent could not be reached.
    Connection,
    /// The agent answered 2xx with a body that is not JSON.
    InvalidResponse,
    /// The agent's output does not fit in a task record.
    OutputTooLarge,
    /// The agent ran and failed: a Lambda function error.
    FunctionError,
    /// The cloud API in front of the agent (Lambda, Bedrock) refused or failed the call;
    /// throttling and service faults are retryable, the caller's mistakes are not.
    ServiceError,
    /// The task's input cannot be put to the agent (a model agent's malformed `messages`).
    InvalidInput,
    /// The agent's URL, or an address its host resolved to at call time, is one Baton must
    /// not call (see [`crate::domain::endpoint`]).
    ForbiddenEndpoint,
    /// No enabled agent offers the task's capability.
    NoCapableAgent,
    /// The routed agent was removed before the task ran.
    AgentNotFound,
    /// Handlers kept dying while holding the task's lease.
    LeaseExpired,
    /// Every capable agent's circuit was open, through all the task's attempts.
    CircuitOpen,
    /// Every capable agent was unhealthy, through all the task's attempts.
    NoHealthyAgent,
    /// The workflow's deadline passed before the task ended.
    DeadlineExceeded,
    /// The task was sent for execution again and again, and no handler ever took it.
    NotDispatched,
    /// The workflow was cancelled before the task ended.
    Cancelled,
    /// The agent's target reaches beyond its tenant: another tenant's secret or function, a
    /// model the operator does not allow (checked again before every call).
    ForbiddenReference,
    /// The outputs of the task's dependencies are more than a task may receive.
    InputTooLarge,
}

impl FailureKind {
    /// Whether the failure tells something about the agent that was called (for learning and
    /// its circuit), rather than about routing or Baton itself.
    pub const fn is_agent_outcome(self) -> bool {
        matches!(
            self,
            FailureKind::HttpStatus
                | FailureKind::Timeout
                | FailureKind::Connection
                | FailureKind::InvalidResponse
                | FailureKind::OutputTooLarge
                | FailureKind::FunctionError
                | FailureKind::ServiceError
                | FailureKind::ForbiddenEndpoint
        )
    }
}

/// A task failure as recorded on the task and shown by the API.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub kind: FailureKind,
    /// Stored and shown within [`MAX_FAILURE_MESSAGE_BYTES`], however it was built.
    #[serde(serialize_with = "serialize_bounded")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub retryable: bool,
    /// How long the agent asked to wait (`Retry-After`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl TaskFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let retryable = match kind {
            FailureKind::Timeout
            | FailureKind::Connection
            | FailureKind::CircuitOpen
            | FailureKind::NoHealthyAgent => true,
            FailureKind::HttpStatus
            | FailureKind::InvalidResponse
            | FailureKind::OutputTooLarge
            | FailureKind::FunctionError
            | FailureKind::ServiceError
            | FailureKind::InvalidInput
            | FailureKind::ForbiddenEndpoint
            | FailureKind::NoCapableAgent
            | FailureKind::AgentNotFound
            | FailureKind::LeaseExpired
            | FailureKind::DeadlineExceeded
            | FailureKind::NotDispatched
            | FailureKind::Cancelled
            | FailureKind::ForbiddenReference
            | FailureKind::InputTooLarge => false,
        };
        TaskFailure {
            kind,
            message: bounded_message(message.into()),
            http_status: None,
            retryable,
            retry_after_ms: None,
        }
    }

    /// Whether the failure counts against the agent's circuit: the agent is failing, not
    /// refusing one task (a 4xx other than 408 and 429) or being refused by Baton.
    pub fn trips_circuit(&self) -> bool {
        match self.kind {
            FailureKind::HttpStatus | FailureKind::ServiceError => self.retryable,
            FailureKind::Timeout
            | FailureKind::Connection
            | FailureKind::InvalidResponse
            | FailureKind::FunctionError => true,
            _ => false,
        }
    }

    /// A non-2xx answer: 5xx, 408 and 429 are worth retrying, other 4xx are not.
    pub fn http_status(status: u16, body_excerpt: &str) -> Self {
        TaskFailure {
            kind: FailureKind::HttpStatus,
            message: bounded_message(format!("agent answered HTTP {status}: {body_excerpt}")),
            http_status: Some(status),
            retryable: status >= 500 || status == 408 || status == 429,
            retry_after_ms: None,
        }
    }
}

/// The most a failure's message holds, in bytes: every attempt keeps its failure, so an
/// agent's error text must not be able to grow a task's item.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 2048;
/// Ends a message that was cut.
const CUT_MARK: &str = " [cut]";

/// `message` within [`MAX_FAILURE_MESSAGE_BYTES`]: a longer one is cut at a character boundary
/// and ends with a mark saying so.
pub fn bounded_message<'a>(message: impl Into<Cow<'a, str>>) -> String {
    let message = message.into();
    if message.len() <= MAX_FAILURE_MESSAGE_BYTES {
        return message.into_owned();
    }
    let mut end = MAX_FAILURE_MESSAGE_BYTES - CUT_MARK.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARK}", &message[..end])
}

fn serialize_bounded<S: Serializer>(message: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&bounded_message(message))
}

/// How an attempt ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
}

/// One attempt of a task, kept on the task item by the write that records its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    /// The agent called; none when no agent could take the attempt (all circuits open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: i64,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskFailure>,
    /// How many handlers claimed the attempt: more than one means a handler died holding it,
    /// and the same `Idempotency-Key` was sent again.
    #[serde(default)]
    pub claims: u32,
    /// The wait before the next attempt, when one follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<u64>,
    /// How long the agent call itself took (the rest of the attempt is Baton's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_ms: Option<u64>,
    /// The tokens the call used, for agents that report them (openai, bedrock, or any agent
    /// whose output carries `usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// The result came after a forced cancel had ended the task: kept, and it changed nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// Tokens a model read and wrote for one call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            TaskStatus::Waiting,
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Skipped,
            TaskStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
        }
        assert!("done".parse::<WorkflowStatus>().is_err());
    }

    #[test]
    fn a_long_failure_message_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(bounded_message("short"), "short");
        let exact = "x".repeat(MAX_FAILURE_MESSAGE_BYTES);
        assert_eq!(bounded_message(exact.as_str()), exact);
        // Three-byte characters: no cut can fall on MAX - mark exactly.
        let long = "€".repeat(MAX_FAILURE_MESSAGE_BYTES);
        let cut = bounded_message(long.as_str());
        assert!(cut.len() <= MAX_FAILURE_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.len() > MAX_FAILURE_MESSAGE_BYTES - CUT_MARK.len() - 3);
        assert!(cut.ends_with(CUT_MARK));
        assert!(cut.trim_end_matches(CUT_MARK).chars().all(|c| c == '€'));
        // However a failure is built, what is stored is bounded.
        let mut failure = TaskFailure::http_status(500, &"e".repeat(10_000));
        assert!(failure.message.len() <= MAX_FAILURE_MESSAGE_BYTES);
        failure.message = "m".repeat(10_000);
        let stored: TaskFailure =
            serde_json::from_str(&serde_json::to_string(&failure).unwrap()).unwrap();
        assert!(stored.message.len() <= MAX_FAILURE_MESSAGE_BYTES);
    }

    #[test]
    fn server_errors_are_retryable_and_client_errors_are_not() {
        assert!(TaskFailure::http_status(503, "").retryable);
        assert!(TaskFailure::http_status(429, "").retryable);
        assert!(!TaskFailure::http_status(400, "").retryable);
        assert!(TaskFailure::new(FailureKind::Timeout, "slow").retryable);
        assert!(!TaskFailure::new(FailureKind::NoCapableAgent, "none").retryable);
    }
}
