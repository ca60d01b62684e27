//! The streaming endpoint: a task's or a workflow's stream pushed as server-sent events, from
//! a Lambda function URL in `RESPONSE_STREAM` mode (see docs/ARCHITECTURE.md, "Streaming").
//!
//! - `GET /v1/workflows/{id}/tasks/{task}/events` pushes the task's stream; `GET
//!   /v1/workflows/{id}/events` the workflow's, and with `?task=` one task's stream beside it
//!   (a conversation turn: its helpers' milestones and its answer's tokens).
//! - A request carries a stream token (`?token=` or `Authorization: Bearer`), which the
//!   authenticated API mints for one tenant and one path (`POST /v1/stream-tokens`). Nothing
//!   else opens a stream; another tenant's workflow answers as one that does not exist.
//! - Each event's `id` is its number (`w.t` for two streams); a client that reconnects with
//!   `Last-Event-ID` gets what follows, each event once and in order. A stream closes after
//!   its `end`, and before the function's time-out; a comment every
//!   [`HEARTBEAT`] keeps quiet connections open.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use baton_chain::config::Settings;
use baton_chain::finish::finish_at;
use baton_chain::store::{StoreError, StreamLog, StreamSlots, WorkflowStore};
use baton_chain::watch::{self, WorkflowWatch};
use baton_types::clock::now_ms;
use baton_types::ids::{TaskId, TenantId, WorkflowId};
use baton_types::stream::{resume_after, sse_frame, EventKind, StreamEvent};
use baton_types::stream_token::{self, StreamPath};
use bytes::Bytes;
use futures::stream::{self, Stream};
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::StreamBody;
use lambda_http::{Request, RequestExt, Response};
use serde_json::json;
use tokio::time::Instant;

/// A comment this often keeps a quiet stream's connection open through proxies.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The longest one response streams: under the function's 15-minute time-out; the client
/// reconnects with `Last-Event-ID` and goes on where it stopped.
pub const MAX_RESPONSE: Duration = Duration::from_secs(14 * 60);
/// How often a task's log is read while it streams: its text's delay on top of the batch's.
const TASK_POLL: Duration = Duration::from_millis(100);
/// How often a workflow is read for new milestones (a read of all its tasks).
const WORKFLOW_POLL: Duration = Duration::from_millis(500);
/// How long a client waits before it reconnects after a dropped connection.
const RETRY_MS: u64 = 1_000;

/// What the stream function needs.
pub struct StreamDeps<S> {
    pub store: S,
    pub settings: Settings,
    /// What stream tokens are signed with.
    pub key: Vec<u8>,
}

/// A response body that is written as the stream goes on.
pub type EventBody = StreamBody<Pin<Box<dyn Stream<Item = Result<Frame, Infallible>> + Send>>>;
type Frame = http_body::Frame<Bytes>;

/// One request to the streaming endpoint. Refusals are JSON, in the API's error shape.
pub async fn handle_request<S>(
    deps: Arc<StreamDeps<S>>,
    request: Request,
) -> Result<Response<EventBody>, Infallible>
where
    S: WorkflowStore + StreamLog + StreamSlots + 'static,
{
    let origin = allowed_origin(&deps.settings, &request);
    let mut response = match open(deps, &request).await {
        Ok(response) => response,
        Err(refusal) => refusal.response(),
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        if request.method() == Method::OPTIONS {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, last-event-id, cache-control"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    Ok(response)
}

/// The request's `Origin`, when the deployment lets pages of it read streams.
fn allowed_origin(settings: &Settings, request: &Request) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    settings
        .stream
        .origins
        .iter()
        .any(|allowed| allowed == "*" || allowed == text)
        .then(|| origin.clone())
}

/// Why a stream was not opened.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    fn response(self) -> Response<EventBody> {
        let body = json!({"error": {"code": self.code, "message": self.message, "details": {}}});
        let mut response = Response::new(single(body.to_string()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "a stream could not be read");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the stream cannot be read now; try again",
        )
    }
}

fn single(text: String) -> EventBody {
    let frame: Result<Frame, Infallible> = Ok(Frame::data(Bytes::from(text)));
    StreamBody::new(Box::pin(stream::iter([frame])))
}

fn empty() -> EventBody {
    StreamBody::new(Box::pin(stream::empty()))
}

/// Checks the request, then answers with its stream.
async fn open<S>(
    deps: Arc<StreamDeps<S>>,
    request: &Request,
) -> Result<Response<EventBody>, Refusal>
where
    S: WorkflowStore + StreamLog + StreamSlots + 'static,
{
    if request.method() == Method::OPTIONS {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok(response);
    }
    if request.method() != Method::GET {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "streams are read with GET",
        ));
    }
    let path = request.uri().path().to_string();
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream at `{path}`"),
        )
    };
    let stream_path = StreamPath::parse(&path).ok_or_else(not_found)?;
    let query = request.query_string_parameters();
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = query.first("token").or(bearer).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a stream needs its token (`?token=`, from POST /v1/stream-tokens)",
        )
    })?;
    let claims = stream_token::verify(&deps.key, token, &path, now_ms() / 1000)
        .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    let tenant = TenantId::parse(&claims.t).map_err(|_| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the stream token names no tenant",
        )
    })?;
    let workflow_id = stream_path.workflow_id().clone();
    let (task, streams) = match (&stream_path, query.first("task")) {
        (StreamPath::Task(_, task), None) => (Some(task.clone()), Which::Task),
        (StreamPath::Workflow(_), None) => (None, Which::Workflow),
        (StreamPath::Workflow(_), Some(task)) => (
            Some(TaskId::parse(task).map_err(|_| not_found())?),
            Which::Both,
        ),
        (StreamPath::Task(..), Some(_)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "`task` is for a workflow's stream",
            ))
        }
    };
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    let cursor =
        resume_after(last_event_id, query.first("after"), streams.count()).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Last-Event-ID (or `after`) must be an event id this stream gave",
            )
        })?;
    let mut reader = Reader {
        deps,
        tenant,
        workflow_id,
        task,
        workflow_after: 0,
        task_after: 0,
        watch: WorkflowWatch::default(),
        workflow_done: !streams.has_workflow(),
        task_done: !streams.has_task(),
        workflow_read_at: None,
        streams,
    };
    match streams {
        Which::Task => reader.task_after = cursor[0],
        Which::Workflow => reader.workflow_after = cursor[0],
        Which::Both => {
            reader.workflow_after = cursor[0];
            reader.task_after = cursor[1];
        }
    }
    // The first read answers a stream that does not exist, or one already read to its end.
    let first = reader.read(true).await?.ok_or_else(not_found)?;
    if reader.resumes_past_the_end().await? {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Last-Event-ID (or `after`) is past the stream's last event: it is not an id this stream gave",
        ));
    }
    if first.is_empty() && reader.done() {
        // What a server-sent events client takes as "do not reconnect".
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok(response);
    }
    // Past its checks, the stream takes one of the tenant's slots for as long as it runs.
    let slot = Slot::take(&reader).await?;
    let opening = format!("retry: {RETRY_MS}\n\n{first}");
    let started = Instant::now();
    let body = stream::unfold(
        (reader, Some(opening), started, Instant::now(), slot),
        |(mut reader, pending, started, mut last_sent, mut slot)| async move {
            if let Some(text) = pending {
                let frame = Ok(Frame::data(Bytes::from(text)));
                return Some((frame, (reader, None, started, Instant::now(), slot)));
            }
            match next_frame(&mut reader, started, &mut last_sent).await {
                Some(bytes) => Some((
                    Ok(Frame::data(bytes)),
                    (reader, None, started, last_sent, slot),
                )),
                None => {
                    slot.free().await;
                    None
                }
            }
        },
    );
    let mut response = Response::new(StreamBody::new(
        Box::pin(body) as Pin<Box<dyn Stream<Item = _> + Send>>
    ));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What the stream sends next: new events, or a heartbeat after [`HEARTBEAT`] of quiet; None
/// once it has ended, has run [`MAX_RESPONSE`], or cannot be read (the client reconnects).
async fn next_frame<S>(
    reader: &mut Reader<S>,
    started: Instant,
    last_sent: &mut Instant,
) -> Option<Bytes>
where
    S: WorkflowStore + StreamLog,
{
    loop {
        if reader.done() || started.elapsed() >= MAX_RESPONSE {
            return None;
        }
        tokio::time::sleep(TASK_POLL).await;
        match reader.read(false).await {
            Ok(Some(text)) if !text.is_empty() => {
                *last_sent = Instant::now();
                return Some(Bytes::from(text));
            }
            Ok(Some(_)) => {}
            // The workflow is gone (expired): nothing more will come.
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(
                    ?error,
                    "a stream's read failed; it closes for the client to reconnect"
                );
                return None;
            }
        }
        if last_sent.elapsed() >= HEARTBEAT {
            *last_sent = Instant::now();
            return Some(Bytes::from_static(b": ping\n\n"));
        }
    }
}

/// One of the tenant's stream slots, held while the response streams: freed at its end, or,
/// when the client goes away first, as the response is dropped; one never freed lapses after
/// the longest response.
struct Slot<S: StreamSlots + 'static> {
    deps: Arc<StreamDeps<S>>,
    tenant: TenantId,
    id: String,
    freed: bool,
}

impl<S> Slot<S>
where
    S: WorkflowStore + StreamLog + StreamSlots + 'static,
{
    async fn take(reader: &Reader<S>) -> Result<Self, Refusal> {
        let deps = reader.deps.clone();
        let limit = deps.settings.stream.per_tenant;
        let id = format!("{}-{}", now_ms(), uuid::Uuid::new_v4().simple());
        let now = now_ms();
        let until = now + MAX_RESPONSE.as_millis() as i64 + 60_000;
        if !deps
            .store
            .take_stream_slot(&reader.tenant, &id, limit, now, until)
            .await?
        {
            let mut refusal = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!("this tenant has {limit} streams open, as many as it may; close one or wait for one to end"),
            );
            refusal.retry_after_s = Some(5);
            return Err(refusal);
        }
        Ok(Slot {
            deps,
            tenant: reader.tenant.clone(),
            id,
            freed: false,
        })
    }

    async fn free(&mut self) {
        self.freed = true;
        if let Err(error) = self
            .deps
            .store
            .free_stream_slot(&self.tenant, &self.id)
            .await
        {
            tracing::warn!(%error, "a stream slot not freed; it lapses by itself");
        }
    }
}

impl<S: StreamSlots + 'static> Drop for Slot<S> {
    fn drop(&mut self) {
        if self.freed {
            return;
        }
        let (deps, tenant, id) = (self.deps.clone(), self.tenant.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = deps.store.free_stream_slot(&tenant, &id).await {
                    tracing::warn!(%error, "a stream slot not freed; it lapses by itself");
                }
            });
        }
    }
}

/// Which streams one response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Task,
    Workflow,
    Both,
}

impl Which {
    fn count(self) -> usize {
        match self {
            Which::Both => 2,
            _ => 1,
        }
    }

    fn has_task(self) -> bool {
        self != Which::Workflow
    }

    fn has_workflow(self) -> bool {
        self != Which::Task
    }
}

/// One response's reading: where each stream is, and whether it has ended.
struct Reader<S> {
    deps: Arc<StreamDeps<S>>,
    tenant: TenantId,
    workflow_id: WorkflowId,
    task: Option<TaskId>,
    workflow_after: u64,
    task_after: u64,
    watch: WorkflowWatch,
    workflow_done: bool,
    task_done: bool,
    workflow_read_at: Option<Instant>,
    streams: Which,
}

impl<S> Reader<S>
where
    S: WorkflowStore + StreamLog,
{
    /// Whether the client asked to resume after a number the stream has not given (its
    /// first read is done, so the workflow's log is up to date).
    async fn resumes_past_the_end(&self) -> Result<bool, StoreError> {
        if self.streams.has_workflow() && self.workflow_after > self.watch.last_seq() {
            return Ok(true);
        }
        match &self.task {
            Some(task) if self.task_after > 0 => {
                let last = self
                    .deps
                    .store
                    .last_event(&self.tenant, &self.workflow_id, task)
                    .await?
                    .map_or(0, |e| e.seq);
                // The task's `end` is numbered after its last written event.
                Ok(self.task_after > last + 1)
            }
            _ => Ok(false),
        }
    }

    fn done(&self) -> bool {
        self.workflow_done && self.task_done
    }

    /// The id of the event just read: each stream's number, dotted.
    fn id(&self) -> String {
        match self.streams {
            Which::Task => self.task_after.to_string(),
            Which::Workflow => self.workflow_after.to_string(),
            Which::Both => format!("{}.{}", self.workflow_after, self.task_after),
        }
    }

    /// The frames of what follows; None when the workflow or task does not exist. With both
    /// streams, the watched task's text goes before its `ended` and the workflow's `end`.
    async fn read(&mut self, first: bool) -> Result<Option<String>, StoreError> {
        // The task first: when it has news, the workflow is read after it, so the task's own
        // milestones (its `started`) go out before its text.
        let mut task_read = None;
        if let (false, Some(task)) = (self.task_done, &self.task) {
            let Some(read) = watch::task_stream(
                &self.deps.store,
                &self.tenant,
                &self.workflow_id,
                task,
                self.task_after,
            )
            .await?
            else {
                return Ok(None);
            };
            task_read = Some(read);
        }
        let task_news = task_read.as_ref().is_some_and(|r| !r.events.is_empty());
        let mut workflow_read = None;
        if !self.workflow_done
            && (first
                || task_news
                || self
                    .workflow_read_at
                    .is_none_or(|at| at.elapsed() >= WORKFLOW_POLL))
        {
            self.workflow_read_at = Some(Instant::now());
            let expires_at_s = finish_at(&self.deps.settings, now_ms()).expires_at_s;
            let Some(read) = watch::workflow_stream(
                &self.deps.store,
                &mut self.watch,
                &self.tenant,
                &self.workflow_id,
                self.workflow_after,
                expires_at_s,
            )
            .await?
            else {
                return Ok(None);
            };
            workflow_read = Some(read);
        }
        let mut text = String::new();
        let (before, after, workflow_done) = match workflow_read {
            Some(read) => {
                let watched = self.task.as_ref().map(|t| t.as_str());
                let closing = read.events.iter().position(|e| match &e.kind {
                    EventKind::End { .. } => true,
                    EventKind::Ended { task, .. } => Some(task.as_str()) == watched,
                    _ => false,
                });
                let mut events = read.events;
                let rest = events.split_off(closing.unwrap_or(events.len()));
                (events, rest, read.done)
            }
            None => (Vec::new(), Vec::new(), self.workflow_done),
        };
        self.frames(&before, &mut text, true);
        if let Some(read) = task_read {
            self.frames(&read.events, &mut text, false);
            self.task_done = read.done;
        }
        // The watched task's `ended` and the workflow's `end` wait for the task's stream to end:
        // text written before the task ended may not have been read yet. Held back, they are
        // read again (the workflow's number stays before them).
        if self.task_done {
            self.frames(&after, &mut text, true);
            self.workflow_done = workflow_done;
        } else if after.is_empty() {
            self.workflow_done = workflow_done;
        }
        Ok(Some(text))
    }

    /// Appends the frames of one stream's events, moving its number on.
    fn frames(&mut self, events: &[StreamEvent], text: &mut String, workflow: bool) {
        for event in events {
            if workflow {
                self.workflow_after = event.seq;
            } else {
                self.task_after = event.seq;
            }
            text.push_str(&sse_frame(event, &self.id()));
        }
    }
}
