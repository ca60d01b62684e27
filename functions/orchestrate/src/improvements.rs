//! Self-improvement through `/v1/improvements`: analyse the tenant's measured calls into
//! suggestions, list them, let a person dismiss one or say it was applied, and report the
//! impact measured for those applied.
//!
//! **Baton never applies a suggestion.** Each names the API call a person could make; only
//! that person's own call changes anything, and `applied` only records that it was made. The
//! analysis reads the registry, the tenant's settings, the agents' circuits and their results
//! in the window (bounded per agent); the analysis itself is the chain's
//! ([`baton_chain::improve`]), which the scheduled function also runs daily.

use std::collections::BTreeMap;

use baton_chain::improve::{self, AnalysisStore};
use baton_chain::queue::TaskQueue;
use baton_chain::store::{AgentRegistry, ImprovementStore, LearningStore};
use baton_types::clock::{now_ms, rfc3339};
use baton_types::ids::TenantId;
use baton_types::improvements::{Suggestion, SuggestionPriority};
use baton_types::suggestions::{
    MeasuredImpact, StoredSuggestion, SuggestionStatus, DEFAULT_WINDOW_HOURS, MAX_WINDOW_HOURS,
};
use lambda_http::{Body, RequestExt, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::Api;

const HOUR_MS: f64 = 3_600_000.0;

/// The body of `POST /v1/improvements/analyze`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AnalyzeInput {
    /// The window analysed, ending now, in hours (more than 0, at most 720; default 24).
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0, maximum = 720.0))]
    pub window_hours: Option<f64>,
}

/// A suggestion as the API shows it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuggestionView {
    pub id: String,
    pub status: SuggestionStatus,
    /// `rules`, or the name of the agent that suggested it.
    pub analyzer: String,
    #[serde(flatten)]
    pub suggestion: Suggestion,
    /// The analysis window it was found in; its impact is measured over windows this long.
    pub window_hours: f64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub applied_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub dismissed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<MeasuredImpact>,
}

impl From<&StoredSuggestion> for SuggestionView {
    fn from(s: &StoredSuggestion) -> Self {
        SuggestionView {
            id: s.id.clone(),
            status: s.status,
            analyzer: s.analyzer.clone(),
            suggestion: s.suggestion.clone(),
            window_hours: s.window_ms as f64 / HOUR_MS,
            created_at: rfc3339(s.created_at_ms),
            updated_at: rfc3339(s.updated_at_ms),
            applied_at: s.applied_at_ms.map(rfc3339),
            dismissed_at: s.dismissed_at_ms.map(rfc3339),
            impact: s.impact.clone(),
        }
    }
}

/// The body of `POST /v1/improvements/analyze`'s answer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Analysis {
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub window_start: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub window_end: String,
    /// The agent calls the window held.
    pub calls: usize,
    /// What this analysis found: new suggestions and open ones it refreshed.
    pub suggestions: Vec<SuggestionView>,
    /// The workflow that asks the tenant's analyst (an agent with `improvements.analyze`),
    /// if it has one: its suggestions are added, marked as its own, when its task ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyst_workflow_id: Option<String>,
}

/// The body of `GET /v1/improvements`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuggestionList {
    pub suggestions: Vec<SuggestionView>,
}

/// The body of `GET /v1/improvements/report`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    /// Suggestions by status.
    pub counts: BTreeMap<String, usize>,
    /// The applied suggestions with a measured impact, newest first.
    pub impacts: Vec<SuggestionView>,
}

/// Analyses the window's calls and writes what the rules find: new suggestions, and the
/// figures of open ones found again; asks the tenant's analyst, if it has one, for its own.
/// Applies nothing.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/improvements/analyze", tag = "improvements",
    request_body(content = Option<AnalyzeInput>, example = json!({ "window_hours": 24 })),
    responses((status = 200, body = Analysis))))]
pub async fn analyze<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AnalysisStore,
    Q: TaskQueue,
{
    let tenant = &call.tenant()?;
    let body: &[u8] = call.request.body().as_ref();
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        AnalyzeInput::default()
    } else {
        parse_body::<Option<AnalyzeInput>>(call.request)?.unwrap_or_default()
    };
    let hours = input.window_hours.unwrap_or(DEFAULT_WINDOW_HOURS);
    if !(hours > 0.0 && hours <= MAX_WINDOW_HOURS) {
        return Err(ApiError::invalid(
            format!("window_hours must be more than 0 and at most {MAX_WINDOW_HOURS}, got {hours}"),
            json!({ "field": "window_hours" }),
        ));
    }
    let window_ms = (hours * HOUR_MS) as i64;
    let analysis = analyze_tenant(api, tenant, window_ms, now_ms()).await?;
    Ok(json_response(200, &analysis))
}

/// One analysis of the tenant's last `window_ms`, its findings written, as the API shows it.
pub async fn analyze_tenant<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    window_ms: i64,
    now: i64,
) -> Result<Analysis, ApiError>
where
    S: AnalysisStore,
    Q: TaskQueue,
{
    let advisor = improve::Advisor {
        queue: &api.queue,
        settings: &api.settings,
    };
    let run = timed(
        "analysis",
        improve::analyze(&api.store, &advisor, tenant, window_ms, now),
    )
    .await?;
    Ok(Analysis {
        window_start: rfc3339(run.window_start_ms),
        window_end: rfc3339(run.window_end_ms),
        calls: run.calls,
        suggestions: run.written.iter().map(SuggestionView::from).collect(),
        analyst_workflow_id: run.advisor_workflow.as_ref().map(String::from),
    })
}

/// The tenant's suggestions, newest first: of one status, one priority, or all.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/improvements", tag = "improvements",
    params(
        ("status" = Option<SuggestionStatus>, Query, description = "Only suggestions in this status"),
        ("priority" = Option<SuggestionPriority>, Query, description = "Only suggestions of this priority"),
    ),
    responses((status = 200, body = SuggestionList))))]
pub async fn list<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: ImprovementStore,
{
    let tenant = &call.tenant()?;
    let query = call.request.query_string_parameters();
    let status = query
        .first("status")
        .map(|name| {
            SuggestionStatus::parse(name).ok_or_else(|| {
                bad_parameter(
                    "status",
                    format!(
                        "status must be one of {}, got `{name}`",
                        SuggestionStatus::NAMES.join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let priority = query
        .first("priority")
        .map(|name| {
            serde_json::from_value::<SuggestionPriority>(json!(name)).map_err(|_| {
                bad_parameter(
                    "priority",
                    format!("priority must be one of high, medium, low, got `{name}`"),
                )
            })
        })
        .transpose()?;
    let kept = timed("store", api.store.suggestions(tenant)).await?;
    let suggestions = kept
        .iter()
        .filter(|s| status.is_none_or(|wanted| s.status == wanted))
        .filter(|s| priority.is_none_or(|wanted| s.priority() == wanted))
        .map(SuggestionView::from)
        .collect();
    Ok(json_response(200, &SuggestionList { suggestions }))
}

fn bad_parameter(parameter: &str, message: String) -> ApiError {
    ApiError::invalid(message, json!({ "parameter": parameter }))
}

/// A person decided against the suggestion; nothing else changes.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/improvements/{id}/dismiss", tag = "improvements",
    params(crate::paths::SuggestionPath),
    responses(
        (status = 200, body = SuggestionView),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn dismiss<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: ImprovementStore,
{
    act(api, call, |s, now| s.dismissed(now)).await
}

/// A person made the suggested change through the API: Baton records it and measures its
/// impact from now on. It changes nothing itself.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/improvements/{id}/applied", tag = "improvements",
    params(crate::paths::SuggestionPath),
    responses(
        (status = 200, body = SuggestionView),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn applied<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: ImprovementStore,
{
    act(api, call, |s, now| s.applied(now)).await
}

/// Applies a person's action to the path's suggestion, under its version; the answer is the
/// suggestion as it is after.
async fn act<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
    action: impl Fn(
        &StoredSuggestion,
        i64,
    ) -> Result<Option<StoredSuggestion>, baton_types::suggestions::TransitionError>,
) -> Result<Response<Body>, ApiError>
where
    S: ImprovementStore,
{
    let tenant = &call.tenant()?;
    let id = call.param("id");
    let not_found = || ApiError::NotFound(format!("suggestion `{id}` does not exist"));
    // Read again and retried when an analysis refreshed it meanwhile.
    for _ in 0..3 {
        let kept = timed("store", api.store.suggestions(tenant)).await?;
        let current = kept.iter().find(|s| s.id == id).ok_or_else(not_found)?;
        let next = action(current, now_ms()).map_err(|e| ApiError::Conflict(e.to_string()))?;
        let Some(next) = next else {
            return Ok(json_response(200, &SuggestionView::from(current)));
        };
        if timed("store", api.store.update_suggestion(tenant, &next)).await? {
            return Ok(json_response(200, &SuggestionView::from(&next)));
        }
    }
    Err(ApiError::Refused {
        status: 409,
        code: "concurrent_change",
        message: format!("suggestion `{id}` kept changing; read it and try again"),
        details: json!({ "id": id }),
    })
}

/// Suggestions by status, and the impacts measured of those applied: the same figure over
/// equal windows before and after, recorded as soon as both hold enough calls.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/improvements/report", tag = "improvements",
    responses((status = 200, body = Report))))]
pub async fn report<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + LearningStore + ImprovementStore,
{
    let tenant = &call.tenant()?;
    let mut kept = timed("store", api.store.suggestions(tenant)).await?;
    timed(
        "analysis",
        improve::measure_impacts(&api.store, tenant, &mut kept, now_ms()),
    )
    .await?;
    let mut counts: BTreeMap<String, usize> = SuggestionStatus::NAMES
        .iter()
        .map(|name| (name.to_string(), 0))
        .collect();
    for s in &kept {
        if let Some(count) = counts.get_mut(status_name(s.status)) {
            *count += 1;
        }
    }
    let impacts = kept
        .iter()
        .filter(|s| s.impact.is_some())
        .map(SuggestionView::from)
        .collect();
    Ok(json_response(200, &Report { counts, impacts }))
}

fn status_name(status: SuggestionStatus) -> &'static str {
    match status {
        SuggestionStatus::Open => "open",
        SuggestionStatus::Dismissed => "dismissed",
        SuggestionStatus::Applied => "applied",
    }
}
