//! Task and workflow states, and how a failed agent call is classified.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::conversation::TurnTask;
use super::ids::AgentName;
use super::outcome::{TaskFailure, TokenUsage};
use super::priority::{Band, Priority};
use super::resources::Resources;
use super::routing::RoutingStrategy;

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
    pub agent: Option<AgentName>,
    /// The conversation turn it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnTask>,
    /// Attempts made before the workflow's last redrive: the retry policy counts from there.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prior_attempts: u32,
    /// Not routed before this time: its turn at the tenant's pace (see
    /// [`crate::quota`]). Only on tasks admitted beyond the tenant's burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_until_ms: Option<i64>,
    /// Past results its agent receives with the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::results::MemoryAsk>,
    /// The shared context its agent receives with the call and may update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// An analysis's call of the tenant's analyst (see [`crate::advice`]): the suggestions it
    /// answers are kept, found over this window (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice_window_ms: Option<i64>,
    /// Its agent's answer is streamed into the task's event log as it is produced (see
    /// [`crate::stream`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
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
    pub agent: Option<AgentName>,
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
}
