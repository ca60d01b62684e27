//! The port through which a task reaches its agent, and the HTTP adapter.
//!
//! The agent contract: Baton POSTs JSON `{workflow_id, task_id, attempt, capability, input,
//! dependencies}` (dependencies maps each dependency's id to its output) with an
//! `Idempotency-Key` header unique to the attempt. A 2xx JSON answer is the task's output;
//! anything else is a failure, classed as retryable or not.

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
            .timeout(Duration::from_millis(agent.timeout_ms))
            .header("Idempotency-Key", call.task.idempotency_key())
            .json(call)
            .send()
            .await
            .map_err(|e| transport_failure(agent, &e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_failure(agent, &e))?
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
            return Err(TaskFailure::http_status(status.as_u16(), excerpt.trim()));
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

fn transport_failure(agent: &Agent, err: &reqwest::Error) -> TaskFailure {
    if err.is_timeout() {
        TaskFailure::new(
            FailureKind::Timeout,
            format!(
                "agent `{}` did not answer within {} ms",
                agent.name, agent.timeout_ms
            ),
        )
    } else {
        TaskFailure::new(
            FailureKind::Connection,
            format!("agent `{}` could not be reached: {err}", agent.name),
        )
    }
}
