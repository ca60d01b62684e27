//! The records a workflow's views are read from: its tasks, its archived drives and itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::{Control, ControlEvent, ControlState, Hold};
use crate::dag::{Dag, DagError, TaskSpec};
use crate::ids::{AgentName, TaskId, TenantId, WorkflowId};
use crate::messages::TaskRef;
use crate::outcome::TaskFailure;
use crate::retry::RetryPolicySpec;
use crate::routing::RouteDecision;
use crate::task::{AttemptRecord, TaskProfile, TaskStatus, WorkflowStatus};

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub tenant: TenantId,
    pub workflow_id: WorkflowId,
    pub id: TaskId,
    pub capability: String,
    pub profile: TaskProfile,
    pub input: Value,
    pub depends_on: Vec<TaskId>,
    pub dependents: Vec<TaskId>,
    /// The dependents whose only dependency is this task: each is released in one write.
    pub sole_parent_of: Vec<TaskId>,
    pub status: TaskStatus,
    /// The current attempt: the retry counter, and the `Idempotency-Key`'s last part.
    pub attempt: u32,
    pub deps_remaining: u32,
    /// Dependencies already counted as done.
    pub deps_done: Vec<TaskId>,
    pub agent: Option<AgentName>,
    /// The output, when it is on the item (read whole: also when it was in S3).
    pub output: Option<Value>,
    /// Where an output too large for the item went; a view reads it only on request.
    pub output_ref: Option<StoredPayload>,
    /// The first bytes of such an output's JSON, for views.
    pub output_preview: Option<String>,
    pub failure: Option<TaskFailure>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub lease_until_ms: Option<i64>,
    pub retry: Option<RetryPolicySpec>,
    pub fallback: bool,
    pub timeout_ms: Option<u64>,
    /// Every ended attempt since the task was last reset by a redrive, oldest first (the
    /// earlier ones are archived: see [`ArchivedDrive`]).
    pub attempts: Vec<AttemptRecord>,
    /// Claims of the current attempt; above 1, a handler died holding it.
    pub claims: u32,
    pub claim_token: Option<String>,
    /// Leases that ran out on this task, over all its attempts: handlers that died.
    pub lease_expirations: u32,
    /// Times cleanup sent the current attempt again because no handler took it.
    pub dispatches: u32,
    /// How the current attempt's agent was chosen.
    pub decision: Option<RouteDecision>,
    /// Set while its workflow is paused or being cancelled: no claim takes it.
    pub hold: Option<Hold>,
    /// The workflow's drive it was last reset for (0: never redriven).
    pub drive: u32,
}

impl TaskRecord {
    pub fn task_ref(&self) -> TaskRef {
        TaskRef {
            tenant: self.tenant.clone(),
            workflow_id: self.workflow_id.clone(),
            task_id: self.id.clone(),
            attempt: self.attempt,
        }
    }

    /// Whether the last ended attempt is `attempt` and a retry follows it.
    pub fn retries_after(&self, attempt: u32) -> bool {
        self.attempt == attempt + 1
            && !self.status.is_terminal()
            && self.attempts.last().is_some_and(|a| a.attempt == attempt)
    }
}

/// A task's attempts of one drive that a redrive ended, as the workflow's archive keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedDrive {
    pub task_id: TaskId,
    /// The drive they were made in (0: before the first redrive).
    pub drive: u32,
    /// Oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// A workflow as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    pub tenant: TenantId,
    pub id: WorkflowId,
    pub name: String,
    pub status: WorkflowStatus,
    pub task_count: u32,
    pub tasks_remaining: u32,
    /// Tasks counted as ended.
    pub tasks_done: Vec<TaskId>,
    /// The first task that failed: the workflow fails once every task has ended.
    pub failed_task: Option<TaskId>,
    /// A failure of the workflow itself (its deadline passed).
    pub error: Option<TaskFailure>,
    pub deadline_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// A pause or cancel that holds while it runs.
    pub control: Option<Control>,
    /// Redrives so far.
    pub drive: u32,
    /// Every control applied, oldest first (for the history).
    pub controls: Vec<ControlEvent>,
    /// When what it still needs was last kept from expiring (its creation at first).
    pub kept_at_ms: i64,
}

impl WorkflowRecord {
    /// The workflow will fail: a task failed or its deadline passed. Nothing new starts.
    pub fn is_failing(&self) -> bool {
        self.failed_task.is_some() || self.error.is_some()
    }

    pub fn is_cancelling(&self) -> bool {
        matches!(self.control, Some(Control::Cancelling { .. }))
    }

    pub fn control_state(&self) -> ControlState {
        ControlState {
            status: self.status,
            control: self.control,
            tasks_remaining: self.tasks_remaining,
            drive: self.drive,
        }
    }

    /// How it ends once every task has: cancelled if asked, else failed or succeeded.
    pub fn outcome(&self) -> WorkflowStatus {
        progress_outcome(self.is_cancelling(), self.is_failing())
    }
}

/// The final status of a workflow whose tasks have all ended.
pub fn progress_outcome(cancelling: bool, failing: bool) -> WorkflowStatus {
    if cancelling {
        WorkflowStatus::Cancelled
    } else if failing {
        WorkflowStatus::Failed
    } else {
        WorkflowStatus::Succeeded
    }
}

/// A workflow with all its tasks, in submission order.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    pub workflow: WorkflowRecord,
    pub tasks: Vec<TaskRecord>,
}

impl WorkflowView {
    /// The tasks' shapes as submitted (ids, capabilities, types, dependencies), for the DAG's
    /// analyses.
    pub fn specs(&self) -> Vec<TaskSpec> {
        self.tasks
            .iter()
            .map(|t| TaskSpec {
                task_type: t.profile.task_type.clone(),
                ..TaskSpec::shape(
                    &t.id,
                    &t.capability,
                    t.depends_on.iter().map(|d| d.to_string()).collect(),
                )
            })
            .collect()
    }

    /// Its DAG. A stored workflow passed validation; only a damaged one fails here.
    pub fn dag(&self) -> Result<Dag, DagError> {
        Dag::build(&self.specs())
    }
}

/// Where a payload went, as its item keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPayload {
    pub key: String,
    /// Its size as stored JSON.
    pub bytes: u64,
}

/// Records for tests of the views and of the steps that read them.
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use super::*;

    pub fn task(
        id: &str,
        deps: &[&str],
        status: TaskStatus,
        ran: Option<(i64, i64)>,
    ) -> TaskRecord {
        TaskRecord {
            tenant: "t".parse().unwrap(),
            workflow_id: "w".parse().unwrap(),
            id: id.parse().unwrap(),
            capability: "c".into(),
            profile: Default::default(),
            decision: None,
            input: serde_json::Value::Null,
            depends_on: deps.iter().map(|d| d.parse().unwrap()).collect(),
            dependents: Vec::new(),
            sole_parent_of: Vec::new(),
            status,
            attempt: 1,
            deps_remaining: 0,
            deps_done: deps.iter().map(|d| d.parse().unwrap()).collect(),
            agent: ran.map(|_| "agent-1".parse().unwrap()),
            output: None,
            output_ref: None,
            output_preview: None,
            failure: None,
            started_at_ms: ran.map(|(s, _)| s),
            finished_at_ms: ran.map(|(_, f)| f),
            lease_until_ms: None,
            retry: None,
            fallback: true,
            timeout_ms: None,
            attempts: Vec::new(),
            claims: 0,
            claim_token: None,
            lease_expirations: 0,
            dispatches: 0,
            hold: None,
            drive: 0,
        }
    }

    pub fn view(tasks: Vec<TaskRecord>) -> WorkflowView {
        WorkflowView {
            workflow: WorkflowRecord {
                kept_at_ms: 0,
                tenant: "t".parse().unwrap(),
                id: "w".parse().unwrap(),
                name: "a \"quoted\" name".into(),
                status: WorkflowStatus::Succeeded,
                task_count: tasks.len() as u32,
                tasks_remaining: 0,
                tasks_done: Vec::new(),
                failed_task: None,
                error: None,
                deadline_at_ms: None,
                created_at_ms: 0,
                updated_at_ms: 0,
                finished_at_ms: Some(100),
                control: None,
                drive: 0,
                controls: Vec::new(),
            },
            tasks,
        }
    }
}
