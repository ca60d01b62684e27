//! `GET /v1/workflows/{id}/tasks/{task}/events?after=N&wait=S`: a task's stream, read from
//! any number on (see [`baton_types::stream`]). A client passes the number of the last event
//! it has and gets what follows, each event once and in order however often it asks again;
//! when nothing follows yet, the answer waits up to `wait` seconds for it. Once the task is
//! final, the stream closes with an `end` event numbered after its last, and `done` is true.
//! Every task has a stream: one that did not stream has only its `end`.

use std::time::{Duration, Instant};

use baton_chain::store::{StreamLog, WorkflowStore};
use baton_types::clock::now_ms;
use baton_types::ids::{TaskId, TenantId, WorkflowId};
use baton_types::records::TaskRecord;
use baton_types::results;
use baton_types::stream::{EventKind, StreamEvent, MAX_EVENTS_PER_READ};
use lambda_http::{Body, RequestExt, Response};
use serde::Serialize;
use serde_json::json;

use crate::error::{json_response, ApiError};
use crate::routes::Call;
use crate::timing::timed;
use crate::Api;

/// How long an answer waits for events by default, and at most: under API Gateway's
/// integration time-out.
const DEFAULT_WAIT_S: f64 = 10.0;
const MAX_WAIT_S: f64 = 25.0;
/// How often a waiting answer looks again.
const POLL: Duration = Duration::from_millis(200);

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
    /// `start`: the agent called.
    agent: Option<String>,
    /// `chunk`: text the agent produced.
    text: Option<String>,
    /// `abandoned`: why the attempt stopped without its answer.
    reason: Option<String>,
    /// `end`: the task's final status.
    status: Option<String>,
    /// `end`: the start of its output.
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
    if timed("store", api.store.workflow_status(tenant, workflow_id))
        .await?
        .is_none()
    {
        return Err(missing());
    }
    let until = Instant::now() + Duration::from_secs_f64(wait);
    loop {
        let read = read(api, tenant, workflow_id, task_id, after).await?;
        let Some(read) = read else {
            return Err(missing());
        };
        if !read.events.is_empty() || read.done || Instant::now() >= until {
            return Ok(json_response(200, &read));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One look at the task's stream after `after`; None: no such task.
async fn read<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    workflow_id: &WorkflowId,
    task_id: &TaskId,
    after: u64,
) -> Result<Option<TaskEvents>, ApiError>
where
    S: WorkflowStore + StreamLog,
{
    // The task's state first: every event written before it was final is then in the log.
    let Some(record) = timed("store", api.store.task(tenant, workflow_id, task_id)).await? else {
        return Ok(None);
    };
    let mut events = timed(
        "store",
        api.store
            .events_after(tenant, workflow_id, task_id, after, MAX_EVENTS_PER_READ),
    )
    .await?;
    let mut done = false;
    if record.status.is_terminal() && events.len() < MAX_EVENTS_PER_READ {
        let last = timed("store", api.store.last_event(tenant, workflow_id, task_id))
            .await?
            .map_or(0, |e| e.seq);
        let end_seq = last + 1;
        let read_to = events.last().map_or(after, |e| e.seq);
        if after >= end_seq {
            done = true;
        } else if read_to == last {
            events.push(end_event(&record, end_seq));
            done = true;
        }
    }
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Some(TaskEvents {
        events,
        next_after,
        done,
    }))
}

/// The `end` of a final task's stream.
fn end_event(record: &TaskRecord, seq: u64) -> StreamEvent {
    StreamEvent {
        seq,
        at_ms: record.finished_at_ms.unwrap_or_else(now_ms),
        attempt: record.attempt,
        kind: EventKind::End {
            status: record.status.to_string(),
            output_preview: record.output.as_ref().map(results::preview),
        },
    }
}
