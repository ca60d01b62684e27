//! `GET /v1/workflows/{id}/tasks/{task}/events?after=N&wait=S`: a task's stream, read from
//! any number on (see [`baton_types::stream`]). A client passes the number of the last event
//! it has and gets what follows, each event once and in order however often it asks again;
//! when nothing follows yet, the answer waits up to `wait` seconds for it. Once the task is
//! final, the stream closes with an `end` event numbered after its last, and `done` is true.
//! Every task has a stream: one that did not stream has only its `end`.
//!
//! `GET /v1/workflows/{id}/events` is the workflow's own stream: its tasks' milestones
//! (`ready`, `started`, `retried`, `ended`, with output previews) and its `end` (see
//! [`baton_types::progress`]). `POST /v1/stream-tokens` gives a link to either stream on the
//! streaming endpoint, which pushes them as server-sent events.

use std::time::{Duration, Instant};

use baton_chain::finish::finish_at;
use baton_chain::store::{StreamLog, WorkflowStore};
use baton_chain::watch::{self, StreamRead, WorkflowWatch};
use baton_types::clock::now_ms;
use baton_types::ids::{TaskId, WorkflowId};
use baton_types::stream::StreamEvent;
use baton_types::stream_token::{self, StreamClaims, StreamPath, TOKEN_TTL_S};
use lambda_http::{Body, RequestExt, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::Api;

/// How long an answer waits for events by default, and at most: under API Gateway's
/// integration time-out.
const DEFAULT_WAIT_S: f64 = 10.0;
const MAX_WAIT_S: f64 = 25.0;
/// How often a waiting answer looks again: a task's log is one small read; a workflow's
/// events read the whole workflow.
const TASK_POLL: Duration = Duration::from_millis(200);
const WORKFLOW_POLL: Duration = Duration::from_millis(500);

/// The body of a stream read.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskEvents {
    /// The events after `after`, in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<EventDoc>))]
    pub events: Vec<StreamEvent>,
    /// What to pass as `after` next: the last event's number (or `after` when none came).
    pub next_after: u64,
    /// The stream has ended: its `end` event is in this answer or an earlier one.
    pub done: bool,
}

impl From<StreamRead> for TaskEvents {
    fn from(read: StreamRead) -> Self {
        TaskEvents {
            events: read.events,
            next_after: read.next_after,
            done: read.done,
        }
    }
}

/// One event of a stream as it is written: its number, time and attempt, its `type`, and the
/// fields of that type.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(as = StreamEvent)]
#[allow(dead_code)]
pub struct EventDoc {
    /// Its number in the task's stream, from 1.
    seq: u64,
    /// When it was written (epoch ms).
    at_ms: i64,
    /// The attempt it belongs to.
    attempt: u32,
    r#type: EventType,
    /// `start`, `started`: the agent called.
    agent: Option<String>,
    /// A workflow's events: the task they are about.
    task: Option<String>,
    /// A workflow's events: the drive (0 until a redrive) of the task.
    drive: Option<u32>,
    /// `retried`, `ended`: the attempt's or the task's failure.
    error: Option<String>,
    /// `chunk`: text the agent produced.
    text: Option<String>,
    /// `abandoned`: why the attempt stopped without its answer.
    reason: Option<String>,
    /// `end`, `ended`: the task's (or workflow's) final status.
    status: Option<String>,
    /// `end`, `ended`: the start of its output.
    output_preview: Option<String>,
}

/// What an event says.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EventType {
    Start,
    Chunk,
    Abandoned,
    End,
    Ready,
    Started,
    Retried,
    Ended,
}

#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}/tasks/{task}/events",
    tag = "workflows",
    params(
        crate::paths::TaskPath,
        crate::paths::EventsQuery,
    ),
    responses(
        (status = 200, body = TaskEvents),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn task_events<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: WorkflowStore + StreamLog,
{
    let tenant = &call.tenant()?;
    let (id, task) = (call.param("id"), call.param("task"));
    let missing = || ApiError::NotFound(format!("workflow `{id}` has no task `{task}`"));
    let workflow_id = &WorkflowId::parse(id).map_err(|_| missing())?;
    let task_id = &TaskId::parse(task).map_err(|_| missing())?;
    let (after, wait) = read_options(call)?;
    if timed("store", api.store.workflow_status(tenant, workflow_id))
        .await?
        .is_none()
    {
        return Err(missing());
    }
    let until = Instant::now() + wait;
    loop {
        let read = timed(
            "store",
            watch::task_stream(&api.store, tenant, workflow_id, task_id, after),
        )
        .await?
        .ok_or_else(missing)?;
        if !read.events.is_empty() || read.done || Instant::now() >= until {
            return Ok(json_response(200, &TaskEvents::from(read)));
        }
        tokio::time::sleep(TASK_POLL).await;
    }
}

#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}/events",
    tag = "workflows",
    params(
        crate::paths::IdPath,
        crate::paths::EventsQuery,
    ),
    responses(
        (status = 200, body = TaskEvents,
            description = "The workflow's events: its tasks' `ready`, `started`, `retried` and `ended`, then its `end`"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn workflow_events<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: WorkflowStore + StreamLog,
{
    let tenant = &call.tenant()?;
    let id = call.param("id");
    let missing = || ApiError::NotFound(format!("workflow `{id}` does not exist"));
    let workflow_id = &WorkflowId::parse(id).map_err(|_| missing())?;
    let (after, wait) = read_options(call)?;
    let until = Instant::now() + wait;
    let mut watch = WorkflowWatch::default();
    let expires_at_s = finish_at(&api.settings, now_ms()).expires_at_s;
    loop {
        let read = timed(
            "store",
            watch::workflow_stream(
                &api.store,
                &mut watch,
                tenant,
                workflow_id,
                after,
                expires_at_s,
            ),
        )
        .await?
        .ok_or_else(missing)?;
        if !read.events.is_empty() || read.done || Instant::now() >= until {
            return Ok(json_response(200, &TaskEvents::from(read)));
        }
        tokio::time::sleep(WORKFLOW_POLL).await;
    }
}

/// A read's `after` and `wait`, each checked.
fn read_options(call: &Call<'_>) -> Result<(u64, Duration), ApiError> {
    let query = call.request.query_string_parameters();
    let after = match query.first("after") {
        None => 0,
        Some(n) => n.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                format!("after must be the number of an event (0 or more), got `{n}`"),
                json!({ "field": "after" }),
            )
        })?,
    };
    let wait = match query.first("wait") {
        None => DEFAULT_WAIT_S,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..=MAX_WAIT_S).contains(s))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("wait must be 0 to {MAX_WAIT_S} seconds, got `{s}`"),
                    json!({ "field": "wait" }),
                )
            })?,
    };
    Ok((after, Duration::from_secs_f64(wait)))
}

/// What a stream link is asked for.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamTokenInput {
    /// The stream: `/v1/workflows/{id}/events` (with `?task={task}`: one task's stream beside
    /// the workflow's, as a conversation turn's `stream` names it) or
    /// `/v1/workflows/{id}/tasks/{task}/events`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "/v1/workflows/wf-1/events",
            pattern = "^/v1/workflows/[A-Za-z0-9][A-Za-z0-9_.-]{0,35}/(events(\\?task=[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?|tasks/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/events)$"
        )
    )]
    pub path: String,
}

/// A link that opens one stream on the streaming endpoint, for minutes.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamToken {
    /// The token alone (send it as `?token=` or `Authorization: Bearer`).
    pub token: String,
    /// The stream's URL on the streaming endpoint, token included: open it with any
    /// server-sent events client (`EventSource`); resume with `Last-Event-ID`.
    pub url: String,
    /// When the token stops opening streams (epoch s); a stream it opened runs on.
    pub expires_at: i64,
}

#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/stream-tokens", tag = "workflows",
    request_body = StreamTokenInput,
    responses(
        (status = 201, body = StreamToken),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
    )))]
pub async fn stream_token<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: WorkflowStore,
{
    let tenant = call.tenant()?;
    let input: StreamTokenInput = parse_body(call.request)?;
    let invalid = || {
        ApiError::invalid(
            format!(
                "path must be /v1/workflows/{{id}}/events (with ?task={{task}} for one task's stream beside it) or /v1/workflows/{{id}}/tasks/{{task}}/events, got `{}`",
                input.path.chars().take(200).collect::<String>()
            ),
            json!({ "field": "path" }),
        )
    };
    let (path, query) = input.path.split_once('?').unwrap_or((&input.path, ""));
    let stream = StreamPath::parse(path).ok_or_else(invalid)?;
    let beside = match (&stream, query) {
        (_, "") => None,
        (StreamPath::Workflow(_), query) => Some(
            query
                .strip_prefix("task=")
                .and_then(|task| TaskId::parse(task).ok())
                .ok_or_else(invalid)?,
        ),
        (StreamPath::Task(..), _) => return Err(invalid()),
    };
    // Another tenant's workflow answers as one that does not exist.
    let workflow_id = stream.workflow_id();
    let exists = match (&stream, &beside) {
        (StreamPath::Workflow(_), None) => {
            timed("store", api.store.workflow_status(&tenant, workflow_id))
                .await?
                .is_some()
        }
        (StreamPath::Task(_, task), _) | (_, Some(task)) => {
            timed("store", api.store.task(&tenant, workflow_id, task))
                .await?
                .is_some()
        }
    };
    if !exists {
        return Err(ApiError::NotFound(format!(
            "no stream at `{}`",
            input.path.chars().take(200).collect::<String>()
        )));
    }
    let (Some(key), Some(base)) = (&api.stream_key, &api.settings.stream.url) else {
        return Err(ApiError::Unavailable(
            "this deployment has no streaming endpoint".into(),
        ));
    };
    let expires_at = now_ms() / 1000 + TOKEN_TTL_S;
    let claims = StreamClaims {
        t: tenant.to_string(),
        p: stream.path(),
        e: expires_at,
    };
    let token = stream_token::mint(key, &claims)
        .map_err(|e| ApiError::Unavailable(format!("stream tokens cannot be signed: {e}")))?;
    let url = match beside {
        Some(task) => format!("{base}{}?task={task}&token={token}", stream.path()),
        None => format!("{base}{}?token={token}", stream.path()),
    };
    Ok(json_response(
        201,
        &StreamToken {
            token,
            url,
            expires_at,
        },
    ))
}
