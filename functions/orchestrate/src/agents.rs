//! The registry's endpoints: register, read, list, replace,
//! patch, delete, enable and disable agents, and the summaries by category and by health.
//!
//! Every change is decided on the tenant's agents as read, and written with the premises it
//! was decided on (the agent's version, its guard, its needs still enabled), so two editors
//! cannot overwrite each other and the dependency guard cannot be raced past. `PUT` and
//! `PATCH` need the `ETag` the client read, in `If-Match`.

use baton_aws::invoker::guard::check_url_resolves;
use baton_chain::improve;
use baton_chain::queue::TaskQueue;
use baton_chain::store::{
    AgentChange, AgentCount, AgentList, AgentRegistry, AnalysisSchedule, ConfigStore,
    LearningStore, RoutingState,
};
use baton_types::agent::{Agent, AgentError, AgentRegistration};
use baton_types::circuit::CircuitState;
use baton_types::clock::now_ms;
use baton_types::ids::{AgentName, TenantId};
use baton_types::registry::{
    by_category, check_change, check_release, etag, health_summary, merge_patch, registration_of,
    requirements, GuardError, HealthSummary, IfMatch,
};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};

use crate::bodies::{AgentDeleted, AgentList as AgentListBody, CategoryList};
use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::{views, Api};

/// How many times a change is decided again when a premise moved meanwhile for a reason
/// other than the client's version (a dependent registered, a need disabled).
const DECISION_ROUNDS: usize = 3;

/// The body of `PATCH /v1/agents/{name}`: a JSON merge patch (RFC 7396) of the agent's
/// registration, the fields to change; `null` puts one back to its default.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AgentPatch(serde_json::Map<String, Value>);

/// The path's agent name; one that cannot be an agent's names none.
fn agent_name(call: &Call<'_>) -> Result<AgentName, ApiError> {
    let name = call.param("name");
    AgentName::parse(name).map_err(|_| not_found(name))
}

/// The agents by category.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/agents/categories", tag = "agents",
    responses((status = 200, body = CategoryList))))]
pub async fn agent_categories<S: AgentRegistry, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let list = timed("store", api.store.agent_list(&tenant)).await?;
    let categories = by_category(&list.agents);
    Ok(json_response(200, &CategoryList { categories }))
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("agent `{name}` is not registered"))
}

/// The agent's view with its `ETag`, circuit and load.
async fn agent_response<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    agent: &Agent,
    status: u16,
) -> Result<Response<Body>, ApiError>
where
    S: RoutingState + LearningStore,
{
    let names = std::slice::from_ref(&agent.name);
    let circuits = timed("store", api.store.circuits(tenant, names)).await?;
    let now = now_ms();
    let loads = timed("store", api.store.loads(tenant, names, now)).await?;
    let view = views::agent(
        agent,
        (tenant, &api.settings.tenancy),
        circuits.get(agent.name.as_str()),
        loads.get(agent.name.as_str()),
        now,
    );
    let mut response = json_response(status, &view);
    if let Ok(tag) = etag(agent.version).parse() {
        response
            .headers_mut()
            .insert(lambda_http::http::header::ETAG, tag);
    }
    if status == 201 {
        if let Ok(location) = format!("/v1/agents/{}", agent.name).parse() {
            response
                .headers_mut()
                .insert(lambda_http::http::header::LOCATION, location);
        }
    }
    Ok(response)
}

/// One agent.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/agents/{name}", tag = "agents",
    params(crate::paths::NamePath),
    responses(
        (status = 200, body = crate::bodies::AgentView, headers(("ETag" = String))),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn get_agent<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore,
{
    let tenant = &call.tenant()?;
    let name = &agent_name(call)?;
    let agent = api
        .store
        .agent(tenant, name)
        .await?
        .ok_or_else(|| not_found(name))?;
    agent_response(api, tenant, &agent, 200).await
}

/// Lists the tenant's agents, in name order.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/agents", tag = "agents",
    params(
        ("category" = Option<String>, Query, description = "Only agents of this category"),
        ("capability" = Option<String>, Query, description = "Only agents with this capability"),
        ("enabled" = Option<bool>, Query, description = "Only enabled (`true`) or disabled (`false`) agents"),
    ),
    responses((status = 200, body = AgentListBody))))]
pub async fn list_agents<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore,
{
    let tenant = &call.tenant()?;
    let query = call.request.query_string_parameters();
    let enabled = match query.first("enabled") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(
                format!("enabled must be `true` or `false`, got `{other}`"),
                json!({ "parameter": "enabled" }),
            ))
        }
    };
    let category = query.first("category");
    let capability = query.first("capability");
    let mut agents = timed("store", api.store.agents(tenant)).await?;
    agents.retain(|a| {
        enabled.is_none_or(|e| a.enabled == e)
            && category.is_none_or(|c| a.category.as_deref() == Some(c))
            && capability.is_none_or(|c| a.has_capability(c))
    });
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<AgentName> = agents.iter().map(|a| a.name.clone()).collect();
    let circuits = timed("store", api.store.circuits(tenant, &names)).await?;
    let now = now_ms();
    let loads = timed("store", api.store.loads(tenant, &names, now)).await?;
    let agents = agents
        .iter()
        .map(|a| {
            let tenancy = (tenant, &api.settings.tenancy);
            views::agent(
                a,
                tenancy,
                circuits.get(a.name.as_str()),
                loads.get(a.name.as_str()),
                now,
            )
        })
        .collect();
    Ok(json_response(200, &AgentListBody { agents }))
}

/// The registry's health at a glance.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/agents/health", tag = "agents",
    responses((status = 200, body = HealthSummary))))]
pub async fn agent_health<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore,
{
    let tenant = &call.tenant()?;
    let list = timed("store", api.store.agent_list(tenant)).await?;
    let summary = timed("store", health_of(api, tenant, &list, now_ms())).await?;
    Ok(json_response(200, &summary))
}

/// The registry's health at `now_ms`, from its list as read and the agents' circuits (one
/// batch read): `GET /v1/agents/health` and `GET /v1/stats`.
pub(crate) async fn health_of<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    list: &AgentList,
    now_ms: i64,
) -> Result<HealthSummary, ApiError>
where
    S: LearningStore,
{
    let names: Vec<AgentName> = list.agents.iter().map(|a| a.name.clone()).collect();
    let circuits = api.store.circuits(tenant, &names).await?;
    let open = |agent: &Agent| {
        circuits
            .get(agent.name.as_str())
            .is_some_and(|c| c.state(now_ms, &agent.breaker()) == CircuitState::Open)
    };
    Ok(health_summary(&list.agents, list.unreadable.clone(), open))
}

/// Refuses an agent whose URL the deployment's endpoint policy refuses, or whose host does
/// not resolve or resolves to a refused address. Runs before any write: a refused agent
/// stores nothing.
async fn check_agent_urls<S, Q>(api: &Api<S, Q>, agent: &Agent) -> Result<(), ApiError> {
    for (field, url) in agent.urls() {
        check_url_resolves(url, &api.settings.endpoint_policy, api.resolver.as_ref())
            .await
            .map_err(|e| {
                let shown: String = url.chars().take(200).collect();
                ApiError::invalid(
                    format!("{field} `{shown}` is refused: {e}"),
                    json!({ "field": field }),
                )
            })?;
    }
    Ok(())
}

/// The registration in a body: the agent validated, its references owned by the tenant (a
/// secret, a function and a model in its namespace or the operator's allow-list), its URLs
/// checked. Refusals name the field and never repeat a reference.
async fn validated<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    registration: AgentRegistration,
    now: i64,
) -> Result<Agent, ApiError> {
    let _validate = crate::timing::phase("validate");
    let invalid = |e: AgentError| ApiError::invalid(e.to_string(), json!({ "field": e.field() }));
    let agent = registration.into_agent(now).map_err(invalid)?;
    api.settings
        .tenancy
        .check_agent(tenant, &agent)
        .map_err(invalid)?;
    check_agent_urls(api, &agent).await?;
    Ok(agent)
}

/// The guard's refusals: a need unknown or circular is a bad request; a state that forbids
/// the change (needed by enabled agents, needing disabled ones) is a conflict. A need that
/// only a sync agent's `conversation.depends_on` states is named as that field.
fn guard_error(error: GuardError, agent: Option<&Agent>) -> ApiError {
    let field = match agent {
        Some(a) if error.field() == "requires" && a.requires.is_empty() => {
            "conversation.depends_on"
        }
        _ => error.field(),
    };
    let details = json!({ "field": field, "agents": error.agents() });
    match error {
        GuardError::UnknownDependency { .. } | GuardError::Cycle { .. } => {
            ApiError::invalid(error.to_string(), details)
        }
        GuardError::RequiredBy { .. } | GuardError::NeedsDisabled { .. } => ApiError::Refused {
            status: 409,
            code: "dependency_guard",
            message: error.to_string(),
            details,
        },
    }
}

pub(crate) fn if_match(request: &Request) -> Result<Option<IfMatch>, ApiError> {
    let Some(header) = request.headers().get(lambda_http::http::header::IF_MATCH) else {
        return Ok(None);
    };
    header
        .to_str()
        .ok()
        .and_then(IfMatch::parse)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                "If-Match must name an ETag this API gave, such as \"3\", or be *",
                json!({ "header": "if-match" }),
            )
        })
}

fn precondition_required(name: &str) -> ApiError {
    ApiError::Refused {
        status: 428,
        code: "precondition_required",
        message: format!(
            "changing agent `{name}` needs If-Match with the ETag you read (GET /v1/agents/{name})"
        ),
        details: json!({ "header": "if-match" }),
    }
}

fn version_mismatch(agent: &Agent) -> ApiError {
    ApiError::Refused {
        status: 412,
        code: "version_mismatch",
        message: format!(
            "agent `{}` changed since you read it: it is at version {} now; read it again",
            agent.name, agent.version
        ),
        details: json!({ "header": "if-match", "etag": etag(agent.version) }),
    }
}

/// What a change to one agent becomes, given the registry as it is now.
enum Decision {
    /// Store this (None: delete the agent), with this status for the answer.
    Write(Option<Agent>, u16),
    /// Nothing to write: the agent already is as asked.
    Unchanged(Agent),
}

/// Decides a change on a fresh read of the registry and writes it with its premises, again
/// if a premise other than the client's version moved meanwhile. A new agent or a deletion
/// moves the tenant's count of agents in the same write, within `agent_limit`.
async fn apply<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    name: &str,
    decide: impl Fn(&AgentList) -> Result<Decision, ApiError>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
{
    let agent_limit = crate::admission::quotas(api, tenant).await?.agents;
    let change_id = uuid::Uuid::new_v4().to_string();
    for _ in 0..DECISION_ROUNDS {
        let list = timed("store", api.store.agent_list(tenant)).await?;
        let current = list.get(name);
        let (stored, status) = match decide(&list)? {
            Decision::Unchanged(agent) => return agent_response(api, tenant, &agent, 200).await,
            Decision::Write(stored, status) => (stored, status),
        };
        if let Some(agent) = &stored {
            check_change(&list.agents, agent).map_err(|e| guard_error(e, Some(agent)))?;
        } else {
            check_release(&list.agents, name).map_err(|e| guard_error(e, None))?;
        }
        let releases = stored.as_ref().is_none_or(|a| !a.enabled);
        let needs: Vec<&str> = stored
            .as_ref()
            .filter(|a| a.enabled)
            .map(|a| requirements(a).into_iter().collect())
            .unwrap_or_default();
        let registered = (list.agents.len() + list.unreadable.len()) as u64;
        let delta = match (current, &stored) {
            (None, Some(_)) => 1,
            (Some(_), None) => -1,
            _ => 0,
        };
        let change = AgentChange {
            name,
            agent: stored.as_ref(),
            expected_version: current.map(|a| a.version),
            expected_guard: releases.then(|| list.guard(name)),
            needs,
            change_id: &change_id,
            count: (delta != 0).then_some(AgentCount {
                registered,
                delta,
                limit: agent_limit,
            }),
        };
        if timed("store", api.store.change_agent(tenant, &change)).await? {
            api.agents.forget(tenant);
            return match stored {
                Some(agent) => {
                    tracing::info!(%tenant, agent = %agent.name, version = agent.version, "agent stored");
                    if status == 201 {
                        // A tenant with agents gets a daily analysis; the first a day on.
                        let first = now_ms() + improve::DAILY_WINDOW_MS;
                        if let Err(error) = api.store.schedule_analysis(tenant, first).await {
                            tracing::warn!(%error, "the daily analysis not scheduled; the next registration tries again");
                        }
                    }
                    agent_response(api, tenant, &agent, status).await
                }
                None => {
                    tracing::info!(%tenant, agent = %name, "agent deleted");
                    Ok(json_response(
                        200,
                        &AgentDeleted {
                            name: name.to_string(),
                            status: "deleted".into(),
                        },
                    ))
                }
            };
        }
    }
    // Racing registrations may have taken the last places meanwhile.
    let counted = timed("store", api.store.agent_count(tenant)).await?;
    if let Some(registered) = counted.filter(|n| *n >= u64::from(agent_limit)) {
        return Err(agents_quota_exceeded(registered, agent_limit));
    }
    Err(ApiError::Refused {
        status: 409,
        code: "concurrent_change",
        message: format!("agent `{name}` or an agent it depends on kept changing; try again"),
        details: json!({}),
    })
}

/// Refuses a new agent once the tenant has its quota of them (unreadable items count too:
/// they hold their place in the registry).
fn within_quota(list: &AgentList, limit: u32) -> Result<(), ApiError> {
    let registered = (list.agents.len() + list.unreadable.len()) as u64;
    if registered >= u64::from(limit) {
        return Err(agents_quota_exceeded(registered, limit));
    }
    Ok(())
}

fn agents_quota_exceeded(registered: u64, limit: u32) -> ApiError {
    crate::admission::quota_exceeded(
        "agents",
        limit,
        format!("the tenant has {registered} agents, its quota of {limit}; delete one first"),
        None,
    )
}

/// The stored agent a change applies to, checked against `If-Match`.
fn matched<'a>(
    list: &'a AgentList,
    name: &str,
    condition: Option<&IfMatch>,
) -> Result<&'a Agent, ApiError> {
    let current = list.get(name).ok_or_else(|| not_found(name))?;
    match condition {
        Some(condition) if !condition.matches(current.version) => Err(version_mismatch(current)),
        _ => Ok(current),
    }
}

/// The next version of `current`, as `agent` says it should be.
fn successor(current: &Agent, mut agent: Agent, now: i64) -> Agent {
    agent.version = current.version + 1;
    agent.created_at_ms = current.created_at_ms;
    agent.updated_at_ms = now;
    // Health belongs to what was probed: kept while the agent is reached the same way.
    if agent.target == current.target && agent.health_check == current.health_check {
        agent.health = current.health.clone();
    }
    agent
}

/// Registers an agent; its name must be free.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/agents", tag = "agents",
    request_body(content = AgentRegistration, example = json!({
        "name": "summarizer",
        "endpoint": "https://agents.example.com/summarize",
        "capabilities": ["text.summarize"],
        "timeout_ms": 30000
    })),
    responses(
        (status = 201, body = crate::bodies::AgentView, headers(
            ("ETag" = String, description = "The agent's version, for `If-Match`"),
            ("Location" = String, description = "The agent's URL"))),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn register_agent<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
    Q: TaskQueue,
{
    let tenant = &call.tenant()?;
    let registration: AgentRegistration = parse_body(call.request)?;
    let agent = validated(api, tenant, registration, now_ms()).await?;
    let name = agent.name.clone();
    let limit = crate::admission::quotas(api, tenant).await?.agents;
    apply(api, tenant, &name, |list| {
        if list.get(&name).is_some() {
            return Err(ApiError::Conflict(format!(
                "agent `{name}` already exists: replace it with PUT /v1/agents/{name}"
            )));
        }
        within_quota(list, limit)?;
        Ok(Decision::Write(Some(agent.clone()), 201))
    })
    .await
}

/// A registration body for `name`: its `name` may be left out, and may not differ.
fn registration_for(name: &str, mut body: Value) -> Result<AgentRegistration, ApiError> {
    let Some(fields) = body.as_object_mut() else {
        return Err(ApiError::invalid(
            "the body must be a JSON object",
            json!({}),
        ));
    };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), json!(name));
        }
        Some(given) if given != name => {
            return Err(ApiError::invalid(
                format!(
                "the body names another agent than the path (`{name}`); an agent cannot be renamed"
            ),
                json!({ "field": "name" }),
            ))
        }
        Some(_) => {}
    }
    serde_json::from_value(body).map_err(ApiError::from_json)
}

/// Replaces an agent's registration (`If-Match` required), or registers it (no `If-Match`).
#[cfg_attr(feature = "openapi", utoipa::path(put, path = "/v1/agents/{name}", tag = "agents",
    params(
        crate::paths::NamePath,
        ("If-Match" = Option<String>, Header, description = "The `ETag` read: `\"3\"`, `W/\"3\"`, a list, or `*`"),
    ),
    request_body(content = ref("#/components/schemas/AgentReplacement")),
    responses(
        (status = 200, description = "Replaced", body = crate::bodies::AgentView, headers(("ETag" = String))),
        (status = 201, description = "Registered", body = crate::bodies::AgentView, headers(("ETag" = String), ("Location" = String))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 405, response = crate::openapi::MethodNotAllowed),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 428, response = crate::openapi::PreconditionRequired),
    )))]
pub async fn replace_agent<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
    Q: TaskQueue,
{
    let tenant = &call.tenant()?;
    let name = &agent_name(call)?;
    let request = call.request;
    let condition = if_match(request)?;
    let registration = registration_for(name, parse_body(request)?)?;
    let now = now_ms();
    let agent = validated(api, tenant, registration, now).await?;
    let limit = crate::admission::quotas(api, tenant).await?.agents;
    apply(api, tenant, name, |list| {
        match (list.get(name), &condition) {
            (None, None) => {
                within_quota(list, limit)?;
                Ok(Decision::Write(Some(agent.clone()), 201))
            }
            (None, Some(_)) => Err(not_found(name)),
            (Some(_), None) => Err(precondition_required(name)),
            (Some(_), Some(_)) => {
                let current = matched(list, name, condition.as_ref())?;
                Ok(Decision::Write(
                    Some(successor(current, agent.clone(), now)),
                    200,
                ))
            }
        }
    })
    .await
}

/// Changes an agent by a JSON merge patch (RFC 7396) of its registration; `null` puts a
/// field back to its default.
#[cfg_attr(feature = "openapi", utoipa::path(patch, path = "/v1/agents/{name}", tag = "agents",
    params(
        crate::paths::NamePath,
        ("If-Match" = String, Header, description = "The `ETag` read: `\"3\"`, `W/\"3\"`, a list, or `*`"),
    ),
    request_body(content(
        (AgentPatch = "application/merge-patch+json"),
        (AgentPatch = "application/json"),
    )),
    responses(
        (status = 200, body = crate::bodies::AgentView, headers(("ETag" = String))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 405, response = crate::openapi::MethodNotAllowed),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 428, response = crate::openapi::PreconditionRequired),
    )))]
pub async fn patch_agent<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
    Q: TaskQueue,
{
    let tenant = &call.tenant()?;
    let name = &agent_name(call)?;
    let request = call.request;
    let condition = if_match(request)?;
    let mut changes: Value = parse_body(request)?;
    let Some(fields) = changes.as_object_mut() else {
        return Err(ApiError::invalid(
            "a PATCH body is a JSON object of the fields to change (null removes one)",
            json!({}),
        ));
    };
    // The deprecated name patches `requires` (the stored registration says `requires`); a
    // patch naming both is refused as a registration naming both is.
    if !fields.contains_key("requires") {
        if let Some(list) = fields.remove("depends_on") {
            fields.insert("requires".into(), list);
        }
    }
    if changes.get("name").is_some_and(|n| n != name.as_str()) {
        return Err(ApiError::invalid(
            "an agent cannot be renamed",
            json!({ "field": "name" }),
        ));
    }
    // Validated once on the agent as read: the write is conditioned on that version.
    let list = timed("store", api.store.agent_list(tenant)).await?;
    let Some(condition) = condition else {
        list.get(name).ok_or_else(|| not_found(name))?;
        return Err(precondition_required(name));
    };
    let current = matched(&list, name, Some(&condition))?.clone();
    let mut body = registration_of(&current);
    merge_patch(&mut body, &changes);
    let now = now_ms();
    let agent = validated(api, tenant, registration_for(name, body)?, now).await?;
    let next = successor(&current, agent, now);
    apply(api, tenant, name, |list| {
        matched(list, name, Some(&condition))?;
        Ok(Decision::Write(Some(next.clone()), 200))
    })
    .await
}

/// Removes an agent no enabled agent needs.
#[cfg_attr(feature = "openapi", utoipa::path(delete, path = "/v1/agents/{name}", tag = "agents",
    params(
        crate::paths::NamePath,
        crate::paths::OptionalIfMatch,
    ),
    responses(
        (status = 200, body = AgentDeleted),
        (status = 404, response = crate::openapi::NotFound),
        (status = 405, response = crate::openapi::MethodNotAllowed),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )))]
pub async fn delete_agent<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
{
    let tenant = &call.tenant()?;
    let name = &agent_name(call)?;
    let condition = if_match(call.request)?;
    apply(api, tenant, name, |list| {
        matched(list, name, condition.as_ref())?;
        Ok(Decision::Write(None, 200))
    })
    .await
}

/// Turns an agent on; asking for the state it is in changes nothing.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/agents/{name}/enable",
    tag = "agents",
    params(
        crate::paths::NamePath,
        crate::paths::OptionalIfMatch,
    ),
    responses(
        (status = 200, body = crate::bodies::AgentView, headers(("ETag" = String))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )))]
pub async fn enable_agent<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
{
    set_enabled(api, call, true).await
}

/// Turns an agent off, unless enabled agents need it.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/agents/{name}/disable",
    tag = "agents",
    params(
        crate::paths::NamePath,
        crate::paths::OptionalIfMatch,
    ),
    responses(
        (status = 200, body = crate::bodies::AgentView, headers(("ETag" = String))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )))]
pub async fn disable_agent<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
{
    set_enabled(api, call, false).await
}

/// Enables or disables the path's agent, guarded; `If-Match` is optional.
async fn set_enabled<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
    enabled: bool,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + ConfigStore + AnalysisSchedule,
{
    let tenant = &call.tenant()?;
    let name = &agent_name(call)?;
    let condition = if_match(call.request)?;
    let now = now_ms();
    apply(api, tenant, name, |list| {
        let current = matched(list, name, condition.as_ref())?;
        if current.enabled == enabled {
            return Ok(Decision::Unchanged(current.clone()));
        }
        let mut next = current.clone();
        next.enabled = enabled;
        next.version = current.version + 1;
        next.updated_at_ms = now;
        Ok(Decision::Write(Some(next), 200))
    })
    .await
}
