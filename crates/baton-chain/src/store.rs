//! Ports to the state and memory tables, and what their methods take and give back (the
//! records themselves are `baton_types::records`).
//!
//! Every state transition is a conditional write keyed by (task, attempt), so a duplicate or
//! late message finds the condition false and changes nothing. A write whose response was lost
//! and that the SDK sends again meets its own earlier effect: the adapter recognises it (a
//! claim by its token, a release by its parent, an ended attempt by its number) and reports it
//! as done, not as someone else's. The port methods say which transition they make;
//! `baton_aws::dynamo` says how, `baton_aws::dynamo::keys` where, and `memory` keeps
//! the same contract in memory for tests.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;

use baton_types::agent::Agent;
use baton_types::circuit::{Circuit, Probe};
use baton_types::contexts::StoredContext;
use baton_types::control::{Control, ControlChange, ControlEvent, ControlState, Hold, TaskReset};
use baton_types::conversation::ConversationState;
use baton_types::health::AgentHealth;
use baton_types::ids::{AgentName, SessionId, TaskId, TenantId, WorkflowId};
use baton_types::learning::AgentStats;
use baton_types::messages::{OutcomeMessage, TaskRef};
use baton_types::outcome::TaskFailure;
use baton_types::patterns::Pattern;
use baton_types::priority::Multipliers;
use baton_types::quota::{PaceState, PaceStep, QuotaOverrides};
use baton_types::recall::RunningSummary;
use baton_types::records::{
    progress_outcome, ArchivedDrive, TaskRecord, WorkflowRecord, WorkflowView,
};
use baton_types::registry::UnreadableAgent;
use baton_types::resources::{AgentLoad, Limits, Resources};
use baton_types::results::{PastResult, ResultQuery};
use baton_types::retry::RetryPolicySpec;
use baton_types::routing::{CapabilityDefaults, RouteDecision, RoutingView};
use baton_types::session::Session;
use baton_types::stream::StreamEvent;
use baton_types::suggestions::StoredSuggestion;
use baton_types::task::{AttemptRecord, TaskProfile, TaskStatus, WorkflowStatus};
use baton_types::turn::{AgentInstance, AsyncResult, TurnRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    #[error("the record would exceed the store's item size limit: {0}")]
    TooLarge(String),
    /// The store refused the request or did not answer; its error is the source.
    #[error("the store request failed: {}", crate::causes::with_causes(.0.as_ref()))]
    Request(#[source] crate::causes::BoxError),
    /// The request was refused as it stands (not for its size): trying it again cannot help.
    #[error("the store refused the request: {0}")]
    Refused(String),
    /// Other writers kept changing what this request depends on, past its retries.
    #[error("the store stayed busy: {0}")]
    Busy(String),
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
}

/// For each task of `workflow`, the dependents whose only dependency it is (one pass).
pub fn sole_parents(workflow: &NewWorkflow) -> HashMap<&TaskId, Vec<TaskId>> {
    let mut sole: HashMap<&TaskId, Vec<TaskId>> = HashMap::new();
    for task in &workflow.tasks {
        if let [parent] = task.depends_on.as_slice() {
            sole.entry(parent).or_default().push(task.id.clone());
        }
    }
    sole
}

/// A task as written when its workflow is created.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub capability: String,
    pub profile: TaskProfile,
    pub input: Value,
    pub depends_on: Vec<TaskId>,
    pub dependents: Vec<TaskId>,
    /// `Queued` for roots (sent to routing at once), `Waiting` for the rest.
    pub status: TaskStatus,
    /// A queued root's dispatch lease, when its pace sends it later than the workflow's
    /// (None: the workflow's `dispatch_until_ms`).
    pub dispatch_until_ms: Option<i64>,
    /// The task's retry policy merged over the workflow's defaults; None: both left it open.
    pub retry: Option<RetryPolicySpec>,
    /// False: retries stay on the agent that failed instead of moving to a fallback.
    pub fallback: bool,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub tenant: TenantId,
    pub workflow_id: WorkflowId,
    pub name: String,
    pub created_at_ms: i64,
    /// Until when the queued roots may wait before cleanup sends them again.
    pub dispatch_until_ms: i64,
    /// When the workflow fails with `deadline_exceeded` if it has not finished.
    pub deadline_at_ms: Option<i64>,
    /// When the scheduled repair first looks at the workflow, if it is still running.
    pub check_at_ms: i64,
    /// Counted among the tenant's running workflows (its quota) while it runs; a
    /// conversation turn's are not (a session runs one turn at a time).
    pub counted: bool,
    pub tasks: Vec<NewTask>,
}

/// What a task receives from its dependencies.
#[derive(Debug, Clone, PartialEq)]
pub enum DependencyOutputs {
    /// Each dependency's output, by id.
    Within(Vec<(TaskId, Value)>),
    /// They come to more than a task may receive: at least this many bytes.
    TooLarge { bytes: usize },
}

/// The most a task receives from its dependencies' outputs, in bytes of stored JSON: what
/// one call carries, and what a handler holds for it (one output of the largest size fits).
pub const MAX_DEPENDENCY_BYTES: usize = 8 * 1024 * 1024;

/// What a claim on (task, attempt) found.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// This handler now holds the attempt's lease (also when its own claim's response was
    /// lost and the SDK's retry met it).
    Claimed(TaskRecord),
    /// The attempt already ended: a duplicate delivery. Its follow-up steps may be resumed.
    AlreadyFinished(TaskRecord),
    /// Another handler holds the attempt, or a newer attempt exists, or the task is not ready.
    NotClaimable(TaskRecord),
    /// The attempt is queued but held: its workflow is paused or being cancelled.
    Held(TaskRecord, Hold),
    /// No such task.
    Missing,
}

/// A token unique to one claim: it tells a claim's own write from another handler's.
pub fn new_claim_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The condition under which an attempt may be ended: who holds it.
#[derive(Debug, Clone, Copy)]
pub enum AttemptHolder<'a> {
    /// The handler whose claim carried this token.
    Claim(&'a str),
    /// Nobody: the attempt is queued (routing found no agent that could take it).
    Queued,
    /// Nobody any more: the lease that ran out at this time (cleanup).
    ExpiredLease(i64),
}

/// How an attempt ends.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    Succeeded(Value),
    Failed(TaskFailure),
    /// The attempt failed and another follows: the task is queued again at attempt + 1.
    Retry {
        not_before_ms: i64,
        /// The dispatch lease of the next attempt: past it, cleanup sends the task again.
        lease_until_ms: i64,
    },
}

/// What ending an attempt found.
#[derive(Debug, Clone)]
pub enum Ended {
    /// The attempt ended now; the task as it is now.
    Now(TaskRecord),
    /// The attempt had already ended (a duplicate, or this write's own lost response); the task
    /// as it is: terminal at this attempt, or queued for the retry that follows it.
    Before(TaskRecord),
    /// The attempt lost its lease to a newer claim or attempt, or the task is gone.
    Superseded,
}

/// The workflow's counters after a task was counted as ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowProgress {
    pub status: WorkflowStatus,
    pub tasks_remaining: u32,
    /// A task failed or the deadline passed: the workflow will fail, and nothing new starts.
    pub failing: bool,
    /// A cancel was asked for: the workflow will end cancelled, and nothing new starts.
    pub cancelling: bool,
}

impl WorkflowProgress {
    pub fn outcome(&self) -> WorkflowStatus {
        progress_outcome(self.cancelling, self.failing)
    }
}

/// What releasing one dependent of a finished task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Its last dependency is done: it is queued at this attempt and must be routed.
    Ready {
        attempt: u32,
        capability: String,
        profile: Box<TaskProfile>,
    },
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
    pub profile: TaskProfile,
    pub status: TaskStatus,
    pub lease_until_ms: i64,
    /// The agent of the current attempt's last claim, if it was claimed.
    pub agent: Option<AgentName>,
    pub claims: u32,
    pub dispatches: u32,
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
    /// The workflow record and all its tasks, read so that a finished workflow is never seen
    /// with unfinished tasks.
    async fn workflow(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowView>, StoreError>;
    /// The workflow as [`WorkflowStore::workflow`] reads it, without its tasks' inputs and
    /// outputs: the scheduled repair's read, bounded whatever the payloads.
    async fn workflow_outline(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowView>, StoreError>;
    /// A payload an item points at, read from the bucket and parsed.
    async fn stored_payload(
        &self,
        stored: &baton_types::records::StoredPayload,
    ) -> Result<Value, StoreError>;
    /// A task's output whole, read from the payload bucket when its item holds only a
    /// pointer.
    async fn whole_output(&self, record: &TaskRecord) -> Result<Option<Value>, StoreError> {
        match (&record.output, &record.output_ref) {
            (None, Some(stored)) => Ok(Some(self.stored_payload(stored).await?)),
            (output, _) => Ok(output.clone()),
        }
    }
    /// One task with its input and output read whole, also from the payload bucket (None:
    /// no such task). [`WorkflowStore::task`] reads the item only.
    async fn task_whole(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// One task as its item holds it: an input or output in the payload bucket is left there
    /// (None: no such task).
    async fn task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// The workflow's status alone (None: no such workflow).
    async fn workflow_status(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowStatus>, StoreError>;
    /// queued → running for exactly this attempt, with a lease until `lease_until_ms`,
    /// under `token`, which recognises this claim if its response is lost. The routing
    /// decision, when given, is kept on the task for people to read.
    async fn claim_task(
        &self,
        task: &TaskRef,
        agent: &AgentName,
        decision: Option<&RouteDecision>,
        token: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Outputs of the given tasks of one workflow (those that have one), read a few at a
    /// time and no further once they come to more than `max_bytes`.
    async fn task_outputs(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_ids: &[TaskId],
        max_bytes: usize,
    ) -> Result<DependencyOutputs, StoreError>;
    /// Ends attempt `task.attempt` as `end`, if `holder` still holds it, and appends `entry`
    /// to the task's attempts in the same write.
    async fn end_attempt(
        &self,
        task: &TaskRef,
        holder: AttemptHolder<'_>,
        end: &AttemptEnd,
        entry: &AttemptRecord,
        finish: Finish,
    ) -> Result<Ended, StoreError>;
    /// Counts an ended task on its workflow once; a failed one makes the workflow failing.
    async fn count_finished_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        failed: bool,
        now_ms: i64,
    ) -> Result<WorkflowProgress, StoreError>;
    /// running → `outcome` (succeeded, failed when failing, cancelled when cancelling) once
    /// every task is counted. False if it already finished or some task is not counted yet.
    async fn finish_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        outcome: WorkflowStatus,
        finish: Finish,
    ) -> Result<bool, StoreError>;
    /// Counts `parent` as done on `dependent` once; queues it when it was the last. `sole`:
    /// `parent` is its only dependency (its `sole_parent_of`), so counting and queueing can
    /// be one write.
    async fn release_dependent(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        dependent: &TaskId,
        parent: &TaskId,
        sole: bool,
        dispatch_until_ms: i64,
    ) -> Result<Release, StoreError>;
    /// waiting → skipped. Returns the task's dependents if it is skipped now or was before
    /// (so a descent cut short resumes), None if it moved on otherwise.
    async fn skip_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        finish: Finish,
    ) -> Result<Option<Vec<TaskId>>, StoreError>;
    /// An unfinished state → cancelled with `failure` (a running one only when
    /// `running_too`). True if it is cancelled now or was.
    async fn cancel_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        failure: &TaskFailure,
        running_too: bool,
        finish: Finish,
    ) -> Result<bool, StoreError>;
    /// Marks a running workflow as failing with `error` (its deadline passed).
    async fn fail_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        error: &TaskFailure,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Leases that ran out before `now_ms`, oldest first, from one shard of the lease index.
    async fn expired_leases(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<ExpiredLease>, StoreError>;
    /// Gives an expired lease back: a running attempt is queued again (same attempt, a lease
    /// expiration counted), a queued one gets a new dispatch deadline (a dispatch counted).
    /// False if the task moved on since the index showed it.
    async fn requeue_expired(
        &self,
        lease: &ExpiredLease,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Moves a queued attempt's dispatch lease to `lease_until_ms` while it waits for an agent
    /// to have room, if `dispatch` is still its newest send. False if it moved on or was sent
    /// again since: the waiting copy is then late.
    async fn extend_dispatch(
        &self,
        task: &TaskRef,
        dispatch: u32,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Drops a task whose workflow record was never written: out of the lease index, and
    /// left to TTL.
    async fn abandon_task(
        &self,
        lease: &ExpiredLease,
        expires_at_s: i64,
    ) -> Result<bool, StoreError>;
    /// Unfinished workflows whose next check is due, from one shard of the sweeps index.
    async fn due_workflows(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, WorkflowId)>, StoreError>;
    /// When the repair looks at a running workflow next.
    async fn schedule_check(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Keeps what an unfinished workflow still needs from expiring: each task not kept since
    /// `since_ms` has its payloads in the bucket refreshed and, if it has ended, its
    /// `expires_at` moved to `expires_at_s`; then the record notes `now_ms` as `kept_at`.
    /// Returns the tasks kept. Safe to repeat, and to stop anywhere: what it did stays done.
    async fn keep_alive(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        since_ms: i64,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<u32, StoreError>;
}

/// A workflow as the list index holds it: what changes only at its creation, its controls and
/// its end (not its per-task counters, which would cost an index write per task).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedWorkflow {
    pub id: WorkflowId,
    pub name: String,
    pub status: WorkflowStatus,
    pub control: Option<Control>,
    pub task_count: u32,
    pub drive: u32,
    pub failed_task: Option<TaskId>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

impl ListedWorkflow {
    pub fn control_state(&self) -> ControlState {
        ControlState {
            status: self.status,
            control: self.control,
            tasks_remaining: 0,
            drive: self.drive,
        }
    }
}

/// One page of a tenant's workflows, newest first.
#[derive(Debug, Clone, Default)]
pub struct WorkflowPage {
    pub workflows: Vec<ListedWorkflow>,
    /// Where the next page starts (the index key of the last item read), if there may be one.
    pub next: Option<String>,
}

/// What a list of workflows is filtered by.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// A shown status (`running`, `paused`, `cancelling`, or a final one).
    pub status: Option<String>,
    pub name: Option<String>,
    /// Created at or after.
    pub since_ms: Option<i64>,
    pub limit: u32,
    /// The `next` of the page before.
    pub after: Option<String>,
}

/// A control's write on the workflow record.
#[derive(Debug, Clone)]
pub struct ControlWrite<'a> {
    pub change: ControlChange,
    /// Appended to the record's controls; its request id recognises a retried write.
    pub event: &'a ControlEvent,
    /// A redrive's tasks to run again (taken off the tasks counted as done).
    pub rerun: &'a [TaskId],
    /// A redrive's new deadline: the workflow's time-out again, from now.
    pub deadline_at_ms: Option<i64>,
    /// The next check of the repair sweep, which finishes a control cut short.
    pub check_at_ms: i64,
}

/// What applying a control to a workflow record found.
#[derive(Debug, Clone)]
pub enum ControlApplied {
    /// Written now, or by this request before (a retried write meeting itself).
    Applied(Box<WorkflowRecord>),
    /// The record changed since it was read: decide again.
    Stale,
    Missing,
}

/// The controls' writes: the workflow record first, then each task brought in line.
#[async_trait]
pub trait WorkflowControls: Send + Sync {
    /// Applies `change` to the workflow record read as `read`, conditional on it being
    /// unchanged, and appends `event` to its controls.
    async fn control_workflow(
        &self,
        read: &WorkflowRecord,
        write: &ControlWrite<'_>,
    ) -> Result<ControlApplied, StoreError>;
    /// Puts `hold` on an unfinished task. Returns the task as it is after, or None if it
    /// has ended.
    async fn hold_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        hold: Hold,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// Takes a held, queued attempt out of the lease index: it waits for a resume, which
    /// sends it again, and no sweep sends it meanwhile.
    async fn park_task(&self, task: &TaskRef) -> Result<(), StoreError>;
    /// Lifts a pause from a task read as `read`. A queued one gets a new dispatch lease
    /// until `dispatch_until_ms` and must be sent to routing (returned as Some). False-y
    /// (None) also when the task changed since it was read; the caller reads it again.
    async fn release_hold(
        &self,
        read: &TaskRecord,
        dispatch_until_ms: i64,
    ) -> Result<HoldReleased, StoreError>;
    /// Resets the task read as `read` for the workflow's drive `drive` as `reset` says. Its
    /// attempts of the drive that ended move to the workflow's archive in the same write (kept
    /// until `archive_expires_at_s`), so its item starts the drive without them. True if it
    /// is reset now or was before.
    async fn reset_task(
        &self,
        read: &TaskRecord,
        reset: &TaskReset,
        profile: &TaskProfile,
        drive: u32,
        dispatch_until_ms: i64,
        archive_expires_at_s: i64,
    ) -> Result<bool, StoreError>;
    /// The attempts the workflow's redrives moved to its archive, by task and drive (only a
    /// redriven workflow has any).
    async fn archived_drives(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> Result<Vec<ArchivedDrive>, StoreError>;
    /// One page of the tenant's workflows, newest first, from the list index.
    async fn list_workflows(
        &self,
        tenant: &TenantId,
        filter: &WorkflowFilter,
    ) -> Result<WorkflowPage, StoreError>;
}

/// What lifting a pause from a task did.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldReleased {
    /// Lifted; the task was queued and must be sent to routing.
    Send(Box<TaskRecord>),
    /// Lifted (or there was none); nothing to send.
    Done,
    /// The task changed since it was read.
    Changed,
}

/// The agent registry.
#[async_trait]
pub trait AgentRegistry: Send + Sync {
    /// Writes the agent whether or not it exists (the local stack's examples on a restart).
    async fn replace_agent(&self, tenant: &TenantId, agent: &Agent) -> Result<(), StoreError>;
    /// The tenant's agents. An unreadable item is left out and logged: one bad item never
    /// takes the tenant's routing down.
    async fn agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError>;
    /// The tenant's agents with what the registry needs to change them: the items it could
    /// not read, and each agent's guard.
    async fn agent_list(&self, tenant: &TenantId) -> Result<AgentList, StoreError>;
    /// Writes a registry change with the premises it was decided on; false if any no longer
    /// holds (the agent's version or guard moved, or a need was disabled meanwhile). A retry
    /// that meets its own earlier write counts as applied.
    async fn change_agent(
        &self,
        tenant: &TenantId,
        change: &AgentChange<'_>,
    ) -> Result<bool, StoreError>;
    async fn agent(&self, tenant: &TenantId, name: &AgentName)
        -> Result<Option<Agent>, StoreError>;
    /// The tenant's count of agents as its changes kept it (None: none kept yet).
    async fn agent_count(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError>;
    /// The tenant's agents as routing and planning see them: without their system prompts,
    /// parameters, inference settings and descriptions, which only a call (or a person)
    /// needs. Unreadable items are left out, as by [`AgentRegistry::agents`].
    async fn routing_agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError> {
        self.agents(tenant).await
    }
    /// Agents (of every tenant) whose health check is due, with their tenant.
    async fn due_health_checks(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, Agent)>, StoreError>;
    /// Stores a probe's result and when the next probe is due.
    async fn record_health(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        health: &AgentHealth,
        next_check_ms: i64,
    ) -> Result<(), StoreError>;
}

/// The tenant's registry as read for a change.
#[derive(Debug, Clone, Default)]
pub struct AgentList {
    pub agents: Vec<Agent>,
    /// Items that could not be read: skipped by routing, reported by the health summary.
    pub unreadable: Vec<UnreadableAgent>,
    /// Per agent, how many times an agent that needs it was stored enabled. A disable or
    /// delete is conditioned on it, so that it cannot miss a dependent registered meanwhile.
    pub guards: std::collections::BTreeMap<String, u64>,
}

impl AgentList {
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    pub fn guard(&self, name: &str) -> u64 {
        self.guards.get(name).copied().unwrap_or(0)
    }
}

/// One change to the registry and the premises it was decided on.
#[derive(Debug, Clone)]
pub struct AgentChange<'a> {
    pub name: &'a str,
    /// The agent as it is to be stored, its version the next one; None deletes it.
    pub agent: Option<&'a Agent>,
    /// The stored version the change was decided on; None: the name must be free.
    pub expected_version: Option<u64>,
    /// The agent's guard as read, when the change disables or deletes it.
    pub expected_guard: Option<u64>,
    /// Agents the stored agent needs enabled: each must still be, and gets its guard raised.
    pub needs: Vec<&'a str>,
    /// Unique to the request: a retry of the same write recognises its own item.
    pub change_id: &'a str,
    /// How the change moves the tenant's count of agents (a new agent, a deletion), which
    /// its quota bounds in the same transaction; None: it does not.
    pub count: Option<AgentCount>,
}

/// A change to the tenant's count of agents, applied with the change itself: a new agent
/// only while the count is under `limit`, so racing registrations cannot pass the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentCount {
    /// The agents the change was decided on (the count where none was kept yet).
    pub registered: u64,
    /// +1 for a new agent, -1 for a deleted one.
    pub delta: i64,
    pub limit: u32,
}

/// Conversation sessions and everything they hold.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session (its id is fresh, so it never meets another's).
    async fn create_session(&self, tenant: &TenantId, session: &Session) -> Result<(), StoreError>;
    async fn session(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<Session>, StoreError>;
    /// Deletes every item of the session. False if it held none (already ended).
    async fn end_session(&self, tenant: &TenantId, id: &SessionId) -> Result<bool, StoreError> {
        match self.session_contents(tenant, id).await? {
            Some(contents) => self.delete_session_contents(tenant, &contents).await,
            None => Ok(false),
        }
    }
    /// Ends the session only if it is still the opening `generation` (None: one stored
    /// before generations, or any opening, as [`SessionStore::end_session`]): an id opened
    /// again since it was read keeps its new session. False if nothing of it was deleted.
    async fn end_session_of(
        &self,
        tenant: &TenantId,
        id: &SessionId,
        generation: Option<&str>,
    ) -> Result<bool, StoreError> {
        let Some(contents) = self.session_contents(tenant, id).await? else {
            return Ok(false);
        };
        if generation.is_some() && contents.generation.as_deref() != generation {
            return Ok(false);
        }
        self.delete_session_contents(tenant, &contents).await
    }
    /// What ending the session deletes, as it is now: the first half of an end (None: the
    /// session holds nothing).
    async fn session_contents(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<SessionContents>, StoreError>;
    /// The second half of an end: deletes the turns' workflows, then each item read that is
    /// still of the generation it was read in, the record last. Items written since by a new
    /// opening of the id are left alone. False if nothing was deleted.
    async fn delete_session_contents(
        &self,
        tenant: &TenantId,
        contents: &SessionContents,
    ) -> Result<bool, StoreError>;
    /// Sessions whose idle time-out has passed, with their tenant, from the sweeps index. A
    /// session found due while it runs a turn is not returned: it is made due again one idle
    /// time-out later (its turn's answer sets the real time), so it never holds up the sweep.
    async fn idle_sessions(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, SessionId)>, StoreError>;
    /// The session with its agents' instances and the async results not shown yet, in one
    /// read.
    async fn session_bundle(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<SessionBundle>, StoreError>;
    /// Lifts a human-intervention pause, recording the human's reply in the conversation.
    async fn resume_session(
        &self,
        tenant: &TenantId,
        id: &SessionId,
        reply: Option<&str>,
        now_ms: i64,
    ) -> Result<Resumed, StoreError>;
}

/// A session's turns: started one at a time, finished by the end of their answering task.
#[async_trait]
pub trait TurnStore: Send + Sync {
    /// Starts a turn in one transaction: takes the session's turn (no other may run), stores
    /// the turn and its workflows, and takes the async results it shows.
    async fn start_turn(
        &self,
        tenant: &TenantId,
        start: &TurnStart<'_>,
    ) -> Result<TurnStarted, StoreError>;
    async fn turn(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        turn: u32,
    ) -> Result<Option<TurnRecord>, StoreError>;
    /// Records a turn's answer, the conversation's changed parts and the agents' instances,
    /// and lets the next turn in, in one transaction. False if the turn was already finished
    /// or the session has ended.
    async fn finish_turn(
        &self,
        tenant: &TenantId,
        finish: &TurnFinish<'_>,
    ) -> Result<bool, StoreError>;
    /// Keeps an async agent's result for the next turn, and its instance state; nothing if
    /// the session has ended, or is another opening than `generation` (when known).
    async fn record_async_result(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        generation: Option<&str>,
        result: &AsyncResult,
        state: Option<&Value>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Keeps a conversation's running summary, unless the session keeps one of the same or
    /// later turns already, has ended, or is another opening than `generation` (when known).
    async fn record_summary(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        generation: Option<&str>,
        summary: &RunningSummary,
    ) -> Result<(), StoreError>;
}

/// What ending a task needs: its workflow, the conversation turn it may belong to, and the
/// suggestions an analyst's task answers.
pub trait ChainStore:
    WorkflowStore + WorkflowControls + SessionStore + TurnStore + ImprovementStore
{
}

impl<S> ChainStore for S where
    S: WorkflowStore + WorkflowControls + SessionStore + TurnStore + ImprovementStore + ?Sized
{
}

/// A session with what its turns need.
#[derive(Debug, Clone)]
pub struct SessionBundle {
    pub session: Session,
    pub instances: Vec<AgentInstance>,
    /// Async results not yet shown, oldest first.
    pub pending: Vec<AsyncResult>,
}

/// What an end of a session read, to delete: each item's key with the generation it was read
/// in, and the turns' workflows.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionContents {
    pub session_id: SessionId,
    /// The generation of the session's record as read (None: no record, or one stored before
    /// generations).
    pub generation: Option<String>,
    /// Every item of the session's partition but its record, by sort key.
    pub items: Vec<SessionItem>,
    /// Whether the record was read (deleted last).
    pub has_record: bool,
    /// The workflows of its turns (deleted first).
    pub workflows: Vec<WorkflowId>,
}

impl SessionContents {
    /// Nothing read yet of session `session_id`.
    pub fn empty(session_id: SessionId) -> Self {
        SessionContents {
            session_id,
            generation: None,
            items: Vec::new(),
            has_record: false,
            workflows: Vec::new(),
        }
    }
}

/// One item of a session as an end read it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionItem {
    pub sk: String,
    /// None: written before generations; deleted only while it still has none.
    pub generation: Option<String>,
}

/// Everything a new turn writes at once.
pub struct TurnStart<'a> {
    /// The session as read before the turn: its turn count is the transaction's condition.
    pub session: &'a Session,
    pub turn: &'a TurnRecord,
    pub workflows: &'a [NewWorkflow],
    /// The async results the turn shows, taken from the session.
    pub shown: &'a [AsyncResult],
    /// This request's id: a retried write that meets its own earlier one knows it.
    pub request_id: &'a str,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnStarted {
    Started,
    /// Another turn runs: this one is refused.
    Busy {
        active_turn: u32,
    },
    /// A turn started since the session was read: read it again.
    Stale,
    /// The session ended.
    Gone,
}

/// A turn's end.
pub struct TurnFinish<'a> {
    pub turn: &'a TurnRecord,
    /// The session as read before the end: its conversation (only the parts that differ from
    /// `after` are written), its generation (the condition) and its idle time-out, whose
    /// clock restarts at the answer.
    pub session: &'a Session,
    pub after: &'a ConversationState,
    /// The agents that answered, with the state each returned (None: unchanged).
    pub instances: Vec<(String, Option<Value>)>,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resumed {
    Resumed(Box<Session>),
    NotPaused,
    Gone,
}

/// A tenant's settings: defaults per capability, its own priority multipliers, and the
/// quotas the operator set for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantConfig {
    pub capabilities: HashMap<String, CapabilityDefaults>,
    /// Multipliers by task type that the tenant set, over the defaults.
    pub multipliers: std::collections::BTreeMap<String, f64>,
    /// The operator's quotas for this tenant, over the deployment's defaults.
    pub quotas: QuotaOverrides,
}

impl TenantConfig {
    pub fn multipliers(&self) -> Multipliers {
        Multipliers::with(&self.multipliers)
    }

    pub fn capability(&self, capability: &str) -> CapabilityDefaults {
        self.capabilities
            .get(capability)
            .cloned()
            .unwrap_or_default()
    }
}

/// Tenants' settings.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// All of the tenant's settings, in one query.
    async fn tenant_config(&self, tenant: &TenantId) -> Result<TenantConfig, StoreError>;
    async fn put_capability_defaults(
        &self,
        tenant: &TenantId,
        capability: &str,
        defaults: &CapabilityDefaults,
    ) -> Result<(), StoreError>;
    /// Replaces the tenant's own multipliers.
    async fn put_multipliers(
        &self,
        tenant: &TenantId,
        multipliers: &std::collections::BTreeMap<String, f64>,
    ) -> Result<(), StoreError>;
    /// Replaces the quotas the operator set for the tenant.
    async fn put_quotas(
        &self,
        tenant: &TenantId,
        quotas: &QuotaOverrides,
    ) -> Result<(), StoreError>;
}

/// Counts a tenant's quotas bound where the things counted live outside the tables (its
/// secrets, in Secrets Manager): a place is taken before the thing is made, and given back
/// when it is deleted (or could not be made), so racing requests cannot pass the quota.
#[async_trait]
pub trait TenantCounters: Send + Sync {
    /// Takes one place under `limit` on the tenant's `counter`; `counted` is the count to
    /// start from where none is kept yet. False when every place is taken.
    async fn take_place(
        &self,
        tenant: &TenantId,
        counter: &str,
        counted: u64,
        limit: u64,
    ) -> Result<bool, StoreError>;
    /// Gives one place back (never below zero).
    async fn give_place(&self, tenant: &TenantId, counter: &str) -> Result<(), StoreError>;
}

/// What a submission's step on the tenant's pace cell did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceAdvance {
    /// Applied: the turns count from `base_us`; `old` is the cells as they were before.
    Advanced { base_us: i64, old: PaceState },
    /// Refused: the cell is at `tat_us`, past what the submission may start from.
    Refused { tat_us: i64 },
}

/// Admission: the tenant's pacing cells, moved once per submission, and what runs.
#[async_trait]
pub trait AdmissionStore: Send + Sync {
    /// Applies `step` to the tenant's `tat` atomically: from idle if the tenant is idle, else
    /// extended if it stays within the backlog (see [`PaceStep`]).
    async fn advance_pace(
        &self,
        tenant: &TenantId,
        step: &PaceStep,
    ) -> Result<PaceAdvance, StoreError>;
    /// Writes the urgent cell if it is still `read`; false if another submission moved it.
    async fn save_urgent(
        &self,
        tenant: &TenantId,
        read: Option<i64>,
        next: i64,
    ) -> Result<bool, StoreError>;
    /// The tenant's unfinished submitted workflows, counted up to `limit` (from an index:
    /// a workflow submitted or finished a moment ago may be missed).
    async fn running_count(&self, tenant: &TenantId, limit: u32) -> Result<u64, StoreError>;
}

/// What acquiring a slot on an agent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotGrant {
    /// The holder has its slot (also when its own earlier write's response was lost).
    Held,
    /// The agent is at its concurrency or resource limit.
    Full,
}

/// One call's hold on an agent: who holds it, what it holds and until when.
#[derive(Debug, Clone, Copy)]
pub struct SlotHold<'a> {
    pub holder: &'a str,
    pub needs: &'a Resources,
    pub until_ms: i64,
}

/// State routing shares across every instance, paid for only by the tasks that use it: the
/// round-robin counters, and the calls in flight to agents with limits (or counted for
/// `least_loaded`).
#[async_trait]
pub trait RoutingState: Send + Sync {
    /// Advances the capability's round-robin counter and returns the turn taken.
    async fn next_turn(&self, tenant: &TenantId, capability: &str) -> Result<u64, StoreError>;
    /// The live calls in flight to each of `agents` at `now_ms` (absent: none).
    async fn loads(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
        now_ms: i64,
    ) -> Result<HashMap<String, AgentLoad>, StoreError>;
    /// Takes a slot (and the needs) on `agent` if its limits allow one more call beside the
    /// live ones. Holds whose lease ran out no longer count.
    async fn acquire_slot(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        limits: Limits<'_>,
        hold: SlotHold<'_>,
        now_ms: i64,
    ) -> Result<SlotGrant, StoreError>;
    /// Gives the holder's slot back; nothing if it holds none.
    async fn release_slot(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        holder: &str,
    ) -> Result<(), StoreError>;
}

/// Outcome history, learned statistics and circuits.
#[async_trait]
pub trait LearningStore: Send + Sync {
    /// Records outcomes of one agent and folds them into its stats (per task type) and its
    /// circuit, exactly once per attempt, decaying older evidence by `half_life_ms`. Returns,
    /// per outcome, whether it was new.
    async fn record_outcomes(
        &self,
        outcomes: &[OutcomeMessage],
        half_life_ms: i64,
        expires_at_s: i64,
    ) -> Result<Vec<bool>, StoreError>;
    /// The agent's remembered results that `query` asks for, newest first (see
    /// [`baton_types::results`]).
    async fn past_results(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        query: &ResultQuery,
    ) -> Result<Vec<PastResult>, StoreError>;
    /// Stats of the given agents on one task type, keyed by agent name (absent: no history).
    async fn agent_stats(
        &self,
        tenant: &TenantId,
        task_type: &str,
        agents: &[AgentName],
    ) -> Result<HashMap<String, AgentStats>, StoreError>;
    /// What routing reads for one task, in one batch: the candidates' circuits and, given a
    /// task type, their stats on it.
    async fn routing_view(
        &self,
        tenant: &TenantId,
        task_type: Option<&str>,
        agents: &[AgentName],
    ) -> Result<RoutingView, StoreError>;
    /// The given agents' circuits (absent: closed and clean).
    async fn circuits(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
    ) -> Result<HashMap<String, Circuit>, StoreError>;
    /// Hands out the half-open circuit's one probe, if no live probe is out and the circuit
    /// is still the one opened at `opened_at_ms`. True if `probe` is now the probe.
    async fn take_probe(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        probe: &Probe,
        opened_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
}

/// What the API's stats read beyond the other ports: every learned stats record of some agents,
/// and how many of a tenant's workflows are running.
/// Contexts, kept whole under the tenant (see [`baton_types::contexts`]).
/// Tasks' streams (see [`baton_types::stream`]): numbered events, appended in batches by the
/// attempt that produces them, read from any number on.
#[async_trait]
pub trait StreamLog: Send + Sync {
    /// The task's last event, read strongly: the writer numbers on from it.
    async fn last_event(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<StreamEvent>, StoreError>;
    /// Appends `events`, numbered on from the last (at most [`MAX_BATCH_EVENTS`] of them);
    /// false when another writer took the first one's number first (nothing is written). This
    /// write's own effect, its response lost, counts as written.
    async fn append_events(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        events: &[StreamEvent],
        expires_at_s: i64,
    ) -> Result<bool, StoreError>;
    /// The task's events numbered after `after`, in order, at most `limit`.
    async fn events_after(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, StoreError>;
}

/// The tenant's open streams on the streaming endpoint, so one tenant's many streams cannot
/// hold the capacity every tenant's streams (and the chain's functions) share.
#[async_trait]
pub trait StreamSlots: Send + Sync {
    /// Takes one of the tenant's `limit` slots for the stream `id` until `until_ms`; false
    /// when all are held. Lapsed slots (a function that died holding one) count as free.
    async fn take_stream_slot(
        &self,
        tenant: &TenantId,
        id: &str,
        limit: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Frees the slot of stream `id` (nothing if it is not held).
    async fn free_stream_slot(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError>;
}

/// The most events one append writes: a reader looks that far back for the batch that holds
/// the event it asks for.
pub const MAX_BATCH_EVENTS: u64 = 8;

#[async_trait]
pub trait ContextStore: Send + Sync {
    /// The context, expired or not (the caller decides what an expired one means).
    async fn context(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredContext>, StoreError>;
    /// Writes `context` if the stored one is at `context.version - 1` (none stored: version
    /// 1); false if it moved on. A write that meets its own earlier effect counts as done.
    async fn write_context(
        &self,
        tenant: &TenantId,
        context: &StoredContext,
    ) -> Result<bool, StoreError>;
    /// Deletes the context if it is at `version`; false if it moved on or is gone.
    async fn delete_context(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u64,
    ) -> Result<bool, StoreError>;
}

/// Self-improvement suggestions, kept whole under the tenant (see
/// [`baton_types::suggestions`]). Writes are conditioned, so concurrent analyses and people
/// never overwrite each other.
#[async_trait]
pub trait ImprovementStore: Send + Sync {
    /// The tenant's suggestions, newest first, at most
    /// [`baton_types::suggestions::MAX_KEPT`].
    async fn suggestions(&self, tenant: &TenantId) -> Result<Vec<StoredSuggestion>, StoreError>;
    /// Stores a new suggestion; false if one of its id exists already.
    async fn create_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError>;
    /// Replaces the suggestion if the stored one is still at `suggestion.version - 1`; false if
    /// it moved on.
    async fn update_suggestion(
        &self,
        tenant: &TenantId,
        suggestion: &StoredSuggestion,
    ) -> Result<bool, StoreError>;
}

/// A task type's patterns, kept as intervals (see [`baton_types::patterns`]): opened once,
/// closed once, never rewritten.
#[async_trait]
pub trait PatternStore: Send + Sync {
    /// The task type's patterns, newest first, at most
    /// [`baton_types::patterns::MAX_HISTORY`].
    async fn patterns(
        &self,
        tenant: &TenantId,
        task_type: &str,
    ) -> Result<Vec<Pattern>, StoreError>;
    /// Keeps a newly holding pattern (a repeat of the same write changes nothing).
    async fn open_pattern(
        &self,
        tenant: &TenantId,
        task_type: &str,
        pattern: &Pattern,
    ) -> Result<(), StoreError>;
    /// Closes an open pattern with its `valid_to_ms`; one closed already stays as it was.
    async fn close_pattern(
        &self,
        tenant: &TenantId,
        task_type: &str,
        pattern: &Pattern,
    ) -> Result<(), StoreError>;
}

/// When each tenant's daily analysis is due (see [`crate::improve`]).
#[async_trait]
pub trait AnalysisSchedule: Send + Sync {
    /// Marks the tenant for daily analyses, the first due at `due_at_ms`; a tenant marked
    /// already keeps its time.
    async fn schedule_analysis(&self, tenant: &TenantId, due_at_ms: i64) -> Result<(), StoreError>;
    /// Tenants whose analysis was due before `now_ms`, at most `limit`, the longest due first.
    async fn due_analyses(&self, now_ms: i64, limit: usize) -> Result<Vec<TenantId>, StoreError>;
    /// The tenant's next analysis, due at `due_at_ms`.
    async fn reschedule_analysis(
        &self,
        tenant: &TenantId,
        due_at_ms: i64,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Every task type's stats record of each of `agents` (one query per agent).
    async fn learned_stats(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
    ) -> Result<Vec<baton_types::stats::LearnedStats>, StoreError>;
    /// The tenant's workflows that have not finished.
    async fn running_workflows(&self, tenant: &TenantId) -> Result<u64, StoreError>;
}
