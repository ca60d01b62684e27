//! What Baton remembers, asked through `/v1/memory`: recent results, relevant memories, and
//! the patterns learned for a task type.
//!
//! Reads only: the registry (cached), the learned stats that say which task types exist, and
//! the result items of the agents asked about, newest first and bounded per agent (see
//! [`baton_types::results`]). A task type nothing was learned under, or an agent that is not
//! registered, is a 404: the question names nothing.

use std::collections::BTreeSet;

use baton_chain::store::{AgentRegistry, LearningStore, PatternStore, RoutingState, StatsStore};
use baton_types::clock::{now_ms, rfc3339};
use baton_types::ids::{AgentName, TenantId};
use baton_types::outcome::{FailureKind, TokenUsage};
use baton_types::patterns::{self, FailurePattern, Pattern, Trend};
use baton_types::results::{self, PastResult, ResultQuery, MAX_RELEVANT, MAX_RESULTS};
use futures::stream::{self, StreamExt, TryStreamExt};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::json;

use crate::error::{json_response, ApiError};
use crate::routes::Call;
use crate::timing::timed;
use crate::Api;

/// The answer's size when the question names none.
const DEFAULT_LIMIT: usize = 20;
/// Agents read at once when a question spans them all.
const READ_CONCURRENCY: usize = 8;
/// The most characters of a relevance query.
const MAX_QUERY_CHARS: usize = 500;

/// One remembered call, as the API shows it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultView {
    pub workflow_id: String,
    pub task_id: String,
    pub attempt: u32,
    pub agent: String,
    pub task_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub capability: String,
    /// `succeeded` or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// The failure's message, normalised (numbers as `#`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// How long the call took.
    pub duration_ms: u64,
    /// From the attempt becoming ready to its call starting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenUsage>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub finished_at: String,
    /// The start of the call's input, as JSON text (none for a conversation's turns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_preview: Option<String>,
    /// The start of the call's output, as JSON text (none for a conversation's turns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_preview: Option<String>,
    /// How relevant it is to the query (`/v1/memory/relevant` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relevance: Option<f64>,
}

impl ResultView {
    pub fn new(result: PastResult, relevance: Option<f64>) -> ResultView {
        let details = result.details;
        ResultView {
            workflow_id: result.workflow_id.into_string(),
            task_id: result.task_id.into_string(),
            attempt: result.attempt,
            agent: result.agent.into_string(),
            task_type: result.task_type,
            capability: details.capability,
            outcome: if result.success {
                "succeeded"
            } else {
                "failed"
            },
            failure: result.failure,
            failure_message: details.failure_message,
            duration_ms: result.latency_ms,
            queue_wait_ms: details.queue_wait_ms,
            tokens: result.usage,
            finished_at: rfc3339(result.finished_at_ms),
            input_preview: details.input_preview,
            output_preview: details.output_preview,
            relevance: relevance.map(|r| (r * 1000.0).round() / 1000.0),
        }
    }
}

/// The body of `GET /v1/memory/recent` and `GET /v1/memory/relevant`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultList {
    pub results: Vec<ResultView>,
}

/// The last results, newest first: of one task type, one agent, one outcome, or all.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/memory/recent", tag = "memory",
    params(
        ("task_type" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only this task type (404 if nothing was learned under it)"),
        ("agent" = Option<String>, Query, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64, description = "Only this agent's calls (404 if it is not registered)"),
        ("outcome" = Option<String>, Query, pattern = "^(succeeded|failed)$", description = "`succeeded` or `failed`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many (default 20)"),
    ),
    responses(
        (status = 200, body = ResultList),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn recent<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + LearningStore + StatsStore,
{
    let tenant = &call.tenant()?;
    let question = Question::parse(call.request, MAX_RESULTS)?;
    let agents = asked_agents(api, tenant, &question).await?;
    let query = question.query(now_ms(), question.limit);
    let found = results_of(api, tenant, &agents, &query).await?;
    let results = results::newest_first(found, question.limit)
        .into_iter()
        .map(|r| ResultView::new(r, None))
        .collect();
    Ok(json_response(200, &ResultList { results }))
}

/// Past results ranked by how many of the query's words they share, how recent they are and
/// whether they succeeded; no vector database.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/memory/relevant", tag = "memory",
    params(
        ("q" = String, Query, min_length = 1, max_length = 500, description = "The words to look for"),
        ("task_type" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only this task type (404 if nothing was learned under it)"),
        ("agent" = Option<String>, Query, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64, description = "Only this agent's calls (404 if it is not registered)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 20, description = "How many (default 5)"),
    ),
    responses(
        (status = 200, body = ResultList),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn relevant<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + LearningStore + StatsStore,
{
    let tenant = &call.tenant()?;
    let mut question = Question::parse(call.request, MAX_RELEVANT)?;
    if call
        .request
        .query_string_parameters()
        .first("limit")
        .is_none()
    {
        question.limit = DEFAULT_RELEVANT;
    }
    let text = call
        .request
        .query_string_parameters()
        .first("q")
        .map(str::to_string)
        .unwrap_or_default();
    if text.trim().is_empty() || text.chars().count() > MAX_QUERY_CHARS {
        return Err(bad(
            "q",
            format!("q must hold 1 to {MAX_QUERY_CHARS} characters of words to look for"),
        ));
    }
    let words = results::words(&text);
    let agents = asked_agents(api, tenant, &question).await?;
    let now = now_ms();
    // Ranked among the most recent results each agent keeps.
    let found = results_of(api, tenant, &agents, &question.query(now, MAX_RESULTS)).await?;
    let results = results::most_relevant(
        &words,
        found.into_iter().flatten().collect(),
        now,
        question.limit,
    )
    .into_iter()
    .map(|(score, r)| ResultView::new(r, Some(score)))
    .collect();
    Ok(json_response(200, &ResultList { results }))
}

/// How many relevant memories an answer holds when the question names no limit.
const DEFAULT_RELEVANT: usize = 5;

/// What a memory question asks, checked.
struct Question {
    task_type: Option<String>,
    agent: Option<AgentName>,
    success: Option<bool>,
    limit: usize,
}

impl Question {
    fn parse(request: &Request, max_limit: usize) -> Result<Question, ApiError> {
        let query = request.query_string_parameters();
        let task_type = match query.first("task_type") {
            None => None,
            Some(t) if !t.is_empty() && t.chars().count() <= 128 => Some(t.to_string()),
            Some(_) => {
                return Err(bad(
                    "task_type",
                    "task_type must be 1 to 128 characters".into(),
                ))
            }
        };
        let agent = query
            .first("agent")
            .map(|name| AgentName::parse(name).map_err(|e| bad("agent", format!("agent: {e}"))))
            .transpose()?;
        let success = match query.first("outcome") {
            None => None,
            Some("succeeded") => Some(true),
            Some("failed") => Some(false),
            Some(other) => {
                return Err(bad(
                    "outcome",
                    format!("outcome must be `succeeded` or `failed`, got `{other}`"),
                ))
            }
        };
        let limit = match query.first("limit") {
            None => DEFAULT_LIMIT.min(max_limit),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=max_limit).contains(l))
                .ok_or_else(|| {
                    bad(
                        "limit",
                        format!("limit must be a whole number from 1 to {max_limit}, got `{text}`"),
                    )
                })?,
        };
        Ok(Question {
            task_type,
            agent,
            success,
            limit,
        })
    }

    /// The results it asks each agent for, up to `now_ms`.
    fn query(&self, now_ms: i64, limit: usize) -> ResultQuery {
        ResultQuery {
            task_type: self.task_type.clone(),
            success: self.success,
            since_ms: 0,
            until_ms: now_ms,
            limit,
        }
    }
}

fn bad(parameter: &str, message: String) -> ApiError {
    ApiError::invalid(message, json!({ "parameter": parameter }))
}

/// The agents a question is about: the one it names, else every registered one; 404 when
/// it names an agent that is not registered or a task type nothing was learned under.
async fn asked_agents<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    question: &Question,
) -> Result<Vec<AgentName>, ApiError>
where
    S: AgentRegistry + StatsStore,
{
    let list = timed("store", api.store.agent_list(tenant)).await?;
    let registered: Vec<AgentName> = list.agents.iter().map(|a| a.name.clone()).collect();
    let agents = match &question.agent {
        Some(agent) if registered.contains(agent) => vec![agent.clone()],
        Some(agent) => {
            return Err(ApiError::NotFound(format!(
                "agent `{agent}` is not registered"
            )))
        }
        None => registered,
    };
    if let Some(task_type) = &question.task_type {
        let learned = timed("store", api.store.learned_stats(tenant, &agents)).await?;
        let types: BTreeSet<&str> = learned.iter().map(|l| l.task_type.as_str()).collect();
        if !types.contains(task_type.as_str()) {
            return Err(ApiError::NotFound(format!(
                "nothing was learned under task type `{task_type}`"
            )));
        }
    }
    Ok(agents)
}

/// Each agent's results for `query`, read a few agents at a time.
pub async fn results_of<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    agents: &[AgentName],
    query: &ResultQuery,
) -> Result<Vec<Vec<PastResult>>, ApiError>
where
    S: LearningStore,
{
    // Owned names: futures that borrow from the iterator are not `Send` for every lifetime.
    let reads = stream::iter(agents.to_vec())
        .map(|agent| async move { api.store.past_results(tenant, &agent, query).await })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect::<Vec<_>>();
    Ok(timed("store", reads).await?)
}

/// One agent's record on a task type.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentPattern {
    pub agent: String,
    /// Calls learned, in all.
    pub calls: u64,
    pub success_rate: f64,
    /// Its newer remembered results against its older ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Trend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p90_ms: Option<u64>,
    /// Tokens read and written per call, over the calls learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_call: Option<f64>,
    pub circuit_open: bool,
}

/// The agent learned routing would choose now, and why.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteNow {
    pub agent: String,
    /// The learned strategy's evidence for it: a lower bound of its decayed success rate.
    pub confidence: f64,
    pub calls: u64,
    pub success_rate: f64,
}

/// The body of `GET /v1/memory/patterns/{task_type}`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Patterns {
    pub task_type: String,
    pub agents: Vec<AgentPattern>,
    /// Failures among the remembered results, by kind and normalised message.
    pub failure_patterns: Vec<FailurePattern>,
    /// None when no enabled agent with a closed circuit has learned this type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_now: Option<RouteNow>,
    /// Patterns the analyses found, as intervals, newest first: open ones have no `valid_to_ms`.
    pub history: Vec<Pattern>,
}

/// What Baton has learned for a task type: each agent's success rate and trend, latency,
/// tokens, the failures that recur, the agent learned routing would pick now, and the
/// patterns found over time.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/memory/patterns/{task_type}", tag = "memory",
    params(("task_type" = String, Path, min_length = 1, max_length = 128)),
    responses(
        (status = 200, body = Patterns),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn patterns<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + LearningStore + StatsStore + RoutingState + PatternStore,
{
    let tenant = &call.tenant()?;
    let task_type = call.param("task_type");
    let not_learned =
        || ApiError::NotFound(format!("nothing was learned under task type `{task_type}`"));
    if task_type.is_empty() || task_type.chars().count() > 128 {
        return Err(not_learned());
    }
    let list = timed("store", api.store.agent_list(tenant)).await?;
    let names: Vec<AgentName> = list.agents.iter().map(|a| a.name.clone()).collect();
    let learned = timed("store", api.store.learned_stats(tenant, &names)).await?;
    let learned: Vec<_> = learned
        .into_iter()
        .filter(|l| l.task_type == task_type)
        .collect();
    if learned.is_empty() {
        return Err(not_learned());
    }
    let agents: Vec<AgentName> = names
        .into_iter()
        .filter(|n| learned.iter().any(|l| l.agent == n.as_str()))
        .collect();
    let now = now_ms();
    let query = ResultQuery {
        task_type: Some(task_type.to_string()),
        success: None,
        since_ms: 0,
        until_ms: now,
        limit: MAX_RESULTS,
    };
    let (found, circuits, history) = futures::try_join!(
        results_of(api, tenant, &agents, &query),
        async { Ok::<_, ApiError>(api.store.circuits(tenant, &agents).await?) },
        async { Ok::<_, ApiError>(api.store.patterns(tenant, task_type).await?) },
    )?;
    let results: Vec<PastResult> = found.into_iter().flatten().collect();
    let half_life = api.settings.half_life_ms();
    let is_open = |agent: &str| circuits.get(agent).is_some_and(|c| c.open);
    let mut views = Vec::with_capacity(learned.len());
    let mut route_now: Option<RouteNow> = None;
    for record in &learned {
        let stats = &record.stats;
        let mut own: Vec<PastResult> = results
            .iter()
            .filter(|r| *r.agent == *record.agent)
            .cloned()
            .collect();
        own.sort_by_key(|r| std::cmp::Reverse(r.finished_at_ms));
        let mut latencies: Vec<u64> = own.iter().map(|r| r.latency_ms).collect();
        let success_rate = rate(stats.successes, stats.count);
        let enabled = list
            .agents
            .iter()
            .any(|a| a.enabled && *a.name == *record.agent);
        let confidence = stats.confidence(now, half_life);
        if enabled
            && !is_open(&record.agent)
            && route_now
                .as_ref()
                .is_none_or(|best| confidence > best.confidence)
        {
            route_now = Some(RouteNow {
                agent: record.agent.clone(),
                confidence: (confidence * 1000.0).round() / 1000.0,
                calls: stats.count,
                success_rate,
            });
        }
        views.push(AgentPattern {
            agent: record.agent.clone(),
            calls: stats.count,
            success_rate,
            trend: patterns::trend(&own),
            latency_p50_ms: patterns::percentile(&mut latencies, 50.0),
            latency_p90_ms: patterns::percentile(&mut latencies, 90.0),
            tokens_per_call: (stats.count > 0 && stats.input_tokens + stats.output_tokens > 0)
                .then(|| (stats.input_tokens + stats.output_tokens) as f64 / stats.count as f64),
            circuit_open: is_open(&record.agent),
        });
    }
    let body = Patterns {
        task_type: task_type.to_string(),
        agents: views,
        failure_patterns: patterns::failure_patterns(&results),
        route_now,
        history,
    };
    Ok(json_response(200, &body))
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        ((part as f64 / whole as f64) * 1000.0).round() / 1000.0
    }
}
