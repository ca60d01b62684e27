//! A workflow once submitted: its view, one task whole, its history, the list of them, a
//! picture of its graph, and the controls (cancel, pause, resume, retry).

use baton_chain::hold::{reconcile, Reconciled};
use baton_chain::queue::TaskQueue;
use baton_chain::store::{ControlApplied, ControlWrite, WorkflowFilter};
use baton_types::clock::{now_ms, parse_rfc3339, rfc3339};
use baton_types::control::{
    decide, redrive_plan, ControlAction, ControlChange, ControlEvent, Refusal,
};
use baton_types::graph::{render, GraphFormat};
use baton_types::history::history;
use baton_types::names::{check_name, NameKind};
use baton_types::outcome::{TaskFailure, TokenUsage};
use baton_types::priority::{Band, Priority};
use baton_types::records::{TaskRecord, WorkflowRecord, WorkflowView};
use baton_types::routing::RoutingStrategy;
use baton_types::task::{AttemptOutcome, AttemptRecord, TaskStatus};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::error::json_response;
use crate::timing::{timed, timed_sync};
use crate::{Api, ApiError, ApiStore};

/// A task's output larger than this (as JSON text) is left out of the workflow's view, so that
/// a workflow of 500 tasks stays within Lambda's 6 MB answer; `GET …/tasks/{task}` serves it.
pub const MAX_OUTPUT_IN_VIEW_BYTES: usize = 8 * 1024;
/// What of a left-out output the view shows.
const OUTPUT_PREVIEW_CHARS: usize = 256;
/// The list's page size: by default, and at most.
pub const DEFAULT_LIST_LIMIT: u32 = 20;
pub const MAX_LIST_LIMIT: u32 = 100;
/// A control decided on a read that changed before its write is decided again, this often.
const CONTROL_TRIES: usize = 5;
/// The statuses the list filters by.
pub const LIST_STATUSES: [&str; 6] = [
    "running",
    "paused",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
];

/// A workflow with its tasks (`GET /v1/workflows/{id}`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowDetail {
    pub workflow_id: String,
    pub name: String,
    /// `running`, `paused`, `cancelling`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub deadline_at: Option<String>,
    pub failed_task: Option<String>,
    pub error: Option<TaskFailure>,
    pub task_count: u32,
    pub tasks_remaining: u32,
    /// How many times it was retried (redriven).
    pub redrives: u32,
    pub tasks: Vec<TaskView>,
}

/// One task of a workflow.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    pub id: String,
    pub capability: String,
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    pub routing: Option<RoutingStrategy>,
    pub priority: Priority,
    pub band: Band,
    pub resources: BTreeMap<String, u64>,
    pub deadline: Option<String>,
    pub decision: Option<DecisionView>,
    pub status: TaskStatus,
    pub depends_on: Vec<String>,
    pub agent: Option<String>,
    pub attempt: u32,
    pub attempts: Vec<AttemptView>,
    pub lease_expirations: u32,
    /// The agent's output; in the workflow's view, absent when larger than 8 KiB (see
    /// `output_truncated`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub output: Option<Value>,
    /// Set when the output was left out of this view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_truncated: Option<TruncatedOutput>,
    pub error: Option<TaskFailure>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `pause` or `cancel` while its workflow holds it.
    pub hold: Option<String>,
}

/// An output too large for the workflow's view.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TruncatedOutput {
    /// The output's size as JSON text.
    pub bytes: usize,
    /// Its first 256 characters.
    pub preview: String,
    /// Where it is served whole.
    pub url: String,
}

/// How the current attempt's agent was chosen.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionView {
    pub strategy: RoutingStrategy,
    pub confidence: f64,
    pub fallbacks: Vec<String>,
    pub reasoning: String,
}

/// One ended attempt.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    pub attempt: u32,
    pub agent: Option<String>,
    pub outcome: AttemptOutcome,
    pub started_at: Option<String>,
    pub finished_at: String,
    pub error: Option<TaskFailure>,
    pub claims: u32,
    pub retry_delay_ms: Option<u64>,
    pub next_attempt_at: Option<String>,
    pub usage: Option<TokenUsage>,
    /// The result came after a forced cancel ended the task: kept, and it changed nothing.
    pub late: bool,
}

/// `GET /v1/workflows/{id}/plan`: the plan from what is learned now.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowPlan {
    pub workflow_id: String,
    pub status: String,
    pub plan: baton_types::dag::Plan,
}

/// A workflow in the list.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowSummary {
    pub workflow_id: String,
    pub name: String,
    pub status: String,
    pub task_count: u32,
    pub redrives: u32,
    pub failed_task: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// `GET /v1/workflows`: newest first.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
    /// Pass as `cursor` for the next page; null on the last. A filtered page may hold fewer
    /// than `limit` workflows and still have a next one.
    pub next_cursor: Option<String>,
}

/// `GET /v1/workflows/{id}/history`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowHistory {
    pub workflow_id: String,
    pub status: String,
    pub events: Vec<HistoryEntry>,
}

/// One transition.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub at: String,
    /// `submitted`, `queued`, `released`, `routed`, `claimed`, `succeeded`, `failed`,
    /// `retry_scheduled`, `skipped`, `cancelled`, `paused`, `resumed`, `cancel_requested`,
    /// `redriven` or `finished`.
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<Value>,
}

/// The answer to a control.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlAnswer {
    pub workflow_id: String,
    /// `cancel`, `pause`, `resume` or `retry`.
    pub action: String,
    /// The workflow's status after it.
    pub status: String,
    /// False when the workflow already was as asked (a second cancel or pause).
    pub changed: bool,
    pub tasks: ControlCounts,
}

/// What the control did to the tasks.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlCounts {
    pub cancelled: u32,
    pub held: u32,
    pub released: u32,
    pub restarted: u32,
}

pub fn shown_status(w: &WorkflowRecord) -> String {
    w.control_state().shown_status().to_string()
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("workflow `{id}` does not exist"))
}

/// A stored workflow with its tasks; 404 for an id that is not one.
pub async fn stored<S, Q>(api: &Api<S, Q>, tenant: &str, id: &str) -> Result<WorkflowView, ApiError>
where
    S: ApiStore,
{
    check_name(NameKind::Workflow, id).map_err(|_| not_found(id))?;
    timed("store", api.store.workflow(tenant, id))
        .await?
        .ok_or_else(|| not_found(id))
}

pub fn detail(view: &WorkflowView) -> WorkflowDetail {
    let w = &view.workflow;
    WorkflowDetail {
        workflow_id: w.id.clone(),
        name: w.name.clone(),
        status: shown_status(w),
        created_at: rfc3339(w.created_at_ms),
        updated_at: rfc3339(w.updated_at_ms),
        finished_at: w.finished_at_ms.map(rfc3339),
        deadline_at: w.deadline_at_ms.map(rfc3339),
        failed_task: w.failed_task.clone(),
        error: w.error.clone(),
        task_count: w.task_count,
        tasks_remaining: w.tasks_remaining,
        redrives: w.drive,
        tasks: view.tasks.iter().map(|t| task(t, true)).collect(),
    }
}

/// A task; `cut` leaves a large output out (the workflow's view).
pub fn task(t: &TaskRecord, cut: bool) -> TaskView {
    let mut output = t.output.clone();
    let mut output_truncated = None;
    // An output in the payload bucket: the view shows its size and first characters, and
    // the task's own URL reads it whole.
    if let (None, Some(stored)) = (&t.output, &t.output_ref) {
        output_truncated = Some(TruncatedOutput {
            bytes: stored.bytes as usize,
            preview: t
                .output_preview
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(OUTPUT_PREVIEW_CHARS)
                .collect(),
            url: format!("/v1/workflows/{}/tasks/{}", t.workflow_id, t.id),
        });
    }
    if cut {
        if let Some(value) = &t.output {
            let text = value.to_string();
            if text.len() > MAX_OUTPUT_IN_VIEW_BYTES {
                output = None;
                output_truncated = Some(TruncatedOutput {
                    bytes: text.len(),
                    preview: text.chars().take(OUTPUT_PREVIEW_CHARS).collect(),
                    url: format!("/v1/workflows/{}/tasks/{}", t.workflow_id, t.id),
                });
            }
        }
    }
    TaskView {
        id: t.id.clone(),
        capability: t.capability.clone(),
        task_type: t.profile.task_type.clone(),
        routing: t.profile.routing,
        priority: t.profile.priority.unwrap_or_default(),
        band: t.profile.band,
        resources: t.profile.resources.clone(),
        deadline: t.profile.deadline_at_ms.map(rfc3339),
        decision: t.decision.as_ref().map(|d| DecisionView {
            strategy: d.strategy,
            confidence: d.confidence,
            fallbacks: d.fallbacks.clone(),
            reasoning: d.reasoning.clone(),
        }),
        status: t.status,
        depends_on: t.depends_on.clone(),
        agent: t.agent.clone(),
        attempt: t.attempt,
        attempts: t.attempts.iter().map(attempt).collect(),
        lease_expirations: t.lease_expirations,
        output,
        output_truncated,
        error: t.failure.clone(),
        started_at: t.started_at_ms.map(rfc3339),
        finished_at: t.finished_at_ms.map(rfc3339),
        hold: t.hold.map(|h| h.as_str().to_string()),
    }
}

fn attempt(a: &AttemptRecord) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        agent: a.agent.clone(),
        outcome: a.outcome,
        started_at: a.started_at_ms.map(rfc3339),
        finished_at: rfc3339(a.finished_at_ms),
        error: a.error.clone(),
        claims: a.claims,
        retry_delay_ms: a.retry_delay_ms,
        next_attempt_at: a
            .retry_delay_ms
            .map(|d| rfc3339(a.finished_at_ms + d as i64)),
        usage: a.usage,
        late: a.late,
    }
}

/// `GET /v1/workflows/{id}/tasks/{task}`: one task, its output whole.
pub async fn one_task<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    id: &str,
    task_id: &str,
) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
{
    let missing = || ApiError::NotFound(format!("workflow `{id}` has no task `{task_id}`"));
    check_name(NameKind::Workflow, id).map_err(|_| not_found(id))?;
    check_name(NameKind::Task, task_id).map_err(|_| missing())?;
    // The workflow record makes its tasks visible: without it they are not there.
    if timed("store", api.store.workflow_status(tenant, id))
        .await?
        .is_none()
    {
        return Err(not_found(id));
    }
    // Whole: an output in the payload bucket is read from it.
    let record = timed("store", api.store.task_whole(tenant, id, task_id))
        .await?
        .ok_or_else(missing)?;
    Ok(json_response(200, &task(&record, false)))
}

/// `GET /v1/workflows/{id}/history`.
pub async fn workflow_history<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    id: &str,
) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
{
    let view = stored(api, tenant, id).await?;
    // Only a redriven workflow has an archive: any other's history reads nothing more.
    let archive = if view.workflow.drive > 0 {
        timed("store", api.store.archived_drives(tenant, id)).await?
    } else {
        Vec::new()
    };
    let events = history(&view, &archive)
        .into_iter()
        .map(|e| HistoryEntry {
            at: rfc3339(e.at_ms),
            event: e.event.to_string(),
            task: e.task,
            attempt: e.attempt,
            agent: e.agent,
            details: e.details,
        })
        .collect();
    Ok(json_response(
        200,
        &WorkflowHistory {
            workflow_id: view.workflow.id.clone(),
            status: shown_status(&view.workflow),
            events,
        },
    ))
}

/// `GET /v1/workflows/{id}/graph?format=mermaid|dot`, as text.
pub async fn graph<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
{
    let query = request.query_string_parameters();
    let name = query.first("format").unwrap_or("mermaid");
    let format = GraphFormat::parse(name).ok_or_else(|| {
        ApiError::invalid(
            format!(
                "format must be one of {}, got `{name}`",
                GraphFormat::NAMES.join(", ")
            ),
            json!({ "parameter": "format" }),
        )
    })?;
    let view = stored(api, tenant, id).await?;
    let text = render(&view, format, now_ms());
    Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::Text(text))
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// `GET /v1/workflows?status=&name=&since=&limit=&cursor=`.
pub async fn list<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
{
    let filter = timed_sync("validate", || list_filter(request))?;
    let page = timed("store", api.store.list_workflows(tenant, &filter)).await?;
    let workflows = page
        .workflows
        .iter()
        .map(|w| WorkflowSummary {
            workflow_id: w.id.clone(),
            name: w.name.clone(),
            status: w.control_state().shown_status().to_string(),
            task_count: w.task_count,
            redrives: w.drive,
            failed_task: w.failed_task.clone(),
            created_at: rfc3339(w.created_at_ms),
            finished_at: w.finished_at_ms.map(rfc3339),
        })
        .collect();
    Ok(json_response(
        200,
        &WorkflowList {
            workflows,
            next_cursor: page.next.as_deref().map(encode_cursor),
        },
    ))
}

fn list_filter(request: &Request) -> Result<WorkflowFilter, ApiError> {
    let query = request.query_string_parameters();
    let bad = |parameter: &str, message: String| {
        ApiError::invalid(message, json!({ "parameter": parameter }))
    };
    let status = match query.first("status") {
        None => None,
        Some(s) if LIST_STATUSES.contains(&s) => Some(s.to_string()),
        Some(s) => {
            return Err(bad(
                "status",
                format!(
                    "status must be one of {}, got `{s}`",
                    LIST_STATUSES.join(", ")
                ),
            ))
        }
    };
    let name = match query.first("name") {
        None => None,
        Some(n) if !n.is_empty() && n.chars().count() <= crate::MAX_WORKFLOW_NAME_CHARS => {
            Some(n.to_string())
        }
        Some(_) => {
            return Err(bad(
                "name",
                format!(
                    "name must be 1 to {} characters",
                    crate::MAX_WORKFLOW_NAME_CHARS
                ),
            ))
        }
    };
    let since_ms = match query.first("since") {
        None => None,
        Some(text) => Some(parse_rfc3339(text).filter(|ms| *ms >= 0).ok_or_else(|| {
            bad(
                "since",
                format!("since must be an RFC 3339 time, got `{text}`"),
            )
        })?),
    };
    let limit = match query.first("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
            .ok_or_else(|| {
                bad(
                    "limit",
                    format!(
                        "limit must be a whole number from 1 to {MAX_LIST_LIMIT}, got `{text}`"
                    ),
                )
            })?,
    };
    let after = match query.first("cursor") {
        None => None,
        Some(text) => Some(
            decode_cursor(text)
                .ok_or_else(|| bad("cursor", "cursor is not one this API gave".to_string()))?,
        ),
    };
    Ok(WorkflowFilter {
        status,
        name,
        since_ms,
        limit,
        after,
    })
}

/// The list's position as an opaque token (hex of the index's sort key).
fn encode_cursor(position: &str) -> String {
    position.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(token: &str) -> Option<String> {
    if token.len() % 2 != 0 || token.len() > 512 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let position = String::from_utf8(bytes?).ok()?;
    let id = baton_aws::dynamo::keys::parse_workflow_list_sk(&position)?;
    check_name(NameKind::Workflow, id).ok()?;
    Some(position)
}

/// `POST /v1/workflows/{id}/cancel|pause|resume|retry`.
pub async fn control<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    id: &str,
    action: ControlAction,
) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
    Q: TaskQueue,
{
    // Recognises this request's own write if the SDK has to send it again.
    let request = uuid::Uuid::new_v4().simple().to_string();
    for _ in 0..CONTROL_TRIES {
        let view = stored(api, tenant, id).await?;
        let now = now_ms();
        let change = decide(&view.workflow.control_state(), action).map_err(refused)?;
        let Some(event) = change.event() else {
            // Carry on a control that may have been cut short; idempotent.
            let done = timed(
                "tasks",
                reconcile(&api.store, &api.queue, &api.settings, &view, now),
            )
            .await?;
            return answer(api, tenant, &view.workflow, action, false, done).await;
        };
        let plan = match change {
            ControlChange::Redrive { drive } => {
                let tasks = baton_chain::hold::redrive_tasks(&view);
                let plan: Vec<String> = redrive_plan(&tasks, drive)
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                if plan.is_empty() {
                    return Err(refused(Refusal {
                        status: view.workflow.control_state().shown_status(),
                        reason: "no task failed, was cancelled or was skipped: nothing to retry"
                            .into(),
                    }));
                }
                plan
            }
            _ => Vec::new(),
        };
        let w = &view.workflow;
        let event = ControlEvent {
            event,
            at_ms: now,
            force: matches!(change, ControlChange::Cancel { force: true }),
            drive: match change {
                ControlChange::Redrive { drive } => Some(drive),
                _ => None,
            },
            request: request.clone(),
        };
        // A redrive gets the workflow's time-out again, from now.
        let deadline_at_ms = match change {
            ControlChange::Redrive { .. } => {
                w.deadline_at_ms.map(|at| now + (at - w.created_at_ms))
            }
            _ => None,
        };
        let check_at = now + api.settings.repair_after.as_millis() as i64;
        let write = ControlWrite {
            change,
            event: &event,
            rerun: &plan,
            deadline_at_ms,
            check_at_ms: deadline_at_ms
                .or(w.deadline_at_ms)
                .map_or(check_at, |at| at.min(check_at)),
        };
        match timed("store", api.store.control_workflow(w, &write)).await? {
            ControlApplied::Applied(record) => {
                tracing::info!(tenant, workflow = %id, action = action.name(), "control applied");
                let view = WorkflowView {
                    workflow: *record,
                    tasks: view.tasks,
                };
                let done = timed(
                    "tasks",
                    reconcile(&api.store, &api.queue, &api.settings, &view, now),
                )
                .await?;
                return answer(api, tenant, &view.workflow, action, true, done).await;
            }
            ControlApplied::Stale => continue,
            ControlApplied::Missing => return Err(not_found(id)),
        }
    }
    Err(ApiError::Unavailable(
        "the workflow kept changing while the control was applied; try again".into(),
    ))
}

fn refused(refusal: Refusal) -> ApiError {
    ApiError::Refused {
        status: 409,
        code: "invalid_state",
        message: refusal.reason,
        details: json!({ "status": refusal.status }),
    }
}

async fn answer<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    record: &WorkflowRecord,
    action: ControlAction,
    changed: bool,
    done: Reconciled,
) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
{
    // The control's own effects may have finished the workflow (a cancel with nothing running).
    let status = match timed("store", api.store.workflow_status(tenant, &record.id)).await? {
        Some(status) if status.is_terminal() => status.as_str().to_string(),
        _ => shown_status(record),
    };
    Ok(json_response(
        200,
        &ControlAnswer {
            workflow_id: record.id.clone(),
            action: action.name().to_string(),
            status,
            changed,
            tasks: ControlCounts {
                cancelled: done.cancelled,
                held: done.held,
                released: done.released,
                restarted: done.reset,
            },
        },
    ))
}

/// The control a path names; `force` only for a cancel.
pub fn action_of(name: &str, request: &Request) -> Result<ControlAction, ApiError> {
    let query = request.query_string_parameters();
    let force = match query.first("force") {
        None | Some("false") => false,
        Some("true") if name == "cancel" => true,
        Some(other) if name == "cancel" => {
            return Err(ApiError::invalid(
                format!("force must be `true` or `false`, got `{other}`"),
                json!({ "parameter": "force" }),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                format!("`force` applies to cancel only, not to {name}"),
                json!({ "parameter": "force" }),
            ))
        }
    };
    Ok(match name {
        "cancel" => ControlAction::Cancel { force },
        "pause" => ControlAction::Pause,
        "resume" => ControlAction::Resume,
        _ => ControlAction::Redrive,
    })
}
