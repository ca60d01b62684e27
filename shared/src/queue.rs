//! The port to the queues that chain the functions, and its SQS adapter.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;

use crate::config::BandQueues;
use crate::domain::priority::Band;
use crate::messages::{ExecuteMessage, OutcomeMessage, RouteMessage};

/// SendMessageBatch takes at most 10 entries.
const SEND_BATCH_LIMIT: usize = 10;
const MAX_RETRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS request failed: {0}")]
    Sqs(String),
    #[error("message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

#[async_trait]
pub trait TaskQueue: Send + Sync {
    /// Tasks ready for routing.
    async fn send_route(&self, messages: &[RouteMessage]) -> Result<(), QueueError>;
    /// A task to route after `delay` (at most SQS's 15 minutes): a retry's backoff, never a
    /// sleeping function.
    async fn send_route_after(
        &self,
        message: &RouteMessage,
        delay: Duration,
    ) -> Result<(), QueueError>;
    /// A routed task, ready for execution.
    async fn send_execute(&self, message: &ExecuteMessage) -> Result<(), QueueError>;
    /// An outcome for the learner.
    async fn send_outcome(&self, message: &OutcomeMessage) -> Result<(), QueueError>;
}

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

    async fn send_one(&self, url: &str, message: &impl Serialize) -> Result<(), QueueError> {
        self.send_delayed(url, message, Duration::ZERO).await
    }

    async fn send_delayed(
        &self,
        url: &str,
        message: &impl Serialize,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(serde_json::to_string(message)?);
        // Whole seconds, rounded up so a message never arrives before it is due.
        let delay_s = delay.as_millis().div_ceil(1000).min(900) as i32;
        if delay_s > 0 {
            request = request.delay_seconds(delay_s);
        }
        request
            .send()
            .await
            .map_err(|e| QueueError::Sqs(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    /// Sends in batches of ten, resending only the entries SQS reports as failed.
    async fn send_many(&self, url: &str, messages: &[impl Serialize]) -> Result<(), QueueError> {
        for chunk in messages.chunks(SEND_BATCH_LIMIT) {
            let mut entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(serde_json::to_string(m)?)
                        .build()
                        .map_err(|e| QueueError::Sqs(e.to_string()))
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
                    .map_err(|e| QueueError::Sqs(DisplayErrorContext(&e).to_string()))?;
                let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
                if failed.is_empty() {
                    break;
                }
                if retry == MAX_RETRIES {
                    return Err(QueueError::Sqs(format!(
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
        for band in Band::ALL {
            let url = self.route.url(band);
            let in_band: Vec<&RouteMessage> =
                messages.iter().filter(|m| m.profile.band == band).collect();
            match in_band.as_slice() {
                [] => {}
                [one] => self.send_one(url, one).await?,
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
