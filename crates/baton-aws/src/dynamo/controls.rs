//! Workflow controls (cancel, pause, resume, redrive), the archive where a redrive moves the
//! attempts of the drive it ends, and the list of a tenant's workflows.

use async_trait::async_trait;
use baton_types::ids::TenantId;
use baton_types::ids::{TaskId, WorkflowId};

use super::workflows::{listed_workflow, task_record, workflow_record, LEASE_ATTRS, PROFILE};
use super::*;
use crate::dynamo::keys::{
    ARCHIVED_TASK, CANCEL_FORCE, CONTROL, CONTROLS, DRIVE, HOLD, LIST_INDEX, LIST_PK, LIST_SK,
    RUN_PK, SWEEP_AT, SWEEP_SHARD,
};
use aws_sdk_dynamodb::types::Update;
use baton_types::control::{
    controls_to_drop, Control, ControlChange, ControlEvent, Hold, TaskReset,
};

/// Pages of the list index read for one answer at most: a selective filter returns a short
/// page with a cursor rather than reading on.
const MAX_LIST_PAGES: usize = 8;

/// Whether the record was last controlled by `request` (a retried write meeting itself).
fn controlled_by(record: &WorkflowRecord, request: &str) -> bool {
    record.controls.last().is_some_and(|c| c.request == request)
}

/// Whether a refused release of the queued attempt `read` meets the release's own write: the
/// hold is gone and the attempt, still queued, has the dispatch lease that write set (another
/// release, or a sweep's resend, sets another).
fn released_by_this_write(
    read: &TaskRecord,
    dispatch_until_ms: i64,
    current: &Item,
) -> Result<bool, StoreError> {
    let a = Attrs(current);
    Ok(a.opt_s(HOLD).is_none()
        && a.opt_s("status") == Some(TaskStatus::Queued.as_str())
        && a.opt_n::<u32>("attempt")? == Some(read.attempt)
        && a.opt_n::<i64>(LEASE_UNTIL)? == Some(dispatch_until_ms)
        && a.opt_s(LEASE_SHARD).is_some())
}

/// Reads of a rejected reset, each followed by another try: a task only changes under a
/// reset as planned when a late result of a cancelled attempt lands on it.
const RESET_TRIES: usize = 3;
/// Pages of a workflow's archive a history reads at most (each up to 1 MB): thousands of
/// drives, with a bound on what one request holds.
const MAX_ARCHIVE_PAGES: usize = 16;
const ATTEMPTS: &str = "attempts";

/// A task's reset for a new drive, as planned from a read of the task.
struct ResetWrite<'a> {
    reset: &'a TaskReset,
    profile: &'a TaskProfile,
    drive: u32,
    dispatch_until_ms: i64,
    archive_expires_at_s: i64,
}

/// An update's expressions, for an `UpdateItem` or a transaction's `Update`.
struct UpdateExpression {
    update: String,
    condition: String,
    names: HashMap<String, String>,
    values: Item,
}

impl UpdateExpression {
    fn apply_to(self, builder: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        builder
            .update_expression(self.update)
            .condition_expression(self.condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
    }

    fn transact_item(self, table: &str, key: Item) -> Result<TransactWriteItem, StoreError> {
        let update = built(
            Update::builder()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(self.update)
                .condition_expression(self.condition)
                .set_expression_attribute_names(Some(self.names))
                .set_expression_attribute_values(Some(self.values))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

impl ResetWrite<'_> {
    /// The task's attempts since its last reset, as the archive keeps them.
    fn archive(&self, read: &TaskRecord) -> Result<Item, StoreError> {
        Ok(HashMap::from([
            (
                PK.into(),
                s(keys::workflow_archive_pk(&read.tenant, &read.workflow_id)),
            ),
            (SK.into(), s(keys::archived_drive_sk(&read.id, read.drive))),
            (ARCHIVED_TASK.into(), s(read.id.as_str())),
            (DRIVE.into(), n(read.drive)),
            (ATTEMPTS.into(), json_list(&read.attempts)?),
            (EXPIRES_AT.into(), n(self.archive_expires_at_s)),
        ]))
    }

    /// The reset, conditional on the task being as read: in the status and attempt planned
    /// from, at the drive and with the attempts the archive is written for.
    fn expression(&self, read: &TaskRecord) -> Result<UpdateExpression, StoreError> {
        let reset = self.reset;
        let mut set = vec![
            "#status = :status",
            "attempt = :attempt",
            "deps_remaining = :remaining",
            "#drive = :drive",
            "claims = :zero",
            "dispatches = :zero",
            // A redrive is a deliberate new start: deaths of the last drive's handlers do not
            // count against it.
            "lease_expirations = :zero",
        ];
        // The ended drive's attempts and output go: the attempts to the archive, the output
        // (and its pointer to the payload bucket) because the new drive has none yet.
        let mut remove = vec![
            "failure",
            "#output",
            "output_ref",
            "output_preview",
            "#attempts",
            "finished_at",
            "started_at",
            "claim_token",
            "released_by",
            EXPIRES_AT,
            HOLD,
        ];
        let mut values: Item = HashMap::from([
            (":status".into(), s(reset.status.as_str())),
            (":attempt".into(), n(reset.attempt)),
            (":remaining".into(), n(reset.deps_remaining)),
            (":drive".into(), n(self.drive)),
            (":zero".into(), n(0)),
            (":from".into(), s(reset.from.as_str())),
            (":from_attempt".into(), n(reset.from_attempt)),
            (":read_drive".into(), n(read.drive)),
        ]);
        let done: Vec<&str> = reset.deps_done.iter().map(TaskId::as_str).collect();
        if done.is_empty() {
            remove.push("deps_done");
        } else {
            set.push("deps_done = :done");
            values.insert(":done".into(), string_set(&done));
        }
        if self.profile.is_default() {
            remove.push(PROFILE);
        } else {
            set.push("profile = :profile");
            values.insert(":profile".into(), json(self.profile)?);
        }
        if reset.status == TaskStatus::Queued {
            set.push("lease_until = :until");
            set.push("lease_shard = :shard");
            values.insert(":until".into(), n(self.dispatch_until_ms));
            values.insert(":shard".into(), s(keys::lease_shard(&read.workflow_id)));
        }
        let attempts = if read.attempts.is_empty() {
            "(attribute_not_exists(#attempts) OR size(#attempts) = :zero)".to_string()
        } else {
            values.insert(":kept".into(), n(read.attempts.len()));
            "size(#attempts) = :kept".to_string()
        };
        let drive = if read.drive == 0 {
            "(attribute_not_exists(#drive) OR #drive = :read_drive)"
        } else {
            "#drive = :read_drive"
        };
        Ok(UpdateExpression {
            update: format!("SET {} REMOVE {}", set.join(", "), remove.join(", ")),
            condition: format!(
                "#status = :from AND attempt = :from_attempt AND {drive} AND {attempts}"
            ),
            names: HashMap::from([
                ("#status".into(), "status".into()),
                ("#output".into(), "output".into()),
                ("#attempts".into(), ATTEMPTS.into()),
                ("#drive".into(), DRIVE.into()),
            ]),
            values,
        })
    }
}

/// How many older control events the record dropped (it keeps the newest
/// `MAX_CONTROL_EVENTS`); with the kept ones, the count of every control applied.
const CONTROLS_DROPPED: &str = "controls_dropped";

/// A control's events written anew: the record's kept events as freshly read, without the
/// oldest, and the new one; conditional on the list being as read.
struct TrimmedControls {
    events: Vec<AttributeValue>,
    dropped: u64,
    /// What the list was read as: its length and the count of events dropped before.
    read_len: usize,
    read_dropped: Option<u64>,
}

impl TrimmedControls {
    /// The write's values, its `SET` of the events, and the condition that no control was
    /// appended since the read (every append makes the length or the dropped count grow).
    fn apply(self, update: UpdateItemFluentBuilder) -> (UpdateItemFluentBuilder, String, String) {
        let update = update
            .expression_attribute_values(":events", AttributeValue::L(self.events))
            .expression_attribute_values(":dropped", n(self.dropped));
        let (update, dropped) = match self.read_dropped {
            Some(before) => (
                update.expression_attribute_values(":dropped_before", n(before)),
                format!("{CONTROLS_DROPPED} = :dropped_before"),
            ),
            None => (update, format!("attribute_not_exists({CONTROLS_DROPPED})")),
        };
        let (update, list) = match self.read_len {
            0 => (update, format!("attribute_not_exists({CONTROLS})")),
            len => (
                update.expression_attribute_values(":kept", n(len)),
                format!("size({CONTROLS}) = :kept"),
            ),
        };
        (
            update,
            format!("{CONTROLS} = :events, {CONTROLS_DROPPED} = :dropped"),
            format!(" AND {list} AND {dropped}"),
        )
    }
}

impl DynamoStore {
    /// The record's control events with `event` appended and the oldest dropped, from a
    /// strongly consistent read of the record (None: it is gone).
    async fn trimmed_controls(
        &self,
        read: &WorkflowRecord,
        event: &ControlEvent,
    ) -> Result<Option<TrimmedControls>, StoreError> {
        let Some(item) = self
            .state_item(keys::workflow_pk(&read.tenant, &read.id), keys::WORKFLOW_SK)
            .await?
        else {
            return Ok(None);
        };
        let a = Attrs(&item);
        let stored = match item.get(CONTROLS) {
            Some(AttributeValue::L(events)) => events.as_slice(),
            _ => &[],
        };
        let drop = controls_to_drop(stored.len());
        let read_dropped = a.opt_n::<u64>(CONTROLS_DROPPED)?;
        let mut events = stored[drop..].to_vec();
        events.push(json(event)?);
        Ok(Some(TrimmedControls {
            events,
            dropped: read_dropped.unwrap_or(0) + drop as u64,
            read_len: stored.len(),
            read_dropped,
        }))
    }
}

#[async_trait]
impl WorkflowControls for DynamoStore {
    async fn control_workflow(
        &self,
        read: &WorkflowRecord,
        write: &ControlWrite<'_>,
    ) -> Result<ControlApplied, StoreError> {
        if write.change == ControlChange::Unchanged {
            return Ok(ControlApplied::Applied(Box::new(read.clone())));
        }
        let update = self
            .update_workflow(&read.tenant, &read.id)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(write.event.at_ms))
            .expression_attribute_values(":check", n(write.check_at_ms))
            .expression_attribute_values(":running", s(WorkflowStatus::Running.as_str()));
        // The event is appended; once the record holds its fill of them, the list is written
        // anew from a fresh read without the oldest, in this same conditional write.
        let (update, events, unchanged) = if controls_to_drop(read.controls.len()) == 0 {
            let update = update
                .expression_attribute_values(
                    ":event",
                    json_list(std::slice::from_ref(write.event))?,
                )
                .expression_attribute_values(":empty", AttributeValue::L(Vec::new()));
            let events =
                format!("{CONTROLS} = list_append(if_not_exists({CONTROLS}, :empty), :event)");
            (update, events, String::new())
        } else {
            let Some(trim) = self.trimmed_controls(read, write.event).await? else {
                return Ok(ControlApplied::Missing);
            };
            trim.apply(update)
        };
        let common = format!("{events}, updated_at = :now, {SWEEP_AT} = :check");
        let live = format!("#status = :running AND tasks_remaining > :zero{unchanged}");
        let update = match write.change {
            ControlChange::Unchanged => unreachable!("answered above"),
            ControlChange::Pause => update
                .update_expression(format!("SET {CONTROL} = :paused, {common}"))
                .condition_expression(format!("{live} AND attribute_not_exists({CONTROL})"))
                .expression_attribute_values(":paused", s(Control::PAUSED))
                .expression_attribute_values(":zero", n(0)),
            ControlChange::Resume => update
                .update_expression(format!("SET {common} REMOVE {CONTROL}"))
                .condition_expression(format!(
                    "#status = :running AND {CONTROL} = :paused{unchanged}"
                ))
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
                let rerun: Vec<&str> = write.rerun.iter().map(TaskId::as_str).collect();
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
                        "#status = :was AND (attribute_not_exists({DRIVE}) OR {DRIVE} = :read)\
                         {unchanged}"
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
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
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
                // This write's own effect (its response was lost and the SDK sent it again):
                // the queued attempt is released with the dispatch lease this write set, so it
                // is sent now, not a whole lease later by the sweep.
                Conditional::Rejected(Some(item))
                    if queued && released_by_this_write(read, dispatch_until_ms, &item)? =>
                {
                    HoldReleased::Send(Box::new(task_record(&item)?))
                }
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
        read: &TaskRecord,
        reset: &TaskReset,
        profile: &TaskProfile,
        drive: u32,
        dispatch_until_ms: i64,
        archive_expires_at_s: i64,
    ) -> Result<bool, StoreError> {
        let write = ResetWrite {
            reset,
            profile,
            drive,
            dispatch_until_ms,
            archive_expires_at_s,
        };
        let mut read = std::borrow::Cow::Borrowed(read);
        for _ in 0..RESET_TRIES {
            let refused = if read.attempts.is_empty() {
                let update = write.expression(&read)?.apply_to(self.update_task(
                    &read.tenant,
                    &read.workflow_id,
                    &reset.id,
                ));
                match conditional_update(update, ReturnValue::None).await? {
                    Conditional::Applied(_) => return Ok(true),
                    Conditional::Rejected(item) => item,
                }
            } else {
                // One transaction: the attempts are archived if and only if the item is reset
                // without them, so a handler dying, a retried request or a second reset can
                // neither lose nor repeat them.
                let key = self.task_key(&read.tenant, &read.workflow_id, &reset.id);
                let items = vec![
                    txn_put(&self.state_table, write.archive(&read)?, None)?,
                    write
                        .expression(&read)?
                        .transact_item(&self.state_table, key)?,
                ];
                if self.transact(items).await? {
                    return Ok(true);
                }
                let pk = keys::workflow_pk(&read.tenant, &read.workflow_id);
                self.state_item(pk, &keys::task_sk(&reset.id)).await?
            };
            let Some(item) = refused else {
                return Ok(false);
            };
            let current = task_record(&item)?;
            if current.drive >= drive {
                // Reset for this drive before (this write's lost response, or another handler).
                return Ok(true);
            }
            if current.status != reset.from || current.attempt != reset.from_attempt {
                return Ok(false);
            }
            // Still as planned, but its attempts changed since the read (a cancelled attempt's
            // late result): again, with them.
            read = std::borrow::Cow::Owned(current);
        }
        Ok(false)
    }

    async fn archived_drives(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> Result<Vec<ArchivedDrive>, StoreError> {
        let mut drives = Vec::new();
        let mut start = None;
        for _ in 0..MAX_ARCHIVE_PAGES {
            let out = self
                .client
                .query()
                .table_name(&self.state_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    s(keys::workflow_archive_pk(tenant, workflow_id)),
                )
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                let a = Attrs(&item);
                drives.push(ArchivedDrive {
                    task_id: stored_id(a.s(ARCHIVED_TASK)?)?,
                    drive: a.n(DRIVE)?,
                    attempts: a.json_list(ATTEMPTS)?,
                });
            }
            match out.last_evaluated_key.filter(|key| !key.is_empty()) {
                Some(key) => start = Some(key),
                None => return Ok(drives),
            }
        }
        tracing::warn!(
            %tenant,
            workflow = %workflow_id,
            pages = MAX_ARCHIVE_PAGES,
            "the archive is longer than a history reads; its later drives are left out"
        );
        Ok(drives)
    }

    async fn list_workflows(
        &self,
        tenant: &TenantId,
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
fn list_start_key(tenant: &TenantId, after: &str) -> Result<Item, StoreError> {
    let workflow_id = keys::parse_workflow_list_sk(after)
        .ok_or_else(|| StoreError::Corrupt("not a list position".into()))?;
    Ok(HashMap::from([
        (PK.into(), s(keys::workflow_pk(tenant, workflow_id))),
        (SK.into(), s(keys::WORKFLOW_SK)),
        (LIST_PK.into(), s(keys::workflow_list_pk(tenant))),
        (LIST_SK.into(), s(after)),
    ]))
}
