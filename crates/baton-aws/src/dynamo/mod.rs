//! The DynamoDB adapter of the store ports: the client and the item helpers every part shares.
//! Each submodule holds what one kind of record needs: `workflows` (workflows and tasks), `controls` (cancel, pause, resume, redrive; the list),
//! `agents` (the registry and its health), `config` (tenants' settings), `learning` (outcomes,
//! learned stats, circuits) `sessions` (conversation sessions), `turns` (their turns) and `slots` (round-robin counters, calls in flight).

mod agents;
mod config;
mod controls;
mod improvements;
pub mod keys;
mod learning;
mod results;
mod sessions;
mod slots;
mod stats;
mod streams;
mod turns;
mod workflows;

use baton_types::ids::TenantId;
use baton_types::ids::{TaskId, WorkflowId};
use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use serde_json::Value;

use baton_chain::store::*;
use baton_types::agent::Agent;
use baton_types::circuit::{Circuit, Probe};
use baton_types::health::AgentHealth;
use baton_types::learning::AgentStats;
use baton_types::messages::{OutcomeMessage, TaskRef};
use baton_types::outcome::TaskFailure;
use baton_types::records::{ArchivedDrive, TaskRecord, WorkflowRecord, WorkflowView};
use baton_types::resources::{AgentLoad, Limits, Resources};
use baton_types::routing::{RouteDecision, RoutingView};
use baton_types::task::{AttemptRecord, TaskProfile, TaskStatus, WorkflowStatus};
use keys::{EXPIRES_AT, LEASE_SHARD, LEASE_UNTIL, PK, SK};

type Item = HashMap<String, AttributeValue>;

/// Where a payload went.
enum Placed {
    /// Its JSON text, for the item.
    Inline(String),
    /// In the bucket; with the first characters of its JSON for views.
    Stored(baton_types::records::StoredPayload, String),
}

/// How much of a stored payload's JSON its item keeps, for views.
const PREVIEW_CHARS: usize = 1024;
/// The pointer to a task's input in the bucket.
const INPUT_REF: &str = "input_ref";

/// BatchWriteItem takes at most 25 items, BatchGetItem 100 keys.
const BATCH_WRITE_LIMIT: usize = 25;
const BATCH_GET_LIMIT: usize = 100;
/// Unprocessed batch items and optimistic-lock conflicts are retried this many times.
const MAX_RETRIES: u32 = 8;
/// A transaction takes at most 100 items: the outcomes' history records, a stats record per
/// task type among them (at most one per outcome) and the circuit.
pub const MAX_OUTCOMES_PER_WRITE: usize = 49;

/// Both tables, reached through one client built at start-up, and the bucket that holds the
/// payloads too large for their items.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    state_table: String,
    memory_table: String,
    payloads: Option<std::sync::Arc<dyn baton_chain::payload::PayloadStore>>,
}

impl DynamoStore {
    pub fn new(client: Client, state_table: String, memory_table: String) -> Self {
        DynamoStore {
            client,
            state_table,
            memory_table,
            payloads: None,
        }
    }

    /// The store with a bucket for large inputs and outputs (without one, every payload
    /// stays on its item, as far as the item's size allows).
    pub fn with_payloads(
        mut self,
        payloads: std::sync::Arc<dyn baton_chain::payload::PayloadStore>,
    ) -> Self {
        self.payloads = Some(payloads);
        self
    }

    /// A payload as it goes on an item: inline when small (or when there is no bucket), else
    /// written to the bucket under `key` and pointed at.
    async fn place_payload(&self, key: &str, json_text: String) -> Result<Placed, StoreError> {
        match &self.payloads {
            Some(payloads) if json_text.len() > baton_chain::payload::INLINE_LIMIT => {
                let bytes = json_text.len() as u64;
                let preview: String = json_text.chars().take(PREVIEW_CHARS).collect();
                payloads.put(key, json_text.into_bytes()).await?;
                Ok(Placed::Stored(
                    baton_types::records::StoredPayload {
                        key: key.to_string(),
                        bytes,
                    },
                    preview,
                ))
            }
            _ => Ok(Placed::Inline(json_text)),
        }
    }

    /// A stored payload, read whole and parsed.
    async fn fetch_payload(
        &self,
        stored: &baton_types::records::StoredPayload,
    ) -> Result<Value, StoreError> {
        let payloads =
            self.payloads
                .as_ref()
                .ok_or(baton_chain::payload::PayloadError::NoBucket {
                    bytes: stored.bytes as usize,
                })?;
        let bytes = payloads.get(&stored.key).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("payload `{}`: {e}", stored.key)))
    }

    /// Restarts a stored payload's time in the bucket, so the bucket's expiry does not take
    /// it from a workflow still running.
    async fn refresh_payload(
        &self,
        stored: &baton_types::records::StoredPayload,
    ) -> Result<(), StoreError> {
        let payloads =
            self.payloads
                .as_ref()
                .ok_or(baton_chain::payload::PayloadError::NoBucket {
                    bytes: stored.bytes as usize,
                })?;
        Ok(payloads.refresh(&stored.key).await?)
    }

    /// A task item as a record with its input and output read whole, wherever they are.
    async fn whole_task(&self, item: &Item) -> Result<TaskRecord, StoreError> {
        let mut record = workflows::task_record(item)?;
        if let Some(stored) = Attrs(item).json::<baton_types::records::StoredPayload>(INPUT_REF)? {
            record.input = self.fetch_payload(&stored).await?;
        }
        if let Some(stored) = &record.output_ref {
            record.output = Some(self.fetch_payload(stored).await?);
        }
        Ok(record)
    }

    fn task_key(&self, tenant: &TenantId, workflow_id: &WorkflowId, task_id: &TaskId) -> Item {
        HashMap::from([
            (PK.into(), s(keys::workflow_pk(tenant, workflow_id))),
            (SK.into(), s(keys::task_sk(task_id))),
        ])
    }

    fn workflow_key(&self, tenant: &TenantId, workflow_id: &WorkflowId) -> Item {
        HashMap::from([
            (PK.into(), s(keys::workflow_pk(tenant, workflow_id))),
            (SK.into(), s(keys::WORKFLOW_SK)),
        ])
    }

    /// An update of one task. Every task transition is conditioned on its status.
    fn update_task(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
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

    fn update_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.state_table)
            .set_key(Some(self.workflow_key(tenant, workflow_id)))
    }

    /// Writes a new item to the state table; `AlreadyExists(what)` if its key is taken by
    /// another item. An item that agrees with this one on the `identity` attributes is this
    /// write's own (its response was lost and the SDK sent it again): reported as written.
    async fn put_new(
        &self,
        item: Item,
        identity: &[&str],
        what: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(err))
                if err.err().is_conditional_check_failed_exception() =>
            {
                let existing = match err.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                let ours = existing.is_some_and(|existing| {
                    identity
                        .iter()
                        .all(|name| existing.get(*name) == item.get(*name))
                });
                if ours {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyExists(what()))
                }
            }
            Err(e) => Err(dynamo_error(e)),
        }
    }

    /// Every item of one state-table partition, following pagination, in key order.
    /// Writes `item` whole, whatever was there.
    async fn put(&self, table: &str, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }

    /// One state-table item, read strongly (None: there is none).
    async fn state_item(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(out.item)
    }

    async fn partition(&self, pk: String) -> Result<Vec<Item>, StoreError> {
        self.partition_read(pk, PartitionRead::default()).await
    }

    async fn partition_read(
        &self,
        pk: String,
        read: PartitionRead,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.state_table)
                .expression_attribute_values(":pk", s(pk.as_str()));
            if let Some(projection) = read.projection {
                query = query.projection_expression(projection.expression);
                for (placeholder, name) in projection.names {
                    query = query.expression_attribute_names(*placeholder, *name);
                }
            }
            query = match read.sk_at_most {
                Some(last) => query
                    .key_condition_expression("pk = :pk AND sk <= :last")
                    .expression_attribute_values(":last", s(last)),
                None => query.key_condition_expression("pk = :pk"),
            };
            let out = query
                .scan_index_forward(!read.descending)
                .consistent_read(read.consistent)
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

    /// Items of one partition of the sweeps index that are due before `now_ms` (keys only).
    async fn due_in_sweeps(
        &self,
        partition: String,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<Item>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.state_table)
            .index_name(keys::SWEEPS_INDEX)
            .key_condition_expression("sweep_shard = :shard AND sweep_at < :now")
            .expression_attribute_values(":shard", s(partition))
            .expression_attribute_values(":now", n(now_ms))
            .limit(limit)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(out.items.unwrap_or_default())
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
                    return Err(StoreError::Busy(
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
                .map_err(|e| StoreError::Request(Box::new(e)))?;
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
                    return Err(StoreError::Busy(
                        "BatchGetItem left keys unprocessed after retries".into(),
                    ));
                }
                tokio::time::sleep(backoff(retry)).await;
            }
        }
        Ok(items)
    }
}

/// How a partition is read.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionRead {
    /// Sort keys from the highest down.
    descending: bool,
    consistent: bool,
    /// Only the items whose sort key is at most this.
    sk_at_most: Option<&'static str>,
    /// Only these attributes of each item.
    projection: Option<&'static Projection>,
}

/// The attributes a read keeps: what a handler needs, never a tenant's large payloads.
#[derive(Debug)]
struct Projection {
    /// `#a, #b, …`: every name through a placeholder, so no reserved word gets in the way.
    expression: &'static str,
    names: &'static [(&'static str, &'static str)],
}

/// The result of a conditional update: the item after it, or the item that failed the check.
enum Conditional {
    Applied(Item),
    Rejected(Option<Item>),
}

/// Sends a conditional put: None if it was written, Some with the item found (empty when none
/// was) if its condition failed.
async fn conditional_put(builder: PutItemFluentBuilder) -> Result<Option<Item>, StoreError> {
    let result = builder
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match result {
        Ok(_) => Ok(None),
        Err(SdkError::ServiceError(err))
            if matches!(err.err(), PutItemError::ConditionalCheckFailedException(_)) =>
        {
            match err.into_err() {
                PutItemError::ConditionalCheckFailedException(e) => {
                    Ok(Some(e.item.unwrap_or_default()))
                }
                _ => unreachable!("matched above"),
            }
        }
        Err(e) => Err(dynamo_error(e)),
    }
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

/// A request's failure as the store's error: an item refused for its size is `TooLarge`, so
/// that the chain can fail what made it so large instead of trying the write again.
fn dynamo_error<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error
        + aws_smithy_types::error::metadata::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(service) = err.as_service_error() {
        let message = service.message().unwrap_or_default();
        if service.code() == Some("ValidationException")
            && message.to_ascii_lowercase().contains("item size")
        {
            return StoreError::TooLarge(message.to_string());
        }
    }
    StoreError::Request(Box::new(err))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A fraction as a DynamoDB number: fixed-point, so that weights decayed towards zero never
/// need more digits than DynamoDB keeps.
fn decimal(v: f64) -> AttributeValue {
    let v = if v.is_finite() { v } else { 0.0 };
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    AttributeValue::N(if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.into()
    })
}

fn string_list<T: AsRef<str>>(values: &[T]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.as_ref())).collect())
}

fn string_set(values: &[&str]) -> AttributeValue {
    AttributeValue::Ss(values.iter().map(|v| v.to_string()).collect())
}

/// A list of JSON documents, one string each (how attempt records are kept).
fn json_list<T: serde::Serialize>(values: &[T]) -> Result<AttributeValue, StoreError> {
    values
        .iter()
        .map(json)
        .collect::<Result<Vec<_>, _>>()
        .map(AttributeValue::L)
}

/// A value's JSON text as an item stores it.
fn json_text(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn json(value: &impl serde::Serialize) -> Result<AttributeValue, StoreError> {
    json_text(value).map(AttributeValue::S)
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

    /// A string set (absent: empty).
    fn set(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(AttributeValue::Ss(values)) => values.clone(),
            _ => Vec::new(),
        }
    }

    /// A list of JSON documents (absent: empty).
    fn json_list<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Vec<T>, StoreError> {
        match self.0.get(name) {
            Some(AttributeValue::L(values)) => values
                .iter()
                .map(|v| {
                    let raw = v.as_s().map_err(|_| {
                        StoreError::Corrupt(format!("attribute `{name}` holds a non-string"))
                    })?;
                    serde_json::from_str(raw)
                        .map_err(|e| StoreError::Corrupt(format!("attribute `{name}`: {e}")))
                })
                .collect(),
            _ => Ok(Vec::new()),
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

/// A tenant id read back from a key: one that does not keep the rules is a damaged item.
pub(super) fn stored_tenant(text: &str) -> Result<TenantId, StoreError> {
    stored_id(text)
}

/// An id read back from an item: one that does not keep its rules is a damaged item.
pub(super) fn stored_id<T>(text: &str) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = baton_types::names::InvalidName>,
{
    text.parse()
        .map_err(|e: baton_types::names::InvalidName| StoreError::Corrupt(e.to_string()))
}

/// Ids read back from a list or set attribute.
pub(super) fn stored_ids<T>(texts: Vec<String>) -> Result<Vec<T>, StoreError>
where
    T: std::str::FromStr<Err = baton_types::names::InvalidName>,
{
    texts.iter().map(|text| stored_id(text)).collect()
}

/// A builder's result as the store's error.
pub(super) fn built<T, E: std::error::Error + Send + Sync + 'static>(
    result: Result<T, E>,
) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Request(Box::new(e)))
}

pub(super) fn txn_put(
    table: &str,
    item: Item,
    condition: Option<&str>,
) -> Result<TransactWriteItem, StoreError> {
    let put = built(
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build(),
    )?;
    Ok(TransactWriteItem::builder().put(put).build())
}

impl DynamoStore {
    /// Runs a transaction: true if it was applied, false if one of its conditions refused it.
    /// DynamoDB cancels a transaction for other reasons too, and says which per item: a
    /// conflict with another transaction on the same items, or throttling, is tried again
    /// after a backoff (the SDK does not retry a cancelled transaction); an item refused as
    /// invalid (over 400 KB, say) is an error that says so, never taken for a condition.
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<bool, StoreError> {
        for retry in 0.. {
            let err = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(true),
                Err(err) => err,
            };
            let reasons: Vec<(String, String)> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
                    .cancellation_reasons()
                    .iter()
                    .filter_map(|r| {
                        let code = r.code().filter(|c| *c != "None")?;
                        Some((
                            code.to_string(),
                            r.message().unwrap_or_default().to_string(),
                        ))
                    })
                    .collect(),
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => Vec::new(),
                _ => return Err(dynamo_error(err)),
            };
            match transaction_cancellation(&reasons) {
                Cancellation::Condition => return Ok(false),
                Cancellation::Invalid(why) => return Err(why),
                Cancellation::Transient if retry < MAX_RETRIES => {
                    tokio::time::sleep(backoff(retry)).await;
                }
                Cancellation::Transient => {
                    return Err(StoreError::Busy(format!(
                        "the transaction kept being cancelled ({})",
                        codes(&reasons)
                    )))
                }
            }
        }
        unreachable!("the loop returns")
    }
}

/// Why DynamoDB cancelled a transaction, from its reasons per item (`None` items left out).
#[derive(Debug)]
enum Cancellation {
    /// A condition was false: the transaction's premise does not hold.
    Condition,
    /// A conflict with another transaction, throttling, a transaction in progress: try again.
    Transient,
    /// The request cannot succeed as it is.
    Invalid(StoreError),
}

fn codes(reasons: &[(String, String)]) -> String {
    let codes: Vec<&str> = reasons.iter().map(|(code, _)| code.as_str()).collect();
    codes.join(", ")
}

fn transaction_cancellation(reasons: &[(String, String)]) -> Cancellation {
    if let Some((code, message)) = reasons
        .iter()
        .find(|(code, _)| code == "ValidationError" || code == "ItemCollectionSizeLimitExceeded")
    {
        let why = format!("{code}: {message}");
        return Cancellation::Invalid(if message.to_ascii_lowercase().contains("size") {
            StoreError::TooLarge(why)
        } else {
            StoreError::Refused(why)
        });
    }
    if reasons
        .iter()
        .any(|(code, _)| code == "ConditionalCheckFailed")
    {
        return Cancellation::Condition;
    }
    Cancellation::Transient
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[&str]) -> Vec<(String, String)> {
        codes
            .iter()
            .map(|c| (c.to_string(), format!("{c} happened")))
            .collect()
    }

    #[test]
    fn only_a_failed_condition_is_taken_for_the_premise_not_holding() {
        assert!(matches!(
            transaction_cancellation(&reasons(&["ConditionalCheckFailed"])),
            Cancellation::Condition
        ));
        for transient in [
            &["TransactionConflict"][..],
            &["ThrottlingError"],
            &["ProvisionedThroughputExceeded"],
            &[],
        ] {
            assert!(
                matches!(
                    transaction_cancellation(&reasons(transient)),
                    Cancellation::Transient
                ),
                "{transient:?}"
            );
        }
        let big = vec![(
            "ValidationError".to_string(),
            "Item size has exceeded the maximum allowed size".to_string(),
        )];
        assert!(matches!(
            transaction_cancellation(&big),
            Cancellation::Invalid(StoreError::TooLarge(_))
        ));
    }
}
