//! The `bedrock` kind: the Bedrock Runtime Converse API.
//!
//! Baton sends the agent's system prompt and the dependencies' outputs as system text blocks,
//! the task's input text as one user message (see [`super::prompt`]), and the agent's
//! inference configuration. The output is `{content, stop_reason, usage: {input_tokens,
//! output_tokens}}`. Throttling and Bedrock's own faults are retried; a request Bedrock
//! refuses (validation, access, an unknown model) and a model's own error are not.
//!
//! A task that streams calls ConverseStream instead and reads its event stream (AWS's binary
//! framing): each `contentBlockDelta`'s text goes to the attempt's stream as it comes, and
//! the output is the same as Converse's, built from the deltas, `messageStop` and `metadata`.
//! An exception in the stream fails the call as the same error answered at once would.

use serde_json::{json, Map, Value};

use super::aws::{self, ErrorCodes};
use super::prompt;
use crate::signed::{segment, Request, SignedClient, BEDROCK};
use aws_smithy_types::event_stream::Message;
use baton_chain::invoker::{AgentAnswer, AgentCall, StreamSink};
use baton_types::agent::{BedrockTarget, InferenceSettings};
use baton_types::outcome::{FailureKind, TaskFailure, TokenUsage};

/// Converse's error codes, by whether another try can succeed.
pub const BEDROCK_CODES: ErrorCodes = ErrorCodes {
    retryable: &[
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
    ],
    permanent: &[
        "ValidationException",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "ModelErrorException",
        "ServiceQuotaExceededException",
    ],
};

/// Asks the agent's model; no call asks for more than `max_tokens` output tokens (the
/// operator's cap, also where the agent leaves it open). `endpoint` replaces Bedrock
/// Runtime's own (a stand-in).
pub async fn converse(
    client: &SignedClient,
    endpoint: Option<&str>,
    target: &BedrockTarget,
    max_tokens: u32,
    call: &AgentCall<'_>,
) -> Result<AgentAnswer, TaskFailure> {
    let subject = format!("model `{}`", target.model_id);
    let system = prompt::system_texts(target.system_prompt.as_deref(), prompt::Extras::of(call));
    let defaults = InferenceSettings::default();
    let inference = target.inference.as_ref().unwrap_or(&defaults);
    let body = request_body(
        &system,
        &prompt::history(call.input),
        &prompt::input_text(call.input),
        inference,
        max_tokens,
    );
    let operation = if call.stream.is_some() {
        "converse-stream"
    } else {
        "converse"
    };
    let request = Request {
        service: BEDROCK,
        endpoint,
        path: format!("/model/{}/{operation}", segment(&target.model_id)),
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string().into_bytes(),
    };
    if let Some(sink) = call.stream {
        let mut response = aws::open(client, request, &subject, &BEDROCK_CODES).await?;
        let streamed = read_stream(&mut response, sink, &subject).await;
        sink.close().await;
        let stream = streamed?;
        let usage = stream.usage;
        return Ok(AgentAnswer {
            output: answer(
                Some(stream.content),
                stream.stop_reason.as_deref().unwrap_or("end_turn"),
                usage,
            ),
            usage,
        });
    }
    let response = aws::call(client, request, &subject, &BEDROCK_CODES).await?;
    let reply = aws::json_body(&response, BEDROCK.label, &subject)?;
    let Some(stop_reason) = reply["stopReason"].as_str() else {
        return Err(TaskFailure::new(
            FailureKind::InvalidResponse,
            format!("Bedrock's answer for {subject} has no stopReason"),
        ));
    };
    let usage = reply.get("usage").map(|u| TokenUsage {
        input_tokens: u["inputTokens"].as_u64().unwrap_or(0),
        output_tokens: u["outputTokens"].as_u64().unwrap_or(0),
    });
    Ok(AgentAnswer {
        output: answer(reply_text(&reply), stop_reason, usage),
        usage,
    })
}

/// A ConverseStream answer as its events add up.
#[derive(Debug, Default)]
struct ConverseStream {
    content: String,
    stop_reason: Option<String>,
    usage: Option<TokenUsage>,
}

/// Reads ConverseStream's events, passing each delta's text to `sink`.
async fn read_stream(
    response: &mut reqwest::Response,
    sink: &dyn StreamSink,
    subject: &str,
) -> Result<ConverseStream, TaskFailure> {
    let mut stream = ConverseStream::default();
    aws::read_events(response, sink, "Bedrock", subject, |message| {
        stream.apply(message, subject)
    })
    .await?;
    if stream.stop_reason.is_none() {
        return Err(TaskFailure::new(
            FailureKind::InvalidResponse,
            format!("Bedrock's stream for {subject} ended before messageStop"),
        ));
    }
    Ok(stream)
}

impl ConverseStream {
    /// Applies one event: the text it adds. An exception event is the failure it names.
    fn apply(&mut self, message: &Message, subject: &str) -> Result<String, TaskFailure> {
        let payload: Value = serde_json::from_slice(message.payload()).unwrap_or(Value::Null);
        if aws::header(message, ":message-type") == Some("exception") {
            // Its type in lower camel case: the same codes as Converse's errors.
            let kind = aws::header(message, ":exception-type").unwrap_or("InternalServerException");
            let mut code = kind.to_string();
            if let Some(first) = code.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let status = if BEDROCK_CODES.permanent.contains(&code.as_str()) {
                400
            } else {
                500
            };
            return Err(aws::service_failure(
                BEDROCK.label,
                subject,
                Some(&code),
                payload["message"].as_str(),
                status,
                &BEDROCK_CODES,
            ));
        }
        match aws::header(message, ":event-type") {
            Some("contentBlockDelta") => {
                let text = payload["delta"]["text"].as_str().unwrap_or_default();
                self.content.push_str(text);
                Ok(text.to_string())
            }
            Some("messageStop") => {
                self.stop_reason = payload["stopReason"].as_str().map(str::to_string);
                Ok(String::new())
            }
            Some("metadata") => {
                let usage = &payload["usage"];
                self.usage = Some(TokenUsage {
                    input_tokens: usage["inputTokens"].as_u64().unwrap_or(0),
                    output_tokens: usage["outputTokens"].as_u64().unwrap_or(0),
                });
                Ok(String::new())
            }
            _ => Ok(String::new()),
        }
    }
}

/// Converse's request: the system texts, the input as one user message, and the inference
/// configuration with the cap applied.
fn request_body(
    system: &[String],
    history: &[(String, String)],
    input: &str,
    settings: &InferenceSettings,
    cap: u32,
) -> Value {
    let mut inference = Map::new();
    inference.insert(
        "maxTokens".into(),
        json!(settings.max_tokens.map_or(cap, |t| t.min(cap))),
    );
    if let Some(temperature) = settings.temperature {
        inference.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = settings.top_p {
        inference.insert("topP".into(), json!(top_p));
    }
    if !settings.stop_sequences.is_empty() {
        inference.insert("stopSequences".into(), json!(settings.stop_sequences));
    }
    // A conversation's earlier turns first, alternating as Converse requires.
    let text = |role: &str, text: &str| json!({"role": role, "content": [{"text": text}]});
    let messages: Vec<Value> = history
        .iter()
        .flat_map(|(asked, answered)| [text("user", asked), text("assistant", answered)])
        .chain([text("user", input)])
        .collect();
    let mut body = json!({
        "messages": messages,
        "inferenceConfig": inference,
    });
    if !system.is_empty() {
        body["system"] = system.iter().map(|text| json!({"text": text})).collect();
    }
    body
}

/// The reply's text blocks, joined; other blocks (tool use, reasoning) are left out.
fn reply_text(reply: &Value) -> Option<String> {
    let content = reply["output"]["message"]["content"].as_array()?;
    Some(
        content
            .iter()
            .filter_map(|block| block["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
    )
}

/// The task's output for a Converse reply.
pub fn answer(content: Option<String>, stop_reason: &str, usage: Option<TokenUsage>) -> Value {
    json!({
        "content": content,
        "stop_reason": stop_reason,
        "usage": usage,
    })
}

#[cfg(test)]
mod tests {
    use super::super::aws::service_failure;
    use super::*;

    #[test]
    fn throttling_and_faults_are_retried_and_refusals_are_not() {
        let retryable = |code: &str, status| {
            service_failure("Bedrock", "m", Some(code), None, status, &BEDROCK_CODES).retryable
        };
        for code in [
            "ThrottlingException",
            "ServiceUnavailableException",
            "InternalServerException",
            "ModelNotReadyException",
            "ModelTimeoutException",
        ] {
            assert!(retryable(code, 429), "{code}");
        }
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "ResourceNotFoundException",
        ] {
            assert!(!retryable(code, 400), "{code}");
        }
        // A model error is the model failing on this input: 424, and not retried.
        assert!(!retryable("ModelErrorException", 424));
    }

    #[test]
    fn the_output_carries_the_text_the_stop_reason_and_the_usage() {
        let usage = TokenUsage {
            input_tokens: 9,
            output_tokens: 4,
        };
        assert_eq!(
            answer(Some("Four words, no more.".into()), "end_turn", Some(usage)),
            json!({"content": "Four words, no more.", "stop_reason": "end_turn",
                   "usage": {"input_tokens": 9, "output_tokens": 4}})
        );
    }
}
