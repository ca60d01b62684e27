//! The port through which a task reaches its agent, and the HTTP adapter.
//!
//! The agent contract: Baton POSTs JSON `{workflow_id, task_id, attempt, capability, input,
//! dependencies}` (dependencies maps each dependency's id to its output) with an
//! `Idempotency-Key` header unique to the attempt. The same key comes again only when Baton
//! lost track of a call (its handler died before recording the answer), so an agent that
//! remembers keys can answer the repeat without doing the work twice. A 2xx JSON answer is
//! the task's output; anything else is a failure, classed as retryable or not. A 429 or 503
//! may carry `Retry-After` (seconds or an HTTP date), which the next attempt waits for.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::agent::Agent;
use crate::domain::task::{FailureKind, TaskFailure};
use crate::messages::TaskRef;

/// Outputs are stored in the task's item, which DynamoDB caps at 400 KB.
pub const MAX_OUTPUT_BYTES: usize = 320 * 1024;
const ERROR_EXCERPT_CHARS: usize = 300;

/// What an agent receives for one attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AgentCall<'a> {
    #[serde(skip)]
    pub task: &'a TaskRef,
    pub workflow_id: &'a str,
    pub task_id: &'a str,
    pub attempt: u32,
    pub capability: &'a str,
    pub input: &'a Value,
    pub dependencies: Map<String, Value>,
    /// How long to wait for the answer: the smaller of the task's and the agent's time-outs.
    #[serde(skip)]
    pub timeout_ms: u64,
}

#[async_trait]
pub trait AgentInvoker: Send + Sync {
    async fn invoke(&self, agent: &Agent, call: &AgentCall<'_>) -> Result<Value, TaskFailure>;
}

#[derive(Clone, Debug)]
pub struct HttpAgentInvoker {
    client: reqwest::Client,
}

impl HttpAgentInvoker {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpAgentInvoker { client })
    }
}

#[async_trait]
impl AgentInvoker for HttpAgentInvoker {
    async fn invoke(&self, agent: &Agent, call: &AgentCall<'_>) -> Result<Value, TaskFailure> {
        let mut response = self
            .client
            .post(&agent.endpoint)
            .timeout(Duration::from_millis(call.timeout_ms))
            .header("Idempotency-Key", call.task.idempotency_key())
            .json(call)
            .send()
            .await
            .map_err(|e| transport_failure(agent, call, &e))?;
        let status = response.status();
        let retry_after_ms = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_failure(agent, call, &e))?
        {
            if body.len() + chunk.len() > MAX_OUTPUT_BYTES {
                return Err(TaskFailure::new(
                    FailureKind::OutputTooLarge,
                    format!(
                        "agent `{}` answered more than {MAX_OUTPUT_BYTES} bytes",
                        agent.name
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&body)
                .chars()
                .take(ERROR_EXCERPT_CHARS)
                .collect();
            let mut failure = TaskFailure::http_status(status.as_u16(), excerpt.trim());
            failure.retry_after_ms = retry_after_ms.filter(|_| failure.retryable);
            return Err(failure);
        }
        serde_json::from_slice(&body).map_err(|e| {
            TaskFailure::new(
                FailureKind::InvalidResponse,
                format!(
                    "agent `{}` answered {status} with a body that is not JSON: {e}",
                    agent.name
                ),
            )
        })
    }
}

/// `Retry-After` as a wait in milliseconds: delta-seconds, or an HTTP date after `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_millis() as u64))
}

fn transport_failure(agent: &Agent, call: &AgentCall<'_>, err: &reqwest::Error) -> TaskFailure {
    if err.is_timeout() {
        TaskFailure::new(
            FailureKind::Timeout,
            format!(
                "agent `{}` did not answer within {} ms",
                agent.name, call.timeout_ms
            ),
        )
    } else {
        TaskFailure::new(
            FailureKind::Connection,
            format!("agent `{}` could not be reached: {err}", agent.name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(10_000)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
