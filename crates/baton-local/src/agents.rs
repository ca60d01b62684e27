//! Agents as real local HTTP servers: a small server that answers with a behaviour and keeps a
//! record of every call, and the example agents the local stack runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::stand_in::CutWatch;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What an agent answers to one call.
#[derive(Debug, Clone)]
pub struct AgentReply {
    pub status: u16,
    pub body: Value,
    /// A body sent exactly as written instead of `body` (JSON whose text matters, e.g. `1e15`).
    pub raw: Option<String>,
    /// Time taken before answering.
    pub delay: Duration,
    /// Extra response headers, e.g. `Retry-After`.
    pub headers: Vec<(&'static str, String)>,
    /// A streamed answer instead of `body`: its content type, and its parts, each sent after
    /// the pace.
    pub stream: Option<(&'static str, Vec<String>, Duration)>,
    /// The streamed answer breaks off after its parts: the connection is cut.
    pub broken: bool,
    /// The streamed answer stops after this many parts until the gate is opened.
    pub gate: Option<(usize, Arc<tokio::sync::Notify>)>,
}

impl AgentReply {
    pub fn ok(body: Value) -> Self {
        AgentReply {
            status: 200,
            body,
            raw: None,
            delay: Duration::ZERO,
            headers: Vec::new(),
            stream: None,
            broken: false,
            gate: None,
        }
    }

    /// A streamed answer: `parts` as server-sent events (`sse`) or NDJSON lines, one every
    /// `pace`.
    pub fn streamed(sse: bool, parts: &[Value], pace: Duration) -> Self {
        let (content_type, parts) = if sse {
            let events = parts.iter().map(|p| format!("data: {p}\n\n")).collect();
            ("text/event-stream", events)
        } else {
            (
                "application/x-ndjson",
                parts.iter().map(|p| format!("{p}\n")).collect(),
            )
        };
        AgentReply {
            stream: Some((content_type, parts, pace)),
            ..AgentReply::ok(Value::Null)
        }
    }

    /// The same streamed answer, held after its first `parts` until `gate` is notified.
    pub fn gated(mut self, parts: usize, gate: Arc<tokio::sync::Notify>) -> Self {
        self.gate = Some((parts, gate));
        self
    }

    /// The same streamed answer, cut off after its parts.
    pub fn broken(mut self) -> Self {
        self.broken = true;
        self
    }

    pub fn error(status: u16, message: &str) -> Self {
        AgentReply {
            status,
            body: json!({ "error": message }),
            raw: None,
            delay: Duration::ZERO,
            headers: Vec::new(),
            stream: None,
            broken: false,
            gate: None,
        }
    }

    /// A reply whose body is `text` as written, sent as JSON.
    pub fn raw(status: u16, text: impl Into<String>) -> Self {
        AgentReply {
            raw: Some(text.into()),
            ..AgentReply::error(status, "")
        }
    }

    /// The same reply after `delay` (an agent slower than its time-out times out).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// One call an agent received.
#[derive(Debug, Clone)]
pub struct ReceivedCall {
    pub idempotency_key: Option<String>,
    pub body: Value,
    /// When the call arrived (epoch ms).
    pub at_ms: i64,
}

pub type Behaviour = Arc<dyn Fn(&Value) -> AgentReply + Send + Sync>;

/// A running agent. It stops when dropped. `GET /health` answers 200 while it is healthy and
/// 503 once [`AgentServer::set_healthy`] says otherwise; every other request is a call.
pub struct AgentServer {
    pub url: String,
    calls: Arc<Mutex<Vec<ReceivedCall>>>,
    healthy: Arc<AtomicBool>,
    /// Streamed answers whose client closed the connection before their end.
    streams_cut: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl AgentServer {
    /// Starts an agent on a free loopback port.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let calls: Arc<Mutex<Vec<ReceivedCall>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let recorded = calls.clone();
        let healthy = Arc::new(AtomicBool::new(true));
        let health = healthy.clone();
        let streams_cut = Arc::new(AtomicUsize::new(0));
        let cut = streams_cut.clone();
        let app = axum::Router::new()
            .route(
                "/health",
                axum::routing::get(move || {
                    let up = health.load(Ordering::Relaxed);
                    async move {
                        if up {
                            (StatusCode::OK, axum::Json(json!({ "status": "ok" })))
                        } else {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(json!({ "status": "down" })),
                            )
                        }
                    }
                }),
            )
            .fallback(move |request: Request| {
                let behaviour = behaviour.clone();
                let recorded = recorded.clone();
                let cut = cut.clone();
                async move { answer(request, &behaviour, &recorded, cut).await }
            });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(AgentServer {
            url,
            calls,
            healthy,
            streams_cut,
            stop,
        })
    }

    /// Makes `GET /health` answer 200 (healthy) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// How many streamed answers were not sent to their end: their client closed the
    /// connection, or the answer broke off.
    pub fn streams_cut(&self) -> usize {
        self.streams_cut.load(Ordering::SeqCst)
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn answer(
    request: Request,
    behaviour: &Behaviour,
    calls: &Mutex<Vec<ReceivedCall>>,
    streams_cut: Arc<AtomicUsize>,
) -> Response {
    let idempotency_key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // As much as a call can carry: a task's input and its dependencies' outputs.
    let Ok(bytes) = axum::body::to_bytes(request.into_body(), 16 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "body is not JSON"})),
        )
            .into_response();
    };
    if let Ok(mut calls) = calls.lock() {
        calls.push(ReceivedCall {
            idempotency_key,
            body: body.clone(),
            at_ms: baton_types::clock::now_ms(),
        });
    }
    let reply = behaviour(&body);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some((content_type, parts, pace)) = reply.stream {
        let cut = reply
            .broken
            .then(|| Err(std::io::Error::other("the agent broke off its answer")));
        let parts: Vec<std::io::Result<String>> = parts.into_iter().map(Ok).chain(cut).collect();
        let watch = CutWatch::new(streams_cut);
        let gate = reply.gate;
        let paced = futures::stream::unfold(
            (parts.into_iter().enumerate(), watch),
            move |(mut parts, mut watch)| {
                let gate = gate.clone();
                async move {
                    tokio::time::sleep(pace).await;
                    match parts.next() {
                        Some((i, part)) => {
                            if let Some((_, gate)) = gate.filter(|(at, _)| *at == i) {
                                gate.notified().await;
                            }
                            Some((part, (parts, watch)))
                        }
                        None => {
                            watch.finish();
                            drop(watch);
                            None
                        }
                    }
                }
            },
        );
        return (
            status,
            [(axum::http::header::CONTENT_TYPE, content_type)],
            axum::body::Body::from_stream(paced),
        )
            .into_response();
    }
    let mut response = match reply.raw {
        Some(text) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        None => (status, axum::Json(reply.body)).into_response(),
    };
    for (name, value) in reply.headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The example agents: honest, simple text tools that work on `input.text`, or on the text
/// their dependencies produced.
pub mod examples {
    use super::*;

    /// (name, capability, behaviour)
    pub fn all() -> Vec<(&'static str, &'static str, Behaviour)> {
        vec![
            ("normalizer", "text.normalize", Arc::new(normalize)),
            ("counter", "text.stats", Arc::new(stats)),
            ("shouter", "text.transform", Arc::new(shout)),
            ("reporter", "report.compose", Arc::new(report)),
        ]
    }

    /// The text a call works on: its own input's, else the first dependency output's.
    fn text_of(call: &Value) -> Option<String> {
        if let Some(text) = call.pointer("/input/text").and_then(Value::as_str) {
            return Some(text.to_string());
        }
        call.get("dependencies")?
            .as_object()?
            .values()
            .find_map(|output| output.get("text").and_then(Value::as_str))
            .map(str::to_string)
    }

    fn with_text(call: &Value, f: impl Fn(&str) -> Value) -> AgentReply {
        match text_of(call) {
            Some(text) => AgentReply::ok(f(&text)),
            None => AgentReply::error(
                422,
                "no text: give input.text or depend on a task that outputs text",
            ),
        }
    }

    /// Collapses runs of whitespace and trims.
    pub fn normalize(call: &Value) -> AgentReply {
        with_text(
            call,
            |text| json!({ "text": text.split_whitespace().collect::<Vec<_>>().join(" ") }),
        )
    }

    /// Counts words, characters and sentences.
    pub fn stats(call: &Value) -> AgentReply {
        with_text(call, |text| {
            json!({
                "words": text.split_whitespace().count(),
                "characters": text.chars().count(),
                "sentences": text.split(['.', '!', '?']).filter(|s| !s.trim().is_empty()).count(),
            })
        })
    }

    /// Upper-cases the text.
    pub fn shout(call: &Value) -> AgentReply {
        with_text(call, |text| json!({ "text": text.to_uppercase() }))
    }

    /// Composes one report from every dependency's output.
    pub fn report(call: &Value) -> AgentReply {
        let parts = call
            .get("dependencies")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let count = parts.as_object().map_or(0, |p| p.len());
        AgentReply::ok(json!({
            "title": call.pointer("/input/title").cloned().unwrap_or_else(|| json!("Report")),
            "sections": count,
            "parts": parts,
        }))
    }
}
