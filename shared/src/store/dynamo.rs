//! The DynamoDB adapter of the store ports.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde_json::Value;

use super::keys::{self, EXPIRES_AT, LEASE_SHARD, LEASE_UNTIL, PK, SK};
use super::*;
use crate::domain::agent::AgentKind;

type Item = HashMap<String, AttributeValue>;

/// BatchWriteItem takes at most 25 items, BatchGetItem 100 keys.
const BATCH_WRITE_LIMIT: usize = 25;
const BATCH_GET_LIMIT: usize = 100;
/// Unprocessed batch items and optimistic-lock conflicts are retried this many times.
const MAX_RETRIES: u32 = 8;
/// A transaction takes at most 100 items: the outcomes' history records and the stats record.
pub const MAX_OUTCOMES_PER_WRITE: usize = 99;

/// Both tables, reached through one client built at start-up.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    state_table: String,
    memory_table: String,
}

impl DynamoStore {
    pub fn new(client: Client, state_table: String, memory_table: String) -> Self {
        DynamoStore {
            client,
            state_table,
            memory_table,
        }
    }

    fn task_key(&self, tenant: &str, workflow_id: &str, task_id: &str) -> Item {
        HashMap::from([
            (PK.into(), s(keys::workflow_pk(tenant, workflow_id))),
            (SK.into(), s(keys::task_sk(task_id))),
        ])
    }

    fn workflow_key(&self, tenant: &str, workflow_id: &str) -> Item {
        HashMap::from([
            (PK.into(), s(keys::workflow_pk(tenant, workflow_id))),
            (SK.into(), s(keys::WORKFLOW_SK)),
        ])
    }

    /// An update of one task. Every task transition is conditioned on its status.
    fn update_task(
        &self,
        tenant: &str,
        workflow_id: &str,
        task_id: &str,
    ) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.state_table)
            .set_key(Some(self.task_key(tenant, workflow_id, task_id)))
            .expression_attribute_names("#status", "status")
    }

    /// An update of one attempt of one task.
    fn update_attempt(&self, task: &TaskRef) -> UpdateItemFluentBuilder {
        self.update_task(&task.tenant, &task.workflow_id, &task.task_id)
            .expression_attribute_values(":attempt", n(task.attempt))
    }

    fn update_workflow(&self, tenant: &str, workflow_id: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.state_table)
            .set_key(Some(self.workflow_key(tenant, workflow_id)))
    }

    /// Writes a new item to the state table; `AlreadyExists(what)` if its key is taken.
    async fn put_new(&self, item: Item, what: impl FnOnce() -> String) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.state_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(err) if err.is_conditional_check_failed_exception() => {
                    StoreError::AlreadyExists(what())
                }
                _ => dynamo_error(e),
            })?;
        Ok(())
    }

    /// Every item of one state-table partition, following pagination.
    async fn partition(&self, pk: String) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.state_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.as_str()))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(dynamo_error)?;
            items.extend(out.items.unwrap_or_default());
            start_key = out.last_evaluated_key;
            if start_key.is_none() {
                return Ok(items);
            }
        }
    }

    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_WRITE_LIMIT) {
            let mut pending = HashMap::from([(table.to_string(), chunk.to_vec())]);
            for retry in 0.. {
                let out = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(dynamo_error)?;
                pending = out.unprocessed_items.unwrap_or_default();
                pending.retain(|_, v| !v.is_empty());
                if pending.is_empty() {
                    break;
                }
                if retry >= MAX_RETRIES {
                    return Err(StoreError::Dynamo(
                        "BatchWriteItem left items unprocessed after retries".into(),
                    ));
                }
                tokio::time::sleep(backoff(retry)).await;
            }
        }
        Ok(())
    }

    async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: Option<&str>,
        names: &[(&str, &str)],
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        for chunk in keys.chunks(BATCH_GET_LIMIT) {
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(consistent);
            if let Some(projection) = projection {
                request = request.projection_expression(projection);
                for (placeholder, name) in names {
                    request = request.expression_attribute_names(*placeholder, *name);
                }
            }
            let request = request
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            let mut pending = HashMap::from([(table.to_string(), request)]);
            for retry in 0.. {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(dynamo_error)?;
                if let Some(mut responses) = out.responses {
                    items.extend(responses.remove(table).unwrap_or_default());
                }
                pending = out.unprocessed_keys.unwrap_or_default();
                pending.retain(|_, v| !v.keys().is_empty());
                if pending.is_empty() {
                    break;
                }
                if retry >= MAX_RETRIES {
                    return Err(StoreError::Dynamo(
                        "BatchGetItem left keys unprocessed after retries".into(),
                    ));
                }
                tokio::time::sleep(backoff(retry)).await;
            }
        }
        Ok(items)
    }
}

/// The result of a conditional update: the item after it, or the item that failed the check.
enum Conditional {
    Applied(Item),
    Rejected(Option<Item>),
}

async fn conditional_update(
    builder: UpdateItemFluentBuilder,
    returned: ReturnValue,
) -> Result<Conditional, StoreError> {
    let result = builder
        .return_values(returned)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => Ok(Conditional::Applied(out.attributes.unwrap_or_default())),
        Err(SdkError::ServiceError(err))
            if matches!(
                err.err(),
                UpdateItemError::ConditionalCheckFailedException(_)
            ) =>
        {
            match err.into_err() {
                UpdateItemError::ConditionalCheckFailedException(e) => {
                    Ok(Conditional::Rejected(e.item.filter(|i| !i.is_empty())))
                }
                _ => unreachable!("matched above"),
            }
        }
        Err(e) => Err(dynamo_error(e)),
    }
}

fn backoff(retry: u32) -> Duration {
    Duration::from_millis(25 << retry.min(6))
}

fn dynamo_error<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    StoreError::Dynamo(DisplayErrorContext(&err).to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.as_str())).collect())
}

fn json(value: &impl serde::Serialize) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Typed access to an item's attributes, with errors that name the attribute.
struct Attrs<'a>(&'a Item);

impl<'a> Attrs<'a> {
    fn opt_s(&self, name: &str) -> Option<&'a str> {
        self.0
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    }

    fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        self.opt_s(name)
            .ok_or_else(|| StoreError::Corrupt(format!("missing string attribute `{name}`")))
    }

    fn opt_n<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("attribute `{name}` is not a number"))),
            Some(_) => Err(StoreError::Corrupt(format!(
                "attribute `{name}` is not a number"
            ))),
        }
    }

    fn n<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError> {
        self.opt_n(name)?
            .ok_or_else(|| StoreError::Corrupt(format!("missing number attribute `{name}`")))
    }

    fn list(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(AttributeValue::L(values)) => values
                .iter()
                .filter_map(|v| v.as_s().ok().cloned())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(|v| v.as_bool().ok()).copied()
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.opt_s(name)
            .map(|raw| {
                serde_json::from_str(raw)
                    .map_err(|e| StoreError::Corrupt(format!("attribute `{name}`: {e}")))
            })
            .transpose()
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError> {
        let raw = self.s(name)?;
        raw.parse()
            .map_err(|_| StoreError::Corrupt(format!("attribute `{name}` has value `{raw}`")))
    }
}

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

fn agent_item(tenant: &str, agent: &Agent) -> Item {
    HashMap::from([
        (PK.into(), s(keys::agents_pk(tenant))),
        (SK.into(), s(keys::agent_sk(&agent.name))),
        ("name".into(), s(agent.name.as_str())),
        ("kind".into(), s("http")),
        ("endpoint".into(), s(agent.endpoint.as_str())),
        ("capabilities".into(), string_list(&agent.capabilities)),
        ("timeout_ms".into(), n(agent.timeout_ms)),
        ("enabled".into(), AttributeValue::Bool(agent.enabled)),
        ("created_at".into(), n(agent.created_at_ms)),
        ("updated_at".into(), n(agent.updated_at_ms)),
    ])
}

fn agent_record(item: &Item) -> Result<Agent, StoreError> {
    let a = Attrs(item);
    let kind = match a.s("kind")? {
        "http" => AgentKind::Http,
        other => return Err(StoreError::Corrupt(format!("unknown agent kind `{other}`"))),
    };
    Ok(Agent {
        name: a.s("name")?.into(),
        kind,
        endpoint: a.s("endpoint")?.into(),
        capabilities: a.list("capabilities"),
        timeout_ms: a.n("timeout_ms")?,
        enabled: a.bool("enabled").unwrap_or(true),
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
    })
}

fn stats_record(item: &Item) -> Result<(AgentStats, u64), StoreError> {
    let a = Attrs(item);
    let stats = AgentStats {
        count: a.n("count")?,
        successes: a.n("successes")?,
        total_latency_ms: a.n("total_latency_ms")?,
        max_latency_ms: a.n("max_latency_ms")?,
        recent: a.json("recent")?.unwrap_or_default(),
    };
    Ok((stats, a.n("version")?))
}

/// The history record of one outcome, written only if it does not exist yet.
fn outcome_put(
    table: &str,
    pk: &str,
    outcome: &OutcomeMessage,
    expires_at_s: i64,
) -> Result<Put, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(pk)),
        (
            SK.into(),
            s(keys::outcome_sk(
                &outcome.task.workflow_id,
                &outcome.task.task_id,
                outcome.task.attempt,
            )),
        ),
        ("task_type".into(), s(outcome.task_type.as_str())),
        ("success".into(), AttributeValue::Bool(outcome.success)),
        ("latency_ms".into(), n(outcome.latency_ms)),
        ("finished_at".into(), n(outcome.finished_at_ms)),
        (EXPIRES_AT.into(), n(expires_at_s)),
    ]);
    if let Some(failure) = outcome.failure {
        item.insert("failure".into(), json(&failure)?);
    }
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|e| StoreError::Dynamo(e.to_string()))
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

#[async_trait]
impl AgentRegistry for DynamoStore {
    async fn register_agent(&self, tenant: &str, agent: &Agent) -> Result<(), StoreError> {
        self.put_new(agent_item(tenant, agent), || {
            format!("agent `{}`", agent.name)
        })
        .await
    }

    async fn agents(&self, tenant: &str) -> Result<Vec<Agent>, StoreError> {
        self.partition(keys::agents_pk(tenant))
            .await?
            .iter()
            .map(agent_record)
            .collect()
    }

    async fn agent(&self, tenant: &str, name: &str) -> Result<Option<Agent>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::agents_pk(tenant)))
            .key(SK, s(keys::agent_sk(name)))
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item.as_ref().map(agent_record).transpose()
    }
}

#[async_trait]
impl LearningStore for DynamoStore {
    async fn record_outcomes(
        &self,
        outcomes: &[OutcomeMessage],
        expires_at_s: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let Some(first) = outcomes.first() else {
            return Ok(Vec::new());
        };
        if outcomes.len() > MAX_OUTCOMES_PER_WRITE
            || outcomes.iter().any(|o| {
                (&o.task.tenant, &o.agent, &o.task_type)
                    != (&first.task.tenant, &first.agent, &first.task_type)
            })
        {
            return Err(StoreError::Corrupt(format!(
                "record_outcomes takes at most {MAX_OUTCOMES_PER_WRITE} outcomes of one agent and task type"
            )));
        }
        let pk = keys::memory_agent_pk(&first.task.tenant, &first.agent);
        let stats_sk = keys::stats_sk(&first.task_type);
        let mut history = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            history.push(outcome_put(&self.memory_table, &pk, outcome, expires_at_s)?);
        }
        // Some(true): learned now; Some(false): learned before; None: still to write.
        let mut learned: Vec<Option<bool>> = vec![None; outcomes.len()];
        // A batch may hold the same outcome twice, and a transaction may not write one item
        // twice: later copies count as already learned.
        for i in 0..outcomes.len() {
            if outcomes[..i].iter().any(|o| o.task == outcomes[i].task) {
                learned[i] = Some(false);
            }
        }

        // One transaction writes the new history records and the stats record under an
        // optimistic lock: the history records make each outcome count once, whatever SQS
        // redelivers, and the lock keeps concurrent learners from losing updates.
        for retry in 0..=MAX_RETRIES {
            let pending: Vec<usize> = (0..outcomes.len())
                .filter(|i| learned[*i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let current = self
                .client
                .get_item()
                .table_name(&self.memory_table)
                .key(PK, s(pk.as_str()))
                .key(SK, s(stats_sk.as_str()))
                .consistent_read(true)
                .send()
                .await
                .map_err(dynamo_error)?;
            let (mut stats, version) = match current.item.as_ref() {
                Some(item) => stats_record(item)?,
                None => (AgentStats::default(), 0),
            };
            for &i in &pending {
                let o = &outcomes[i];
                stats.record(o.success, o.latency_ms, o.finished_at_ms);
            }
            let updated_at = pending
                .iter()
                .map(|&i| outcomes[i].finished_at_ms)
                .max()
                .unwrap_or_default();
            let stats_item = HashMap::from([
                (PK.into(), s(pk.as_str())),
                (SK.into(), s(stats_sk.as_str())),
                ("agent".into(), s(first.agent.as_str())),
                ("task_type".into(), s(first.task_type.as_str())),
                ("count".into(), n(stats.count)),
                ("successes".into(), n(stats.successes)),
                ("total_latency_ms".into(), n(stats.total_latency_ms)),
                ("max_latency_ms".into(), n(stats.max_latency_ms)),
                ("recent".into(), json(&stats.recent)?),
                ("version".into(), n(version + 1)),
                ("updated_at".into(), n(updated_at)),
            ]);
            let stats_put = Put::builder()
                .table_name(&self.memory_table)
                .set_item(Some(stats_item))
                .condition_expression("attribute_not_exists(pk) OR version = :version")
                .expression_attribute_values(":version", n(version))
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            let mut transaction = self.client.transact_write_items();
            for &i in &pending {
                transaction = transaction
                    .transact_items(TransactWriteItem::builder().put(history[i].clone()).build());
            }
            let transaction =
                transaction.transact_items(TransactWriteItem::builder().put(stats_put).build());
            let err = match transaction.send().await {
                Ok(_) => {
                    for &i in &pending {
                        learned[i] = Some(true);
                    }
                    break;
                }
                Err(err) => err,
            };
            let reasons: Vec<Option<String>> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().map(str::to_string))
                    .collect(),
                _ => return Err(dynamo_error(err)),
            };
            let failed = |k: usize| {
                reasons.get(k).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed")
            };
            let duplicates: Vec<usize> = (0..pending.len()).filter(|&k| failed(k)).collect();
            for &k in &duplicates {
                learned[pending[k]] = Some(false);
            }
            if duplicates.is_empty() && !failed(pending.len()) {
                return Err(dynamo_error(err));
            }
            if !failed(pending.len()) {
                continue; // only duplicates were in the way: write the rest at once
            }
            tokio::time::sleep(backoff(retry)).await;
        }
        learned
            .into_iter()
            .map(|l| {
                l.ok_or_else(|| {
                    StoreError::Dynamo("stats record kept changing under concurrent updates".into())
                })
            })
            .collect()
    }

    async fn agent_stats(
        &self,
        tenant: &str,
        task_type: &str,
        agents: &[String],
    ) -> Result<HashMap<String, AgentStats>, StoreError> {
        if agents.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = agents
            .iter()
            .map(|agent| {
                HashMap::from([
                    (PK.into(), s(keys::memory_agent_pk(tenant, agent))),
                    (SK.into(), s(keys::stats_sk(task_type))),
                ])
            })
            .collect();
        let items = self
            .batch_get(&self.memory_table, keys, None, &[], false)
            .await?;
        let mut stats = HashMap::new();
        for item in &items {
            let agent = Attrs(item).s("agent")?.to_string();
            stats.insert(agent, stats_record(item)?.0);
        }
        Ok(stats)
    }
}
