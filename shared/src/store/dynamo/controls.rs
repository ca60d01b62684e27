//! Workflow controls (cancel, pause, resume, redrive) and the list of a tenant's workflows.

use async_trait::async_trait;

use super::workflows::{listed_workflow, task_record, workflow_record, LEASE_ATTRS, PROFILE};
use super::*;
use crate::domain::control::{Control, ControlChange, Hold, TaskReset};
use crate::store::keys::{
    CANCEL_FORCE, CONTROL, CONTROLS, DRIVE, HOLD, LIST_INDEX, LIST_PK, LIST_SK, RUN_PK, SWEEP_AT,
    SWEEP_SHARD,
};

/// Pages of the list index read for one answer at most: a selective filter returns a short
/// page with a cursor rather than reading on.
const MAX_LIST_PAGES: usize = 8;

/// Whether the record was last controlled by `request` (a retried write meeting itself).
fn controlled_by(record: &WorkflowRecord, request: &str) -> bool {
    record.controls.last().is_some_and(|c| c.request == request)
}

#[async_trait]
impl WorkflowControls for DynamoStore {
    async fn control_workflow(
        &self,
        read: &WorkflowRecord,
        write: &ControlWrite<'_>,
    ) -> Result<ControlApplied, StoreError> {
        let update = self
            .update_workflow(&read.tenant, &read.id)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":event", json_list(std::slice::from_ref(write.event))?)
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":now", n(write.event.at_ms))
            .expression_attribute_values(":check", n(write.check_at_ms))
            .expression_attribute_values(":running", s(WorkflowStatus::Running.as_str()));
        let common = format!(
            "{CONTROLS} = list_append(if_not_exists({CONTROLS}, :empty), :event), \
             updated_at = :now, {SWEEP_AT} = :check"
        );
        let live = "#status = :running AND tasks_remaining > :zero";
        let update = match write.change {
            ControlChange::Unchanged => return Ok(ControlApplied::Applied(Box::new(read.clone()))),
            ControlChange::Pause => update
                .update_expression(format!("SET {CONTROL} = :paused, {common}"))
                .condition_expression(format!("{live} AND attribute_not_exists({CONTROL})"))
                .expression_attribute_values(":paused", s(Control::PAUSED))
                .expression_attribute_values(":zero", n(0)),
            ControlChange::Resume => update
                .update_expression(format!("SET {common} REMOVE {CONTROL}"))
                .condition_expression(format!("#status = :running AND {CONTROL} = :paused"))
                .expression_attribute_values(":paused", s(Control::PAUSED)),
            ControlChange::Cancel { force } => {
                let (set_force, allowed) = if force {
                    (
                        format!(", {CANCEL_FORCE} = :yes"),
                        format!("attribute_not_exists({CANCEL_FORCE})"),
                    )
                } else {
                    (String::new(), format!("{CONTROL} <> :cancelling"))
                };
                let update = update
                    .update_expression(format!("SET {CONTROL} = :cancelling{set_force}, {common}"))
                    .condition_expression(format!(
                        "{live} AND (attribute_not_exists({CONTROL}) OR {allowed})"
                    ))
                    .expression_attribute_values(":cancelling", s(Control::CANCELLING))
                    .expression_attribute_values(":zero", n(0));
                if force {
                    update.expression_attribute_values(":yes", AttributeValue::Bool(true))
                } else {
                    update
                }
            }
            ControlChange::Redrive { drive } => {
                let rerun: Vec<&str> = write.rerun.iter().map(String::as_str).collect();
                let deadline = match write.deadline_at_ms {
                    Some(_) => ", deadline_at = :deadline",
                    None => "",
                };
                let update = update
                    .expression_attribute_names("#error", "error")
                    .update_expression(format!(
                        "SET #status = :running, {DRIVE} = :drive, tasks_remaining = :remaining, \
                         {SWEEP_SHARD} = :shard, {RUN_PK} = :run{deadline}, {common} \
                         REMOVE failed_task, #error, finished_at, {EXPIRES_AT}, {CONTROL}, \
                         {CANCEL_FORCE} DELETE tasks_done :rerun"
                    ))
                    .condition_expression(format!(
                        "#status = :was AND (attribute_not_exists({DRIVE}) OR {DRIVE} = :read)"
                    ))
                    .expression_attribute_values(":drive", n(drive))
                    .expression_attribute_values(":read", n(read.drive))
                    .expression_attribute_values(":was", s(read.status.as_str()))
                    .expression_attribute_values(":remaining", n(rerun.len()))
                    .expression_attribute_values(":shard", s(keys::workflow_sweep_shard(&read.id)))
                    .expression_attribute_values(":run", s(keys::running_pk(&read.tenant)))
                    .expression_attribute_values(":rerun", string_set(&rerun));
                match write.deadline_at_ms {
                    Some(at) => update.expression_attribute_values(":deadline", n(at)),
                    None => update,
                }
            }
        };
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) => {
                    ControlApplied::Applied(Box::new(workflow_record(&read.tenant, &item)?))
                }
                Conditional::Rejected(None) => ControlApplied::Missing,
                Conditional::Rejected(Some(item)) => {
                    let current = workflow_record(&read.tenant, &item)?;
                    if controlled_by(&current, &write.event.request) {
                        ControlApplied::Applied(Box::new(current))
                    } else {
                        ControlApplied::Stale
                    }
                }
            },
        )
    }

    async fn hold_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_id: &str,
        hold: Hold,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let update = self
            .update_task(tenant, workflow_id, task_id)
            .update_expression(format!("SET {HOLD} = :hold"))
            .condition_expression("#status IN (:waiting, :queued, :running)")
            .expression_attribute_values(":hold", s(hold.as_str()))
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()));
        match conditional_update(update, ReturnValue::AllNew).await? {
            Conditional::Applied(item) => Ok(Some(task_record(&item)?)),
            Conditional::Rejected(_) => Ok(None),
        }
    }

    async fn park_task(&self, task: &TaskRef) -> Result<(), StoreError> {
        let update = self
            .update_attempt(task)
            .update_expression(format!("REMOVE {LEASE_ATTRS}"))
            .condition_expression(format!(
                "#status = :queued AND attempt = :attempt AND attribute_exists({HOLD})"
            ))
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()));
        // Rejected: resumed or ended meanwhile; nothing to park.
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
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
        let update = self
            .update_attempt(&read.task_ref())
            .condition_expression(format!(
                "#status = :read AND attempt = :attempt AND {HOLD} = :pause"
            ))
            .expression_attribute_values(":read", s(read.status.as_str()))
            .expression_attribute_values(":pause", s(Hold::Pause.as_str()));
        let update = if queued {
            update
                .update_expression(format!(
                    "SET {LEASE_UNTIL} = :until, {LEASE_SHARD} = :shard, dispatches = :zero \
                     REMOVE {HOLD}"
                ))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":until", n(dispatch_until_ms))
                .expression_attribute_values(":shard", s(keys::lease_shard(&read.workflow_id)))
        } else {
            update.update_expression(format!("REMOVE {HOLD}"))
        };
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) if queued => {
                    HoldReleased::Send(Box::new(task_record(&item)?))
                }
                Conditional::Applied(_) => HoldReleased::Done,
                Conditional::Rejected(Some(item)) if Attrs(&item).opt_s(HOLD).is_none() => {
                    HoldReleased::Done
                }
                Conditional::Rejected(Some(item))
                    if Attrs(&item).opt_s(HOLD) == Some(Hold::Cancel.as_str()) =>
                {
                    HoldReleased::Done
                }
                Conditional::Rejected(Some(_)) => HoldReleased::Changed,
                Conditional::Rejected(None) => HoldReleased::Done,
            },
        )
    }

    async fn reset_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        reset: &TaskReset,
        profile: &TaskProfile,
        drive: u32,
        dispatch_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut set = vec![
            "#status = :status",
            "attempt = :attempt",
            "deps_remaining = :remaining",
            "drive = :drive",
            "claims = :zero",
            "dispatches = :zero",
            // A redrive is a deliberate new start: deaths of the last drive's handlers do not
            // count against it.
            "lease_expirations = :zero",
        ];
        let mut remove = vec![
            "failure",
            "#output",
            "finished_at",
            "started_at",
            "claim_token",
            "released_by",
            EXPIRES_AT,
            HOLD,
        ];
        let done: Vec<&str> = reset.deps_done.iter().map(String::as_str).collect();
        if done.is_empty() {
            remove.push("deps_done");
        } else {
            set.push("deps_done = :done");
        }
        if profile.is_default() {
            remove.push(PROFILE);
        } else {
            set.push("profile = :profile");
        }
        let queued = reset.status == TaskStatus::Queued;
        if queued {
            set.push("lease_until = :until");
            set.push("lease_shard = :shard");
        }
        let update = self
            .update_task(tenant, workflow_id, &reset.id)
            .expression_attribute_names("#output", "output")
            .update_expression(format!(
                "SET {} REMOVE {}",
                set.join(", "),
                remove.join(", ")
            ))
            .condition_expression(format!(
                "#status = :from AND attempt = :from_attempt \
                 AND (attribute_not_exists({DRIVE}) OR {DRIVE} < :drive)"
            ))
            .expression_attribute_values(":status", s(reset.status.as_str()))
            .expression_attribute_values(":attempt", n(reset.attempt))
            .expression_attribute_values(":remaining", n(reset.deps_remaining))
            .expression_attribute_values(":drive", n(drive))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":from", s(reset.from.as_str()))
            .expression_attribute_values(":from_attempt", n(reset.from_attempt));
        let update = if done.is_empty() {
            update
        } else {
            update.expression_attribute_values(":done", string_set(&done))
        };
        let update = if profile.is_default() {
            update
        } else {
            update.expression_attribute_values(":profile", json(profile)?)
        };
        let update = if queued {
            update
                .expression_attribute_values(":until", n(dispatch_until_ms))
                .expression_attribute_values(":shard", s(keys::lease_shard(workflow_id)))
        } else {
            update
        };
        Ok(match conditional_update(update, ReturnValue::None).await? {
            Conditional::Applied(_) => true,
            // Reset for this drive before (this write's lost response, or another handler).
            Conditional::Rejected(Some(item)) => Attrs(&item).opt_n::<u32>(DRIVE)? >= Some(drive),
            Conditional::Rejected(None) => false,
        })
    }

    async fn list_workflows(
        &self,
        tenant: &str,
        filter: &WorkflowFilter,
    ) -> Result<WorkflowPage, StoreError> {
        let mut page = WorkflowPage::default();
        let mut start = match &filter.after {
            Some(after) => Some(list_start_key(tenant, after)?),
            None => None,
        };
        for _ in 0..MAX_LIST_PAGES {
            let wanted = filter.limit as usize - page.workflows.len();
            let mut query = self
                .client
                .query()
                .table_name(&self.state_table)
                .index_name(LIST_INDEX)
                .scan_index_forward(false)
                .limit(wanted as i32)
                .set_exclusive_start_key(start.take())
                .expression_attribute_values(":pk", s(keys::workflow_list_pk(tenant)));
            query = match filter.since_ms {
                Some(since) => query
                    .key_condition_expression(format!("{LIST_PK} = :pk AND {LIST_SK} >= :since"))
                    .expression_attribute_values(":since", s(keys::workflow_list_sk(since, ""))),
                None => query.key_condition_expression(format!("{LIST_PK} = :pk")),
            };
            let mut conditions = Vec::new();
            if let Some(status) = &filter.status {
                query = query.expression_attribute_names("#status", "status");
                let condition = match status.as_str() {
                    Control::PAUSED | Control::CANCELLING => {
                        query = query
                            .expression_attribute_values(
                                ":status",
                                s(WorkflowStatus::Running.as_str()),
                            )
                            .expression_attribute_values(":control", s(status.as_str()));
                        format!("#status = :status AND {CONTROL} = :control")
                    }
                    "running" => {
                        query = query.expression_attribute_values(":status", s(status.as_str()));
                        format!("#status = :status AND attribute_not_exists({CONTROL})")
                    }
                    _ => {
                        query = query.expression_attribute_values(":status", s(status.as_str()));
                        "#status = :status".to_string()
                    }
                };
                conditions.push(condition);
            }
            if let Some(name) = &filter.name {
                query = query
                    .expression_attribute_names("#name", "name")
                    .expression_attribute_values(":name", s(name.as_str()));
                conditions.push("#name = :name".to_string());
            }
            if !conditions.is_empty() {
                query = query.filter_expression(conditions.join(" AND "));
            }
            let out = query.send().await.map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                page.workflows.push(listed_workflow(&item)?);
            }
            let last = out.last_evaluated_key.filter(|key| !key.is_empty());
            match last {
                Some(key) if page.workflows.len() < filter.limit as usize => start = Some(key),
                Some(key) => {
                    page.next = Attrs(&key).opt_s(LIST_SK).map(str::to_string);
                    break;
                }
                None => break,
            }
        }
        if page.next.is_none() {
            page.next = start
                .as_ref()
                .and_then(|key| Attrs(key).opt_s(LIST_SK).map(str::to_string));
        }
        Ok(page)
    }
}

/// The list index's key of the item a page ended at, from the cursor's sort key.
fn list_start_key(tenant: &str, after: &str) -> Result<Item, StoreError> {
    let workflow_id = keys::parse_workflow_list_sk(after)
        .ok_or_else(|| StoreError::Corrupt("not a list position".into()))?;
    Ok(HashMap::from([
        (PK.into(), s(keys::workflow_pk(tenant, workflow_id))),
        (SK.into(), s(keys::WORKFLOW_SK)),
        (LIST_PK.into(), s(keys::workflow_list_pk(tenant))),
        (LIST_SK.into(), s(after)),
    ]))
}
