//! Stand-ins for Lambda's event sources: SQS pollers for the event-source mappings, and a
//! ticker for the schedule.
//!
//! A poller long-polls its queue, hands the batch to the handler as the same `SqsEvent` Lambda
//! builds, and deletes only the messages the handler did not report as failed. Failed messages
//! become visible again when their visibility timeout ends; after `maxReceiveCount` receives
//! the queue's redrive policy (in the emulator, as in SQS) moves them to the dead-letter queue.
//!
//! For fault tests, [`HandlerDeaths`] kills a share of invocations at a random point, as a
//! Lambda whose process dies mid-run: the handler's future is dropped wherever it is waiting,
//! and none of its batch is deleted. Which invocations die comes from a seeded random stream,
//! so the n-th invocation of a run is picked or not whatever the timing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use lambda_runtime::{Context, Error, LambdaEvent};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Long-poll wait per receive, as Lambda's pollers use.
const WAIT_SECONDS: i32 = 5;
/// A killed invocation dies within this long of its start (or, if it is done sooner, right
/// after its last line, before it answers).
const LONGEST_LIFE_BEFORE_DEATH: Duration = Duration::from_millis(400);

/// The seed of the stream that picks the invocations to kill.
const DEATH_SEED: u64 = 11;

/// Kills a share of handler invocations at a random point of their run.
#[derive(Debug, Clone)]
pub struct HandlerDeaths {
    rate: f64,
    draws: Arc<Mutex<SmallRng>>,
    count: Arc<AtomicU64>,
}

impl Default for HandlerDeaths {
    fn default() -> Self {
        Self::new(0.0)
    }
}

impl HandlerDeaths {
    pub fn new(rate: f64) -> Self {
        HandlerDeaths {
            rate: rate.clamp(0.0, 1.0),
            draws: Arc::new(Mutex::new(SmallRng::seed_from_u64(DEATH_SEED))),
            count: Arc::default(),
        }
    }

    /// Whether the next invocation dies, and after what part of its longest life.
    fn next_death(&self) -> Option<f64> {
        if self.rate <= 0.0 {
            return None;
        }
        let mut draws = self.draws.lock().ok()?;
        let picked = draws.random::<f64>() < self.rate;
        picked.then(|| draws.random::<f64>())
    }

    /// Invocations killed so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Runs `invocation`, or kills it after a random part of its life: in the middle of its
    /// work, or, when the work is done first, before it answers (its messages are not
    /// acknowledged). None: it was killed. Every invocation picked to die dies, so a run's
    /// deaths follow the rate.
    pub async fn run<T>(&self, invocation: impl Future<Output = T>) -> Option<T> {
        let Some(part_of_life) = self.next_death() else {
            return Some(invocation.await);
        };
        let life = LONGEST_LIFE_BEFORE_DEATH.mul_f64(part_of_life);
        let finished = tokio::time::timeout(life, invocation).await.is_ok();
        self.count.fetch_add(1, Ordering::Relaxed);
        if finished {
            tracing::warn!("handler killed before it answered (fault injection)");
        } else {
            tracing::warn!("handler killed mid-run (fault injection)");
        }
        None
    }
}

#[derive(Debug, Clone)]
pub struct SqsSource {
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: i32,
    /// How long to gather a batch once a first message came (the mapping's
    /// `MaximumBatchingWindowInSeconds`; zero: hand over what one receive returns).
    pub batching_window: Duration,
}

/// Polls `source` and feeds batches to `handler` until `shutdown` turns true.
pub async fn poll_queue<H, Fut>(
    sqs: aws_sdk_sqs::Client,
    source: SqsSource,
    handler: H,
    deaths: HandlerDeaths,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(LambdaEvent<SqsEvent>) -> Fut,
    Fut: Future<Output = Result<SqsBatchResponse, Error>>,
{
    loop {
        let receive = sqs
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(source.batch_size.clamp(1, 10))
            .wait_time_seconds(WAIT_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send();
        tokio::pin!(receive);
        let stopping = async { shutdown.wait_for(|stop| *stop).await.is_ok() };
        let received = tokio::select! {
            _ = stopping => None,
            received = &mut receive => Some(received),
        };
        let Some(received) = received else {
            // The long poll goes on in SQS after a stop: let it end and give back what it
            // took, or those messages would stay hidden for their visibility timeout.
            let wait = Duration::from_secs(WAIT_SECONDS as u64 + 2);
            if let Ok(Ok(out)) = tokio::time::timeout(wait, &mut receive).await {
                give_back(&sqs, &source.queue_url, out.messages.unwrap_or_default()).await;
            }
            return;
        };
        let mut messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(error) => {
                if *shutdown.borrow() {
                    return;
                }
                tracing::warn!(queue = %source.queue_url, error = %aws_smithy_types::error::display::DisplayErrorContext(&error), "receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        gather_batch(&sqs, &source, &mut messages).await;
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                    .collect();
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "md5OfBody": m.md5_of_body,
                    "attributes": attributes,
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": source.queue_arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event: SqsEvent = match serde_json::from_value(json!({ "Records": records })) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "could not build an SQS event");
                continue;
            }
        };
        let Some(invoked) = deaths
            .run(handler(LambdaEvent::new(event, Context::default())))
            .await
        else {
            // The function died: nothing is deleted, the batch comes back after its visibility.
            continue;
        };
        let failed: Vec<String> = match invoked {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(error) => {
                // An invocation error fails the whole batch, as in Lambda.
                tracing::error!(%error, "handler failed the whole batch");
                messages
                    .iter()
                    .filter_map(|m| m.message_id.clone())
                    .collect()
            }
        };
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| !failed.iter().any(|f| Some(f) == m.message_id.as_ref()))
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone()?)
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty() {
            if let Err(error) = sqs
                .delete_message_batch()
                .queue_url(&source.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                tracing::warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&error), "delete failed; the batch will be redelivered");
            }
        }
    }
}

/// Receives more messages into `messages` until the batch is full or the source's batching
/// window, counted from the first message, has passed, as Lambda's mapping does.
async fn gather_batch(sqs: &aws_sdk_sqs::Client, source: &SqsSource, messages: &mut Vec<Message>) {
    let full = source.batch_size.clamp(1, 10) as usize;
    let until = tokio::time::Instant::now() + source.batching_window;
    while messages.len() < full {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let more = sqs
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages((full - messages.len()) as i32)
            .wait_time_seconds(left.as_secs().clamp(1, WAIT_SECONDS as u64) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        match more {
            Ok(out) => messages.extend(out.messages.unwrap_or_default()),
            // What was gathered goes on; the next receive reports the failure.
            Err(_) => return,
        }
    }
}

/// Makes received messages visible again at once.
async fn give_back(sqs: &aws_sdk_sqs::Client, queue_url: &str, messages: Vec<Message>) {
    for message in messages {
        if let Some(handle) = message.receipt_handle {
            let _ = sqs
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
}

/// The event EventBridge's schedule invokes a function with, as of now.
pub fn scheduled_event() -> LambdaEvent<Value> {
    let event = json!({
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": baton_types::clock::rfc3339(baton_types::clock::now_ms()),
        "detail": {},
    });
    LambdaEvent::new(event, Context::default())
}

/// Calls `handler` with a scheduled event every `every`, until `shutdown` turns true.
pub async fn tick<H, Fut, R>(
    every: Duration,
    handler: H,
    deaths: HandlerDeaths,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
{
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = interval.tick() => {}
        }
        if let Some(Err(error)) = deaths.run(handler(scheduled_event())).await {
            tracing::error!(%error, "scheduled handler failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_invocations_die_in_every_run_at_the_rate() {
        let picks = |deaths: &HandlerDeaths| -> Vec<bool> {
            (0..1_000).map(|_| deaths.next_death().is_some()).collect()
        };
        let first = picks(&HandlerDeaths::new(0.03));
        assert_eq!(first, picks(&HandlerDeaths::new(0.03)));
        let picked = first.iter().filter(|p| **p).count();
        assert!((15..=45).contains(&picked), "{picked} of 1000");
        // A chaos run makes far more than this many invocations: one always dies.
        let first_death = first.iter().position(|p| *p).unwrap();
        assert!(
            first_death < 20,
            "the first death comes at invocation {first_death}"
        );
        assert!(HandlerDeaths::new(0.0).next_death().is_none());
    }
}
