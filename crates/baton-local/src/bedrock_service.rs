//! A stand-in for the Bedrock Runtime Converse API (`POST /model/{modelId}/converse`, and
//! `converse-stream`, which answers the same as an event stream, a word every
//! [`STREAM_PACE`]), whose models answer the last user message by rule:
//! - [`BRIEF_MODEL`] with its first sentence;
//! - [`KEYWORDS_MODEL`] with its most frequent words.
//!
//! Tokens are counted in words: the system and message texts read, the answer written.
//! `maxTokens` cuts the answer (`max_tokens`), a stop sequence ends it (`stop_sequence`). An
//! unknown model is a `ValidationException`, and [`StandIn::throttle_next`] makes the
//! next calls fail with `ThrottlingException`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::stand_in::{
    event_frame, event_stream, limit_words, tokens, CallLog, ModelRule, StandIn,
};

pub const BRIEF_MODEL: &str = "baton.brief-v1";
pub const KEYWORDS_MODEL: &str = "baton.keywords-v1";

/// How long the stream takes per word: about a model's pace per token.
pub const STREAM_PACE: std::time::Duration = std::time::Duration::from_millis(20);

/// The Converse stand-in; its log holds `{model_id, operation, request}` per request.
pub async fn start() -> std::io::Result<StandIn> {
    StandIn::start("/model/{model_id}/{operation}", converse).await
}

fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("x-amzn-errortype", code)],
        axum::Json(json!({ "message": message })),
    )
        .into_response()
}

/// The text blocks of a list of content blocks.
fn texts(blocks: &Value) -> Vec<&str> {
    blocks
        .as_array()
        .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default()
}

async fn converse(
    State(log): State<Arc<CallLog>>,
    Path((model_id, operation)): Path<(String, String)>,
    body: String,
) -> Response {
    let streams = match operation.as_str() {
        "converse" => false,
        "converse-stream" => true,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if log.record(json!({ "model_id": model_id, "operation": operation, "request": request })) {
        return aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        );
    }
    let rule = match model_id.as_str() {
        BRIEF_MODEL => ModelRule::Brief,
        KEYWORDS_MODEL => ModelRule::Keywords,
        _ => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "The provided model identifier is invalid.",
            )
        }
    };
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "A conversation must start with a user message.",
        );
    };
    let read: u64 = texts(&request["system"])
        .into_iter()
        .chain(messages.iter().flat_map(|m| texts(&m["content"])))
        .map(tokens)
        .sum();
    let config = &request["inferenceConfig"];
    let mut answer = rule.answer(&texts(&last["content"]).join("\n"));
    let mut stop_reason = "end_turn";
    for stop in config["stopSequences"].as_array().into_iter().flatten() {
        if let Some(at) = stop
            .as_str()
            .filter(|s| !s.is_empty())
            .and_then(|s| answer.find(s))
        {
            answer.truncate(at);
            stop_reason = "stop_sequence";
        }
    }
    let (answer, cut) = limit_words(&answer, config["maxTokens"].as_u64());
    if cut {
        stop_reason = "max_tokens";
    }
    let written = tokens(&answer);
    let usage =
        json!({ "inputTokens": read, "outputTokens": written, "totalTokens": read + written });
    if streams {
        return streamed(&answer, stop_reason, usage);
    }
    axum::Json(json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": answer }] } },
        "stopReason": stop_reason,
        "usage": usage,
        "metrics": { "latencyMs": 1 },
    }))
    .into_response()
}

/// The answer as ConverseStream sends it: the message's start, a delta per word, the block's
/// and the message's stop, then the usage.
fn streamed(answer: &str, stop_reason: &str, usage: Value) -> Response {
    let frame = |event_type: &str, payload: &Value| {
        event_frame(
            event_type,
            "application/json",
            payload.to_string().into_bytes(),
        )
    };
    let mut frames = vec![frame("messageStart", &json!({ "role": "assistant" }))];
    frames.extend(answer.split_inclusive(' ').map(|word| {
        frame(
            "contentBlockDelta",
            &json!({ "contentBlockIndex": 0, "delta": { "text": word } }),
        )
    }));
    frames.push(frame(
        "contentBlockStop",
        &json!({ "contentBlockIndex": 0 }),
    ));
    frames.push(frame("messageStop", &json!({ "stopReason": stop_reason })));
    frames.push(frame(
        "metadata",
        &json!({ "usage": usage, "metrics": { "latencyMs": 1 } }),
    ));
    event_stream(frames, STREAM_PACE)
}
