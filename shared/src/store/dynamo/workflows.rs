//! Workflows and their tasks: the execution state machine's transitions.

use async_trait::async_trait;

use super::*;

fn task_item(workflow: &NewWorkflow, position: usize, task: &NewTask) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (
            PK.into(),
            s(keys::workflow_pk(&workflow.tenant, &workflow.workflow_id)),
        ),
        (SK.into(), s(keys::task_sk(&task.id))),
        ("position".into(), n(position)),
        ("capability".into(), s(task.capability.as_str())),
        ("input".into(), json(&task.input)?),
        ("depends_on".into(), string_list(&task.depends_on)),
        ("dependents".into(), string_list(&task.dependents)),
        ("deps_remaining".into(), n(task.depends_on.len())),
        ("status".into(), s(task.status.as_str())),
        ("attempt".into(), n(1)),
        ("created_at".into(), n(workflow.created_at_ms)),
    ]);
    if task.status == TaskStatus::Queued {
        item.insert(
            LEASE_SHARD.into(),
            s(keys::lease_shard(&workflow.workflow_id)),
        );
        item.insert(LEASE_UNTIL.into(), n(workflow.dispatch_until_ms));
    }
    Ok(item)
}

fn task_record(item: &Item) -> Result<TaskRecord, StoreError> {
    let a = Attrs(item);
    let (tenant, workflow_id, task_id) = keys::parse_task_keys(a.s(PK)?, a.s(SK)?)
        .ok_or_else(|| StoreError::Corrupt("task item has unexpected keys".into()))?;
    Ok(TaskRecord {
        tenant: tenant.into(),
        workflow_id: workflow_id.into(),
        id: task_id.into(),
        capability: a.s("capability")?.into(),
        input: a.json("input")?.unwrap_or(Value::Null),
        depends_on: a.list("depends_on"),
        dependents: a.list("dependents"),
        status: a.parsed("status")?,
        attempt: a.n("attempt")?,
        deps_remaining: a.n("deps_remaining")?,
        agent: a.opt_s("agent").map(str::to_string),
        output: a.json("output")?,
        failure: a.json("failure")?,
        started_at_ms: a.opt_n("started_at")?,
        finished_at_ms: a.opt_n("finished_at")?,
        lease_until_ms: a.opt_n(LEASE_UNTIL)?,
    })
}

fn workflow_record(tenant: &str, item: &Item) -> Result<WorkflowRecord, StoreError> {
    let a = Attrs(item);
    Ok(WorkflowRecord {
        tenant: tenant.into(),
        id: a.s("workflow_id")?.into(),
        name: a.s("name")?.into(),
        status: a.parsed("status")?,
        task_count: a.n("task_count")?,
        tasks_remaining: a.n("tasks_remaining")?,
        failed_task: a.opt_s("failed_task").map(str::to_string),
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
        finished_at_ms: a.opt_n("finished_at")?,
    })
}

fn progress(item: &Item) -> Result<WorkflowProgress, StoreError> {
    let a = Attrs(item);
    Ok(WorkflowProgress {
        status: a.parsed("status")?,
        tasks_remaining: a.n("tasks_remaining")?,
    })
}

#[async_trait]
impl WorkflowStore for DynamoStore {
    async fn create_workflow(&self, workflow: &NewWorkflow) -> Result<(), StoreError> {
        let mut requests = Vec::with_capacity(workflow.tasks.len());
        for (position, task) in workflow.tasks.iter().enumerate() {
            let put = PutRequest::builder()
                .set_item(Some(task_item(workflow, position, task)?))
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(&self.state_table, requests).await?;

        // The workflow record goes last: until it exists the tasks are invisible and unrouted.
        let count = workflow.tasks.len();
        let mut item = self.workflow_key(&workflow.tenant, &workflow.workflow_id);
        item.extend([
            ("workflow_id".into(), s(workflow.workflow_id.as_str())),
            ("name".into(), s(workflow.name.as_str())),
            ("status".into(), s(WorkflowStatus::Running.as_str())),
            ("task_count".into(), n(count)),
            ("tasks_remaining".into(), n(count)),
            ("created_at".into(), n(workflow.created_at_ms)),
            ("updated_at".into(), n(workflow.created_at_ms)),
        ]);
        self.put_new(item, || format!("workflow {}", workflow.workflow_id))
            .await
    }

    async fn workflow(&self, tenant: &str, id: &str) -> Result<Option<WorkflowView>, StoreError> {
        let mut workflow = None;
        let mut tasks = Vec::new();
        for item in self.partition(keys::workflow_pk(tenant, id)).await? {
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

    async fn claim_task(
        &self,
        task: &TaskRef,
        agent: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<ClaimOutcome, StoreError> {
        let update = self
            .update_attempt(task)
            .update_expression(
                "SET #status = :running, #agent = :agent, started_at = :now, \
                 lease_until = :lease, lease_shard = :shard",
            )
            .condition_expression("#status = :queued AND attempt = :attempt")
            .expression_attribute_names("#agent", "agent")
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":agent", s(agent))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":shard", s(keys::lease_shard(&task.workflow_id)));
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) => ClaimOutcome::Claimed(task_record(&item)?),
                Conditional::Rejected(None) => ClaimOutcome::Missing,
                Conditional::Rejected(Some(item)) => {
                    let current = task_record(&item)?;
                    if current.attempt == task.attempt && current.status.has_result() {
                        ClaimOutcome::AlreadyFinished(current)
                    } else {
                        ClaimOutcome::NotClaimable(current)
                    }
                }
            },
        )
    }

    async fn task_outputs(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_ids: &[String],
    ) -> Result<Vec<(String, Value)>, StoreError> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = task_ids
            .iter()
            .map(|id| self.task_key(tenant, workflow_id, id))
            .collect();
        // Consistent: a dependency's output was written just before this task was released.
        let items = self
            .batch_get(
                &self.state_table,
                keys,
                Some("sk, #output"),
                &[("#output", "output")],
                true,
            )
            .await?;
        let mut outputs = Vec::with_capacity(items.len());
        for item in &items {
            let a = Attrs(item);
            let id = a.s(SK)?.trim_start_matches("TASK#").to_string();
            if let Some(output) = a.json::<Value>("output")? {
                outputs.push((id, output));
            }
        }
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(outputs)
    }

    async fn record_result(
        &self,
        task: &TaskRef,
        expected: TaskStatus,
        result: &TaskResult,
        finish: Finish,
    ) -> Result<Recorded, StoreError> {
        let (status, field, value) = match result {
            TaskResult::Succeeded(output) => (TaskStatus::Succeeded, "output", json(output)?),
            TaskResult::Failed(failure) => (TaskStatus::Failed, "failure", json(failure)?),
        };
        let update = self
            .update_attempt(task)
            .update_expression(
                "SET #status = :status, #result = :result, finished_at = :now, expires_at = :expires \
                 REMOVE lease_until, lease_shard",
            )
            .condition_expression("#status = :expected AND attempt = :attempt")
            .expression_attribute_names("#result", field)
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":result", value)
            .expression_attribute_values(":expected", s(expected.as_str()))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":expires", n(finish.expires_at_s));
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) => Recorded::Now(task_record(&item)?),
                Conditional::Rejected(Some(item)) => {
                    let current = task_record(&item)?;
                    if current.attempt == task.attempt && current.status.has_result() {
                        Recorded::Earlier(current)
                    } else {
                        Recorded::Superseded
                    }
                }
                Conditional::Rejected(None) => Recorded::Superseded,
            },
        )
    }

    async fn count_finished_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_id: &str,
        failure: Option<&TaskFailure>,
        finish: Finish,
    ) -> Result<WorkflowProgress, StoreError> {
        let mut expression =
            String::from("SET tasks_remaining = tasks_remaining - :one, updated_at = :now");
        let mut update = self
            .update_workflow(tenant, workflow_id)
            .condition_expression("NOT contains(tasks_done, :task)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":task", s(task_id))
            .expression_attribute_values(":task_set", AttributeValue::Ss(vec![task_id.into()]));
        if failure.is_some() {
            // The first failure fails the workflow; later ones keep its first finish time.
            expression.push_str(
                ", #status = :failed, finished_at = if_not_exists(finished_at, :now), \
                 expires_at = if_not_exists(expires_at, :expires), \
                 failed_task = if_not_exists(failed_task, :task)",
            );
            update = update
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":failed", s(WorkflowStatus::Failed.as_str()))
                .expression_attribute_values(":expires", n(finish.expires_at_s));
        }
        expression.push_str(" ADD tasks_done :task_set");
        let update = update.update_expression(expression);
        match conditional_update(update, ReturnValue::AllNew).await? {
            Conditional::Applied(item) => progress(&item),
            // Already counted (a resumed duplicate): report the workflow as it is.
            Conditional::Rejected(Some(item)) => progress(&item),
            Conditional::Rejected(None) => Err(StoreError::Corrupt(format!(
                "workflow {workflow_id} of a finished task does not exist"
            ))),
        }
    }

    async fn complete_workflow(
        &self,
        tenant: &str,
        workflow_id: &str,
        finish: Finish,
    ) -> Result<bool, StoreError> {
        let update = self
            .update_workflow(tenant, workflow_id)
            .expression_attribute_names("#status", "status")
            .update_expression(
                "SET #status = :succeeded, finished_at = :now, updated_at = :now, expires_at = :expires",
            )
            .condition_expression("#status = :running AND tasks_remaining = :zero")
            .expression_attribute_values(":succeeded", s(WorkflowStatus::Succeeded.as_str()))
            .expression_attribute_values(":running", s(WorkflowStatus::Running.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":expires", n(finish.expires_at_s));
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn release_dependent(
        &self,
        tenant: &str,
        workflow_id: &str,
        dependent: &str,
        parent: &str,
        dispatch_until_ms: i64,
    ) -> Result<Release, StoreError> {
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
            .expression_attribute_values(":parent_set", AttributeValue::Ss(vec![parent.into()]));
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
            // Already queued, by this parent or another: its dispatch lease guarantees it gets
            // routed (cleanup resends it if the message was lost), so it is not sent again.
            _ => return Ok(Release::Moved),
        }
        let queue = self
            .update_attempt(&current.task_ref())
            .update_expression("SET #status = :queued, lease_shard = :shard, lease_until = :until")
            .condition_expression(
                "#status = :waiting AND deps_remaining = :zero AND attempt = :attempt",
            )
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":shard", s(keys::lease_shard(workflow_id)))
            .expression_attribute_values(":until", n(dispatch_until_ms));
        Ok(match conditional_update(queue, ReturnValue::None).await? {
            Conditional::Applied(_) => Release::Ready {
                attempt: current.attempt,
                capability: current.capability,
            },
            Conditional::Rejected(_) => Release::Moved,
        })
    }

    async fn skip_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_id: &str,
        finish: Finish,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let update = self
            .update_task(tenant, workflow_id, task_id)
            .update_expression(
                "SET #status = :skipped, finished_at = :now, expires_at = :expires \
                 REMOVE lease_until, lease_shard",
            )
            .condition_expression("#status IN (:waiting, :queued)")
            .expression_attribute_values(":skipped", s(TaskStatus::Skipped.as_str()))
            .expression_attribute_values(":waiting", s(TaskStatus::Waiting.as_str()))
            .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
            .expression_attribute_values(":now", n(finish.now_ms))
            .expression_attribute_values(":expires", n(finish.expires_at_s));
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) => Some(Attrs(&item).list("dependents")),
                Conditional::Rejected(_) => None,
            },
        )
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
                    tenant: tenant.into(),
                    workflow_id: workflow_id.into(),
                    task_id: task_id.into(),
                    attempt: a.n("attempt")?,
                },
                capability: a.s("capability")?.into(),
                status: a.parsed("status")?,
                lease_until_ms: a.n(LEASE_UNTIL)?,
            });
        }
        Ok(leases)
    }

    async fn requeue_expired(
        &self,
        lease: &ExpiredLease,
        dispatch_until_ms: i64,
    ) -> Result<Option<u32>, StoreError> {
        let update = self
            .update_attempt(&lease.task)
            .condition_expression("#status = :status AND attempt = :attempt AND lease_until = :old")
            .expression_attribute_values(":status", s(lease.status.as_str()))
            .expression_attribute_values(":old", n(lease.lease_until_ms))
            .expression_attribute_values(":until", n(dispatch_until_ms));
        let update = match lease.status {
            TaskStatus::Running => update
                .update_expression(
                    "SET #status = :queued, attempt = attempt + :one, lease_until = :until",
                )
                .expression_attribute_values(":queued", s(TaskStatus::Queued.as_str()))
                .expression_attribute_values(":one", n(1)),
            TaskStatus::Queued => update.update_expression("SET lease_until = :until"),
            _ => return Ok(None),
        };
        Ok(
            match conditional_update(update, ReturnValue::AllNew).await? {
                Conditional::Applied(item) => Some(Attrs(&item).n("attempt")?),
                Conditional::Rejected(_) => None,
            },
        )
    }
}
