//! Workflows and their tasks: the execution state machine's transitions.

use async_trait::async_trait;
use baton_types::ids::{AgentName, TaskId, TenantId, WorkflowId};

use super::*;
use crate::dynamo::keys::{
    CANCEL_FORCE, CONTROL, CONTROLS, DRIVE, HOLD, LIST_PK, LIST_SK, SWEEP_AT, SWEEP_SHARD,
};
use baton_types::control::{Control, Hold};

/// Attributes that place an item in the lease index.
pub(super) const LEASE_ATTRS: &str = "lease_until, lease_shard";
/// The dependents a task is the only dependency of (absent on items stored before it).
const SOLE_PARENT_OF: &str = "sole_parent_of";

fn task_item(
    workflow: &NewWorkflow,
    position: usize,
    task: &NewTask,
    input: &Placed,
    sole_parent_of: &[TaskId],
) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (
            PK.into(),
            s(keys::workflow_pk(&workflow.tenant, &workflow.workflow_id)),
        ),
        (SK.into(), s(keys::task_sk(&task.id))),
        ("position".into(), n(position)),
        ("capability".into(), s(task.capability.as_str())),
        ("depends_on".into(), string_list(&task.depends_on)),
        ("dependents".into(), string_list(&task.dependents)),
        ("deps_remaining".into(), n(task.depends_on.len())),
        ("status".into(), s(task.status.as_str())),
        ("attempt".into(), n(1)),
        ("created_at".into(), n(workflow.created_at_ms)),
    ]);
    match input {
        Placed::Inline(text) => item.insert("input".into(), s(text.as_str())),
        Placed::Stored(stored, _) => item.insert(INPUT_REF.into(), json(stored)?),
    };
    if task.status == TaskStatus::Queued {
        item.insert(
            LEASE_SHARD.into(),
            s(keys::lease_shard(&workflow.workflow_id)),
        );
        let until = task.dispatch_until_ms.unwrap_or(workflow.dispatch_until_ms);
        item.insert(LEASE_UNTIL.into(), n(until));
    }
    if !sole_parent_of.is_empty() {
        item.insert(SOLE_PARENT_OF.into(), string_list(sole_parent_of));
    }
    if let Some(retry) = &task.retry {
        item.insert("retry".into(), json(retry)?);
    }
    if !task.fallback {
        item.insert("fallback".into(), AttributeValue::Bool(false));
    }
    if let Some(timeout_ms) = task.timeout_ms {
        item.insert("timeout_ms".into(), n(timeout_ms));
    }
    if !task.profile.is_default() {
        item.insert(PROFILE.into(), json(&task.profile)?);
    }
    Ok(item)
}

/// A new workflow's items: its tasks (with their inputs placed, `inputs[i]` for task `i`),
/// and its record. While it runs, the record sits in the sweeps index.
pub(super) fn workflow_items(
    workflow: &NewWorkflow,
    inputs: &[Placed],
) -> Result<(Vec<Item>, Item), StoreError> {
    let sole = sole_parents(workflow);
    let tasks = workflow
        .tasks
        .iter()
        .zip(inputs)
        .enumerate()
        .map(|(position, (task, input))| {
            let sole = sole.get(&task.id).map_or(&[][..], Vec::as_slice);
            task_item(workflow, position, task, input, sole)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = workflow.tasks.len();
    let mut record = HashMap::from([
        (
            PK.into(),
            s(keys::workflow_pk(&workflow.tenant, &workflow.workflow_id)),
        ),
        (SK.into(), s(keys::WORKFLOW_SK)),
        ("workflow_id".into(), s(workflow.workflow_id.as_str())),
        ("name".into(), s(workflow.name.as_str())),
        ("status".into(), s(WorkflowStatus::Running.as_str())),
        ("task_count".into(), n(count)),
        ("tasks_remaining".into(), n(count)),
        ("created_at".into(), n(workflow.created_at_ms)),
        ("updated_at".into(), n(workflow.created_at_ms)),
        (
            SWEEP_SHARD.into(),
            s(keys::workflow_sweep_shard(&workflow.workflow_id)),
        ),
        (SWEEP_AT.into(), n(workflow.check_at_ms)),
        // The list index: the tenant's workflows, newest first.
        (LIST_PK.into(), s(keys::workflow_list_pk(&workflow.tenant))),
        (
            LIST_SK.into(),
            s(keys::workflow_list_sk(
                workflow.created_at_ms,
                &workflow.workflow_id,
            )),
        ),
    ]);
    if let Some(deadline) = workflow.deadline_at_ms {
        record.insert("deadline_at".into(), n(deadline));
    }
    if workflow.counted {
        record.insert(keys::RUN_PK.into(), s(keys::running_pk(&workflow.tenant)));
    }
    Ok((tasks, record))
}

/// The task's profile, only on tasks that have one (and projected into the lease index).
pub(super) const PROFILE: &str = "profile";

pub(super) fn task_record(item: &Item) -> Result<TaskRecord, StoreError> {
    let a = Attrs(item);
    let (tenant, workflow_id, task_id) = keys::parse_task_keys(a.s(PK)?, a.s(SK)?)
        .ok_or_else(|| StoreError::Corrupt("task item has unexpected keys".into()))?;
    Ok(TaskRecord {
        tenant: stored_tenant(tenant)?,
        workflow_id: stored_id(workflow_id)?,
        id: stored_id(task_id)?,
        capability: a.s("capability")?.into(),
        profile: a.json(PROFILE)?.unwrap_or_default(),
        decision: a.json("decision")?,
        input: a.json("input")?.unwrap_or(Value::Null),
        depends_on: stored_ids(a.list("depends_on"))?,
        dependents: stored_ids(a.list("dependents"))?,
        sole_parent_of: stored_ids(a.list(SOLE_PARENT_OF))?,
        status: a.parsed("status")?,
        attempt: a.n("attempt")?,
        deps_remaining: a.n("deps_remaining")?,
        deps_done: stored_ids(a.set("deps_done"))?,
        agent: a.opt_s("agent").map(stored_id).transpose()?,
        output: a.json("output")?,
        output_ref: a.json("output_ref")?,
        output_preview: a.opt_s("output_preview").map(str::to_string),
        failure: a.json("failure")?,
        started_at_ms: a.opt_n("started_at")?,
        finished_at_ms: a.opt_n("finished_at")?,
        lease_until_ms: a.opt_n(LEASE_UNTIL)?,
        retry: a.json("retry")?,
        fallback: a.bool("fallback").unwrap_or(true),
        timeout_ms: a.opt_n("timeout_ms")?,
        attempts: a.json_list("attempts")?,
        claims: a.opt_n("claims")?.unwrap_or(0),
        claim_token: a.opt_s("claim_token").map(str::to_string),
        lease_expirations: a.opt_n("lease_expirations")?.unwrap_or(0),
        dispatches: a.opt_n("dispatches")?.unwrap_or(0),
        hold: a.opt_s(HOLD).and_then(Hold::parse),
        drive: a.opt_n(DRIVE)?.unwrap_or(0),
    })
}

pub(super) fn workflow_record(
    tenant: &TenantId,
    item: &Item,
) -> Result<WorkflowRecord, StoreError> {
    let a = Attrs(item);
    Ok(WorkflowRecord {
        tenant: tenant.clone(),
        id: stored_id(a.s("workflow_id")?)?,
        name: a.s("name")?.into(),
        status: a.parsed("status")?,
        task_count: a.n("task_count")?,
        tasks_remaining: a.n("tasks_remaining")?,
        tasks_done: stored_ids(a.set("tasks_done"))?,
        failed_task: a.opt_s("failed_task").map(stored_id).transpose()?,
        error: a.json("error")?,
        deadline_at_ms: a.opt_n("deadline_at")?,
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
        finished_at_ms: a.opt_n("finished_at")?,
        control: control_of(&a),
        drive: a.opt_n(DRIVE)?.unwrap_or(0),
        controls: a.json_list(CONTROLS)?,
        kept_at_ms: a.opt_n(KEPT_AT)?.unwrap_or(a.n("created_at")?),
    })
}

/// A workflow as the list index projects it.
pub(super) fn listed_workflow(item: &Item) -> Result<ListedWorkflow, StoreError> {
    let a = Attrs(item);
    Ok(ListedWorkflow {
        id: stored_id(a.s("workflow_id")?)?,
        name: a.s("name")?.into(),
        status: a.parsed("status")?,
        control: control_of(&a),
        task_count: a.n("task_count")?,
        drive: a.opt_n(DRIVE)?.unwrap_or(0),
        failed_task: a.opt_s("failed_task").map(stored_id).transpose()?,
        created_at_ms: a.n("created_at")?,
        finished_at_ms: a.opt_n("finished_at")?,
    })
}

fn control_of(a: &Attrs<'_>) -> Option<Control> {
    a.opt_s(CONTROL)
        .and_then(|c| Control::parse(c, a.bool(CANCEL_FORCE).unwrap_or(false)))
}

fn progress(item: &Item) -> Result<WorkflowProgress, StoreError> {
    let a = Attrs(item);
    Ok(WorkflowProgress {
        status: a.parsed("status")?,
        tasks_remaining: a.n("tasks_remaining")?,
        failing: a.opt_s("failed_task").is_some() || a.opt_s("error").is_some(),
        cancelling: matches!(control_of(&a), Some(Control::Cancelling { .. })),
    })
}

/// What an ended attempt's write found when its condition failed: the attempt ended before
/// (by this very write, whose response was lost, or by another holder), or it was superseded.
fn ended_before(task: &TaskRef, current: Option<Item>) -> Result<Ended, StoreError> {
    let Some(item) = current else {
        return Ok(Ended::Superseded);
    };
    let current = task_record(&item)?;
    let ended_at_this_attempt = current.attempt == task.attempt && current.status.has_result();
    Ok(
        if ended_at_this_attempt || current.retries_after(task.attempt) {
            Ended::Before(current)
        } else {
            Ended::Superseded
        },
    )
}

impl DynamoStore {
    /// Keeps the result of an attempt whose task a forced cancel ended while it ran: it is
    /// recorded (marked late) and changes nothing else. Once per claim.
    async fn record_late_result(
        &self,
        task: &TaskRef,
        token: &str,
        entry: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let late = AttemptRecord {
            late: true,
            ..entry.clone()
        };
        let update = self
            .update_attempt(task)
            .update_expression(
                "SET attempts = list_append(if_not_exists(attempts, :empty), :entry), \
                 late_claim = :token",
            )
            .condition_expression(
                "#status = :cancelled AND attempt = :attempt AND claim_token = :token \
                 AND (attribute_not_exists(late_claim) OR late_claim <> :token)",
            )
            .expression_attribute_values(":entry", json_list(std::slice::from_ref(&late))?)
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":cancelled", s(TaskStatus::Cancelled.as_str()))
            .expression_attribute_values(":token", s(token));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }
}

/// A workflow without its tasks' inputs and outputs: what the repair needs of a partition
/// of any size, so one tenant's large payloads cannot exhaust the sweep's memory.
static OUTLINE: Projection = Projection {
    expression: "#pk, #sk, #position, #capability, #profile, #decision, #depends_on, \
                 #dependents, #status, #attempt, #deps_remaining, #deps_done, #agent, #failure, \
                 #started_at, #finished_at, #lease_until, #retry, #fallback, #timeout_ms, \
                 #attempts, #claims, #claim_token, #lease_expirations, #dispatches, #held_for, \
                 #drive, #workflow_id, #name, #task_count, #tasks_remaining, #tasks_done, \
                 #failed_task, #error, #deadline_at, #created_at, #updated_at, #control, \
                 #cancel_force, #controls, #kept_at",
    names: &[
        ("#pk", PK),
        ("#sk", SK),
        ("#position", "position"),
        ("#capability", "capability"),
        ("#profile", PROFILE),
        ("#decision", "decision"),
        ("#depends_on", "depends_on"),
        ("#dependents", "dependents"),
        ("#status", "status"),
        ("#attempt", "attempt"),
        ("#deps_remaining", "deps_remaining"),
        ("#deps_done", "deps_done"),
        ("#agent", "agent"),
        ("#failure", "failure"),
        ("#started_at", "started_at"),
        ("#finished_at", "finished_at"),
        ("#lease_until", LEASE_UNTIL),
        ("#retry", "retry"),
        ("#fallback", "fallback"),
        ("#timeout_ms", "timeout_ms"),
        ("#attempts", "attempts"),
        ("#claims", "claims"),
        ("#claim_token", "claim_token"),
        ("#lease_expirations", "lease_expirations"),
        ("#dispatches", "dispatches"),
        ("#held_for", HOLD),
        ("#drive", DRIVE),
        ("#workflow_id", "workflow_id"),
        ("#name", "name"),
        ("#task_count", "task_count"),
        ("#tasks_remaining", "tasks_remaining"),
        ("#tasks_done", "tasks_done"),
        ("#failed_task", "failed_task"),
        ("#error", "error"),
        ("#deadline_at", "deadline_at"),
        ("#created_at", "created_at"),
        ("#updated_at", "updated_at"),
        ("#control", CONTROL),
        ("#cancel_force", CANCEL_FORCE),
        ("#controls", CONTROLS),
        ("#kept_at", KEPT_AT),
    ],
};

/// Payload objects written or read at once by one request.
const PAYLOAD_CONCURRENCY: usize = 4;

/// When a workflow, or one of its tasks, was last kept from expiring.
const KEPT_AT: &str = "kept_at";

/// What keeping a task from expiring needs of it.
static KEEP: Projection = Projection {
    expression: "#pk, #sk, #input_ref, #output_ref, #expires_at, #kept_at",
    names: &[
        ("#pk", PK),
        ("#sk", SK),
        ("#input_ref", INPUT_REF),
        ("#output_ref", "output_ref"),
        ("#expires_at", EXPIRES_AT),
        ("#kept_at", KEPT_AT),
    ],
};

impl DynamoStore {
    /// Each task's input as it goes on its item: in the bucket when too large.
    pub(super) async fn place_inputs(
        &self,
        workflow: &NewWorkflow,
    ) -> Result<Vec<Placed>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        // A few at a time, in task order: a large submission's puts overlap.
        let inputs = workflow
            .tasks
            .iter()
            .map(|task| {
                let key = baton_chain::payload::input_key(
                    &workflow.tenant,
                    &workflow.workflow_id,
                    &task.id,
                );
                Ok((key, json_text(&task.input)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        futures::stream::iter(inputs)
            .map(|(key, text)| async move { self.place_payload(&key, text).await })
            .buffered(PAYLOAD_CONCURRENCY)
            .try_collect()
            .await
    }

    /// A task's item as stored, read strongly.
    async fn task_item_read(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<Item>, StoreError> {
        self.state_item(
            keys::workflow_pk(tenant, workflow_id),
            &keys::task_sk(task_id),
        )
        .await
    }

    async fn workflow_read(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
        projection: Option<&'static Projection>,
    ) -> Result<Option<WorkflowView>, StoreError> {
        // The workflow record sorts after its tasks: read backwards, it comes first. A workflow
        // read as finished had all its tasks ended before, so the tasks read after it are too.
        let read = PartitionRead {
            descending: true,
            consistent: true,
            sk_at_most: None,
            projection,
        };
        let mut workflow = None;
        let mut tasks = Vec::new();
        for item in self
            .partition_read(keys::workflow_pk(tenant, id), read)
            .await?
        {
            if Attrs(&item).opt_s(SK) == Some(keys::WORKFLOW_SK) {
                workflow = Some(workflow_record(tenant, &item)?);
            } else {
                let position: u32 = Attrs(&item).n("position")?;
                tasks.push((position, task_record(&item)?));
            }
        }
        tasks.sort_by_key(|(position, _)| *position);
        Ok(workflow.map(|workflow| WorkflowView {
            workflow,
            tasks: tasks.into_iter().map(|(_, t)| t).collect(),
        }))
    }
}

#[async_trait]
impl WorkflowStore for DynamoStore {
    async fn create_workflow(&self, workflow: &NewWorkflow) -> Result<(), StoreError> {
        let inputs = self.place_inputs(workflow).await?;
        let (tasks, record) = workflow_items(workflow, &inputs)?;
        let mut requests = Vec::with_capacity(tasks.len());
        for item in tasks {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::Request(Box::new(e)))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(&self.state_table, requests).await?;

        // The workflow record goes last: until it exists the tasks are invisible, and cleanup
        // drops any of them it finds without one.
        self.put_new(record, &["workflow_id", "created_at"], || {
            format!("workflow {}", workflow.workflow_id)
        })
        .await
    }

    async fn workflow(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowView>, StoreError> {
        self.workflow_read(tenant, id, None).await
    }

    async fn workflow_outline(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowView>, StoreError> {
        self.workflow_read(tenant, id, Some(&OUTLINE)).await
    }

    async fn task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let item = self.task_item_read(tenant, workflow_id, task_id).await?;
        item.as_ref().map(task_record).transpose()
    }

    async fn stored_payload(
        &self,
        stored: &baton_types::records::StoredPayload,
    ) -> Result<Value, StoreError> {
        self.fetch_payload(stored).await
    }

    async fn task_whole(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        match self.task_item_read(tenant, workflow_id, task_id).await? {
            Some(item) => Ok(Some(self.whole_task(&item).await?)),
            None => Ok(None),
        }
    }

    async fn workflow_status(
        &self,
        tenant: &TenantId,
        id: &WorkflowId,
    ) -> Result<Option<WorkflowStatus>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .set_key(Some(self.workflow_key(tenant, id)))
            .projection_expression("#status")
            .expression_attribute_names("#status", "status")
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item
            .as_ref()
            .map(|item| Attrs(item).parsed("status"))
            .transpose()
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
        let decision = decision.map(json).transpose()?;
        // A lease already long enough (the dispatch lease, set at release) is kept: the claim
        // then leaves the `leases` index's key alone, one index write instead of a delete and
        // a put. It is kept only up to twice the claim's own span, so a dead claim is found
        // soon even on a task whose resends pushed its dispatch lease far out. A claim refused
        // for that condition alone sets its own lease.
        let keep_until = now_ms + 2 * (lease_until_ms - now_ms).max(0);
        let claim = |set_own_lease: bool| {
            let (set_lease, keep_lease) = match set_own_lease {
                true => (", lease_until = :lease, lease_shard = :shard", ""),
                false => ("", " AND lease_until BETWEEN :lease AND :keep_until"),
            };
            let set_decision = if decision.is_some() {
                ", decision = :decision"
            } else {
                ""
            };
            let update = self
                .update_attempt(task)
                .update_expression(format!(
                    "SET #status = :running, #agent = :agent, started_at = :now, \
                     claim_token = :token, \
                     claims = if_not_exists(claims, :zero) + :one{set_lease}{set_decision}"
                ))
                .condition_expression(format!(
                    "#status = :queued AND attempt = :attempt AND attribute_not_exists({HOLD}){keep_lease}"
                ))
                .expression_attribute_names("#agent", "agent")
                .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
                .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
                .expression_attribute_values(":agent", s(agent))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":lease", n(lease_until_ms))
                .expression_attribute_values(":token", s(token))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1));
            let update = match set_own_lease {
                true => update
                    .expression_attribute_values(":shard", s(keys::lease_shard(&task.workflow_id))),
                false => update.expression_attribute_values(":keep_until", n(keep_until)),
            };
            match &decision {
                Some(decision) => update.expression_attribute_values(":decision", decision.clone()),
                None => update,
            }
        };
        let mut result = conditional_update(claim(false), ReturnValue::AllNew).await?;
        if let Conditional::Rejected(Some(item)) = &result {
            let current = task_record(item)?;
            let lease_unfit = current.status == TaskStatus::Queued
                && current.attempt == task.attempt
                && current.hold.is_none()
                && current
                    .lease_until_ms
                    .is_none_or(|until| until < lease_until_ms || until > keep_until);
            if lease_unfit {
                result = conditional_update(claim(true), ReturnValue::AllNew).await?;
            }
        }
        Ok(match result {
            // The call needs the input whole, wherever it is.
            Conditional::Applied(item) => ClaimOutcome::Claimed(self.whole_task(&item).await?),
            Conditional::Rejected(None) => ClaimOutcome::Missing,
            Conditional::Rejected(Some(item)) => {
                let current = task_record(&item)?;
                if current.attempt != task.attempt {
                    ClaimOutcome::NotClaimable(current)
                } else if current.status == TaskStatus::Running
                    && current.claim_token.as_deref() == Some(token)
                {
                    // This claim's own response was lost; the SDK's retry met it. The
                    // call needs the input whole here too.
                    ClaimOutcome::Claimed(self.whole_task(&item).await?)
                } else if current.status.has_result() {
                    ClaimOutcome::AlreadyFinished(current)
                } else if let (TaskStatus::Queued, Some(hold)) = (current.status, current.hold) {
                    ClaimOutcome::Held(current, hold)
                } else {
                    ClaimOutcome::NotClaimable(current)
                }
            }
        })
    }

    async fn task_outputs(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_ids: &[TaskId],
        max_bytes: usize,
    ) -> Result<DependencyOutputs, StoreError> {
        // A few at a time (an output is at most an item, 400 KB): the handler never holds
        // much more than `max_bytes`, whatever a fan-in's dependencies hold.
        const CHUNK: usize = 4;
        let mut outputs = Vec::with_capacity(task_ids.len());
        let mut bytes = 0;
        for chunk in task_ids.chunks(CHUNK) {
            let keys = chunk
                .iter()
                .map(|id| self.task_key(tenant, workflow_id, id))
                .collect();
            // Consistent: a dependency's output was written just before this task was released.
            let items = self
                .batch_get(
                    &self.state_table,
                    keys,
                    Some("sk, #output, output_ref"),
                    &[("#output", "output")],
                    true,
                )
                .await?;
            for item in &items {
                let a = Attrs(item);
                let stored: Option<baton_types::records::StoredPayload> = a.json("output_ref")?;
                bytes += stored.as_ref().map_or_else(
                    || a.opt_s("output").map_or(0, str::len),
                    |p| p.bytes as usize,
                );
                if bytes > max_bytes {
                    return Ok(DependencyOutputs::TooLarge { bytes });
                }
                let id: TaskId = stored_id(a.s(SK)?.trim_start_matches("TASK#"))?;
                let output = match &stored {
                    Some(stored) => Some(self.fetch_payload(stored).await?),
                    None => a.json::<Value>("output")?,
                };
                if let Some(output) = output {
                    outputs.push((id, output));
                }
            }
        }
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(DependencyOutputs::Within(outputs))
    }

    async fn end_attempt(
        &self,
        task: &TaskRef,
        holder: AttemptHolder<'_>,
        end: &AttemptEnd,
        entry: &AttemptRecord,
        finish: Finish,
    ) -> Result<Ended, StoreError> {
        let update = self
            .update_attempt(task)
            .expression_attribute_values(":entry", json_list(std::slice::from_ref(entry))?)
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()));
        let update = match holder {
            AttemptHolder::Claim(token) => update
                .condition_expression(
                    "#status = :running AND attempt = :attempt AND claim_token = :token",
                )
                .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
                .expression_attribute_values(":token", s(token)),
            AttemptHolder::Queued => update
                .condition_expression("#status = :queued_now AND attempt = :attempt")
                .expression_attribute_values(":queued_now", s(TaskStatus::Queued.as_str())),
            AttemptHolder::ExpiredLease(until) => update
                .condition_expression(
                    "#status = :running AND attempt = :attempt AND lease_until = :old",
                )
                .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
                .expression_attribute_values(":old", n(until)),
        };
        let append = "attempts = list_append(if_not_exists(attempts, :empty), :entry)";
        let update = match end {
            AttemptEnd::Succeeded(_) | AttemptEnd::Failed(_) => {
                let (status, field, value, preview) = match end {
                    AttemptEnd::Succeeded(output) => {
                        // Too large for the item: in the bucket, under this attempt's and
                        // holder's key (see `output_key`).
                        let writer = match holder {
                            AttemptHolder::Claim(token) => token.to_string(),
                            AttemptHolder::Queued => "queued".to_string(),
                            AttemptHolder::ExpiredLease(until) => format!("lease-{until}"),
                        };
                        let key = baton_chain::payload::output_key(
                            &task.tenant,
                            &task.workflow_id,
                            &task.task_id,
                            task.attempt,
                            &writer,
                        );
                        match self.place_payload(&key, json_text(output)?).await? {
                            Placed::Inline(text) => {
                                (TaskStatus::Succeeded, "output", s(text), None)
                            }
                            Placed::Stored(stored, preview) => (
                                TaskStatus::Succeeded,
                                "output_ref",
                                json(&stored)?,
                                Some(preview),
                            ),
                        }
                    }
                    AttemptEnd::Failed(failure) => {
                        (TaskStatus::Failed, "failure", json(failure)?, None)
                    }
                    AttemptEnd::Retry { .. } => unreachable!("matched above"),
                };
                let set_preview = if preview.is_some() {
                    ", output_preview = :preview"
                } else {
                    ""
                };
                let update = update
                    .update_expression(format!(
                        "SET #status = :status, #result = :result{set_preview}, \
                         finished_at = :now, expires_at = :expires, {append} \
                         REMOVE {LEASE_ATTRS}, claim_token, {HOLD}"
                    ))
                    .expression_attribute_names("#result", field)
                    .expression_attribute_values(":status", s(status.as_str()))
                    .expression_attribute_values(":result", value)
                    .expression_attribute_values(":now", n(finish.now_ms))
                    .expression_attribute_values(":expires", n(finish.expires_at_s));
                match preview {
                    Some(preview) => update.expression_attribute_values(":preview", s(preview)),
                    None => update,
                }
            }
            AttemptEnd::Retry { lease_until_ms, .. } => update
                .update_expression(format!(
                    "SET #status = :queued, attempt = :next, claims = :zero, dispatches = :zero, \
                     lease_until = :until, lease_shard = :shard, {append} REMOVE claim_token"
                ))
                .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
                .expression_attribute_values(":next", n(task.attempt + 1))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":until", n(*lease_until_ms))
                .expression_attribute_values(":shard", s(keys::lease_shard(&task.workflow_id))),
        };
        match conditional_update(update, ReturnValue::AllNew).await? {
            Conditional::Applied(item) => Ok(Ended::Now(task_record(&item)?)),
            Conditional::Rejected(current) => {
                if let (AttemptHolder::Claim(token), Some(item)) = (holder, &current) {
                    let cancelled = task_record(item)?;
                    if cancelled.status == TaskStatus::Cancelled
                        && cancelled.attempt == task.attempt
                        && cancelled.claim_token.as_deref() == Some(token)
                    {
                        self.record_late_result(task, token, entry).await?;
                        return Ok(Ended::Superseded);
                    }
                }
                ended_before(task, current)
            }
        }
    }

    async fn count_finished_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        failed: bool,
        now_ms: i64,
    ) -> Result<WorkflowProgress, StoreError> {
        let mut expression =
            String::from("SET tasks_remaining = tasks_remaining - :one, updated_at = :now");
        if failed {
            // The first failure decides the workflow's fate; it ends when every task has.
            expression.push_str(", failed_task = if_not_exists(failed_task, :task)");
        }
        expression.push_str(" ADD tasks_done :task_set");
        let update = self
            .update_workflow(tenant, workflow_id)
            .update_expression(expression)
            .condition_expression("NOT contains(tasks_done, :task)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":task", s(task_id))
            .expression_attribute_values(":task_set", string_set(&[task_id]));
        match conditional_update(update, ReturnValue::AllNew).await? {
            Conditional::Applied(item) => progress(&item),
            // Already counted (a resumed duplicate): report the workflow as it is.
            Conditional::Rejected(Some(item)) => progress(&item),
            Conditional::Rejected(None) => Err(StoreError::Corrupt(format!(
                "workflow {workflow_id} of a finished task does not exist"
            ))),
        }
    }

    async fn finish_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        outcome: WorkflowStatus,
        finish: Finish,
    ) -> Result<bool, StoreError> {
        // The outcome must be the one the record shows: a cancel decides over a failure.
        let not_cancelling =
            format!("(attribute_not_exists({CONTROL}) OR {CONTROL} <> :cancelling)");
        let failing = match outcome {
            WorkflowStatus::Cancelled => format!("{CONTROL} = :cancelling"),
            WorkflowStatus::Failed => format!(
                "(attribute_exists(failed_task) OR attribute_exists(#error)) AND {not_cancelling}"
            ),
            _ => format!(
                "attribute_not_exists(failed_task) AND attribute_not_exists(#error) \
                 AND {not_cancelling}"
            ),
        };
        let status = outcome;
        let update = self
            .update_workflow(tenant, workflow_id)
            .expression_attribute_names("#status", "status")
            .update_expression(format!(
                "SET #status = :final, finished_at = :now, updated_at = :now, expires_at = :expires \
                 REMOVE {SWEEP_SHARD}, {SWEEP_AT}, {CONTROL}, {CANCEL_FORCE}, {}",
                keys::RUN_PK
            ))
            .condition_expression(format!(
                "#status = :running AND tasks_remaining = :zero AND {failing}"
            ))
            .expression_attribute_values(":final", s(status.as_str()))
            .expression_attribute_values(":running", s(WorkflowStatus::Running.as_str()))
            .expression_attribute_values(":cancelling", s(Control::CANCELLING))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":expires", n(finish.expires_at_s));
        // DynamoDB refuses a name the expressions do not use.
        let update = if outcome == WorkflowStatus::Cancelled {
            update
        } else {
            update.expression_attribute_names("#error", "error")
        };
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn release_dependent(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        dependent: &TaskId,
        parent: &TaskId,
        sole: bool,
        dispatch_until_ms: i64,
    ) -> Result<Release, StoreError> {
        if sole {
            // Its only parent: counted and queued in one write. Refused, it is decided below
            // on what the decrement finds (its own earlier write, or a task moved on).
            let release = self
                .update_task(tenant, workflow_id, dependent)
                .update_expression(
                    "SET deps_remaining = :zero, #status = :queued, lease_shard = :shard, \
                     lease_until = :until, released_by = :parent ADD deps_done :parent_set",
                )
                .condition_expression(
                    "#status = :waiting AND deps_remaining = :one \
                     AND NOT contains(deps_done, :parent)",
                )
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
                .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
                .expression_attribute_values(":shard", s(keys::lease_shard(workflow_id)))
                .expression_attribute_values(":until", n(dispatch_until_ms))
                .expression_attribute_values(":parent", s(parent))
                .expression_attribute_values(":parent_set", string_set(&[parent]));
            if let Conditional::Applied(item) =
                conditional_update(release, ReturnValue::AllNew).await?
            {
                let current = task_record(&item)?;
                return Ok(Release::Ready {
                    attempt: current.attempt,
                    capability: current.capability,
                    profile: Box::new(current.profile),
                });
            }
        }
        // Count the parent once: the set of counted parents makes the decrement idempotent.
        let decrement = self
            .update_task(tenant, workflow_id, dependent)
            .update_expression(
                "SET deps_remaining = deps_remaining - :one ADD deps_done :parent_set",
            )
            .condition_expression("#status = :waiting AND NOT contains(deps_done, :parent)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":parent", s(parent))
            .expression_attribute_values(":parent_set", string_set(&[parent]));
        let item = match conditional_update(decrement, ReturnValue::AllNew).await? {
            Conditional::Applied(item) | Conditional::Rejected(Some(item)) => item,
            Conditional::Rejected(None) => {
                return Err(StoreError::Corrupt(format!(
                    "dependent task {dependent} of {parent} does not exist"
                )))
            }
        };
        let current = task_record(&item)?;
        match current.status {
            TaskStatus::Waiting if current.deps_remaining == 0 => {}
            TaskStatus::Waiting => return Ok(Release::StillWaiting),
            // Already queued: by this parent (its response lost, or a resumed duplicate) or by
            // another. Only the parent that queued it sends it to routing; its dispatch lease
            // covers a lost message.
            TaskStatus::Queued if current.attempt == current.profile.prior_attempts + 1 => {
                let released_by = Attrs(&item).opt_s("released_by");
                return Ok(if released_by == Some(parent) {
                    Release::Ready {
                        attempt: current.attempt,
                        capability: current.capability,
                        profile: Box::new(current.profile),
                    }
                } else {
                    Release::Moved
                });
            }
            _ => return Ok(Release::Moved),
        }
        let queue = self
            .update_attempt(&current.task_ref())
            .update_expression(
                "SET #status = :queued, lease_shard = :shard, lease_until = :until, \
                 released_by = :parent",
            )
            .condition_expression(
                "#status = :waiting AND deps_remaining = :zero AND attempt = :attempt",
            )
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":shard", s(keys::lease_shard(workflow_id)))
            .expression_attribute_values(":until", n(dispatch_until_ms))
            .expression_attribute_values(":parent", s(parent));
        let ready = Release::Ready {
            attempt: current.attempt,
            capability: current.capability,
            profile: Box::new(current.profile),
        };
        Ok(match conditional_update(queue, ReturnValue::None).await? {
            Conditional::Applied(_) => ready,
            Conditional::Rejected(Some(item))
                if Attrs(&item).opt_s("released_by") == Some(parent)
                    && Attrs(&item).opt_s("status") == Some(TaskStatus::Queued.as_str()) =>
            {
                ready
            }
            Conditional::Rejected(_) => Release::Moved,
        })
    }

    async fn skip_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        finish: Finish,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        let update = self
            .update_task(tenant, workflow_id, task_id)
            .update_expression(format!(
                "SET #status = :skipped, finished_at = :now, expires_at = :expires \
                 REMOVE {LEASE_ATTRS}"
            ))
            .condition_expression("#status = :waiting")
            .expression_attribute_values(":skipped", s(TaskStatus::Skipped.as_str()))
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":expires", n(finish.expires_at_s));
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) => Some(stored_ids(Attrs(&item).list("dependents"))?),
                // Skipped before: by this write (lost response) or an earlier descent that may
                // have stopped here. Its dependents are skipped again; that is idempotent.
                Conditional::Rejected(Some(item))
                    if Attrs(&item).opt_s("status") == Some(TaskStatus::Skipped.as_str()) =>
                {
                    Some(stored_ids(Attrs(&item).list("dependents"))?)
                }
                Conditional::Rejected(_) => None,
            },
        )
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
        // The claim token stays: a running attempt's late result is still recognised as its.
        let also = if running_too {
            TaskStatus::Running
        } else {
            TaskStatus::Queued
        };
        let update = self
            .update_task(tenant, workflow_id, task_id)
            .update_expression(format!(
                "SET #status = :cancelled, failure = :failure, finished_at = :now, \
                 expires_at = :expires REMOVE {LEASE_ATTRS}, {HOLD}"
            ))
            .condition_expression("#status IN (:waiting, :queued, :also)")
            .expression_attribute_values(":cancelled", s(TaskStatus::Cancelled.as_str()))
            .expression_attribute_values(":failure", json(failure)?)
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":also", s(also.as_str()))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":expires", n(finish.expires_at_s));
        Ok(match conditional_update(update, ReturnValue::None).await? {
            Conditional::Applied(_) => true,
            Conditional::Rejected(item) => item.is_some_and(|item| {
                Attrs(&item).opt_s("status") == Some(TaskStatus::Cancelled.as_str())
            }),
        })
    }

    async fn fail_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        error: &TaskFailure,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let update = self
            .update_workflow(tenant, workflow_id)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .update_expression("SET #error = if_not_exists(#error, :error), updated_at = :now")
            .condition_expression("#status = :running")
            .expression_attribute_values(":error", json(error)?)
            .expression_attribute_values(":running", s(WorkflowStatus::Running.as_str()))
            .expression_attribute_values(":now", n(now_ms));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }

    async fn expired_leases(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<ExpiredLease>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.state_table)
            .index_name(keys::LEASES_INDEX)
            .key_condition_expression("lease_shard = :shard AND lease_until < :now")
            .expression_attribute_values(":shard", s(shard.to_string()))
            .expression_attribute_values(":now", n(now_ms))
            .limit(limit)
            .send()
            .await
            .map_err(dynamo_error)?;
        let mut leases = Vec::new();
        for item in out.items.unwrap_or_default() {
            let a = Attrs(&item);
            let (tenant, workflow_id, task_id) = keys::parse_task_keys(a.s(PK)?, a.s(SK)?)
                .ok_or_else(|| StoreError::Corrupt("leased item is not a task".into()))?;
            leases.push(ExpiredLease {
                task: TaskRef {
                    tenant: stored_tenant(tenant)?,
                    workflow_id: stored_id(workflow_id)?,
                    task_id: stored_id(task_id)?,
                    attempt: a.n("attempt")?,
                },
                capability: a.s("capability")?.into(),
                profile: a.json(PROFILE)?.unwrap_or_default(),
                status: a.parsed("status")?,
                lease_until_ms: a.n(LEASE_UNTIL)?,
                agent: a.opt_s("agent").map(stored_id).transpose()?,
                claims: a.opt_n("claims")?.unwrap_or(0),
                dispatches: a.opt_n("dispatches")?.unwrap_or(0),
            });
        }
        Ok(leases)
    }

    async fn requeue_expired(
        &self,
        lease: &ExpiredLease,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let update = self
            .update_attempt(&lease.task)
            .condition_expression("#status = :status AND attempt = :attempt AND lease_until = :old")
            .expression_attribute_values(":status", s(lease.status.as_str()))
            .expression_attribute_values(":old", n(lease.lease_until_ms))
            .expression_attribute_values(":until", n(lease_until_ms))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        let update = match lease.status {
            // The same attempt again: a re-claim sends the agent the same Idempotency-Key.
            TaskStatus::Running => update
                .update_expression(
                    "SET #status = :queued, lease_until = :until, \
                     lease_expirations = if_not_exists(lease_expirations, :zero) + :one \
                     REMOVE claim_token",
                )
                .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str())),
            // A held task is not sent again: it waits, parked, for its workflow's resume.
            TaskStatus::Queued => update
                .update_expression(
                    "SET lease_until = :until, dispatches = if_not_exists(dispatches, :zero) + :one",
                )
                .condition_expression(format!(
                    "#status = :status AND attempt = :attempt AND lease_until = :old \
                     AND attribute_not_exists({HOLD})"
                )),
            _ => return Ok(false),
        };
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn extend_dispatch(
        &self,
        task: &TaskRef,
        dispatch: u32,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let update = self
            .update_attempt(task)
            .update_expression("SET lease_until = :until")
            .condition_expression(
                "#status = :queued AND attempt = :attempt \
                 AND (attribute_not_exists(dispatches) OR dispatches <= :dispatch)",
            )
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":dispatch", n(dispatch))
            .expression_attribute_values(":until", n(lease_until_ms));
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn abandon_task(
        &self,
        lease: &ExpiredLease,
        expires_at_s: i64,
    ) -> Result<bool, StoreError> {
        let update = self
            .update_attempt(&lease.task)
            .update_expression(format!("SET expires_at = :expires REMOVE {LEASE_ATTRS}"))
            .condition_expression("#status = :status AND attempt = :attempt AND lease_until = :old")
            .expression_attribute_values(":status", s(lease.status.as_str()))
            .expression_attribute_values(":old", n(lease.lease_until_ms))
            .expression_attribute_values(":expires", n(expires_at_s));
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn due_workflows(
        &self,
        shard: u32,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, WorkflowId)>, StoreError> {
        self.due_in_sweeps(keys::workflow_sweep_partition(shard), now_ms, limit)
            .await?
            .iter()
            .map(|item| {
                let pk = Attrs(item).s(PK)?;
                let (tenant, workflow_id) = keys::parse_workflow_pk(pk)
                    .ok_or_else(|| StoreError::Corrupt("swept item is not a workflow".into()))?;
                Ok((stored_tenant(tenant)?, stored_id(workflow_id)?))
            })
            .collect()
    }

    async fn schedule_check(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let update = self
            .update_workflow(tenant, workflow_id)
            .expression_attribute_names("#status", "status")
            .update_expression(format!("SET {SWEEP_AT} = :at"))
            .condition_expression(format!(
                "#status = :running AND attribute_exists({SWEEP_SHARD})"
            ))
            .expression_attribute_values(":at", n(at_ms))
            .expression_attribute_values(":running", s(WorkflowStatus::Running.as_str()));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }

    async fn keep_alive(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        since_ms: i64,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<u32, StoreError> {
        let read = PartitionRead {
            projection: Some(&KEEP),
            ..PartitionRead::default()
        };
        let mut kept = 0;
        // Its tasks, and the attempts of earlier drives that its history shows.
        let partitions = [
            keys::workflow_pk(tenant, workflow_id),
            keys::workflow_archive_pk(tenant, workflow_id),
        ];
        for (pk, item) in futures::future::try_join_all(partitions.map(|pk| async move {
            let items = self.partition_read(pk.clone(), read).await?;
            Ok::<_, StoreError>(items.into_iter().map(move |item| (pk.clone(), item)))
        }))
        .await?
        .into_iter()
        .flatten()
        {
            let a = Attrs(&item);
            let Some(sk) = a.opt_s(SK).filter(|sk| *sk != keys::WORKFLOW_SK) else {
                continue;
            };
            if a.opt_n::<i64>(KEPT_AT)?.is_some_and(|at| at >= since_ms) {
                continue;
            }
            // The objects first: a task whose item says it is kept has its payloads kept too.
            for field in [INPUT_REF, "output_ref"] {
                if let Some(stored) = a.json::<baton_types::records::StoredPayload>(field)? {
                    match self.refresh_payload(&stored).await {
                        // Gone already (deleted by hand, or kept too late): nothing to keep,
                        // and the rest of the workflow is kept all the same.
                        Err(StoreError::Payload(baton_chain::payload::PayloadError::Missing(
                            key,
                        ))) => {
                            tracing::warn!(%key, "a payload to keep is missing");
                        }
                        other => other?,
                    }
                }
            }
            let update = self
                .client
                .update_item()
                .table_name(&self.state_table)
                .key(PK, s(pk))
                .key(SK, s(sk))
                .condition_expression(format!("attribute_exists({PK})"))
                .expression_attribute_values(":now", n(now_ms));
            // An ended task's (or archive's) TTL moves on; an unfinished task has none until
            // it ends.
            let update = if a.opt_n::<i64>(EXPIRES_AT)?.is_some() {
                update
                    .update_expression(format!("SET {KEPT_AT} = :now, {EXPIRES_AT} = :expires"))
                    .expression_attribute_values(":expires", n(expires_at_s))
            } else {
                update.update_expression(format!("SET {KEPT_AT} = :now"))
            };
            conditional_update(update, ReturnValue::None).await?;
            kept += 1;
        }
        let update = self
            .update_workflow(tenant, workflow_id)
            .update_expression(format!("SET {KEPT_AT} = :now"))
            .condition_expression(format!("attribute_exists({PK})"))
            .expression_attribute_values(":now", n(now_ms));
        conditional_update(update, ReturnValue::None).await?;
        Ok(kept)
    }
}
