//! How a call to an agent ended, in the terms every layer shares: why it failed (the kind
//! decides whether a retry could help) and what it spent.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};

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
    /// not call (see [`crate::endpoint`]).
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
