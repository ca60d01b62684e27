//! Workflows, their tasks and their controls in memory: `baton_aws::dynamo::workflows` and
//! `controls`, condition for condition.

use async_trait::async_trait;
use baton_types::ids::{AgentName, TaskId, TenantId, WorkflowId};
use serde_json::Value;

use super::{MemoryStore, State};
use crate::store::*;
use baton_types::control::{controls_to_drop, Control, ControlChange, Hold, TaskReset};
use baton_types::messages::TaskRef;
use baton_types::outcome::TaskFailure;
use baton_types::records::{
    ArchivedDrive, StoredPayload, TaskRecord, WorkflowRecord, WorkflowView,
};
use baton_types::routing::RouteDecision;
use baton_types::task::{AttemptRecord, TaskProfile, TaskStatus, WorkflowStatus};

/// A task item: its record and the attributes the adapter keeps beside it.
#[derive(Debug, Clone)]
pub(super) struct StoredTask {
    pub record: TaskRecord,
    /// The lease index's shard attribute: a task is in the index with it and a lease.
    pub leased: bool,
    /// The parent whose release queued it.
    pub released_by: Option<String>,
    /// The claim whose late result (after a forced cancel) was kept.
    pub late_claim: Option<String>,
    pub expires_at_s: Option<i64>,
    pub kept_at_ms: Option<i64>,
}

impl StoredTask {
    fn set_lease(&mut self, until_ms: i64) {
        self.record.lease_until_ms = Some(until_ms);
        self.leased = true;
    }

    fn clear_lease(&mut self) {
        self.record.lease_until_ms = None;
        self.leased = false;
    }

    /// Its lease as the lease index shows it.
    fn indexed_lease(&self) -> Option<i64> {
        self.record.lease_until_ms.filter(|_| self.leased)
    }

    fn of_attempt(&self, attempt: u32, status: TaskStatus) -> bool {
        self.record.status == status && self.record.attempt == attempt
    }
}

/// A workflow record and the attributes the adapter keeps beside it.
#[derive(Debug, Clone)]
pub(super) struct StoredWorkflow {
    pub record: WorkflowRecord,
    /// In the sweeps index, due then (None: finished, out of the index).
    pub sweep_at_ms: Option<i64>,
    /// In the tenant's running index (its quota).
    pub counted: bool,
    pub expires_at_s: Option<i64>,
}

/// An archived drive and when it expires.
#[derive(Debug, Clone)]
pub(super) struct StoredArchive {
    pub drive: ArchivedDrive,
    pub expires_at_s: i64,
    pub kept_at_ms: Option<i64>,
}

/// One workflow's items: the record (written last), its tasks in submission order, and the
/// archive of its redrives.
#[derive(Debug, Clone, Default)]
pub(super) struct Partition {
    pub record: Option<StoredWorkflow>,
    pub tasks: Vec<StoredTask>,
    pub archive: Vec<StoredArchive>,
}

impl Partition {
    fn task(&self, id: &str) -> Option<&StoredTask> {
        self.tasks.iter().find(|t| t.record.id == id)
    }

    fn task_mut(&mut self, id: &str) -> Option<&mut StoredTask> {
        self.tasks.iter_mut().find(|t| t.record.id == id)
    }

    fn view(&self) -> Option<WorkflowView> {
        Some(WorkflowView {
            workflow: self.record.as_ref()?.record.clone(),
            tasks: self.tasks.iter().map(|t| t.record.clone()).collect(),
        })
    }
}

fn key(tenant: &TenantId, workflow_id: &WorkflowId) -> (TenantId, WorkflowId) {
    (tenant.clone(), workflow_id.clone())
}

fn stored_json_bytes(value: &Value) -> usize {
    serde_json::to_string(value).map_or(usize::MAX, |text| text.len())
}

impl State {
    fn partition(&self, tenant: &TenantId, workflow_id: &WorkflowId) -> Option<&Partition> {
        self.workflows.get(&key(tenant, workflow_id))
    }

    fn record_mut(
        &mut self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> Option<&mut StoredWorkflow> {
        self.workflows
            .get_mut(&key(tenant, workflow_id))?
            .record
            .as_mut()
    }

    fn stored_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Option<&StoredTask> {
        self.partition(tenant, workflow_id)?.task(task_id)
    }

    fn stored_task_mut(
        &mut self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Option<&mut StoredTask> {
        self.workflows
            .get_mut(&key(tenant, workflow_id))?
            .task_mut(task_id)
    }

    fn attempt_mut(&mut self, task: &TaskRef) -> Option<&mut StoredTask> {
        self.stored_task_mut(&task.tenant, &task.workflow_id, &task.task_id)
    }

    /// Writes a new workflow's tasks, then its record, whatever was there (a turn's start
    /// writes them so, in its transaction).
    pub(super) fn put_workflow(&mut self, workflow: &NewWorkflow) {
        let partition = self
            .workflows
            .entry(key(&workflow.tenant, &workflow.workflow_id))
            .or_default();
        let mut sole = sole_parents(workflow);
        for task in &workflow.tasks {
            let queued = task.status == TaskStatus::Queued;
            let stored = StoredTask {
                record: TaskRecord {
                    tenant: workflow.tenant.clone(),
                    workflow_id: workflow.workflow_id.clone(),
                    id: task.id.clone(),
                    capability: task.capability.clone(),
                    profile: task.profile.clone(),
                    input: task.input.clone(),
                    depends_on: task.depends_on.clone(),
                    dependents: task.dependents.clone(),
                    sole_parent_of: sole.remove(&task.id).unwrap_or_default(),
                    status: task.status,
                    attempt: 1,
                    deps_remaining: task.depends_on.len() as u32,
                    deps_done: Vec::new(),
                    agent: None,
                    output: None,
                    output_ref: None,
                    output_preview: None,
                    failure: None,
                    started_at_ms: None,
                    finished_at_ms: None,
                    lease_until_ms: queued
                        .then(|| task.dispatch_until_ms.unwrap_or(workflow.dispatch_until_ms)),
                    retry: task.retry.clone(),
                    fallback: task.fallback,
                    timeout_ms: task.timeout_ms,
                    attempts: Vec::new(),
                    claims: 0,
                    claim_token: None,
                    lease_expirations: 0,
                    dispatches: 0,
                    decision: None,
                    hold: None,
                    drive: 0,
                },
                leased: queued,
                released_by: None,
                late_claim: None,
                expires_at_s: None,
                kept_at_ms: None,
            };
            match partition.task_mut(&task.id) {
                Some(existing) => *existing = stored,
                None => partition.tasks.push(stored),
            }
        }
        let count = workflow.tasks.len() as u32;
        partition.record = Some(StoredWorkflow {
            record: WorkflowRecord {
                tenant: workflow.tenant.clone(),
                id: workflow.workflow_id.clone(),
                name: workflow.name.clone(),
                status: WorkflowStatus::Running,
                task_count: count,
                tasks_remaining: count,
                tasks_done: Vec::new(),
                failed_task: None,
                error: None,
                deadline_at_ms: workflow.deadline_at_ms,
                created_at_ms: workflow.created_at_ms,
                updated_at_ms: workflow.created_at_ms,
                finished_at_ms: None,
                control: None,
                drive: 0,
                controls: Vec::new(),
                kept_at_ms: workflow.created_at_ms,
            },
            sweep_at_ms: Some(workflow.check_at_ms),
            counted: workflow.counted,
            expires_at_s: None,
        });
    }

    /// Deletes a workflow's items, with the outcome history its attempts left (a session's end).
    pub(super) fn delete_workflow(&mut self, tenant: &TenantId, workflow_id: &WorkflowId) {
        let Some(partition) = self.workflows.remove(&key(tenant, workflow_id)) else {
            return;
        };
        let attempts = partition
            .tasks
            .iter()
            .map(|t| (t.record.id.clone(), t.record.attempts.clone()))
            .chain(
                partition
                    .archive
                    .iter()
                    .map(|a| (a.drive.task_id.clone(), a.drive.attempts.clone())),
            );
        for (task_id, attempts) in attempts {
            for attempt in attempts {
                if let Some(agent) = &attempt.agent {
                    self.learning.forget_outcome(
                        tenant,
                        agent,
                        workflow_id,
                        &task_id,
                        attempt.attempt,
                    );
                }
            }
        }
    }

    /// The tenant's workflows counted against its quota.
    pub(super) fn running_workflows(&self, tenant: &TenantId) -> u64 {
        self.workflows
            .iter()
            .filter(|((t, _), p)| t == tenant && p.record.as_ref().is_some_and(|r| r.counted))
            .count() as u64
    }
}

fn progress(record: &WorkflowRecord) -> WorkflowProgress {
    WorkflowProgress {
        status: record.status,
        tasks_remaining: record.tasks_remaining,
        failing: record.is_failing(),
        cancelling: record.is_cancelling(),
    }
}

/// Ended before (by this holder's own write, or another's) or superseded: the adapter's
/// reading of a refused end.
fn ended_before(task: &TaskRef, current: Option<&StoredTask>) -> Ended {
    let Some(current) = current else {
        return Ended::Superseded;
    };
    let current = &current.record;
    let ended_at_this_attempt = current.attempt == task.attempt && current.status.has_result();
    if ended_at_this_attempt || current.retries_after(task.attempt) {
        Ended::Before(current.clone())
    } else {
        Ended::Superseded
    }
}

fn holds(stored: &StoredTask, task: &TaskRef, holder: AttemptHolder<'_>) -> bool {
    let r = &stored.record;
    match holder {
        AttemptHolder::Claim(token) => {
            stored.of_attempt(task.attempt, TaskStatus::Running)
                && r.claim_token.as_deref() == Some(token)
        }
        AttemptHolder::Queued => stored.of_attempt(task.attempt, TaskStatus::Queued),
        AttemptHolder::ExpiredLease(until) => {
            stored.of_attempt(task.attempt, TaskStatus::Running) && r.lease_until_ms == Some(until)
        }
    }
}

/// Writes the end of an attempt whose holder the condition found.
fn end_now(
    stored: &mut StoredTask,
    task: &TaskRef,
    end: &AttemptEnd,
    entry: &AttemptRecord,
    finish: Finish,
    output_limit: Option<usize>,
) -> Result<(), StoreError> {
    let r = &mut stored.record;
    match end {
        AttemptEnd::Retry { lease_until_ms, .. } => {
            r.status = TaskStatus::Queued;
            r.attempt = task.attempt + 1;
            r.claims = 0;
            r.dispatches = 0;
            r.attempts.push(entry.clone());
            r.claim_token = None;
            stored.set_lease(*lease_until_ms);
            return Ok(());
        }
        AttemptEnd::Succeeded(output) => {
            let bytes = stored_json_bytes(output);
            if output_limit.is_some_and(|limit| bytes > limit) {
                return Err(StoreError::TooLarge(format!("an output of {bytes} bytes")));
            }
            r.status = TaskStatus::Succeeded;
            r.output = Some(output.clone());
        }
        AttemptEnd::Failed(failure) => {
            r.status = TaskStatus::Failed;
            r.failure = Some(failure.clone());
        }
    }
    r.finished_at_ms = Some(finish.now_ms);
    r.attempts.push(entry.clone());
    r.claim_token = None;
    r.hold = None;
    stored.expires_at_s = Some(finish.expires_at_s);
    stored.clear_lease();
    Ok(())
}

impl MemoryStore {
    fn read_task(
        &self,
        method: &'static str,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        self.run(method, |state| {
            Ok(state
                .stored_task(tenant, workflow_id, task_id)
                .map(|t| t.record.clone()))
        })
    }
}

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn create_workflow(&self, workflow: &NewWorkflow) -> Result<(), StoreError> {
        self.run("create_workflow", |state| {
            let existing = state
                .partition(&workflow.tenant, &workflow.workflow_id)
                .and_then(|p| p.record.as_ref())
                .map(|r| (r.record.id.clone(), r.record.created_at_ms));
            // The tasks go first, as the adapter's batch writes them; the record, last, only
            // if its key is free or holds this very workflow (a retried put).
            match existing {
                Some(found) if found != (workflow.workflow_id.clone(), workflow.created_at_ms) => {
                    Err(StoreError::AlreadyExists(format!(
                        "workflow {}",
                        workflow.workflow_id
                    )))
                }
                _ => {
                    state.put_workflow(workflow);
                    Ok(())
                }
            }
        })
    }

    async fn workflow(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowView>, StoreError> {
        self.run("workflow", |state| {
            Ok(state.partition(tenant, id).and_then(Partition::view))
        })
    }

    async fn workflow_outline(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowView>, StoreError> {
        self.run("workflow_outline", |state| {
            let mut view = state.partition(tenant, id).and_then(Partition::view);
            for task in view.iter_mut().flat_map(|v| v.tasks.iter_mut()) {
                task.input = Value::Null;
                task.output = None;
                task.output_ref = None;
                task.output_preview = None;
            }
            Ok(view)
        })
    }

    async fn stored_payload(&self, stored: &StoredPayload) -> Result<Value, StoreError> {
        self.run("stored_payload", |_| {
            Err(StoreError::Payload(crate::payload::PayloadError::Missing(
                stored.key.clone(),
            )))
        })
    }

    async fn task_whole(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        // Payloads stay on their items: the item is the task whole.
        self.read_task("task_whole", tenant, workflow_id, task_id)
    }

    async fn task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        self.read_task("task", tenant, workflow_id, task_id)
    }

    async fn workflow_status(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowStatus>, StoreError> {
        self.run("workflow_status", |state| {
            Ok(state
                .partition(tenant, id)
                .and_then(|p| p.record.as_ref())
                .map(|r| r.record.status))
        })
    }

    async fn claim_task(
        &self,
        task: &TaskRef,
        agent: &AgentName,
        decision: Option<&RouteDecision>,
        token: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<ClaimOutcome, StoreError> {
        self.run("claim_task", |state| {
            let Some(stored) = state.attempt_mut(task) else {
                return Ok(ClaimOutcome::Missing);
            };
            if stored.of_attempt(task.attempt, TaskStatus::Queued) && stored.record.hold.is_none() {
                let r = &mut stored.record;
                r.status = TaskStatus::Running;
                r.agent = Some(agent.clone());
                r.started_at_ms = Some(now_ms);
                r.claim_token = Some(token.to_string());
                r.claims += 1;
                if let Some(decision) = decision {
                    r.decision = Some(decision.clone());
                }
                stored.set_lease(lease_until_ms);
                return Ok(ClaimOutcome::Claimed(stored.record.clone()));
            }
            let current = stored.record.clone();
            Ok(if current.attempt != task.attempt {
                ClaimOutcome::NotClaimable(current)
            } else if current.status == TaskStatus::Running
                && current.claim_token.as_deref() == Some(token)
            {
                // This claim's own write, met again by its retry.
                ClaimOutcome::Claimed(current)
            } else if current.status.has_result() {
                ClaimOutcome::AlreadyFinished(current)
            } else if let (TaskStatus::Queued, Some(hold)) = (current.status, current.hold) {
                ClaimOutcome::Held(current, hold)
            } else {
                ClaimOutcome::NotClaimable(current)
            })
        })
    }

    async fn task_outputs(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_ids: &[TaskId],
        max_bytes: usize,
    ) -> Result<DependencyOutputs, StoreError> {
        self.run("task_outputs", |state| {
            let mut outputs = Vec::with_capacity(task_ids.len());
            let mut bytes = 0;
            for id in task_ids {
                let Some(task) = state.stored_task(tenant, workflow_id, id) else {
                    continue;
                };
                let output = task.record.output.as_ref();
                bytes += output.map_or(0, stored_json_bytes);
                if bytes > max_bytes {
                    return Ok(DependencyOutputs::TooLarge { bytes });
                }
                if let Some(output) = output {
                    outputs.push((id.clone(), output.clone()));
                }
            }
            outputs.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(DependencyOutputs::Within(outputs))
        })
    }

    async fn end_attempt(
        &self,
        task: &TaskRef,
        holder: AttemptHolder<'_>,
        end: &AttemptEnd,
        entry: &AttemptRecord,
        finish: Finish,
    ) -> Result<Ended, StoreError> {
        let limit = self.output_limit();
        self.run("end_attempt", |state| {
            let Some(stored) = state.attempt_mut(task) else {
                return Ok(Ended::Superseded);
            };
            if !holds(stored, task, holder) {
                // A forced cancel ended the task while this claim ran: its result is kept
                // (marked late), once per claim, and changes nothing else.
                if let AttemptHolder::Claim(token) = holder {
                    let r = &stored.record;
                    if stored.of_attempt(task.attempt, TaskStatus::Cancelled)
                        && r.claim_token.as_deref() == Some(token)
                    {
                        if stored.late_claim.as_deref() != Some(token) {
                            stored.record.attempts.push(AttemptRecord {
                                late: true,
                                ..entry.clone()
                            });
                            stored.late_claim = Some(token.to_string());
                        }
                        return Ok(Ended::Superseded);
                    }
                }
                return Ok(ended_before(task, Some(stored)));
            }
            end_now(stored, task, end, entry, finish, limit)?;
            Ok(Ended::Now(stored.record.clone()))
        })
    }

    async fn count_finished_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        failed: bool,
        now_ms: i64,
    ) -> Result<WorkflowProgress, StoreError> {
        self.run("count_finished_task", |state| {
            let Some(stored) = state.record_mut(tenant, workflow_id) else {
                return Err(StoreError::Corrupt(format!(
                    "workflow {workflow_id} of a finished task does not exist"
                )));
            };
            let w = &mut stored.record;
            // Counted before (a resumed duplicate): reported as it is.
            if !w.tasks_done.iter().any(|d| d == task_id) {
                w.tasks_remaining = w.tasks_remaining.saturating_sub(1);
                w.updated_at_ms = now_ms;
                if failed && w.failed_task.is_none() {
                    w.failed_task = Some(task_id.clone());
                }
                w.tasks_done.push(task_id.clone());
            }
            Ok(progress(w))
        })
    }

    async fn finish_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        outcome: WorkflowStatus,
        finish: Finish,
    ) -> Result<bool, StoreError> {
        self.run("finish_workflow", |state| {
            let Some(stored) = state.record_mut(tenant, workflow_id) else {
                return Ok(false);
            };
            let w = &mut stored.record;
            // The outcome must be the one the record shows: a cancel decides over a failure.
            let shows = match outcome {
                WorkflowStatus::Cancelled => w.is_cancelling(),
                WorkflowStatus::Failed => w.is_failing() && !w.is_cancelling(),
                _ => !w.is_failing() && !w.is_cancelling(),
            };
            if w.status != WorkflowStatus::Running || w.tasks_remaining != 0 || !shows {
                return Ok(false);
            }
            w.status = outcome;
            w.finished_at_ms = Some(finish.now_ms);
            w.updated_at_ms = finish.now_ms;
            w.control = None;
            stored.expires_at_s = Some(finish.expires_at_s);
            stored.sweep_at_ms = None;
            stored.counted = false;
            Ok(true)
        })
    }

    async fn release_dependent(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        dependent: &TaskId,
        parent: &TaskId,
        _sole: bool,
        dispatch_until_ms: i64,
    ) -> Result<Release, StoreError> {
        self.run("release_dependent", |state| {
            let Some(stored) = state.stored_task_mut(tenant, workflow_id, dependent) else {
                return Err(StoreError::Corrupt(format!(
                    "dependent task {dependent} of {parent} does not exist"
                )));
            };
            // The parent is counted once: the set of counted parents makes it idempotent.
            let r = &mut stored.record;
            if r.status == TaskStatus::Waiting && !r.deps_done.iter().any(|d| d == parent) {
                r.deps_remaining = r.deps_remaining.saturating_sub(1);
                r.deps_done.push(parent.clone());
            }
            let ready = Release::Ready {
                attempt: r.attempt,
                capability: r.capability.clone(),
                profile: Box::new(r.profile.clone()),
            };
            match r.status {
                TaskStatus::Waiting if r.deps_remaining == 0 => {}
                TaskStatus::Waiting => return Ok(Release::StillWaiting),
                // Queued before: only the parent that queued it sends it to routing.
                TaskStatus::Queued if r.attempt == r.profile.prior_attempts + 1 => {
                    return Ok(if stored.released_by.as_deref() == Some(parent) {
                        ready
                    } else {
                        Release::Moved
                    });
                }
                _ => return Ok(Release::Moved),
            }
            r.status = TaskStatus::Queued;
            stored.set_lease(dispatch_until_ms);
            stored.released_by = Some(parent.to_string());
            Ok(ready)
        })
    }

    async fn skip_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        finish: Finish,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        self.run("skip_task", |state| {
            let Some(stored) = state.stored_task_mut(tenant, workflow_id, task_id) else {
                return Ok(None);
            };
            match stored.record.status {
                TaskStatus::Waiting => {
                    stored.record.status = TaskStatus::Skipped;
                    stored.record.finished_at_ms = Some(finish.now_ms);
                    stored.expires_at_s = Some(finish.expires_at_s);
                    stored.clear_lease();
                    Ok(Some(stored.record.dependents.clone()))
                }
                // Skipped before: its dependents are skipped again, which is idempotent.
                TaskStatus::Skipped => Ok(Some(stored.record.dependents.clone())),
                _ => Ok(None),
            }
        })
    }

    async fn cancel_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        failure: &TaskFailure,
        running_too: bool,
        finish: Finish,
    ) -> Result<bool, StoreError> {
        self.run("cancel_task", |state| {
            let Some(stored) = state.stored_task_mut(tenant, workflow_id, task_id) else {
                return Ok(false);
            };
            let cancellable = match stored.record.status {
                TaskStatus::Waiting | TaskStatus::Queued => true,
                TaskStatus::Running => running_too,
                _ => false,
            };
            if !cancellable {
                return Ok(stored.record.status == TaskStatus::Cancelled);
            }
            // The claim token stays: a running attempt's late result is still recognised.
            let r = &mut stored.record;
            r.status = TaskStatus::Cancelled;
            r.failure = Some(failure.clone());
            r.finished_at_ms = Some(finish.now_ms);
            r.hold = None;
            stored.expires_at_s = Some(finish.expires_at_s);
            stored.clear_lease();
            Ok(true)
        })
    }

    async fn fail_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        error: &TaskFailure,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.run("fail_workflow", |state| {
            if let Some(stored) = state.record_mut(tenant, workflow_id) {
                let w = &mut stored.record;
                if w.status == WorkflowStatus::Running {
                    w.error.get_or_insert_with(|| error.clone());
                    w.updated_at_ms = now_ms;
                }
            }
            Ok(())
        })
    }

    async fn expired_leases(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<ExpiredLease>, StoreError> {
        self.run("expired_leases", |state| {
            if shard != 0 {
                return Ok(Vec::new());
            }
            let mut expired: Vec<(i64, ExpiredLease)> = state
                .workflows
                .values()
                .flat_map(|p| p.tasks.iter())
                .filter_map(|t| {
                    let until = t.indexed_lease().filter(|until| *until < now_ms)?;
                    let r = &t.record;
                    Some((
                        until,
                        ExpiredLease {
                            task: r.task_ref(),
                            capability: r.capability.clone(),
                            profile: r.profile.clone(),
                            status: r.status,
                            lease_until_ms: until,
                            agent: r.agent.clone(),
                            claims: r.claims,
                            dispatches: r.dispatches,
                        },
                    ))
                })
                .collect();
            expired.sort_by_key(|(until, _)| *until);
            Ok(expired
                .into_iter()
                .take(limit.max(0) as usize)
                .map(|(_, lease)| lease)
                .collect())
        })
    }

    async fn requeue_expired(
        &self,
        lease: &ExpiredLease,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run("requeue_expired", |state| {
            let Some(stored) = state.attempt_mut(&lease.task) else {
                return Ok(false);
            };
            let as_indexed = stored.of_attempt(lease.task.attempt, lease.status)
                && stored.record.lease_until_ms == Some(lease.lease_until_ms);
            if !as_indexed {
                return Ok(false);
            }
            match lease.status {
                // The same attempt again: a re-claim sends the agent the same key.
                TaskStatus::Running => {
                    stored.record.status = TaskStatus::Queued;
                    stored.record.lease_until_ms = Some(lease_until_ms);
                    stored.record.lease_expirations += 1;
                    stored.record.claim_token = None;
                }
                // A held task is not sent again: it waits, parked, for its resume.
                TaskStatus::Queued if stored.record.hold.is_none() => {
                    stored.record.lease_until_ms = Some(lease_until_ms);
                    stored.record.dispatches += 1;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    async fn extend_dispatch(
        &self,
        task: &TaskRef,
        dispatch: u32,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run("extend_dispatch", |state| {
            let Some(stored) = state.attempt_mut(task) else {
                return Ok(false);
            };
            if !stored.of_attempt(task.attempt, TaskStatus::Queued)
                || stored.record.dispatches > dispatch
            {
                return Ok(false);
            }
            // The lease alone: a parked task stays out of the index.
            stored.record.lease_until_ms = Some(lease_until_ms);
            Ok(true)
        })
    }

    async fn abandon_task(
        &self,
        lease: &ExpiredLease,
        expires_at_s: i64,
    ) -> Result<bool, StoreError> {
        self.run("abandon_task", |state| {
            let Some(stored) = state.attempt_mut(&lease.task) else {
                return Ok(false);
            };
            if !stored.of_attempt(lease.task.attempt, lease.status)
                || stored.record.lease_until_ms != Some(lease.lease_until_ms)
            {
                return Ok(false);
            }
            stored.expires_at_s = Some(expires_at_s);
            stored.clear_lease();
            Ok(true)
        })
    }

    async fn due_workflows(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, WorkflowId)>, StoreError> {
        self.run("due_workflows", |state| {
            if shard != 0 {
                return Ok(Vec::new());
            }
            let mut due: Vec<(i64, (TenantId, WorkflowId))> = state
                .workflows
                .iter()
                .filter_map(|(key, p)| {
                    let at = p.record.as_ref()?.sweep_at_ms.filter(|at| *at < now_ms)?;
                    Some((at, key.clone()))
                })
                .collect();
            due.sort();
            Ok(due
                .into_iter()
                .take(limit.max(0) as usize)
                .map(|(_, key)| key)
                .collect())
        })
    }

    async fn schedule_check(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.run("schedule_check", |state| {
            if let Some(stored) = state.record_mut(tenant, workflow_id) {
                if stored.record.status == WorkflowStatus::Running && stored.sweep_at_ms.is_some() {
                    stored.sweep_at_ms = Some(at_ms);
                }
            }
            Ok(())
        })
    }

    async fn keep_alive(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        since_ms: i64,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<u32, StoreError> {
        self.run("keep_alive", |state| {
            let Some(partition) = state.workflows.get_mut(&key(tenant, workflow_id)) else {
                return Ok(0);
            };
            let stale = |kept: Option<i64>| kept.is_none_or(|at| at < since_ms);
            let mut kept = 0;
            for task in partition.tasks.iter_mut().filter(|t| stale(t.kept_at_ms)) {
                task.kept_at_ms = Some(now_ms);
                // An unfinished task has no expiry until it ends.
                if task.expires_at_s.is_some() {
                    task.expires_at_s = Some(expires_at_s);
                }
                kept += 1;
            }
            for archived in partition.archive.iter_mut().filter(|a| stale(a.kept_at_ms)) {
                archived.kept_at_ms = Some(now_ms);
                archived.expires_at_s = expires_at_s;
                kept += 1;
            }
            if let Some(stored) = partition.record.as_mut() {
                stored.record.kept_at_ms = now_ms;
            }
            Ok(kept)
        })
    }
}

/// Applies a control's change to a workflow record, if its conditions hold.
fn apply_control(
    stored: &mut StoredWorkflow,
    read: &WorkflowRecord,
    write: &ControlWrite<'_>,
) -> bool {
    let w = &stored.record;
    let running = w.status == WorkflowStatus::Running;
    let live = running && w.tasks_remaining > 0;
    let allowed = match write.change {
        ControlChange::Unchanged => unreachable!("answered before"),
        ControlChange::Pause => live && w.control.is_none(),
        ControlChange::Resume => running && w.control == Some(Control::Paused),
        ControlChange::Cancel { force: true } => {
            live && !matches!(w.control, Some(Control::Cancelling { force: true }))
        }
        ControlChange::Cancel { force: false } => {
            live && !matches!(w.control, Some(Control::Cancelling { .. }))
        }
        ControlChange::Redrive { .. } => w.status == read.status && w.drive == read.drive,
    };
    if !allowed {
        return false;
    }
    let w = &mut stored.record;
    match write.change {
        ControlChange::Unchanged => {}
        ControlChange::Pause => w.control = Some(Control::Paused),
        ControlChange::Resume => w.control = None,
        ControlChange::Cancel { force } => w.control = Some(Control::Cancelling { force }),
        ControlChange::Redrive { drive } => {
            w.status = WorkflowStatus::Running;
            w.drive = drive;
            w.tasks_remaining = write.rerun.len() as u32;
            if let Some(at) = write.deadline_at_ms {
                w.deadline_at_ms = Some(at);
            }
            w.failed_task = None;
            w.error = None;
            w.finished_at_ms = None;
            w.control = None;
            w.tasks_done.retain(|done| !write.rerun.contains(done));
            stored.expires_at_s = None;
            stored.counted = true;
        }
    }
    // The record keeps the newest events; the write that appends one drops the oldest.
    let drop = controls_to_drop(w.controls.len());
    w.controls.drain(..drop);
    w.controls.push(write.event.clone());
    w.updated_at_ms = write.event.at_ms;
    stored.sweep_at_ms = Some(write.check_at_ms);
    true
}

/// Whether a refused release of the queued attempt `read` meets the release's own write.
fn released_by_this_write(read: &TaskRecord, dispatch_until_ms: i64, current: &StoredTask) -> bool {
    let c = &current.record;
    c.hold.is_none()
        && c.status == TaskStatus::Queued
        && c.attempt == read.attempt
        && c.lease_until_ms == Some(dispatch_until_ms)
        && current.leased
}

/// The reset of a task for a new drive, if the task is as `read` (status, attempt, drive and
/// attempts); its attempts go to the archive in the same step.
fn reset_as_read(
    partition: &mut Partition,
    read: &TaskRecord,
    reset: &TaskReset,
    profile: &TaskProfile,
    drive: u32,
    dispatch_until_ms: i64,
    archive_expires_at_s: i64,
) -> bool {
    let Some(stored) = partition.task_mut(&reset.id) else {
        return false;
    };
    let c = &stored.record;
    if c.status != reset.from
        || c.attempt != reset.from_attempt
        || c.drive != read.drive
        || c.attempts.len() != read.attempts.len()
    {
        return false;
    }
    let r = &mut stored.record;
    r.status = reset.status;
    r.attempt = reset.attempt;
    r.deps_remaining = reset.deps_remaining;
    r.deps_done = reset.deps_done.clone();
    r.drive = drive;
    r.claims = 0;
    r.dispatches = 0;
    r.lease_expirations = 0;
    r.profile = profile.clone();
    r.failure = None;
    r.output = None;
    r.output_ref = None;
    r.output_preview = None;
    r.attempts = Vec::new();
    r.finished_at_ms = None;
    r.started_at_ms = None;
    r.claim_token = None;
    r.hold = None;
    stored.released_by = None;
    stored.expires_at_s = None;
    if reset.status == TaskStatus::Queued {
        stored.set_lease(dispatch_until_ms);
    }
    if !read.attempts.is_empty() {
        let archived = ArchivedDrive {
            task_id: read.id.clone(),
            drive: read.drive,
            attempts: read.attempts.clone(),
        };
        partition
            .archive
            .retain(|a| (a.drive.task_id.as_str(), a.drive.drive) != (&read.id, read.drive));
        partition.archive.push(StoredArchive {
            drive: archived,
            expires_at_s: archive_expires_at_s,
            kept_at_ms: None,
        });
    }
    true
}

/// Reads of a refused reset, each followed by another try (as the adapter's).
const RESET_TRIES: usize = 3;

#[async_trait]
impl WorkflowControls for MemoryStore {
    async fn control_workflow(
        &self,
        read: &WorkflowRecord,
        write: &ControlWrite<'_>,
    ) -> Result<ControlApplied, StoreError> {
        if write.change == ControlChange::Unchanged {
            return Ok(ControlApplied::Applied(Box::new(read.clone())));
        }
        self.run("control_workflow", |state| {
            let Some(stored) = state.record_mut(&read.tenant, &read.id) else {
                return Ok(ControlApplied::Missing);
            };
            // The condition is on the record as it is, not as it was read, like the adapter's
            // (which only compares the fields the change depends on).
            if apply_control(stored, read, write) {
                return Ok(ControlApplied::Applied(Box::new(stored.record.clone())));
            }
            let current = &stored.record;
            let ours = current
                .controls
                .last()
                .is_some_and(|c| c.request == write.event.request);
            Ok(if ours {
                ControlApplied::Applied(Box::new(current.clone()))
            } else {
                ControlApplied::Stale
            })
        })
    }

    async fn hold_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        hold: Hold,
    ) -> Result<Option<TaskRecord>, StoreError> {
        self.run("hold_task", |state| {
            let Some(stored) = state.stored_task_mut(tenant, workflow_id, task_id) else {
                return Ok(None);
            };
            if stored.record.status.is_terminal() {
                return Ok(None);
            }
            stored.record.hold = Some(hold);
            Ok(Some(stored.record.clone()))
        })
    }

    async fn park_task(&self, task: &TaskRef) -> Result<(), StoreError> {
        self.run("park_task", |state| {
            if let Some(stored) = state.attempt_mut(task) {
                if stored.of_attempt(task.attempt, TaskStatus::Queued)
                    && stored.record.hold.is_some()
                {
                    stored.clear_lease();
                }
            }
            Ok(())
        })
    }

    async fn release_hold(
        &self,
        read: &TaskRecord,
        dispatch_until_ms: i64,
    ) -> Result<HoldReleased, StoreError> {
        if read.status.is_terminal() || read.hold != Some(Hold::Pause) {
            return Ok(HoldReleased::Done);
        }
        let queued = read.status == TaskStatus::Queued;
        self.run("release_hold", |state| {
            let Some(stored) = state.stored_task_mut(&read.tenant, &read.workflow_id, &read.id)
            else {
                return Ok(HoldReleased::Done);
            };
            if stored.of_attempt(read.attempt, read.status)
                && stored.record.hold == Some(Hold::Pause)
            {
                stored.record.hold = None;
                if !queued {
                    return Ok(HoldReleased::Done);
                }
                stored.set_lease(dispatch_until_ms);
                stored.record.dispatches = 0;
                return Ok(HoldReleased::Send(Box::new(stored.record.clone())));
            }
            // This write's own effect, met by its retry: the attempt is sent now.
            if queued && released_by_this_write(read, dispatch_until_ms, stored) {
                return Ok(HoldReleased::Send(Box::new(stored.record.clone())));
            }
            Ok(match stored.record.hold {
                None | Some(Hold::Cancel) => HoldReleased::Done,
                Some(Hold::Pause) => HoldReleased::Changed,
            })
        })
    }

    async fn reset_task(
        &self,
        read: &TaskRecord,
        reset: &TaskReset,
        profile: &TaskProfile,
        drive: u32,
        dispatch_until_ms: i64,
        archive_expires_at_s: i64,
    ) -> Result<bool, StoreError> {
        self.run("reset_task", |state| {
            let Some(partition) = state
                .workflows
                .get_mut(&key(&read.tenant, &read.workflow_id))
            else {
                return Ok(false);
            };
            let mut read = read.clone();
            for _ in 0..RESET_TRIES {
                let reset_now = reset_as_read(
                    partition,
                    &read,
                    reset,
                    profile,
                    drive,
                    dispatch_until_ms,
                    archive_expires_at_s,
                );
                if reset_now {
                    return Ok(true);
                }
                let Some(current) = partition.task(&reset.id) else {
                    return Ok(false);
                };
                let current = &current.record;
                // Reset for this drive before (this write's lost response, or another's).
                if current.drive >= drive {
                    return Ok(true);
                }
                if current.status != reset.from || current.attempt != reset.from_attempt {
                    return Ok(false);
                }
                // As planned, but its attempts changed since the read (a late result).
                read = current.clone();
            }
            Ok(false)
        })
    }

    async fn archived_drives(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> Result<Vec<ArchivedDrive>, StoreError> {
        self.run("archived_drives", |state| {
            let mut drives: Vec<ArchivedDrive> = state
                .partition(tenant, workflow_id)
                .map(|p| p.archive.iter().map(|a| a.drive.clone()).collect())
                .unwrap_or_default();
            drives.sort_by(|a, b| (&a.task_id, a.drive).cmp(&(&b.task_id, b.drive)));
            Ok(drives)
        })
    }

    async fn list_workflows(
        &self,
        tenant: &TenantId,
        filter: &WorkflowFilter,
    ) -> Result<WorkflowPage, StoreError> {
        self.run("list_workflows", |state| {
            // The list index's sort key, newest first: creation time, then id.
            let position = |w: &WorkflowRecord| format!("{:020}#{}", w.created_at_ms, w.id);
            let mut listed: Vec<&WorkflowRecord> = state
                .workflows
                .iter()
                .filter(|((t, _), _)| t == tenant)
                .filter_map(|(_, p)| p.record.as_ref().map(|r| &r.record))
                .filter(|w| filter.since_ms.is_none_or(|since| w.created_at_ms >= since))
                .filter(|w| filter.name.as_ref().is_none_or(|name| &w.name == name))
                .filter(|w| {
                    filter
                        .status
                        .as_deref()
                        .is_none_or(|status| w.control_state().shown_status() == status)
                })
                .filter(|w| {
                    filter
                        .after
                        .as_ref()
                        .is_none_or(|after| &position(w) < after)
                })
                .collect();
            listed.sort_by_key(|w| std::cmp::Reverse(position(w)));
            let more = listed.len() > filter.limit as usize;
            listed.truncate(filter.limit as usize);
            Ok(WorkflowPage {
                next: more.then(|| listed.last().map(|w| position(w))).flatten(),
                workflows: listed
                    .into_iter()
                    .map(|w| ListedWorkflow {
                        id: w.id.clone(),
                        name: w.name.clone(),
                        status: w.status,
                        control: w.control,
                        task_count: w.task_count,
                        drive: w.drive,
                        failed_task: w.failed_task.clone(),
                        created_at_ms: w.created_at_ms,
                        finished_at_ms: w.finished_at_ms,
                    })
                    .collect(),
            })
        })
    }
}
