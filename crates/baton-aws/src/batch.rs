//! The one SQS batch helper: every queue-driven function processes its batch through it.
//!
//! Messages are processed concurrently, each in its own span. Only the ids of messages that
//! failed are reported (`ReportBatchItemFailures`), so SQS redelivers just those. A message
//! that cannot be decoded is reported as failed too: after `maxReceiveCount` receives SQS moves
//! it to the dead-letter queue, where it stays for inspection instead of being dropped. A
//! message whose handling panics fails alone where panics unwind (the local stack, the tests):
//! the panic is caught at the message. The release build of the functions aborts on a panic
//! instead (unwind tables would cost 1.3 MB a binary): there the invocation ends, SQS delivers
//! the batch again, and only the message that caused it reaches the dead-letter queue.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::de::DeserializeOwned;
use tracing::Instrument;

/// What SQS says of a delivery besides its body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// When the message was first sent (epoch ms), if SQS said so.
    pub sent_at_ms: Option<i64>,
}

impl Delivery {
    fn of(record: &SqsMessage) -> Self {
        Delivery {
            sent_at_ms: record
                .attributes
                .get("SentTimestamp")
                .and_then(|at| at.parse().ok()),
        }
    }
}

/// Decodes each record as `M` and runs `handle` on it; reports the records that failed.
pub async fn process_sqs_batch<M, E, F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    M: DeserializeOwned,
    E: Display,
    F: Fn(M, Delivery) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let work = event.records.into_iter().map(|record| {
        let message_id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!(
            "message",
            message_id = %message_id,
            receive_count = record
                .attributes
                .get("ApproximateReceiveCount")
                .map(String::as_str)
                .unwrap_or("?"),
        );
        let delivery = Delivery::of(&record);
        let handled = decode::<M>(&record).and_then(|message| {
            std::panic::catch_unwind(AssertUnwindSafe(|| handle(message, delivery)))
                .map_err(|panic| panicked(&panic))
        });
        async move {
            let result = match handled {
                Ok(future) => isolated(future).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => None,
                Err(error) => {
                    tracing::error!(%error, "message failed; SQS will deliver it again");
                    Some(message_id)
                }
            }
        }
        .instrument(span)
    });
    let mut response = SqsBatchResponse::default();
    for failed in futures::future::join_all(work).await.into_iter().flatten() {
        response.add_failure(failed);
    }
    response
}

/// Runs one message's (or group's) work so that a panic in it is its failure alone.
pub async fn isolated<T, E, Fut>(work: Fut) -> Result<T, String>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => Err(panicked(&panic)),
    }
}

fn panicked(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    format!("the handler panicked: {what}")
}

/// For handlers that work on the batch as a whole: the decoded messages with their ids, and a
/// response that already reports the records that could not be decoded.
pub fn decode_batch<M: DeserializeOwned>(event: SqsEvent) -> (Vec<(String, M)>, SqsBatchResponse) {
    let mut response = SqsBatchResponse::default();
    let mut decoded = Vec::with_capacity(event.records.len());
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        match decode::<M>(&record) {
            Ok(message) => decoded.push((message_id, message)),
            Err(error) => {
                tracing::error!(message_id = %message_id, %error, "message failed; SQS will deliver it again");
                response.add_failure(message_id);
            }
        }
    }
    (decoded, response)
}

fn decode<M: DeserializeOwned>(record: &SqsMessage) -> Result<M, String> {
    let body = record.body.as_deref().unwrap_or_default();
    serde_json::from_str(body).map_err(|e| format!("undecodable message body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bodies: &[&str]) -> SqsEvent {
        let records: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| serde_json::json!({"messageId": format!("m{i}"), "body": b}))
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    #[tokio::test]
    async fn only_failed_and_undecodable_messages_are_reported() {
        let response = process_sqs_batch(
            event(&["1", "2", "not json", "4"]),
            |n: u32, _| async move {
                if n == 2 {
                    Err("two is unlucky")
                } else {
                    Ok(())
                }
            },
        )
        .await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m1", "m2"]);
    }

    #[tokio::test]
    async fn a_message_whose_handling_panics_fails_alone() {
        let response = process_sqs_batch(event(&["1", "2", "3"]), |n: u32, _| async move {
            if n == 2 {
                panic!("poison");
            }
            Ok::<(), String>(())
        })
        .await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m1"]);
    }

    #[tokio::test]
    async fn the_send_time_comes_with_each_message() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m0", "body": "1", "attributes": {"SentTimestamp": "1700000000123"}},
            {"messageId": "m1", "body": "2"},
        ]}))
        .unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        process_sqs_batch(event, |n: u32, delivery| {
            seen.lock().unwrap().push((n, delivery.sent_at_ms));
            async { Ok::<(), String>(()) }
        })
        .await;
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, [(1, Some(1_700_000_000_123)), (2, None)]);
    }
}
