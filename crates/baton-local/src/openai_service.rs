//! An OpenAI-compatible example server (`POST /v1/chat/completions`) whose models answer the
//! last user message by rule:
//! - [`BRIEF_MODEL`] with its first sentence;
//! - [`KEYWORDS_MODEL`] with its most frequent words.
//!
//! With `"stream": true` it answers server-sent chunks, a word every [`STREAM_PACE`], as the
//! Chat Completions API streams them.
//!
//! It wants `Authorization: Bearer <its key>` (401 otherwise), counts tokens in words, cuts
//! the answer at `max_tokens`, answers 404 for an unknown model, and
//! [`OpenAiService::throttle_next`] makes the next calls answer 429 with `Retry-After: 1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};

use crate::stand_in::{limit_words, serve, tokens, CallLog, CutWatch, ModelRule, Served};

pub const BRIEF_MODEL: &str = "baton-brief";
pub const KEYWORDS_MODEL: &str = "baton-keywords";
/// How long the server takes per streamed chunk: about a model's pace per token.
pub const STREAM_PACE: std::time::Duration = std::time::Duration::from_millis(20);

struct Server {
    key: String,
    log: CallLog,
    /// Streamed answers whose client went away before their end.
    streams_cut: Arc<AtomicUsize>,
}

pub struct OpenAiService {
    served: Served,
    server: Arc<Server>,
}

impl OpenAiService {
    /// Starts the server; it accepts only `key`.
    pub async fn start(key: String) -> std::io::Result<Self> {
        let server = Arc::new(Server {
            key,
            log: CallLog::default(),
            streams_cut: Arc::default(),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(server.clone());
        Ok(OpenAiService {
            served: serve(app).await?,
            server,
        })
    }

    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// The key it accepts (what the stack stored in SSM and Secrets Manager).
    pub fn key(&self) -> &str {
        &self.server.key
    }

    pub fn throttle_next(&self, calls: u32) {
        self.server.log.throttle_next(calls);
    }

    /// Streamed answers dropped before their end: their client closed the connection.
    pub fn streams_cut(&self) -> usize {
        self.server.streams_cut.load(Ordering::SeqCst)
    }

    /// Every request so far: `{authorization, request}`.
    pub fn calls(&self) -> Vec<Value> {
        self.server.log.calls()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        json!({ "error": { "message": message, "type": "invalid_request_error", "code": code } });
    (status, axum::Json(body)).into_response()
}

/// A message's text: its string content, or its text parts.
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

async fn complete(State(server): State<Arc<Server>>, headers: HeaderMap, body: String) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let throttled = server
        .log
        .record(json!({ "authorization": authorization, "request": request }));
    if authorization.as_deref() != Some(&format!("Bearer {}", server.key)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Incorrect API key provided.",
        );
    }
    if throttled {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Rate limit reached; try again in 1s.",
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return response;
    }
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let rule = match model.as_str() {
        BRIEF_MODEL => ModelRule::Brief,
        KEYWORDS_MODEL => ModelRule::Keywords,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "model_not_found",
                &format!("The model `{model}` does not exist."),
            )
        }
    };
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_messages",
            "The messages must hold a user message.",
        );
    };
    let read: u64 = messages.iter().map(|m| tokens(&text_of(m))).sum();
    let (answer, cut) = limit_words(&rule.answer(&text_of(last)), request["max_tokens"].as_u64());
    let written = tokens(&answer);
    let usage = json!({ "prompt_tokens": read, "completion_tokens": written, "total_tokens": read + written });
    let finish_reason = if cut { "length" } else { "stop" };
    if request["stream"] == true {
        let with_usage =
            request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
        let watch = CutWatch::new(server.streams_cut.clone());
        return streamed(
            &model,
            &answer,
            finish_reason,
            with_usage.then_some(usage),
            watch,
        );
    }
    axum::Json(json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": baton_types::clock::now_ms() / 1000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": answer },
            "finish_reason": if cut { "length" } else { "stop" },
        }],
        "usage": usage,
    }))
    .into_response()
}

/// The answer as Chat Completions streams it: a role chunk, a chunk per word every
/// [`STREAM_PACE`], the finish reason, the usage when asked for, then `[DONE]`.
fn streamed(
    model: &str,
    answer: &str,
    finish_reason: &str,
    usage: Option<Value>,
    watch: CutWatch,
) -> Response {
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let chunk = |choices: Value| json!({ "id": id, "object": "chat.completion.chunk", "model": model, "choices": choices });
    let mut events = vec![chunk(
        json!([{ "index": 0, "delta": { "role": "assistant" } }]),
    )];
    events.extend(
        answer
            .split_inclusive(' ')
            .map(|word| chunk(json!([{ "index": 0, "delta": { "content": word } }]))),
    );
    events.push(chunk(
        json!([{ "index": 0, "delta": {}, "finish_reason": finish_reason }]),
    ));
    if let Some(usage) = usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    let mut lines: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    lines.push("data: [DONE]\n\n".into());
    let paced = futures::stream::unfold(
        (lines.into_iter(), watch),
        |(mut lines, mut watch)| async move {
            tokio::time::sleep(STREAM_PACE).await;
            match lines.next() {
                Some(line) => Some((Ok::<_, std::convert::Infallible>(line), (lines, watch))),
                None => {
                    watch.finish();
                    None
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(axum::body::Body::from_stream(paced))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
