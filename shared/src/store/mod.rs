//! Ports to the state and memory tables, the records they hold, and their DynamoDB adapter.
//!
//! Every state transition is a conditional write keyed by (task, attempt), so a duplicate or
//! late message finds the condition false and changes nothing. The port methods say which
//! transition they make; [`dynamo`] says how, and [`keys`] where.

pub mod agent_cache;
pub mod dynamo;
pub mod keys;

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::agent::Agent;
use crate::domain::learning::AgentStats;
use crate::domain::task::{TaskFailure, TaskStatus, WorkflowStatus};
use crate::messages::{OutcomeMessage, TaskRef};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    #[error("the record would exceed DynamoDB's item size limit: {0}")]
    TooLarge(String),
    #[error("DynamoDB request failed: {0}")]
    Dynamo(String),
}

/// A task as written when its workflow is created.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub capability: String,
    pub input: Value,
    pub depends_on: Vec<String>,
    pub dependents: Vec<String>,
    /// `Queued` for roots (sent to routing at once), `Waiting` for the rest.
    pub status: TaskStatus,
}

#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub tenant: String,
    pub workflow_id: String,
    pub name: String,
    pub created_at_ms: i64,
    /// Until when the queued roots may wait before cleanup sends them again.
    pub dispatch_until_ms: i64,
    pub tasks: Vec<NewTask>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub tenant: String,
    pub workflow_id: String,
    pub id: String,
    pub capability: String,
    pub input: Value,
    pub depends_on: Vec<String>,
    pub dependents: Vec<String>,
    pub status: TaskStatus,
    pub attempt: u32,
    pub deps_remaining: u32,
    pub agent: Option<String>,
    pub output: Option<Value>,
    pub failure: Option<TaskFailure>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub lease_until_ms: Option<i64>,
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
}

/// A workflow as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    pub tenant: String,
    pub id: String,
    pub name: String,
    pub status: WorkflowStatus,
    pub task_count: u32,
    pub tasks_remaining: u32,
    pub failed_task: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A workflow with all its tasks, in submission order.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    pub workflow: WorkflowRecord,
    pub tasks: Vec<TaskRecord>,
}

/// What a claim on (task, attempt) found.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// This handler now holds the attempt's lease.
    Claimed(TaskRecord),
    /// The attempt already ended: a duplicate delivery. Its follow-up steps may be resumed.
    AlreadyFinished(TaskRecord),
    /// Another handler holds the attempt, or a newer attempt exists, or the task is not ready.
    NotClaimable(TaskRecord),
    /// No such task.
    Missing,
}

/// The result of one attempt, as recorded on the task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    Succeeded(Value),
    Failed(TaskFailure),
}

/// What recording an attempt's result found.
#[derive(Debug, Clone)]
pub enum Recorded {
    /// The result is recorded; the task as it is now.
    Now(TaskRecord),
    /// This attempt had already ended (a duplicate delivery); the task as it is.
    Earlier(TaskRecord),
    /// The attempt lost its lease to a newer one, or the task is gone: nothing was written.
    Superseded,
}

/// The workflow's counters after a task was counted as finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowProgress {
    pub status: WorkflowStatus,
    pub tasks_remaining: u32,
}

/// What releasing one dependent of a finished task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Its last dependency is done: it is queued at this attempt and must be routed.
    Ready { attempt: u32, capability: String },
    /// It still waits for other dependencies.
    StillWaiting,
    /// It was released before (its dispatch lease covers a lost message) or moved on.
    Moved,
}

/// A task whose lease ran out, as the lease index shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredLease {
    pub task: TaskRef,
    pub capability: String,
    pub status: TaskStatus,
    pub lease_until_ms: i64,
}

/// Timestamps a terminal write needs: when it happened and when TTL may remove the record.
#[derive(Debug, Clone, Copy)]
pub struct Finish {
    pub now_ms: i64,
    pub expires_at_s: i64,
}

/// Workflows and their tasks: the transitions of the execution state machine.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Stores the tasks, then the workflow record that makes them visible.
    async fn create_workflow(&self, workflow: &NewWorkflow) -> Result<(), StoreError>;
    async fn workflow(&self, tenant: &str, id: &str) -> Result<Option<WorkflowView>, StoreError>;
    /// queued → running for exactly this attempt, with a lease until `lease_until_ms`.
    async fn claim_task(
        &self,
        task: &TaskRef,
        agent: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Outputs of the given tasks of one workflow (those that have one).
    async fn task_outputs(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_ids: &[String],
    ) -> Result<Vec<(String, Value)>, StoreError>;
    /// `expected` → succeeded/failed for exactly this attempt.
    async fn record_result(
        &self,
        task: &TaskRef,
        expected: TaskStatus,
        result: &TaskResult,
        finish: Finish,
    ) -> Result<Recorded, StoreError>;
    /// Counts a finished task on its workflow once; a failure fails the workflow.
    async fn count_finished_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_id: &str,
        failure: Option<&TaskFailure>,
        finish: Finish,
    ) -> Result<WorkflowProgress, StoreError>;
    /// running → succeeded once every task is counted. False if already finished.
    async fn complete_workflow(
        &self,
        tenant: &str,
        workflow_id: &str,
        finish: Finish,
    ) -> Result<bool, StoreError>;
    /// Counts `parent` as done on `dependent` once; queues it when it was the last.
    async fn release_dependent(
        &self,
        tenant: &str,
        workflow_id: &str,
        dependent: &str,
        parent: &str,
        dispatch_until_ms: i64,
    ) -> Result<Release, StoreError>;
    /// waiting/queued → skipped. Returns the skipped task's dependents, or None if the task
    /// had already moved on.
    async fn skip_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_id: &str,
        finish: Finish,
    ) -> Result<Option<Vec<String>>, StoreError>;
    /// Leases that ran out before `now_ms`, oldest first, from one shard of the lease index.
    async fn expired_leases(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<ExpiredLease>, StoreError>;
    /// Gives an expired lease back to routing: a running task gets a new attempt, a queued one
    /// a new dispatch deadline. Returns the attempt to route, or None if the task moved on.
    async fn requeue_expired(
        &self,
        lease: &ExpiredLease,
        dispatch_until_ms: i64,
    ) -> Result<Option<u32>, StoreError>;
}

/// The agent registry.
#[async_trait]
pub trait AgentRegistry: Send + Sync {
    /// Registers a new agent; `AlreadyExists` if the name is taken.
    async fn register_agent(&self, tenant: &str, agent: &Agent) -> Result<(), StoreError>;
    async fn agents(&self, tenant: &str) -> Result<Vec<Agent>, StoreError>;
    async fn agent(&self, tenant: &str, name: &str) -> Result<Option<Agent>, StoreError>;
}

/// Outcome history and learned statistics.
#[async_trait]
pub trait LearningStore: Send + Sync {
    /// Records outcomes of one agent on one task type and folds them into its stats, exactly
    /// once per attempt. Returns, per outcome, whether it was new (false: already learned).
    async fn record_outcomes(
        &self,
        outcomes: &[OutcomeMessage],
        expires_at_s: i64,
    ) -> Result<Vec<bool>, StoreError>;
    /// Stats of the given agents on one task type, keyed by agent name (absent: no history).
    async fn agent_stats(
        &self,
        tenant: &str,
        task_type: &str,
        agents: &[String],
    ) -> Result<HashMap<String, AgentStats>, StoreError>;
}
