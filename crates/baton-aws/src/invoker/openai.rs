//! The `openai` kind: any OpenAI-compatible Chat Completions API (OpenAI, vLLM, Ollama, a
//! LiteLLM proxy…).
//!
//! Baton POSTs `{base_url}/chat/completions` with the agent's `parameters`, its `model`, and
//! the messages [`super::prompt::chat_messages`] builds, with `Authorization: Bearer <key>`
//! when the agent names a key and the attempt's `Idempotency-Key`. The output is `{content,
//! model, finish_reason, usage: {input_tokens, output_tokens}}` from the first choice. 429 and
//! 5xx are retried (after `Retry-After` when given), other 4xx are not, and a 2xx whose body
//! is not a completion is an invalid response.
//!
//! A task that streams asks for `"stream": true` with the usage at the end, and passes the
//! text of each server-sent chunk to the attempt's stream as it comes; the output is what the
//! chunks add up to, in the same shape. A server that answers a whole completion instead is
//! taken as it is.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::secrets::SecretReader;
use super::{guard, next_part, open, prompt, stopped_failure, Opened};
use baton_chain::invoker::{AgentAnswer, AgentCall, StreamSink};
use baton_types::agent::{Agent, OpenAiTarget};
use baton_types::endpoint::{check_url, EndpointPolicy};
use baton_types::outcome::{FailureKind, TaskFailure, TokenUsage};
use baton_types::stream::{ChatStream, SseDecoder};

const ERROR_EXCERPT_CHARS: usize = 300;

/// The request body for a call.
pub fn request_body(target: &OpenAiTarget, call: &AgentCall<'_>) -> Result<Value, TaskFailure> {
    let messages = prompt::chat_messages(
        target.system_prompt.as_deref(),
        call.input,
        prompt::Extras::of(call),
    )
    .map_err(|why| {
        TaskFailure::new(
            FailureKind::InvalidInput,
            format!("the task's input cannot be sent as a chat: {why}"),
        )
    })?;
    let mut body: Map<String, Value> = target.parameters.clone().unwrap_or_default();
    body.insert("model".into(), Value::String(target.model.clone()));
    body.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(body))
}

/// The URL of the completions endpoint under `base_url`.
pub fn completions_url(base_url: &str) -> String {
    format!("{}/chat/completions", base_url.trim_end_matches('/'))
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// The task's answer for a 2xx body, or why the body is not a completion.
pub fn answer(body: &[u8]) -> Result<AgentAnswer, String> {
    let completion: Completion = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("it has no choices")?;
    let usage = completion.usage.map(|u| TokenUsage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
    });
    Ok(AgentAnswer {
        output: json!({
            "content": choice.message.content,
            "model": completion.model,
            "finish_reason": choice.finish_reason,
            "usage": usage,
        }),
        usage,
    })
}

/// Asks the agent's API for a completion, through `client` (the endpoint guard's, which
/// refuses forbidden addresses and never follows a redirect).
pub async fn complete(
    client: &reqwest::Client,
    policy: &EndpointPolicy,
    secrets: &SecretReader,
    agent: &Agent,
    target: &OpenAiTarget,
    call: &AgentCall<'_>,
) -> Result<AgentAnswer, TaskFailure> {
    let agent_name = agent.name.as_str();
    let url = completions_url(&target.base_url);
    // A literal address never reaches the guard's resolver: check the URL itself.
    check_url(&url, policy).map_err(|refusal| guard::forbidden_failure(agent_name, &refusal))?;
    let key = match &target.api_key {
        Some(reference) => Some(secrets.api_key(&call.task.tenant, reference).await?),
        None => None,
    };
    let mut body = request_body(target, call)?;
    if call.stream.is_some() {
        body["stream"] = Value::Bool(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    let mut request = client
        .post(url)
        .timeout(Duration::from_millis(call.timeout_ms))
        .header("Idempotency-Key", call.task.idempotency_key())
        .json(&body);
    if let Some(key) = &key {
        request = request.bearer_auth(key.expose());
    }
    let mut opened = open(agent, call, request).await?;
    let status = opened.status;
    if !status.is_success() {
        let bytes = opened.read_all().await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The key may have been rotated: the next attempt reads it again.
            if let Some(reference) = &target.api_key {
                secrets.forget(&call.task.tenant, reference);
            }
        }
        let mut excerpt: String = String::from_utf8_lossy(&bytes)
            .chars()
            .take(ERROR_EXCERPT_CHARS)
            .collect();
        if let Some(key) = &key {
            // Some APIs quote the key they refused; it is stored on the task, so hide it.
            excerpt = excerpt.replace(key.expose(), "[api key]");
        }
        let mut failure = TaskFailure::http_status(status.as_u16(), excerpt.trim());
        failure.retry_after_ms = opened.retry_after_ms.filter(|_| failure.retryable);
        return Err(failure);
    }
    let invalid = |why: String| {
        TaskFailure::new(
            FailureKind::InvalidResponse,
            format!("agent `{agent_name}` answered {status} with a body that is not a chat completion: {why}"),
        )
    };
    match call.stream {
        // A server that does not stream answers the whole completion: taken as it is.
        Some(sink) if opened.content_type() == "text/event-stream" => {
            let streamed = read_stream(&mut opened, sink).await;
            sink.close().await;
            streamed?.map_err(invalid)
        }
        _ => answer(&opened.read_all().await?).map_err(invalid),
    }
}

/// Reads a streamed completion, passing its text to `sink` as it comes; the inner Err says
/// why the stream is not a completion.
async fn read_stream(
    opened: &mut Opened<'_>,
    sink: &dyn StreamSink,
) -> Result<Result<AgentAnswer, String>, TaskFailure> {
    let mut decoder = SseDecoder::default();
    let mut chat = ChatStream::default();
    while !chat.done {
        let Some(bytes) = next_part(opened.chunk(), sink).await? else {
            break;
        };
        let events = match decoder.feed(&bytes) {
            Ok(events) => events,
            Err(why) => return Ok(Err(why)),
        };
        for event in events {
            let text = match chat.apply(&event.data) {
                Ok(text) => text,
                Err(why) => return Ok(Err(why)),
            };
            if !text.is_empty() {
                sink.text(&text).await.map_err(stopped_failure)?;
            }
        }
    }
    if !chat.done && chat.finish_reason.is_none() {
        return Ok(Err("the stream ended before its last chunk".into()));
    }
    let usage = chat.usage.map(|(input_tokens, output_tokens)| TokenUsage {
        input_tokens,
        output_tokens,
    });
    Ok(Ok(AgentAnswer {
        output: json!({
            "content": chat.content,
            "model": chat.model,
            "finish_reason": chat.finish_reason,
            "usage": usage,
        }),
        usage,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_types::messages::TaskRef;

    fn target() -> OpenAiTarget {
        OpenAiTarget {
            base_url: "https://llm.example/v1/".into(),
            model: "small".into(),
            system_prompt: Some("Answer in one line.".into()),
            parameters: Some(
                json!({"temperature": 0.1, "max_tokens": 64})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            api_key: None,
        }
    }

    #[test]
    fn the_request_carries_the_parameters_the_model_and_the_messages() {
        let task = TaskRef {
            tenant: "t".parse().unwrap(),
            workflow_id: "w".parse().unwrap(),
            task_id: "a".parse().unwrap(),
            attempt: 1,
        };
        let input = json!({"prompt": "Name a colour"});
        let call = AgentCall {
            task: &task,
            workflow_id: "w",
            task_id: "a",
            attempt: 1,
            capability: "chat",
            input: &input,
            dependencies: Map::new(),
            memories: Vec::new(),
            context: None,
            timeout_ms: 1_000,
            stream: None,
        };
        let body = request_body(&target(), &call).unwrap();
        assert_eq!(body["model"], "small");
        assert_eq!(body["temperature"], 0.1);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "Name a colour"})
        );
        assert_eq!(
            completions_url(&target().base_url),
            "https://llm.example/v1/chat/completions"
        );
        let bad = json!({"messages": [{"role": "user"}]});
        let call = AgentCall {
            input: &bad,
            ..call
        };
        let failure = request_body(&target(), &call).unwrap_err();
        assert_eq!(failure.kind, FailureKind::InvalidInput);
        assert!(!failure.retryable);
    }

    #[test]
    fn a_completion_becomes_content_and_usage() {
        let body = br#"{"id":"c1","model":"small-2024","choices":[{"index":0,
            "message":{"role":"assistant","content":"Teal."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":21,"completion_tokens":2,"total_tokens":23}}"#;
        let answer = answer(body).unwrap();
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input_tokens: 21,
                output_tokens: 2
            })
        );
        assert_eq!(
            answer.output,
            json!({"content": "Teal.", "model": "small-2024", "finish_reason": "stop",
                   "usage": {"input_tokens": 21, "output_tokens": 2}})
        );
        assert!(super::answer(br#"{"choices":[]}"#).is_err());
        assert!(super::answer(b"<html>").is_err());
    }

    #[test]
    fn rate_limits_and_server_errors_are_retried_and_other_refusals_are_not() {
        assert!(TaskFailure::http_status(429, "").retryable);
        assert!(TaskFailure::http_status(503, "").retryable);
        assert!(!TaskFailure::http_status(401, "").retryable);
        assert!(!TaskFailure::http_status(400, "").retryable);
    }
}
