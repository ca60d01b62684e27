//! orchestrate: the HTTP API (API Gateway HTTP API, payload v2).
//!
//! It validates requests completely before it writes anything, so a rejected request stores
//! nothing; stores workflows and agents; and sends a new workflow's ready tasks to routing.
//! A write whose response was lost and that the SDK repeated is recognised as this request's
//! own, so a stored workflow or agent is never answered with a conflict.

pub mod admission;
pub mod agents;
pub mod bodies;
pub mod conversation;
pub mod error;
pub mod identity;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod secrets;
pub mod stats;
pub mod tenants;
pub mod timing;
pub mod views;
pub mod workflows;

use baton_aws::invoker::guard::{HostResolver, SystemResolver};
use baton_aws::vault::SecretVault;
use baton_chain::cache::{AgentCache, ConfigCache, TtlCache, DEFAULT_TTL};
use baton_chain::config::Settings;
use baton_chain::invoker::AgentInvoker;
use baton_chain::queue::{QueueStats, TaskQueue};
use baton_chain::store::{
    AdmissionStore, AgentRegistry, ConfigStore, LearningStore, NewTask, NewWorkflow, RoutingState,
    SessionStore, StatsStore, TenantCounters, TurnStore, WorkflowControls, WorkflowStore,
};
use baton_types::clock::now_ms;
use baton_types::clock::rfc3339;
use baton_types::dag::{Dag, DagError, Plan, TaskEstimate, TaskSpec};
use baton_types::learning::AgentStats;
use baton_types::learning::{expected_latency, DEFAULT_ESTIMATE_MS};
use baton_types::messages::{RouteMessage, TaskRef};
use baton_types::names::{check_name, NameKind};
use baton_types::priority::{check_multipliers, parse_deadline, Band, Multipliers, Priority};
use baton_types::quota::Demand;
use baton_types::resources::parse_resources;
use baton_types::retry::{PolicyError, RetryPolicyInput, RetryPolicySpec};
use baton_types::routing::{CapabilityDefaults, RoutingStrategy, MAX_LATENCY_TARGET_MS};
use baton_types::session::SessionInput;
use baton_types::task::{TaskProfile, TaskStatus};
use lambda_http::http::Method;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use error::json_response;
pub use error::ApiError;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A task's input is stored in its item; keep room there for its output.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
pub const MAX_WORKFLOW_NAME_CHARS: usize = 200;
/// Bounds of `timeout_s`, for a task and for a workflow.
pub const MAX_TIMEOUT_S: i64 = 900;
pub use identity::{DEFAULT_TENANT, TENANT_HEADER};

pub struct Api<S, Q> {
    pub store: S,
    pub queue: Q,
    pub settings: Settings,
    /// Submissions read the tenant's settings and agents (for priorities and the plan) from
    /// these for a few seconds; the API's own views always read the tables.
    pub config: ConfigCache,
    pub agents: AgentCache,
    pub stats: TtlCache<(String, String, Vec<String>), HashMap<String, AgentStats>>,
    /// How a tenant's `classify` agent is asked about a turn; None: the rules decide.
    pub classifier: Option<Arc<dyn AgentInvoker>>,
    /// Resolves agents' hosts at registration, to refuse those that lead somewhere refused.
    pub resolver: Arc<dyn HostResolver>,
    /// The queues' depths for `GET /v1/stats`; None: it shows no queues.
    pub queue_stats: Option<Arc<dyn QueueStats>>,
    /// Where tenants' secrets are kept (`/v1/secrets`); None: those routes answer 503.
    pub vault: Option<Arc<dyn SecretVault>>,
}

impl<S, Q> Api<S, Q> {
    pub fn new(store: S, queue: Q, settings: Settings) -> Self {
        Api {
            store,
            queue,
            settings,
            config: ConfigCache::default(),
            agents: AgentCache::default(),
            stats: TtlCache::new(DEFAULT_TTL),
            classifier: None,
            resolver: Arc::new(SystemResolver),
            queue_stats: None,
            vault: None,
        }
    }

    pub fn with_vault(mut self, vault: Arc<dyn SecretVault>) -> Self {
        self.vault = Some(vault);
        self
    }

    pub fn with_queue_stats(mut self, queues: Arc<dyn QueueStats>) -> Self {
        self.queue_stats = Some(queues);
        self
    }

    pub fn with_classifier(mut self, invoker: Arc<dyn AgentInvoker>) -> Self {
        self.classifier = Some(invoker);
        self
    }
}

/// Everything the API needs of the store.
pub trait ApiStore:
    WorkflowStore
    + AdmissionStore
    + TenantCounters
    + WorkflowControls
    + AgentRegistry
    + LearningStore
    + ConfigStore
    + RoutingState
    + SessionStore
    + TurnStore
    + StatsStore
{
}

impl<S> ApiStore for S where
    S: WorkflowStore
        + AdmissionStore
        + TenantCounters
        + WorkflowControls
        + AgentRegistry
        + LearningStore
        + ConfigStore
        + RoutingState
        + SessionStore
        + TurnStore
        + StatsStore
{
}

/// The Lambda handler: every outcome, including errors, is an HTTP response.
pub async fn handle_request<S, Q>(
    api: &Api<S, Q>,
    request: Request,
) -> Result<Response<Body>, Error>
where
    S: ApiStore,
    Q: TaskQueue,
{
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.raw_http_path(),
        request_id = tracing::field::Empty,
    );
    let arrived = Instant::now();
    let request_id = request_id(&request);
    span.record("request_id", request_id.as_str());
    let (response, phases) = timing::recorded(dispatch(api, &request).instrument(span)).await;
    let mut response = response.unwrap_or_else(|e| e.into_response(&request_id));
    if let Ok(id) = request_id.parse() {
        response.headers_mut().insert("x-request-id", id);
    }
    timing::add_header(&mut response, &phases, arrived.elapsed());
    Ok(response)
}

/// API Gateway's id of the request (in its access log too), or a fresh one.
fn request_id(request: &Request) -> String {
    match request.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(context))
            if context
                .request_id
                .as_deref()
                .is_some_and(|id| !id.is_empty()) =>
        {
            context.request_id.clone().unwrap_or_default()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

async fn dispatch<S, Q>(api: &Api<S, Q>, request: &Request) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
    Q: TaskQueue,
{
    // Every route but `/health` asks whose request this is, where the stack is set to find it.
    let tenant = |request: &Request| identity::tenant(&api.settings.tenant_source, request);
    let path = request.raw_http_path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method();
    let allow = |allowed: &[Method]| allow_method(request, allowed);
    match segments.as_slice() {
        ["health"] => {
            allow(&[Method::GET])?;
            let status = "ok".to_string();
            Ok(json_response(200, &bodies::Health { status }))
        }
        ["openapi.json"] => {
            allow(&[Method::GET])?;
            Ok(openapi_response())
        }
        ["v1", "agents", rest @ ..] => {
            let tenant = tenant(request)?;
            agents::route(api, &tenant, request, rest).await
        }
        ["v1", "quotas"] => {
            let tenant = tenant(request)?;
            tenants::own(api, &tenant, request).await
        }
        ["v1", "tenants", id, "quotas"] => {
            // The operator acts across tenants, but still authenticates as one.
            tenant(request)?;
            tenants::operator(api, request, id).await
        }
        ["v1", "secrets", rest @ ..] => {
            let tenant = tenant(request)?;
            secrets::route(api, &tenant, request, rest).await
        }
        ["v1", "sessions"] => {
            allow(&[Method::POST])?;
            let tenant = tenant(request)?;
            let input: SessionInput = parse_body(request)?;
            let id = uuid::Uuid::now_v7().to_string();
            let session = conversation::open_session(api, &tenant, input, id).await?;
            let body = bodies::SessionCreated {
                expires_at: rfc3339(session.expires_at_ms()),
                session_id: session.id,
            };
            let mut response = json_response(201, &body);
            if let Ok(location) = format!("/v1/sessions/{}", body.session_id).parse() {
                response.headers_mut().insert("location", location);
            }
            Ok(response)
        }
        ["v1", "sessions", id] => {
            allow(&[Method::GET, Method::DELETE])?;
            let tenant = tenant(request)?;
            let not_found = || conversation::session_not_found(id);
            check_name(NameKind::Workflow, id).map_err(|_| not_found())?;
            if method == Method::DELETE {
                if !timing::timed("store", api.store.end_session(&tenant, id)).await? {
                    return Err(not_found());
                }
                baton_chain::metrics::session_ended();
                tracing::info!(tenant, session = %id, "session ended");
                return Ok(json_response(
                    200,
                    &bodies::SessionEnded {
                        session_id: id.to_string(),
                        status: "ended".into(),
                    },
                ));
            }
            let now = now_ms();
            let bundle = timing::timed("store", api.store.session_bundle(&tenant, id))
                .await?
                .filter(|b| !b.session.is_expired(now))
                .ok_or_else(not_found)?;
            Ok(json_response(200, &conversation::session_view(&bundle)))
        }
        ["v1", "sessions", id, "messages"] => {
            allow(&[Method::POST])?;
            let arrived = Instant::now();
            let tenant = tenant(request)?;
            let input: conversation::TurnInput = parse_body(request)?;
            let ask = input.check()?;
            let reply = conversation::run_turn(api, &tenant, id, ask, arrived).await?;
            Ok(conversation::turn_response(reply, arrived))
        }
        ["v1", "sessions", id, "turns", number] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            let not_found = || ApiError::NotFound(format!("session `{id}` has no turn `{number}`"));
            check_name(NameKind::Workflow, id).map_err(|_| not_found())?;
            let number: u32 = number.parse().map_err(|_| not_found())?;
            let turn = timing::timed("store", api.store.turn(&tenant, id, number))
                .await?
                .ok_or_else(not_found)?;
            Ok(json_response(200, &conversation::turn_view(&turn)))
        }
        ["v1", "sessions", id, "resume"] => {
            allow(&[Method::POST])?;
            let tenant = tenant(request)?;
            conversation::resume(api, &tenant, id, request).await
        }
        ["orchestrate"] => {
            allow(&[Method::POST])?;
            let arrived = Instant::now();
            let tenant = tenant(request)?;
            let query: conversation::OrchestratorQuery = parse_body(request)?;
            let reply = conversation::orchestrate(api, &tenant, query, arrived).await?;
            Ok(conversation::turn_response(reply, arrived))
        }
        ["v1", "capabilities"] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            let config = timing::timed("store", api.store.tenant_config(&tenant)).await?;
            let mut names: Vec<&String> = config.capabilities.keys().collect();
            names.sort();
            let capabilities = names
                .into_iter()
                .map(|name| views::capability(name, Some(&config.capability(name))))
                .collect();
            Ok(json_response(200, &bodies::CapabilityList { capabilities }))
        }
        ["v1", "capabilities", name] => {
            allow(&[Method::GET, Method::PUT])?;
            let tenant = tenant(request)?;
            check_name(NameKind::Capability, name)
                .map_err(|e| ApiError::invalid(e.to_string(), json!({ "field": "capability" })))?;
            if method == Method::PUT {
                let defaults = parse_body::<CapabilityDefaultsInput>(request)?.validate()?;
                let put = api.store.put_capability_defaults(&tenant, name, &defaults);
                timing::timed("store", put).await?;
                api.config.forget(&tenant);
                tracing::info!(tenant, capability = %name, "capability defaults set");
                return Ok(json_response(
                    200,
                    &views::capability(name, Some(&defaults)),
                ));
            }
            let config = timing::timed("store", api.store.tenant_config(&tenant)).await?;
            let defaults = config.capabilities.get(*name);
            Ok(json_response(200, &views::capability(name, defaults)))
        }
        ["v1", "stats"] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            let settings = &api.settings;
            let operator =
                identity::has_scope(&settings.tenant_source, request, &settings.operator_scope);
            stats::stats(api, &tenant, operator).await
        }
        ["v1", "priorities"] => {
            allow(&[Method::GET, Method::PUT])?;
            let tenant = tenant(request)?;
            if method == Method::PUT {
                let input: PrioritiesInput = parse_body(request)?;
                check_multipliers(&input.multipliers).map_err(|(field, reason)| {
                    ApiError::invalid(format!("{field}: {reason}"), json!({ "field": field }))
                })?;
                let put = api.store.put_multipliers(&tenant, &input.multipliers);
                timing::timed("store", put).await?;
                api.config.forget(&tenant);
                tracing::info!(tenant, "priority multipliers set");
                return Ok(json_response(200, &views::priorities(&input.multipliers)));
            }
            let config = timing::timed("store", api.store.tenant_config(&tenant)).await?;
            Ok(json_response(200, &views::priorities(&config.multipliers)))
        }
        ["v1", "workflows"] => {
            allow(&[Method::POST, Method::GET])?;
            let tenant = tenant(request)?;
            if method == Method::GET {
                return workflows::list(api, &tenant, request).await;
            }
            submit_workflow(api, &tenant, request).await
        }
        ["v1", "workflows", id, control @ ("cancel" | "pause" | "resume" | "retry")] => {
            allow(&[Method::POST])?;
            let tenant = tenant(request)?;
            let action = workflows::action_of(control, request)?;
            workflows::control(api, &tenant, id, action).await
        }
        ["v1", "workflows", id, "history"] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            workflows::workflow_history(api, &tenant, id).await
        }
        ["v1", "workflows", id, "graph"] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            workflows::graph(api, &tenant, id, request).await
        }
        ["v1", "workflows", id, "tasks", task] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            workflows::one_task(api, &tenant, id, task).await
        }
        ["v1", "workflows", id, "plan"] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            let view = workflows::stored(api, &tenant, id).await?;
            let specs = view.specs();
            // A stored workflow passed validation; only a damaged one could fail here.
            let dag = view
                .dag()
                .map_err(|e| ApiError::Unavailable(format!("stored workflow is malformed: {e}")))?;
            let plan = plan(api, &tenant, &dag, &specs, Freshness::Fresh).await?;
            Ok(json_response(
                200,
                &workflows::WorkflowPlan {
                    workflow_id: view.workflow.id.clone(),
                    status: workflows::shown_status(&view.workflow),
                    plan,
                },
            ))
        }
        ["v1", "workflows", id] => {
            allow(&[Method::GET])?;
            let tenant = tenant(request)?;
            let view = workflows::stored(api, &tenant, id).await?;
            Ok(json_response(200, &workflows::detail(&view)))
        }
        _ => Err(ApiError::NotFound(format!("no route for {path}"))),
    }
}

/// `GET /openapi.json`: the document generated by `openapi::document()`, as committed (a test
/// keeps the two equal), so the binary carries no generator.
fn openapi_response() -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::Text(OPENAPI_JSON.to_string()))
        .unwrap_or_else(|_| Response::new(Body::Text(OPENAPI_JSON.to_string())))
}

/// docs/openapi.json.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// `405` unless the request's method is one of `allowed`.
pub(crate) fn allow_method(request: &Request, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(request.method()) {
        Ok(())
    } else {
        let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Err(ApiError::MethodNotAllowed {
            method: request.method().to_string(),
            path: request.raw_http_path().to_string(),
            allowed: allowed.join(", "),
        })
    }
}

/// The request's body, within [`MAX_BODY_BYTES`] and not empty.
pub(crate) fn body_bytes(request: &Request) -> Result<&[u8], ApiError> {
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("the request body is empty", json!({})));
    }
    Ok(body)
}

pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let body = body_bytes(request)?;
    // Every body of this API is an object, and serde would read a struct from an array too.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(ApiError::from_json)?;
        return Err(ApiError::invalid(
            "the request body must be a JSON object, not an array",
            json!({}),
        ));
    }
    serde_json::from_slice(body).map_err(ApiError::from_json)
}

/// The body of `PUT /v1/capabilities/{name}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct CapabilityDefaultsInput {
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<baton_types::routing::RoutingStrategy>)
    )]
    routing: Option<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 600000))]
    latency_target_ms: Option<i64>,
}

impl CapabilityDefaultsInput {
    fn validate(self) -> Result<CapabilityDefaults, ApiError> {
        let routing = self
            .routing
            .as_deref()
            .map(|name| {
                RoutingStrategy::parse(name).ok_or_else(|| {
                    ApiError::invalid(
                        RoutingStrategy::unknown(name),
                        json!({ "field": "routing" }),
                    )
                })
            })
            .transpose()?;
        let latency_target_ms = self
            .latency_target_ms
            .map(|ms| {
                u64::try_from(ms)
                    .ok()
                    .filter(|ms| (1..=MAX_LATENCY_TARGET_MS).contains(ms))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("latency_target_ms must be between 1 and {MAX_LATENCY_TARGET_MS}, got {ms}"),
                            json!({ "field": "latency_target_ms" }),
                        )
                    })
            })
            .transpose()?;
        Ok(CapabilityDefaults {
            routing,
            latency_target_ms,
        })
    }
}

/// The body of `PUT /v1/priorities`: the tenant's multipliers by task type, over the defaults.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct PrioritiesInput {
    multipliers: std::collections::BTreeMap<String, f64>,
}

/// The body of `POST /v1/workflows`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct WorkflowSubmission {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    name: String,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 500))]
    tasks: Vec<TaskSpec>,
    #[serde(default)]
    defaults: WorkflowDefaults,
    /// The workflow's deadline, in seconds from submission.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 900))]
    timeout_s: Option<i64>,
}

/// What every task of a workflow gets unless it says otherwise.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct WorkflowDefaults {
    retry: Option<RetryPolicyInput>,
}

/// A submission that passed validation: the DAG, and each task's execution settings.
struct ValidWorkflow {
    dag: Dag,
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

async fn submit_workflow<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError>
where
    S: WorkflowStore + ConfigStore + AgentRegistry + LearningStore + AdmissionStore,
    Q: TaskQueue,
{
    let submission: WorkflowSubmission = timing::timed_sync("validate", || parse_body(request))?;
    let now = now_ms();
    let config = timing::timed("store", api.config.config(&api.store, tenant)).await?;
    let multipliers = config.multipliers();
    let ValidWorkflow {
        dag,
        mut settings,
        deadline_s,
    } = timing::timed_sync("validate", || {
        validate_workflow(&submission, &multipliers, now)
    })?;

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

    let workflow_id = uuid::Uuid::now_v7().to_string();
    let deadline_at_ms = deadline_s.map(|s| now + s as i64 * 1000);
    let check_at = now + api.settings.repair_after.as_millis() as i64;
    let tasks: Vec<NewTask> = submission
        .tasks
        .iter()
        .zip(settings)
        .map(|(spec, settings)| NewTask {
            id: spec.id.clone(),
            capability: spec.capability.clone(),
            dispatch_until_ms: settings
                .profile
                .paced_until_ms
                .map(|turn| turn + dispatch_timeout_ms),
            profile: settings.profile,
            input: spec.input.clone(),
            depends_on: spec.depends_on.clone(),
            dependents: dag
                .dependents_of(&spec.id)
                .into_iter()
                .map(str::to_string)
                .collect(),
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
                tenant: tenant.to_string(),
                workflow_id: workflow_id.clone(),
                task_id: t.id.clone(),
                attempt: 1,
            };
            RouteMessage::new(task, t.capability.clone(), t.profile.clone())
        })
        .collect();
    let workflow = NewWorkflow {
        tenant: tenant.to_string(),
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
    timing::timed("store", api.store.create_workflow(&workflow)).await?;
    if let Err(error) = timing::timed("enqueue", api.queue.send_route(&ready)).await {
        // The workflow is stored and its ready tasks hold dispatch leases: cleanup sends them
        // once the leases run out, so the submission stands.
        tracing::error!(workflow = %workflow_id, %error, "ready tasks not sent; cleanup will send them");
    }
    tracing::info!(tenant, workflow = %workflow_id, tasks = dag.len(), paced, "workflow accepted");
    let plan = plan(api, tenant, &dag, &submission.tasks, Freshness::Cached);
    let plan = timing::timed("plan", plan).await?;
    let body = bodies::WorkflowAccepted {
        workflow_id: workflow_id.clone(),
        status: "running".into(),
        plan,
        pacing: (paced > 0).then(|| bodies::Pacing {
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
    let score = multipliers.score(priority.unwrap_or_default(), task.task_type.as_deref());
    Ok(TaskProfile {
        task_type: task.task_type.clone(),
        routing,
        resources,
        priority,
        band: Band::of_score(score),
        deadline_at_ms,
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
    tenant: &str,
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
        let capable: Vec<String> = agents
            .iter()
            .filter(|a| a.enabled && a.has_capability(&task.capability))
            .map(|a| a.name.clone())
            .collect();
        let key = (tenant.to_string(), task_type.to_string(), capable.clone());
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
        let profile = task_profile(task, multipliers, now).map_err(field_error)?;
        settings.push(TaskSettings {
            retry,
            fallback: task.fallback.unwrap_or(true),
            timeout_ms,
            profile,
        });
        check_name(NameKind::Task, &task.id)
            .map_err(|e| ApiError::invalid(e.to_string(), at("id")))?;
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
        settings,
        deadline_s,
    })
}
