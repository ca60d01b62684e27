//! orchestrate: the HTTP API (API Gateway HTTP API, payload v2).
//!
//! It validates requests completely before it writes anything, so a rejected request stores
//! nothing; stores workflows and agents; and sends a new workflow's ready tasks to routing.
//! A write whose response was lost and that the SDK repeated is recognised as this request's
//! own, so a stored workflow or agent is never answered with a conflict.
//!
//! Every operation is declared once, in [`ROUTES`]: the table dispatches requests to the
//! handlers, and the OpenAPI document describes the same handlers (see `openapi`).

pub mod admission;
pub mod agents;
pub mod bodies;
pub mod contexts;
pub mod conversation;
pub mod error;
pub mod identity;
pub mod improvements;
pub mod memory;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "openapi")]
pub mod paths;
pub mod routes;
pub mod secrets;
pub mod service;
pub mod sessions;
pub mod settings;
pub mod stats;
pub mod streams;
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
    AdmissionStore, AgentRegistry, AnalysisSchedule, ConfigStore, ContextStore, ImprovementStore,
    LearningStore, PatternStore, RoutingState, SessionStore, StatsStore, StreamLog, TenantCounters,
    TurnStore, WorkflowControls, WorkflowStore,
};
use baton_types::ids::{AgentName, TenantId};
use baton_types::learning::AgentStats;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

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
    pub stats: TtlCache<(TenantId, String, Vec<AgentName>), HashMap<String, AgentStats>>,
    /// How a tenant's `classify` agent is asked about a turn; None: the rules decide.
    pub classifier: Option<Arc<dyn AgentInvoker>>,
    /// Resolves agents' hosts at registration, to refuse those that lead somewhere refused.
    pub resolver: Arc<dyn HostResolver>,
    /// The queues' depths for `GET /v1/stats`; None: it shows no queues.
    pub queue_stats: Option<Arc<dyn QueueStats>>,
    /// Where tenants' secrets are kept (`/v1/secrets`); None: those routes answer 503.
    pub vault: Option<Arc<dyn SecretVault>>,
    /// What stream tokens are signed with (the deployment's secret); None: no streaming
    /// endpoint, and `POST /v1/stream-tokens` answers 503.
    pub stream_key: Option<Arc<Vec<u8>>>,
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
            stream_key: None,
        }
    }

    pub fn with_stream_key(mut self, key: Vec<u8>) -> Self {
        self.stream_key = Some(Arc::new(key));
        self
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
    + ImprovementStore
    + PatternStore
    + ContextStore
    + AnalysisSchedule
    + StreamLog
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
        + ImprovementStore
        + PatternStore
        + ContextStore
        + AnalysisSchedule
        + StreamLog
{
}

/// The Lambda handler: every outcome, including errors, is an HTTP response.
/// A response handed to Lambda as it is. lambda_http's conversion of a `Response<B>` decodes
/// a text body again by its charset, which links encoding_rs' tables (about 130 KB) for
/// charsets the API never sends; every body here is already a `Body`.
pub struct AsIs(pub Response<Body>);

impl lambda_http::IntoResponse for AsIs {
    fn into_response(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
        Box::pin(std::future::ready(self.0))
    }
}

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

/// Declares the API's operations once: `METHOD "/path/{param}" => module::handler,`. It
/// makes [`ROUTES`], the dispatch to each handler, and (under `openapi`) [`Operations`], the
/// document's paths from each handler's `#[utoipa::path]`, so that no operation can be served
/// and not documented, or documented and not served.
macro_rules! routes {
    ($($method:ident $path:literal => $($handler:ident)::+,)*) => {
        /// Every operation of the API, in the document's order.
        pub const ROUTES: &[routes::Route] = &[
            $(routes::Route { method: stringify!($method), path: $path },)*
        ];

        async fn call<S, Q>(
            api: &Api<S, Q>,
            route: &routes::Route,
            call: &routes::Call<'_>,
        ) -> Result<Response<Body>, ApiError>
        where
            S: ApiStore,
            Q: TaskQueue,
        {
            $(
                if route.method == stringify!($method) && route.path == $path {
                    return $($handler)::+(api, call).await;
                }
            )*
            Err(ApiError::NotFound(format!("no route for {}", route.path)))
        }

        /// The operations of [`ROUTES`], each described by its handler's `#[utoipa::path]`.
        #[cfg(feature = "openapi")]
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($handler)::+),*))]
        pub struct Operations;
    };
}

routes! {
    GET "/health" => service::health,
    GET "/openapi.json" => service::openapi_json,

    GET "/v1/agents" => agents::list_agents,
    POST "/v1/agents" => agents::register_agent,
    GET "/v1/agents/categories" => agents::agent_categories,
    GET "/v1/agents/health" => agents::agent_health,
    GET "/v1/agents/{name}" => agents::get_agent,
    PUT "/v1/agents/{name}" => agents::replace_agent,
    PATCH "/v1/agents/{name}" => agents::patch_agent,
    DELETE "/v1/agents/{name}" => agents::delete_agent,
    POST "/v1/agents/{name}/enable" => agents::enable_agent,
    POST "/v1/agents/{name}/disable" => agents::disable_agent,

    POST "/v1/workflows" => workflows::submit_workflow,
    GET "/v1/workflows" => workflows::list_workflows,
    GET "/v1/workflows/{id}" => workflows::get_workflow,
    GET "/v1/workflows/{id}/plan" => workflows::workflow_plan,
    GET "/v1/workflows/{id}/tasks/{task}" => workflows::workflow_task,
    GET "/v1/workflows/{id}/tasks/{task}/events" => streams::task_events,
    GET "/v1/workflows/{id}/events" => streams::workflow_events,
    POST "/v1/stream-tokens" => streams::stream_token,
    GET "/v1/workflows/{id}/history" => workflows::workflow_history,
    GET "/v1/workflows/{id}/graph" => workflows::workflow_graph,
    POST "/v1/workflows/{id}/cancel" => workflows::cancel_workflow,
    POST "/v1/workflows/{id}/pause" => workflows::pause_workflow,
    POST "/v1/workflows/{id}/resume" => workflows::resume_workflow,
    POST "/v1/workflows/{id}/retry" => workflows::retry_workflow,

    POST "/v1/sessions" => sessions::open_session,
    GET "/v1/sessions/{id}" => sessions::get_session,
    DELETE "/v1/sessions/{id}" => sessions::end_session,
    POST "/v1/sessions/{id}/messages" => sessions::send_message,
    GET "/v1/sessions/{id}/turns/{turn}" => sessions::get_turn,
    POST "/v1/sessions/{id}/resume" => sessions::resume_session,
    POST "/orchestrate" => sessions::orchestrate,

    GET "/v1/capabilities" => settings::list_capabilities,
    GET "/v1/capabilities/{name}" => settings::get_capability,
    PUT "/v1/capabilities/{name}" => settings::set_capability,
    GET "/v1/priorities" => settings::get_priorities,
    PUT "/v1/priorities" => settings::set_priorities,

    GET "/v1/stats" => stats::stats,
    GET "/v1/memory/recent" => memory::recent,
    GET "/v1/memory/relevant" => memory::relevant,
    GET "/v1/memory/patterns/{task_type}" => memory::patterns,
    PUT "/v1/contexts/{name}" => contexts::put_context,
    GET "/v1/contexts/{name}" => contexts::get_context,
    PATCH "/v1/contexts/{name}" => contexts::patch_context,
    DELETE "/v1/contexts/{name}" => contexts::delete_context,

    POST "/v1/improvements/analyze" => improvements::analyze,
    GET "/v1/improvements" => improvements::list,
    GET "/v1/improvements/report" => improvements::report,
    POST "/v1/improvements/{id}/dismiss" => improvements::dismiss,
    POST "/v1/improvements/{id}/applied" => improvements::applied,

    GET "/v1/secrets" => secrets::list_secrets,
    GET "/v1/secrets/{name}" => secrets::get_secret,
    PUT "/v1/secrets/{name}" => secrets::put_secret,
    DELETE "/v1/secrets/{name}" => secrets::delete_secret,

    GET "/v1/quotas" => tenants::own_quotas,
    GET "/v1/tenants/{id}/quotas" => tenants::get_tenant_quotas,
    PUT "/v1/tenants/{id}/quotas" => tenants::set_tenant_quotas,
}

async fn dispatch<S, Q>(api: &Api<S, Q>, request: &Request) -> Result<Response<Body>, ApiError>
where
    S: ApiStore,
    Q: TaskQueue,
{
    let (route, found) = routes::find(ROUTES, request, &api.settings.tenant_source)?;
    call(api, route, &found).await
}
