//! The SQS adapter of the chain's queue ports.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use serde::Serialize;

use baton_chain::causes::BoxError;
use baton_chain::queue::{
    oldest_age_s, watched_queues, QueueDepth, QueueError, QueueStats, TaskQueue, WatchedQueue,
};

use baton_chain::config::{BandQueues, Settings};
use baton_chain::queue::delay_until;
use baton_types::messages::{ExecuteMessage, OutcomeMessage, RouteMessage, TenantMessage};
use baton_types::priority::Band;

/// SendMessageBatch takes at most 10 entries.
const SEND_BATCH_LIMIT: usize = 10;
const MAX_RETRIES: u32 = 3;

/// The queues of the chain. A task's route and execute messages go to the queues of its
/// priority band.
#[derive(Clone, Debug)]
pub struct SqsQueues {
    client: Client,
    route: BandQueues,
    execute: BandQueues,
    learn_url: String,
}

impl SqsQueues {
    pub fn new(client: Client, route: BandQueues, execute: BandQueues, learn_url: String) -> Self {
        SqsQueues {
            client,
            route,
            execute,
            learn_url,
        }
    }

    async fn send_one<M: Serialize + TenantMessage>(
        &self,
        url: &str,
        message: &M,
    ) -> Result<(), QueueError> {
        self.send_delayed(url, message, Duration::ZERO).await
    }

    /// Every message carries its tenant as `MessageGroupId`: on a standard queue that makes
    /// SQS a fair queue, which serves a quiet tenant's messages before a noisy tenant's
    /// backlog (and changes nothing else).
    async fn send_delayed<M: Serialize + TenantMessage>(
        &self,
        url: &str,
        message: &M,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(url)
            .message_group_id(message.tenant().as_str())
            .message_body(serde_json::to_string(message)?);
        let delay_s = delay_seconds(delay);
        if delay_s > 0 {
            request = request.delay_seconds(delay_s);
        }
        request
            .send()
            .await
            .map_err(|e| QueueError::Request(Box::new(e)))?;
        Ok(())
    }

    /// Sends in batches of ten, resending only the entries SQS reports as failed; each with
    /// its own delay.
    async fn send_many<M: Serialize + TenantMessage>(
        &self,
        url: &str,
        messages: &[(M, Duration)],
    ) -> Result<(), QueueError> {
        for chunk in messages.chunks(SEND_BATCH_LIMIT) {
            let mut entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (m, delay))| {
                    let delay_s = delay_seconds(*delay);
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_group_id(m.tenant().as_str())
                        .message_body(serde_json::to_string(m)?)
                        .set_delay_seconds((delay_s > 0).then_some(delay_s))
                        .build()
                        .map_err(|e| QueueError::Request(Box::new(e)))
                })
                .collect::<Result<Vec<_>, QueueError>>()?;
            for retry in 0..=MAX_RETRIES {
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| QueueError::Request(Box::new(e)))?;
                let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
                if failed.is_empty() {
                    break;
                }
                if retry == MAX_RETRIES {
                    return Err(QueueError::Refused(format!(
                        "{} message(s) were refused: {}",
                        failed.len(),
                        out.failed
                            .first()
                            .and_then(|f| f.message.clone())
                            .unwrap_or_default()
                    )));
                }
                entries.retain(|e| failed.contains(&e.id));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TaskQueue for SqsQueues {
    async fn send_route(&self, messages: &[RouteMessage]) -> Result<(), QueueError> {
        let now = baton_types::clock::now_ms();
        for band in Band::ALL {
            let url = self.route.url(band);
            // A message not due yet (its turn at the tenant's pace) waits in SQS's delay.
            let in_band: Vec<(&RouteMessage, Duration)> = messages
                .iter()
                .filter(|m| m.profile.band == band)
                .map(|m| {
                    (
                        m,
                        m.not_before_ms
                            .map_or(Duration::ZERO, |at| delay_until(at, now)),
                    )
                })
                .collect();
            match in_band.as_slice() {
                [] => {}
                [(one, delay)] => self.send_delayed(url, one, *delay).await?,
                many => self.send_many(url, many).await?,
            }
        }
        Ok(())
    }

    async fn send_route_after(
        &self,
        message: &RouteMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let url = self.route.url(message.profile.band);
        self.send_delayed(url, message, delay).await
    }

    async fn send_execute(&self, message: &ExecuteMessage) -> Result<(), QueueError> {
        self.send_one(self.execute.url(message.profile.band), message)
            .await
    }

    async fn send_outcome(&self, message: &OutcomeMessage) -> Result<(), QueueError> {
        self.send_one(&self.learn_url, message).await
    }
}

/// SQS's delay in whole seconds, rounded up so a message never arrives before it is due.
fn delay_seconds(delay: Duration) -> i32 {
    delay.as_millis().div_ceil(1000).min(900) as i32
}

/// Queue depths from SQS: one `GetQueueAttributes` per queue, and for a dead-letter queue that
/// holds messages one `ReceiveMessage` that peeks at up to ten of them (visibility 0, so they
/// stay where they are; a dead-letter queue has no redrive, so the receive count is harmless).
#[derive(Clone, Debug)]
pub struct SqsQueueStats {
    client: Client,
    queues: Vec<WatchedQueue>,
}

impl SqsQueueStats {
    pub fn new(client: Client, settings: &Settings) -> Self {
        SqsQueueStats {
            client,
            queues: watched_queues(settings),
        }
    }

    async fn depth(&self, queue: &WatchedQueue, now_ms: i64) -> Result<QueueDepth, QueueError> {
        use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName as A};
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&queue.url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| queue_error(&queue.name, e))?;
        let attributes = out.attributes.unwrap_or_default();
        let count = |name: A| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut depth = QueueDepth {
            name: queue.name.clone(),
            dead_letter: queue.dead_letter,
            visible: count(A::ApproximateNumberOfMessages),
            in_flight: count(A::ApproximateNumberOfMessagesNotVisible),
            delayed: count(A::ApproximateNumberOfMessagesDelayed),
            oldest_age_s: None,
        };
        if queue.dead_letter && depth.visible > 0 {
            let peeked = self
                .client
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await
                .map_err(|e| queue_error(&queue.name, e))?;
            let sent = peeked.messages().iter().filter_map(|m| {
                m.attributes()?
                    .get(&MessageSystemAttributeName::SentTimestamp)?
                    .parse::<i64>()
                    .ok()
            });
            depth.oldest_age_s = oldest_age_s(sent, now_ms);
        }
        Ok(depth)
    }
}

/// A request's failure, with the queue it was about.
#[derive(Debug, thiserror::Error)]
#[error("queue `{queue}`")]
struct AtQueue {
    queue: String,
    #[source]
    source: BoxError,
}

fn queue_error(queue: &str, error: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Request(Box::new(AtQueue {
        queue: queue.to_string(),
        source: Box::new(error),
    }))
}

#[async_trait]
impl QueueStats for SqsQueueStats {
    async fn queue_depths(&self, now_ms: i64) -> Result<Vec<QueueDepth>, QueueError> {
        futures::future::join_all(self.queues.iter().map(|q| self.depth(q, now_ms)))
            .await
            .into_iter()
            .collect()
    }
}
