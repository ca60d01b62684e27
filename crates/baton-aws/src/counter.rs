//! An SDK interceptor that counts the API calls the clients make, by kind, for the cost
//! benchmark.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemInput;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemInput;
use aws_sdk_dynamodb::operation::query::QueryInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchInput;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Counts AWS API calls by `service.Operation`, the items inside batch calls, messages
/// received, and estimates of DynamoDB capacity units for items under 1 KB (index writes not
/// included): a write unit per item written (two in a transaction), a read unit per strongly
/// consistent item read and half of one per eventually consistent read.
#[derive(Clone, Debug, Default)]
pub struct ApiCallCounter {
    counts: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl ApiCallCounter {
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.clear();
        }
    }

    fn add(&self, key: &str, n: f64) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(key.to_string()).or_default() += n;
        }
    }
}

impl Intercept for ApiCallCounter {
    fn name(&self) -> &'static str {
        "ApiCallCounter"
    }

    // Not `read_before_execution`: client interceptors run that before the operation's
    // metadata is in the config bag.
    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let service = metadata.service().to_ascii_lowercase();
        let operation = metadata.name();
        self.add(&format!("{service}.{operation}"), 1.0);
        let input = context.input();
        let write_units = match operation {
            "PutItem" | "UpdateItem" | "DeleteItem" => 1,
            "BatchWriteItem" => input
                .downcast_ref::<BatchWriteItemInput>()
                .and_then(|i| i.request_items.as_ref())
                .map_or(0, |items| items.values().map(|v| v.len() as u64).sum()),
            "TransactWriteItems" => input
                .downcast_ref::<TransactWriteItemsInput>()
                .and_then(|i| i.transact_items.as_ref())
                .map_or(0, |items| 2 * items.len() as u64),
            _ => 0,
        };
        if write_units > 0 {
            self.add("dynamodb.write_units", write_units as f64);
        }
        let read_unit = |consistent: Option<bool>| if consistent == Some(true) { 1.0 } else { 0.5 };
        if let Some(i) = input.downcast_ref::<GetItemInput>() {
            self.add("dynamodb.read_units", read_unit(i.consistent_read));
        }
        if let Some(i) = input.downcast_ref::<QueryInput>() {
            self.add("dynamodb.read_units", read_unit(i.consistent_read));
        }
        if let Some(i) = input.downcast_ref::<BatchGetItemInput>() {
            for keys in i.request_items.iter().flat_map(|r| r.values()) {
                let n = keys.keys().len() as f64;
                self.add("dynamodb.BatchGetItem.keys", n);
                self.add("dynamodb.read_units", n * read_unit(keys.consistent_read));
            }
        }
        if let Some(i) = input.downcast_ref::<SendMessageBatchInput>() {
            self.add("sqs.SendMessageBatch.entries", i.entries().len() as f64);
        }
        if let Some(i) = input.downcast_ref::<DeleteMessageBatchInput>() {
            self.add("sqs.DeleteMessageBatch.entries", i.entries().len() as f64);
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let received = context
            .output_or_error()
            .and_then(|o| o.ok())
            .and_then(|o| o.downcast_ref::<ReceiveMessageOutput>())
            .map(|o| o.messages().len());
        match received {
            Some(0) => self.add("sqs.ReceiveMessage.empty", 1.0),
            Some(n) => self.add("sqs.ReceiveMessage.messages", n as f64),
            None => {}
        }
        Ok(())
    }
}
