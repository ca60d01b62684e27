//! The ports to the queues that chain the functions.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::Settings;
use baton_types::messages::{ExecuteMessage, OutcomeMessage, RouteMessage};
use baton_types::priority::Band;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue refused the request or did not answer; its error is the source.
    #[error("the queue request failed: {}", crate::causes::with_causes(.0.as_ref()))]
    Request(#[source] crate::causes::BoxError),
    /// Some of a batch's messages were refused (the batch call itself succeeded).
    #[error("the queue refused messages: {0}")]
    Refused(String),
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

/// One queue's depth, as `GET /v1/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueDepth {
    /// `route`, `route-high`, `route-urgent`, `execute`, …, `learn`, `route-dlq`, …
    pub name: String,
    pub dead_letter: bool,
    /// Messages waiting to be received (`ApproximateNumberOfMessages`).
    pub visible: u64,
    /// Received and not yet deleted or returned (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// Sent with a delay that has not passed (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: u64,
    /// Seconds since the oldest of up to ten messages peeked was first sent: dead-letter queues
    /// only, and a lower bound (SQS hands out a sample, not the oldest). None for a working queue
    /// (a peek there would count as a receive towards its redrive to the dead-letter queue, and
    /// SQS keeps no such attribute: CloudWatch's `ApproximateAgeOfOldestMessage` has it, and
    /// reading that from orchestrate would add a client of 170 KB to its binary) and for an
    /// empty one.
    pub oldest_age_s: Option<u64>,
}

/// The depths of the chain's queues and dead-letter queues.
#[async_trait]
pub trait QueueStats: Send + Sync {
    async fn queue_depths(&self, now_ms: i64) -> Result<Vec<QueueDepth>, QueueError>;
}

/// A queue that stats look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedQueue {
    pub name: String,
    pub url: String,
    pub dead_letter: bool,
}

/// Every queue of the chain in the settings, working queues first. A band without a queue of its
/// own (its URL is the standard one's) is not listed twice.
pub fn watched_queues(settings: &Settings) -> Vec<WatchedQueue> {
    let mut queues: Vec<WatchedQueue> = Vec::new();
    let mut watch = |name: String, url: &str, dead_letter: bool| {
        if !queues.iter().any(|q| q.url == url) {
            let url = url.to_string();
            queues.push(WatchedQueue {
                name,
                url,
                dead_letter,
            });
        }
    };
    for (kind, bands) in [
        ("route", &settings.route_queues),
        ("execute", &settings.execute_queues),
    ] {
        for band in [Band::Standard, Band::High, Band::Urgent] {
            let name = match band {
                Band::Standard => kind.to_string(),
                other => format!("{kind}-{}", other.as_str()),
            };
            watch(name, bands.url(band), false);
        }
    }
    watch("learn".into(), &settings.learn_queue_url, false);
    let dlqs = &settings.dead_letter_queues;
    for (name, url) in [
        ("route-dlq", &dlqs.route),
        ("execute-dlq", &dlqs.execute),
        ("learn-dlq", &dlqs.learn),
    ] {
        if let Some(url) = url {
            watch(name.into(), url, true);
        }
    }
    queues
}

/// Seconds since the earliest of `sent_ms` (epoch ms), at `now_ms`.
pub fn oldest_age_s(sent_ms: impl IntoIterator<Item = i64>, now_ms: i64) -> Option<u64> {
    let oldest = sent_ms.into_iter().min()?;
    Some(((now_ms - oldest).max(0) / 1000) as u64)
}

/// The SQS delay of a message due at `due_ms`: SQS delays stop at 15 minutes, so a longer
/// wait is chained (route sends the message again until it is due).
pub fn delay_until(due_ms: i64, now_ms: i64) -> Duration {
    const SQS_MAX_DELAY_MS: i64 = 900_000;
    Duration::from_millis((due_ms - now_ms).clamp(0, SQS_MAX_DELAY_MS) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut all = vec![
            ("STATE_TABLE", "s"),
            ("MEMORY_TABLE", "m"),
            ("ROUTE_QUEUE_URL", "r"),
            ("EXECUTE_QUEUE_URL", "e"),
            ("LEARN_QUEUE_URL", "l"),
        ];
        all.extend_from_slice(pairs);
        Settings::from_lookup(|name| {
            all.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    fn names(queues: &[WatchedQueue]) -> Vec<(&str, &str, bool)> {
        queues
            .iter()
            .map(|q| (q.name.as_str(), q.url.as_str(), q.dead_letter))
            .collect()
    }

    #[test]
    fn every_band_kind_and_dead_letter_queue_is_watched_once() {
        let all = settings(&[
            ("ROUTE_HIGH_QUEUE_URL", "rh"),
            ("ROUTE_URGENT_QUEUE_URL", "ru"),
            ("EXECUTE_HIGH_QUEUE_URL", "eh"),
            ("EXECUTE_URGENT_QUEUE_URL", "eu"),
            ("ROUTE_DLQ_URL", "rd"),
            ("EXECUTE_DLQ_URL", "ed"),
            ("LEARN_DLQ_URL", "ld"),
        ]);
        assert_eq!(
            names(&watched_queues(&all)),
            [
                ("route", "r", false),
                ("route-high", "rh", false),
                ("route-urgent", "ru", false),
                ("execute", "e", false),
                ("execute-high", "eh", false),
                ("execute-urgent", "eu", false),
                ("learn", "l", false),
                ("route-dlq", "rd", true),
                ("execute-dlq", "ed", true),
                ("learn-dlq", "ld", true),
            ]
        );
        // Bands without queues of their own, and no dead-letter queues configured.
        let few = settings(&[]);
        assert_eq!(
            names(&watched_queues(&few)),
            [
                ("route", "r", false),
                ("execute", "e", false),
                ("learn", "l", false)
            ]
        );
    }

    #[test]
    fn the_oldest_age_is_that_of_the_earliest_message_seen() {
        assert_eq!(oldest_age_s([90_000, 10_500, 50_000], 100_000), Some(89));
        assert_eq!(oldest_age_s([100_500], 100_000), Some(0), "clock skew");
        assert_eq!(oldest_age_s([], 100_000), None);
    }

    #[test]
    fn delays_beyond_fifteen_minutes_are_chained() {
        assert_eq!(delay_until(1_000, 0), Duration::from_secs(1));
        assert_eq!(delay_until(3_600_000, 0), Duration::from_secs(900));
        assert_eq!(delay_until(0, 5_000), Duration::ZERO);
    }
}
