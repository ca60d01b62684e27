//! A workflow once submitted: its view, one task whole, its history, the list of them, a
//! picture of its graph, and the controls (cancel, pause, resume, retry).

use baton_chain::hold::{reconcile, Reconciled};
use baton_chain::queue::TaskQueue;
use baton_chain::store::{
    AdmissionStore, AgentRegistry, ConfigStore, ContextStore, ControlApplied, ControlWrite,
    LearningStore, NewTask, NewWorkflow, WorkflowFilter, WorkflowStore,
};
use baton_types::clock::{now_ms, parse_rfc3339, rfc3339};
use baton_types::control::{
    decide, redrive_plan, ControlAction, ControlChange, ControlEvent, Refusal,
};
use baton_types::dag::{Dag, DagError, Plan, TaskEstimate, TaskSpec};
use baton_types::graph::{render, GraphFormat};
use baton_types::history::history;
use baton_types::ids::{AgentName, TaskId, TenantId, WorkflowId};
use baton_types::learning::{expected_latency, DEFAULT_ESTIMATE_MS};
use baton_types::messages::{RouteMessage, TaskRef};
use baton_types::names::{check_name, NameKind};
use baton_types::outcome::{TaskFailure, TokenUsage};
use baton_types::priority::{parse_deadline, Multipliers};
use baton_types::priority::{Band, Priority};
use baton_types::quota::Demand;
use baton_types::records::{TaskRecord, WorkflowRecord, WorkflowView};
use baton_types::resources::parse_resources;
use baton_types::retry::{PolicyError, RetryPolicyInput, RetryPolicySpec};
use baton_types::routing::RoutingStrategy;
use baton_types::task::TaskProfile;
use baton_types::task::{AttemptOutcome, AttemptRecord, TaskStatus};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::collections::HashMap;

use crate::admission;
use crate::bodies::{Pacing, WorkflowAccepted};
use crate::error::json_response;
use crate::routes::{parse_body, Call};
use crate::timing::{timed, timed_sync};
use crate::{Api, ApiError, ApiStore, MAX_INPUT_BYTES, MAX_TIMEOUT_S, MAX_WORKFLOW_NAME_CHARS};

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
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub finished_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
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
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub started_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
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
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub started_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub finished_at: String,
    pub error: Option<TaskFailure>,
    pub claims: u32,
    pub retry_delay_ms: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
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
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
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
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
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

/// A new workflow's id: a UUID v7, which keeps the rules of a workflow id.
pub(crate) fn new_workflow_id() -> WorkflowId {
    WorkflowId::parse(&uuid::Uuid::now_v7().to_string()).expect("a UUID is a workflow id")
}

/// The path's workflow id; one that cannot be a workflow's names none, as an unknown one.
fn workflow_id(call: &Call<'_>) -> Result<WorkflowId, ApiError> {
    let id = call.param("id");
    WorkflowId::parse(id).map_err(|_| not_found(id))
}

/// A workflow and all its tasks (outputs over 8 KiB left out: see `output_truncated`).
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = WorkflowDetail),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn get_workflow<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let view = stored(api, tenant, &workflow_id(call)?).await?;
    Ok(json_response(200, &detail(&view)))
}

/// The workflow's plan, from what is learned now.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}/plan",
    tag = "workflows",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = WorkflowPlan),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn workflow_plan<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let view = stored(api, tenant, &workflow_id(call)?).await?;
    let specs = view.specs();
    // A stored workflow passed validation; only a damaged one could fail here.
    let dag = view
        .dag()
        .map_err(|e| ApiError::Unavailable(format!("stored workflow is malformed: {e}")))?;
    let plan = plan(api, tenant, &dag, &specs, Freshness::Fresh).await?;
    Ok(json_response(
        200,
        &WorkflowPlan {
            workflow_id: (&view.workflow.id).into(),
            status: shown_status(&view.workflow),
            plan,
        },
    ))
}

/// The graph's formats, for the document (the handler reads `GraphFormat::NAMES`).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(as = GraphFormat)]
#[allow(dead_code)]
enum GraphFormatName {
    #[schema(rename = "mermaid")]
    Mermaid,
    #[schema(rename = "dot")]
    Dot,
}

/// The statuses the list filters by ([`LIST_STATUSES`]), for the document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ListStatus {
    Running,
    Paused,
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
}

/// A stored workflow with its tasks; 404 for an id that is not one.
pub async fn stored<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    id: &WorkflowId,
) -> Result<WorkflowView, ApiError>
where
    S: ApiStore,
{
    timed("store", api.store.workflow(tenant, id))
        .await?
        .ok_or_else(|| not_found(id))
}

pub fn detail(view: &WorkflowView) -> WorkflowDetail {
    let w = &view.workflow;
    WorkflowDetail {
        workflow_id: (&w.id).into(),
        name: w.name.clone(),
        status: shown_status(w),
        created_at: rfc3339(w.created_at_ms),
        updated_at: rfc3339(w.updated_at_ms),
        finished_at: w.finished_at_ms.map(rfc3339),
        deadline_at: w.deadline_at_ms.map(rfc3339),
        failed_task: w.failed_task.as_ref().map(String::from),
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
        id: (&t.id).into(),
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
            fallbacks: d.fallbacks.iter().map(String::from).collect(),
            reasoning: d.reasoning.clone(),
        }),
        status: t.status,
        depends_on: t.depends_on.iter().map(String::from).collect(),
        agent: t.agent.as_ref().map(String::from),
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
        agent: a.agent.as_ref().map(String::from),
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

/// One task, its output whole.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}/tasks/{task}",
    tag = "workflows",
    params(
        crate::paths::TaskPath,
    ),
    responses(
        (status = 200, body = TaskView),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn workflow_task<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let (id, task_id) = (call.param("id"), call.param("task"));
    let missing = || ApiError::NotFound(format!("workflow `{id}` has no task `{task_id}`"));
    let id = &WorkflowId::parse(id).map_err(|_| not_found(id))?;
    let task_id = &TaskId::parse(task_id).map_err(|_| missing())?;
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

/// Every transition of the workflow, oldest first, derived from what is stored.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}/history",
    tag = "workflows",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = WorkflowHistory),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn workflow_history<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let id = &workflow_id(call)?;
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
            workflow_id: (&view.workflow.id).into(),
            status: shown_status(&view.workflow),
            events,
        },
    ))
}

/// The DAG as Mermaid or DOT, with statuses, agents and the critical path.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows/{id}/graph",
    tag = "workflows",
    params(
        crate::paths::IdPath,
        ("format" = inline(Option<GraphFormatName>), Query, description = "`mermaid` (the default) or `dot`"),
    ),
    responses(
        (status = 200, description = "The graph", content_type = "text/plain; charset=utf-8", body = String),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn workflow_graph<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let query = call.request.query_string_parameters();
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
    let view = stored(api, tenant, &workflow_id(call)?).await?;
    let text = render(&view, format, now_ms());
    Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::Text(text))
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// The tenant's workflows, newest first, a page at a time (from an index, never a scan).
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    params(
        ("status" = inline(Option<ListStatus>), Query, description = "Only workflows in this status"),
        ("name" = Option<String>, Query, description = "Only workflows of exactly this name", min_length = 1, max_length = 200),
        ("since" = Option<String>, Query, format = DateTime, description = "Only workflows created at or after this RFC 3339 time"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, min_length = 1, pattern = "^[A-Za-z0-9_-]+$", description = "The `next_cursor` of the page before"),
    ),
    responses((status = 200, body = WorkflowList))))]
pub async fn list_workflows<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let filter = timed_sync("validate", || list_filter(call.request))?;
    let page = timed("store", api.store.list_workflows(tenant, &filter)).await?;
    let workflows = page
        .workflows
        .iter()
        .map(|w| WorkflowSummary {
            workflow_id: (&w.id).into(),
            name: w.name.clone(),
            status: w.control_state().shown_status().to_string(),
            task_count: w.task_count,
            redrives: w.drive,
            failed_task: w.failed_task.as_ref().map(String::from),
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
        Some(n) if !n.is_empty() && n.chars().count() <= MAX_WORKFLOW_NAME_CHARS => {
            Some(n.to_string())
        }
        Some(_) => {
            return Err(bad(
                "name",
                format!("name must be 1 to {} characters", MAX_WORKFLOW_NAME_CHARS),
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
    WorkflowId::parse(id).ok()?;
    Some(position)
}

/// Cancels the workflow: tasks not started end `cancelled`, running ones finish (with
/// `force=true`, they are cancelled too, and their late results change nothing).
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/workflows/{id}/cancel",
    tag = "workflows",
    params(
        crate::paths::IdPath,
        ("force" = Option<bool>, Query, description = "Also stop waiting on running tasks"),
    ),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn cancel_workflow<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    control(api, call, "cancel").await
}

/// Pauses the workflow: nothing new starts; running tasks finish and keep their results.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/workflows/{id}/pause",
    tag = "workflows",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn pause_workflow<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    control(api, call, "pause").await
}

/// Resumes a paused workflow: what became ready meanwhile starts now.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/workflows/{id}/resume",
    tag = "workflows",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn resume_workflow<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    control(api, call, "resume").await
}

/// Redrives a failed or cancelled workflow: its failed, cancelled and skipped tasks run
/// again as new attempts; succeeded ones keep their outputs.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/workflows/{id}/retry",
    tag = "workflows",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn retry_workflow<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    control(api, call, "retry").await
}

/// Applies the control the route names to the path's workflow.
async fn control<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let action = action_of(name, call.request)?;
    let id = &workflow_id(call)?;
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
                let plan: Vec<TaskId> = redrive_plan(&tasks, drive)
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
                tracing::info!(%tenant, workflow = %id, action = action.name(), "control applied");
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
    tenant: &TenantId,
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
            workflow_id: (&record.id).into(),
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
fn action_of(name: &str, request: &Request) -> Result<ControlAction, ApiError> {
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

// ---- submission ---------------------------------------------------------------------------

/// The body of `POST /v1/workflows`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowSubmission {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    name: String,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 500))]
    tasks: Vec<TaskSpec>,
    #[serde(default)]
    defaults: WorkflowDefaults,
    /// The workflow's deadline, in seconds from submission.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 900))]
    timeout_s: Option<i64>,
    /// The shared context every task's agent receives and may update (a task may name its own).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)
    )]
    context: Option<String>,
}

/// What every task of a workflow gets unless it says otherwise.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefaults {
    retry: Option<RetryPolicyInput>,
}

/// A submission that passed validation: the DAG, and each task's execution settings.
struct ValidWorkflow {
    dag: Dag,
    /// Each task's id, parsed once here, in submission order.
    ids: Vec<TaskId>,
    /// Per task, in submission order.
    settings: Vec<TaskSettings>,
    deadline_s: Option<u64>,
}

/// How one task runs: its retry policy (task over workflow), fallback, time-out and profile.
struct TaskSettings {
    retry: Option<RetryPolicySpec>,
    fallback: bool,
    timeout_ms: Option<u64>,
    profile: TaskProfile,
}

/// Submits a workflow: at most 500 tasks, 64 KB of input per task. Tasks beyond the tenant's
/// burst start at their turn at its pace (`pacing`); past its backlog or its running
/// workflows it is refused (429) and nothing is stored.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body(content = WorkflowSubmission, example = json!({
        "name": "text-report",
        "tasks": [
            {"id": "clean", "capability": "text.normalize", "input": {"text": "  Hello,  World  "}},
            {"id": "stats", "capability": "text.stats", "depends_on": ["clean"]},
            {"id": "shout", "capability": "text.transform", "depends_on": ["clean"]},
            {"id": "report", "capability": "report.compose", "depends_on": ["stats", "shout"]}
        ]
    })),
    responses(
        (status = 202, body = WorkflowAccepted, headers(("Location" = String))),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 429, response = crate::openapi::QuotaExceeded),
    )))]
pub async fn submit_workflow<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: WorkflowStore + ConfigStore + AgentRegistry + LearningStore + AdmissionStore + ContextStore,
    Q: TaskQueue,
{
    let tenant = &call.tenant()?;
    let submission: WorkflowSubmission = timed_sync("validate", || parse_body(call.request))?;
    let now = now_ms();
    let config = timed("store", api.config.config(&api.store, tenant)).await?;
    let multipliers = config.multipliers();
    let ValidWorkflow {
        dag,
        ids,
        mut settings,
        deadline_s,
    } = timed_sync("validate", || {
        validate_workflow(&submission, &multipliers, now)
    })?;
    check_contexts(api, tenant, &settings, now).await?;

    // Quotas: a workflow more than the tenant may run, or tasks past its backlog, store
    // nothing; admitted tasks get their turns at its pace.
    let quotas = config.quotas.over(&api.settings.quotas);
    admission::check_running(api, tenant, &quotas).await?;
    let position: HashMap<&str, usize> = submission
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    // Turns are handed out in dispatch order: roots first, then each stage.
    let order: Vec<usize> = dag
        .topological_order()
        .into_iter()
        .filter_map(|id| position.get(id).copied())
        .collect();
    let demand = Demand {
        tasks: order.len() as u32,
        urgent: settings
            .iter()
            .filter(|s| s.profile.band == Band::Urgent)
            .count() as u32,
    };
    let admitted = admission::admit_tasks(api, tenant, &quotas, demand, now).await?;
    let dispatch_timeout_ms = api.settings.dispatch_timeout.as_millis() as i64;
    let mut urgent_left = admitted.urgent_kept;
    let mut paced = 0usize;
    let mut last_turn_ms = now;
    for (k, &i) in order.iter().enumerate() {
        let profile = &mut settings[i].profile;
        if profile.band == Band::Urgent {
            if urgent_left > 0 {
                urgent_left -= 1;
            } else {
                // Past the tenant's urgent share: it runs in the high band.
                profile.band = Band::High;
            }
        }
        let turn = admitted.turns_ms.get(k).copied().unwrap_or(now);
        if turn > now + PACE_SLACK_MS {
            profile.paced_until_ms = Some(turn);
            paced += 1;
            last_turn_ms = last_turn_ms.max(turn);
        }
    }

    let workflow_id = new_workflow_id();
    // Every id a dependency names is one of the submission's tasks' (`Dag::build` refused any
    // other), each parsed once by the validation: the look-up cannot miss.
    let id_of = |name: &str| ids[position[name]].clone();
    let deadline_at_ms = deadline_s.map(|s| now + s as i64 * 1000);
    let check_at = now + api.settings.repair_after.as_millis() as i64;
    let tasks: Vec<NewTask> = submission
        .tasks
        .iter()
        .zip(ids.iter().zip(settings))
        .map(|(spec, (id, settings))| NewTask {
            id: id.clone(),
            capability: spec.capability.clone(),
            dispatch_until_ms: settings
                .profile
                .paced_until_ms
                .map(|turn| turn + dispatch_timeout_ms),
            profile: settings.profile,
            input: spec.input.clone(),
            depends_on: spec.depends_on.iter().map(|d| id_of(d)).collect(),
            dependents: dag.dependents_of(&spec.id).into_iter().map(id_of).collect(),
            status: if spec.depends_on.is_empty() {
                TaskStatus::Queued
            } else {
                TaskStatus::Waiting
            },
            retry: settings.retry,
            fallback: settings.fallback,
            timeout_ms: settings.timeout_ms,
        })
        .collect();
    let ready: Vec<RouteMessage> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Queued)
        .map(|t| {
            let task = TaskRef {
                tenant: tenant.clone(),
                workflow_id: workflow_id.clone(),
                task_id: t.id.clone(),
                attempt: 1,
            };
            RouteMessage::new(task, t.capability.clone(), t.profile.clone())
        })
        .collect();
    let workflow = NewWorkflow {
        tenant: tenant.clone(),
        workflow_id: workflow_id.clone(),
        name: submission.name.clone(),
        created_at_ms: now,
        dispatch_until_ms: now + dispatch_timeout_ms,
        deadline_at_ms,
        // The repair looks at it first when a stuck task could be noticed, or at its deadline.
        check_at_ms: deadline_at_ms.map_or(check_at, |deadline| deadline.min(check_at)),
        counted: true,
        tasks,
    };
    timed("store", api.store.create_workflow(&workflow)).await?;
    if let Err(error) = timed("enqueue", api.queue.send_route(&ready)).await {
        // The workflow is stored and its ready tasks hold dispatch leases: cleanup sends them
        // once the leases run out, so the submission stands.
        tracing::error!(workflow = %workflow_id, %error, "ready tasks not sent; cleanup will send them");
    }
    tracing::info!(%tenant, workflow = %workflow_id, tasks = dag.len(), paced, "workflow accepted");
    let plan = plan(api, tenant, &dag, &submission.tasks, Freshness::Cached);
    let plan = timed("plan", plan).await?;
    let body = WorkflowAccepted {
        workflow_id: (&workflow_id).into(),
        status: "running".into(),
        plan,
        pacing: (paced > 0).then(|| Pacing {
            paced_tasks: paced as u32,
            last_start_at: rfc3339(last_turn_ms),
            tasks_per_second: quotas.tasks_per_second,
        }),
        demoted_from_urgent: demand.urgent - admitted.urgent_kept,
    };
    let mut response = json_response(202, &body);
    if let Ok(location) = format!("/v1/workflows/{workflow_id}").parse() {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

/// The most contexts one workflow's tasks may name.
const MAX_CONTEXTS_PER_WORKFLOW: usize = 10;

/// Every context the tasks name exists for the tenant, now: one that does not (or another
/// tenant's, which reads the same) refuses the submission, which stores nothing.
async fn check_contexts<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    settings: &[TaskSettings],
    now: i64,
) -> Result<(), ApiError>
where
    S: ContextStore,
{
    let names: std::collections::BTreeSet<&str> = settings
        .iter()
        .filter_map(|s| s.profile.context.as_deref())
        .collect();
    if names.len() > MAX_CONTEXTS_PER_WORKFLOW {
        return Err(ApiError::invalid(
            format!(
                "the tasks name {} contexts; a workflow may name at most {MAX_CONTEXTS_PER_WORKFLOW}",
                names.len()
            ),
            json!({ "field": "context" }),
        ));
    }
    for name in names {
        let live = timed("store", api.store.context(tenant, name))
            .await?
            .filter(|c| !c.is_expired(now));
        if live.is_none() {
            return Err(ApiError::invalid(
                format!("context `{name}` does not exist; create it with PUT /v1/contexts/{name}"),
                json!({ "field": "context", "context": name }),
            ));
        }
    }
    Ok(())
}

/// A turn this close to now is now: its task is sent at once.
const PACE_SLACK_MS: i64 = 50;

/// The task's type, strategy, resources, priority (and so its band) and deadline. Errors are
/// (field, reason).
fn task_profile(
    task: &TaskSpec,
    multipliers: &Multipliers,
    now: i64,
) -> Result<TaskProfile, (String, String)> {
    if let Some(task_type) = &task.task_type {
        check_name(NameKind::Capability, task_type)
            .map_err(|e| ("type".to_string(), e.to_string()))?;
    }
    let routing = task
        .routing
        .as_deref()
        .map(|name| {
            RoutingStrategy::parse(name)
                .ok_or_else(|| ("routing".to_string(), RoutingStrategy::unknown(name)))
        })
        .transpose()?;
    let priority = task
        .priority
        .as_deref()
        .map(|name| Priority::parse(name).map_err(|reason| ("priority".to_string(), reason)))
        .transpose()?;
    let resources = task
        .resources
        .as_ref()
        .map(|r| parse_resources("resources", r).map_err(|e| (e.field, e.reason)))
        .transpose()?
        .unwrap_or_default();
    let deadline_at_ms = parse_deadline(task.deadline.as_deref(), task.deadline_s, now)?;
    if let Some(memory) = &task.memory {
        memory
            .check()
            .map_err(|reason| ("memory".to_string(), reason))?;
    }
    let score = multipliers.score(priority.unwrap_or_default(), task.task_type.as_deref());
    Ok(TaskProfile {
        task_type: task.task_type.clone(),
        routing,
        resources,
        priority,
        band: Band::of_score(score),
        deadline_at_ms,
        memory: task.memory,
        stream: task.stream.unwrap_or(false),
        ..TaskProfile::default()
    })
}

/// Whether a read may come from this process's caches (a submission) or must not (a view).
#[derive(Debug, Clone, Copy)]
enum Freshness {
    Cached,
    Fresh,
}

/// The workflow's plan, each task estimated by the learned p50 of the agent routing favours
/// for its type (a default where nothing is learned). One registry read, and one batched
/// stats read per task type.
async fn plan<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    dag: &Dag,
    tasks: &[TaskSpec],
    freshness: Freshness,
) -> Result<Plan, ApiError>
where
    S: AgentRegistry + LearningStore,
{
    let agents = match freshness {
        Freshness::Cached => api.agents.agents(&api.store, tenant).await?,
        Freshness::Fresh => std::sync::Arc::new(api.store.agents(tenant).await?),
    };
    let now = now_ms();
    let half_life = api.settings.half_life_ms();
    let mut by_type: HashMap<String, TaskEstimate> = HashMap::new();
    for task in tasks {
        let task_type = task.task_type.as_deref().unwrap_or(&task.capability);
        if by_type.contains_key(task_type) {
            continue;
        }
        let capable: Vec<AgentName> = agents
            .iter()
            .filter(|a| a.enabled && a.has_capability(&task.capability))
            .map(|a| a.name.clone())
            .collect();
        let key = (tenant.clone(), task_type.to_string(), capable.clone());
        let load = || api.store.agent_stats(tenant, task_type, &capable);
        let stats = match freshness {
            Freshness::Cached => api.stats.get(&key, load).await?,
            Freshness::Fresh => api.stats.reload(&key, load).await?,
        };
        let estimate = match expected_latency(&stats, now, half_life) {
            Some((agent, p50)) => TaskEstimate {
                task: String::new(),
                duration_ms: p50,
                source: format!("learned p50 of `{agent}`"),
            },
            None => TaskEstimate {
                task: String::new(),
                duration_ms: DEFAULT_ESTIMATE_MS,
                source: "default".into(),
            },
        };
        by_type.insert(task_type.to_string(), estimate);
    }
    let type_of: HashMap<&str, &str> = tasks
        .iter()
        .map(|t| {
            (
                t.id.as_str(),
                t.task_type.as_deref().unwrap_or(&t.capability),
            )
        })
        .collect();
    Ok(dag.plan(|id| {
        let estimate = type_of.get(id).and_then(|t| by_type.get(*t));
        TaskEstimate {
            task: id.to_string(),
            ..estimate.cloned().unwrap_or(TaskEstimate {
                task: String::new(),
                duration_ms: DEFAULT_ESTIMATE_MS,
                source: "default".into(),
            })
        }
    }))
}

/// `timeout_s` in seconds, within 1 to [`MAX_TIMEOUT_S`].
fn check_timeout(value: Option<i64>) -> Result<Option<u64>, PolicyError> {
    value
        .map(|s| {
            u64::try_from(s)
                .ok()
                .filter(|s| (1..=MAX_TIMEOUT_S as u64).contains(s))
                .ok_or_else(|| {
                    PolicyError::new(
                        "timeout_s",
                        format!("must be between 1 and {MAX_TIMEOUT_S} seconds, got {s}"),
                    )
                })
        })
        .transpose()
}

fn validate_workflow(
    submission: &WorkflowSubmission,
    multipliers: &Multipliers,
    now: i64,
) -> Result<ValidWorkflow, ApiError> {
    let name = submission.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_WORKFLOW_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            format!("name must be 1 to {MAX_WORKFLOW_NAME_CHARS} printable characters"),
            json!({ "field": "name" }),
        ));
    }
    let workflow_error =
        |e: PolicyError| ApiError::invalid(e.to_string(), json!({ "field": e.field }));
    let defaults = submission
        .defaults
        .retry
        .as_ref()
        .map(|r| {
            r.validate()
                .map_err(|e| workflow_error(e.under("defaults.retry")))
        })
        .transpose()?;
    let deadline_s = check_timeout(submission.timeout_s).map_err(workflow_error)?;
    let mut settings = Vec::with_capacity(submission.tasks.len());
    let mut ids = Vec::with_capacity(submission.tasks.len());
    for (index, task) in submission.tasks.iter().enumerate() {
        let at = |field: &str| json!({ "task_index": index, "field": field });
        let task_error =
            |e: PolicyError| ApiError::invalid(format!("task `{}`: {e}", task.id), at(&e.field));
        let retry = task
            .retry
            .as_ref()
            .map(|r| r.validate().map_err(|e| task_error(e.under("retry"))))
            .transpose()?;
        let retry = match (retry, &defaults) {
            (Some(task), Some(workflow)) => Some(task.or(workflow)),
            (task, workflow) => task.or_else(|| workflow.clone()),
        }
        .filter(|r| !r.is_empty());
        let timeout_ms = check_timeout(task.timeout_s)
            .map_err(task_error)?
            .map(|s| s * 1000);
        let field_error = |(field, reason): (String, String)| {
            ApiError::invalid(format!("task `{}`: {field}: {reason}", task.id), at(&field))
        };
        let mut profile = task_profile(task, multipliers, now).map_err(field_error)?;
        profile.context = task.context.clone().or_else(|| submission.context.clone());
        if let Some(context) = &profile.context {
            AgentName::parse(context).map_err(|e| {
                let field = if task.context.is_some() {
                    "context"
                } else {
                    "workflow.context"
                };
                ApiError::invalid(format!("task `{}`: context: {e}", task.id), at(field))
            })?;
        }
        settings.push(TaskSettings {
            retry,
            fallback: task.fallback.unwrap_or(true),
            timeout_ms,
            profile,
        });
        ids.push(TaskId::parse(&task.id).map_err(|e| ApiError::invalid(e.to_string(), at("id")))?);
        check_name(NameKind::Capability, &task.capability)
            .map_err(|e| ApiError::invalid(e.to_string(), at("capability")))?;
        let input_bytes = serde_json::to_vec(&task.input).map_or(0, |v| v.len());
        if input_bytes > MAX_INPUT_BYTES {
            return Err(ApiError::invalid(
                format!(
                    "task `{}` has an input of {input_bytes} bytes; the limit is {MAX_INPUT_BYTES}",
                    task.id
                ),
                at("input"),
            ));
        }
    }
    let dag = Dag::build(&submission.tasks).map_err(|e| {
        let details = match &e {
            DagError::Cycle { path } => json!({ "cycle": path }),
            DagError::DuplicateId { id } => json!({ "task": id }),
            DagError::UnknownDependency { task, dependency }
            | DagError::DuplicateDependency { task, dependency } => {
                json!({ "task": task, "dependency": dependency })
            }
            DagError::Empty | DagError::TooManyTasks { .. } => json!({ "field": "tasks" }),
        };
        ApiError::invalid(e.to_string(), details)
    })?;
    Ok(ValidWorkflow {
        dag,
        ids,
        settings,
        deadline_s,
    })
}
