//! The adapters through which a task reaches its agent: HTTP here, the other kinds below.
//!
//! The agent contract: Baton POSTs JSON `{workflow_id, task_id, attempt, capability, input,
//! dependencies}` (dependencies maps each dependency's id to its output) with an
//! `Idempotency-Key` header unique to the attempt. The same key comes again only when Baton
//! lost track of a call (its handler died before recording the answer), so an agent that
//! remembers keys can answer the repeat without doing the work twice. A 2xx JSON answer is
//! the task's output; anything else is a failure, classed as retryable or not. A 429 or 503
//! may carry `Retry-After` (seconds or an HTTP date), which the next attempt waits for.
//!
//! A task that streams is sent with `Accept: text/event-stream, application/x-ndjson,
//! application/json`. The agent may answer JSON as always, or stream: server-sent events or
//! NDJSON lines, each a JSON object, `{"text": "…"}` for text as it is written (passed on to the
//! task's stream) and, optionally, a last `{"output": {…}}` that is the task's output; without
//! it the output is `{"text": all the text}`.
//!
//! The other kinds have adapters of their own: [`lambda`], [`openai`] and [`bedrock`], and
//! [`AgentInvokers`] sends each call to its agent's kind.

pub mod aws;
pub mod bedrock;
pub mod guard;
pub mod kinds;
pub mod lambda;
pub mod openai;
pub mod prompt;
pub mod secrets;

pub use kinds::{AgentInvokers, ServiceEndpoints};

use std::time::Duration;

use async_trait::async_trait;

use baton_chain::invoker::{
    AgentAnswer, AgentCall, AgentInvoker, StreamSink, StreamStopped, MAX_OUTPUT_BYTES,
};
use baton_types::agent::Agent;
use baton_types::endpoint::{check_url, EndpointPolicy};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::stream::{AgentStream, Lines, SseDecoder};

const ERROR_EXCERPT_CHARS: usize = 300;

#[derive(Clone, Debug)]
pub struct HttpAgentInvoker {
    client: reqwest::Client,
    policy: EndpointPolicy,
}

impl HttpAgentInvoker {
    /// An invoker that calls only the endpoints `policy` allows (see [`guard`]).
    pub fn new(policy: &EndpointPolicy) -> Result<Self, reqwest::Error> {
        Ok(HttpAgentInvoker {
            client: guard::guarded_client(policy)?,
            policy: policy.clone(),
        })
    }

    /// Its guarded client, which the openai kind shares: one connection pool.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

#[async_trait]
impl AgentInvoker for HttpAgentInvoker {
    async fn invoke(
        &self,
        agent: &Agent,
        call: &AgentCall<'_>,
    ) -> Result<AgentAnswer, TaskFailure> {
        let Some(endpoint) = agent.endpoint() else {
            return Err(TaskFailure::new(
                FailureKind::AgentNotFound,
                format!(
                    "agent `{}` is a {} agent; this invoker calls http agents",
                    agent.name,
                    agent.kind().as_str()
                ),
            ));
        };
        // A literal address never reaches the guard's resolver: check the URL itself.
        check_url(endpoint, &self.policy)
            .map_err(|refusal| guard::forbidden_failure(&agent.name, &refusal))?;
        let mut request = self
            .client
            .post(endpoint)
            .timeout(Duration::from_millis(call.timeout_ms))
            .header("Idempotency-Key", call.task.idempotency_key())
            .json(call);
        if call.stream.is_some() {
            request = request.header(reqwest::header::ACCEPT, STREAM_ACCEPT);
        }
        let mut opened = open(agent, call, request).await?;
        let status = opened.status;
        let content_type = opened.content_type();
        let streamed = match call.stream {
            Some(sink) if status.is_success() && STREAM_TYPES.contains(&content_type.as_str()) => {
                let parts = read_parts(&mut opened, sink, content_type == SSE).await;
                sink.close().await;
                Some(parts?)
            }
            _ => None,
        };
        let invalid = |why: String| {
            TaskFailure::new(
                FailureKind::InvalidResponse,
                format!(
                    "agent `{}` answered {status} with a body that is not JSON: {why}",
                    agent.name
                ),
            )
        };
        if let Some(parts) = streamed {
            return parts.map(AgentAnswer::reported).map_err(invalid);
        }
        let body = opened.read_all().await?;
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&body)
                .chars()
                .take(ERROR_EXCERPT_CHARS)
                .collect();
            let mut failure = TaskFailure::http_status(status.as_u16(), excerpt.trim());
            failure.retry_after_ms = opened.retry_after_ms.filter(|_| failure.retryable);
            return Err(failure);
        }
        serde_json::from_slice(&body)
            .map(AgentAnswer::reported)
            .map_err(|e| invalid(e.to_string()))
    }
}

/// The next part of a streamed body, ticking `sink` every batch period while it waits, so
/// text already read is written on time however long the agent pauses.
pub(crate) async fn next_part<T, F>(part: F, sink: &dyn StreamSink) -> Result<T, TaskFailure>
where
    F: std::future::Future<Output = Result<T, TaskFailure>>,
{
    let period = Duration::from_millis(baton_types::stream::FLUSH_MS as u64);
    let mut part = std::pin::pin!(part);
    loop {
        tokio::select! {
            read = &mut part => return read,
            () = tokio::time::sleep(period) => sink.tick().await.map_err(stopped_failure)?,
        }
    }
}

/// A call whose stream a pause or a cancel stopped: the attempt ends for the hold to settle.
pub(crate) fn stopped_failure(stopped: StreamStopped) -> TaskFailure {
    TaskFailure::new(FailureKind::Cancelled, stopped.reason)
}

const SSE: &str = "text/event-stream";
const NDJSON: &str = "application/x-ndjson";
/// The answers a streaming http agent may give, preferred first.
const STREAM_TYPES: [&str; 2] = [SSE, NDJSON];
const STREAM_ACCEPT: &str = "text/event-stream, application/x-ndjson;q=0.9, application/json;q=0.8";

/// Reads an http agent's streamed answer, server-sent events or NDJSON lines, passing its text
/// to `sink` as it comes; the inner Err says why it is not a streamed answer.
async fn read_parts(
    opened: &mut Opened<'_>,
    sink: &dyn StreamSink,
    sse: bool,
) -> Result<Result<serde_json::Value, String>, TaskFailure> {
    let mut events = SseDecoder::default();
    let mut lines = Lines::default();
    let mut stream = AgentStream::default();
    loop {
        let chunk = next_part(opened.chunk(), sink).await?;
        let parts: Vec<String> = match (&chunk, sse) {
            (Some(bytes), true) => match events.feed(bytes) {
                Ok(found) => found.into_iter().map(|e| e.data).collect(),
                Err(why) => return Ok(Err(why)),
            },
            (Some(bytes), false) => match lines.feed(bytes) {
                Ok(found) => found,
                Err(why) => return Ok(Err(why)),
            },
            (None, true) => events.finish().map(|e| e.data).into_iter().collect(),
            (None, false) => lines.finish().into_iter().collect(),
        };
        for part in parts {
            let text = match stream.apply(&part) {
                Ok(text) => text,
                Err(why) => return Ok(Err(why)),
            };
            if !text.is_empty() {
                sink.text(&text).await.map_err(stopped_failure)?;
            }
        }
        if chunk.is_none() {
            return Ok(Ok(stream.output()));
        }
    }
}

/// An agent's response whose body is still to be read.
pub(crate) struct Opened<'a> {
    pub status: reqwest::StatusCode,
    pub retry_after_ms: Option<u64>,
    response: reqwest::Response,
    agent: &'a Agent,
    timeout_ms: u64,
    read: usize,
}

/// Sends a call and takes the answer's status and headers: a redirect is a failure (it is
/// never followed), and so is a body larger than an output may be, as it is read.
pub(crate) async fn open<'a>(
    agent: &'a Agent,
    call: &AgentCall<'_>,
    request: reqwest::RequestBuilder,
) -> Result<Opened<'a>, TaskFailure> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_failure(agent, call.timeout_ms, &e))?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        return Err(guard::redirect_failure(
            &agent.name,
            status.as_u16(),
            location,
        ));
    }
    let retry_after_ms = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    Ok(Opened {
        status,
        retry_after_ms,
        response,
        agent,
        timeout_ms: call.timeout_ms,
        read: 0,
    })
}

impl Opened<'_> {
    /// The answer's media type, without its parameters.
    pub fn content_type(&self) -> String {
        self.response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The next part of the body as it arrives; None at its end. The whole body may be at
    /// most [`MAX_OUTPUT_BYTES`].
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, TaskFailure> {
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|e| transport_failure(self.agent, self.timeout_ms, &e))?;
        if let Some(chunk) = &chunk {
            self.read += chunk.len();
            if self.read > MAX_OUTPUT_BYTES {
                return Err(TaskFailure::new(
                    FailureKind::OutputTooLarge,
                    format!(
                        "agent `{}` answered more than {MAX_OUTPUT_BYTES} bytes",
                        self.agent.name
                    ),
                ));
            }
        }
        Ok(chunk)
    }

    /// The whole body.
    pub async fn read_all(&mut self) -> Result<Vec<u8>, TaskFailure> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
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

fn transport_failure(agent: &Agent, timeout_ms: u64, err: &reqwest::Error) -> TaskFailure {
    if let Some(refusal) = guard::refusal_of(err) {
        guard::refused_call_failure(&agent.name, refusal)
    } else if err.is_timeout() {
        TaskFailure::new(
            FailureKind::Timeout,
            format!(
                "agent `{}` did not answer within {timeout_ms} ms",
                agent.name
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
