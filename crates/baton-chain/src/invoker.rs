//! The port through which a task reaches its agent. Each kind of agent has its adapter in
//! `baton_aws::invoker`, which also writes down the contract an agent answers to.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use baton_types::agent::Agent;
use baton_types::messages::TaskRef;
use baton_types::outcome::{TaskFailure, TokenUsage};

/// The most of an agent's answer read: a task's output limit (past 8 KiB an output goes to
/// the payload bucket, not the task's item).
pub const MAX_OUTPUT_BYTES: usize = crate::payload::MAX_PAYLOAD_BYTES;

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
    /// Past results the task asked for (`memory.relevant`), most relevant first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memories: Vec<Value>,
    /// The shared context the task names, as it was read: `{name, version, value}`. The
    /// agent may answer `context_update`, a merge patch Baton applies to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// How long to wait for the answer: the smaller of the task's and the agent's time-outs.
    #[serde(skip)]
    pub timeout_ms: u64,
    /// Where the agent's text goes as it arrives, when the task streams; an agent kind that
    /// can stream asks its agent to.
    #[serde(skip)]
    pub stream: Option<&'a dyn StreamSink>,
}

/// Why a stream was stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStopped {
    pub reason: String,
}

/// Where a streaming call's text goes as it arrives: the attempt's part of the task's stream
/// (see [`crate::stream`]).
#[async_trait]
pub trait StreamSink: Send + Sync + std::fmt::Debug {
    /// Text the agent produced. Err: stop reading the agent's stream and close it (the task
    /// was cancelled); the call fails with that reason.
    async fn text(&self, text: &str) -> Result<(), StreamStopped>;
    /// Time passed with no text: what waits is written if its batch is due. Called while
    /// the agent's stream is quiet, so text is never held until its next part.
    async fn tick(&self) -> Result<(), StreamStopped>;
    /// The call's stream ended, answered or not: what is collected is written.
    async fn close(&self);
}

/// An agent's answer to one call: the task's output, and the tokens it used if known.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentAnswer {
    pub output: Value,
    pub usage: Option<TokenUsage>,
}

impl AgentAnswer {
    /// An answer whose usage, if any, is what the output reports under `usage`
    /// (`{input_tokens, output_tokens}`): how an http or lambda agent that wraps a model
    /// tells Baton what it spent.
    pub fn reported(output: Value) -> Self {
        let usage = output
            .get("usage")
            .and_then(|u| serde_json::from_value::<TokenUsage>(u.clone()).ok());
        AgentAnswer { output, usage }
    }
}

#[async_trait]
pub trait AgentInvoker: Send + Sync {
    async fn invoke(&self, agent: &Agent, call: &AgentCall<'_>)
        -> Result<AgentAnswer, TaskFailure>;
}
