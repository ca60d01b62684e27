//! The OpenAPI 3.1 document of the HTTP API, generated (with utoipa, under the `openapi`
//! feature only) from the types the handlers parse and answer with. The Lambda binary does
//! not link this: it serves the committed docs/openapi.json, and a test fails when that file
//! differs from [`document`].
//!
//! To add an endpoint:
//! 1. write its operation below, beside its neighbours: an empty fn under
//!    `#[utoipa::path(method, path = "...", params(...), request_body = T, responses(...))]`,
//!    where `T` is the type the handler parses, each success names the type the handler
//!    answers with (`body = ...`), and each error the operation itself can give is one of the
//!    shared responses (`response = NotFound`…). Every operation is tenant-scoped unless it
//!    says `security(())`: those get `X-Tenant-Id`, 400, 401 and 503 from [`TenantScoped`];
//! 2. add the fn to `paths(...)` of [`ApiDoc`];
//! 3. give each new body type `#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]`;
//! 4. regenerate the file:
//!    `cargo run -q -p baton-orchestrate --features openapi --example openapi > docs/openapi.json`.

#![allow(dead_code)] // The operation fns and the error responses exist for their attributes.

use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Required, Schema};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::bodies::*;
use crate::conversation::{OrchestratorQuery, ResumeInput, TurnInput};
use crate::workflows::{
    ControlAnswer, WorkflowDetail, WorkflowHistory, WorkflowList, WorkflowPlan,
};
use crate::{CapabilityDefaultsInput, PrioritiesInput, WorkflowSubmission};
use baton_types::agent::AgentRegistration;
use baton_types::registry::HealthSummary;
use baton_types::session::SessionInput;

/// The document, as committed in docs/openapi.json: compact, with a final newline, since the
/// binary carries it (64 KB; pretty it would be twice that). `jq . docs/openapi.json` reads it.
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_json()
        .expect("the document serializes");
    json.push('\n');
    json
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "A serverless orchestrator for AI agents: register agents, submit workflows \
            of tasks, hold conversations. Every request belongs to a tenant: deployed \
            (`AuthMode=jwt`), a claim of the bearer token; with `AuthMode=header` and the local \
            stack, the `X-Tenant-Id` header. Errors are always an `ErrorBody`; a rejected request \
            stores nothing. A method a path does not list answers 405 `method_not_allowed`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        health, openapi_json,
        list_agents, register_agent, agent_categories, agent_health, get_agent, replace_agent,
        patch_agent, delete_agent, enable_agent, disable_agent,
        submit_workflow, list_workflows, get_workflow, workflow_plan, workflow_task,
        workflow_history, workflow_graph, cancel_workflow, pause_workflow, resume_workflow,
        retry_workflow,
        open_session, get_session, end_session, send_message, get_turn, resume_session,
        orchestrate,
        list_capabilities, get_capability, set_capability,
        get_priorities, set_priorities,
        stats,
        list_secrets, get_secret, put_secret, delete_secret,
        own_quotas, get_tenant_quotas, set_tenant_quotas,
    ),
    components(schemas(ErrorBody), responses(
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
        PreconditionFailed, PayloadTooLarge, PreconditionRequired, QuotaExceeded, Unavailable,
    )),
    modifiers(&TenantScoped, &AgentReplacement),
    security(("jwt" = []), ()),
    tags(
        (name = "service", description = "Unauthenticated: the health check and this document."),
        (name = "agents", description = "The registry. Changes name the version they read in `If-Match`."),
        (name = "workflows", description = "DAGs of tasks routed to agents."),
        (name = "conversations", description = "Sessions and their turns, and the compatibility endpoint `/orchestrate`."),
        (name = "settings", description = "The tenant's routing defaults and priority multipliers."),
        (name = "observe", description = "Routing, health, learning, queues and running workflows at a glance."),
        (name = "tenancy", description = "The tenant's own secrets (write-only values) and quotas; the operator's quotas per tenant."),
    ),
)]
struct ApiDoc;

// The errors, each an `ErrorBody` with the status's codes.

/// `invalid_json` or `invalid_request`: `details` names the field, header or parameter.
#[derive(ToResponse)]
struct BadRequest(ErrorBody);
/// `unauthorized`: no valid bearer token, or its claims name no tenant (`AuthMode=jwt`); no
/// `X-Tenant-Id` (`AuthMode=header`). API Gateway's own refusal of a missing or invalid token
/// has the body `{"message": "Unauthorized"}`.
#[derive(ToResponse)]
struct Unauthorized(ErrorBody);
/// `forbidden`: the route is the operator's, and the caller lacks the operator's scope (the
/// same for every id, so it tells nothing of what exists).
#[derive(ToResponse)]
struct Forbidden(ErrorBody);
/// `quota_exceeded`: the tenant's quota refuses it now (`details.quota`, `details.limit`);
/// nothing was stored. Try again after `Retry-After` seconds; without one, it can never fit.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds until trying again can succeed")))]
struct QuotaExceeded(ErrorBody);
/// `not_found`: nothing of that name for this tenant (another tenant's is answered the same).
#[derive(ToResponse)]
struct NotFound(ErrorBody);
/// `method_not_allowed`.
#[derive(ToResponse)]
#[response(headers(("Allow" = String, description = "The methods the path has")))]
struct MethodNotAllowed(ErrorBody);
/// `conflict`, `dependency_guard`, `concurrent_change`, `turn_in_progress`, `not_paused`,
/// `no_core_agent`, `secret_in_use`, `quota_exceeded` (a count the tenant must bring down:
/// agents, secrets) or `invalid_state` (a workflow control; `details.status` is the
/// workflow's): the state of what the request names forbids it now.
#[derive(ToResponse)]
struct Conflict(ErrorBody);
/// `version_mismatch`: `If-Match` names another version than the stored one (`details.etag`).
#[derive(ToResponse)]
struct PreconditionFailed(ErrorBody);
/// `payload_too_large`: the body is over 1 MB.
#[derive(ToResponse)]
struct PayloadTooLarge(ErrorBody);
/// `precondition_required`: changing an existing agent needs `If-Match`.
#[derive(ToResponse)]
struct PreconditionRequired(ErrorBody);
/// `unavailable`: a dependency (DynamoDB, SQS, Secrets Manager) failed; the request may be
/// sent again. `details.request_id` names it in the service's logs.
#[derive(ToResponse)]
struct Unavailable(ErrorBody);

/// Every operation that names no `security` of its own belongs to a tenant: it takes
/// `X-Tenant-Id` (header mode) and can answer 400 for a malformed one, 401 without a usable
/// token (jwt mode) and 503 when the tables fail. The bearer scheme is described here too.
struct TenantScoped;

impl Modify for TenantScoped {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Deployed with `AuthMode=jwt` (the default): a token of the stack's \
                         issuer and audience, verified by API Gateway, whose `TenantClaim` claim \
                         names the tenant. With `AuthMode=header` and the local stack no token is \
                         needed.",
                    ))
                    .build(),
            ),
        );
        let tenant = Parameter::builder()
            .name("X-Tenant-Id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "The tenant, with `AuthMode=header` and the local stack, where a request \
                 without it is refused (401); ignored where tenants come from tokens.",
            ))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(NAME_PATTERN))
                    .max_length(Some(64)),
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    not_null(parameter);
                }
                if operation.security.is_some() {
                    // `security(())`: open to anyone, which OpenAPI writes as no requirement.
                    operation.security = Some(Vec::new());
                    continue;
                }
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .insert(0, tenant.clone());
                add_error(operation, "400", "BadRequest");
                add_error(operation, "401", "Unauthorized");
                add_error(operation, "503", "Unavailable");
            }
        }
    }
}

/// A parameter is absent or has a value: `Option<T>` makes it optional, never null.
fn not_null(parameter: &mut Parameter) {
    if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema {
        if let SchemaType::Array(types) = &schema.schema_type {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            if let [one] = types.as_slice() {
                schema.schema_type = SchemaType::Type(one.clone());
            }
        }
    }
}

fn add_error(operation: &mut Operation, status: &str, response: &str) {
    let reference = Ref::from_response_name(response);
    let responses = &mut operation.responses.responses;
    responses
        .entry(status.to_string())
        .or_insert(RefOr::Ref(reference));
}

/// `PUT /v1/agents/{name}` takes a registration whose `name` may be left out (it is the path's).
struct AgentReplacement;

impl Modify for AgentReplacement {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(utoipa::openapi::Schema::Object(mut schema))) =
            components.schemas.get("AgentRegistration").cloned()
        else {
            return;
        };
        schema.required.retain(|field| field != "name");
        schema.description = Some(
            "An agent's whole registration; `name` may be left out, and may not differ from the \
             path's."
                .into(),
        );
        components.schemas.insert(
            "AgentReplacement".into(),
            RefOr::T(utoipa::openapi::Schema::Object(schema)),
        );
    }
}

/// Agent and tenant names, and session ids (at most 36 of them).
const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";

// ---- service ------------------------------------------------------------------------------

/// The health check.
#[utoipa::path(get, path = "/health", tag = "service", security(()),
    responses((status = 200, body = Health)))]
fn health() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
fn openapi_json() {}

// ---- agents -------------------------------------------------------------------------------

/// Lists the tenant's agents, in name order.
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    params(
        ("category" = Option<String>, Query, description = "Only agents of this category"),
        ("capability" = Option<String>, Query, description = "Only agents with this capability"),
        ("enabled" = Option<bool>, Query, description = "Only enabled (`true`) or disabled (`false`) agents"),
    ),
    responses((status = 200, body = AgentList)))]
fn list_agents() {}

/// Registers an agent; its name must be free.
#[utoipa::path(post, path = "/v1/agents", tag = "agents",
    request_body(content = AgentRegistration, example = json!({
        "name": "summarizer",
        "endpoint": "https://agents.example.com/summarize",
        "capabilities": ["text.summarize"],
        "timeout_ms": 30000
    })),
    responses(
        (status = 201, body = AgentView, headers(
            ("ETag" = String, description = "The agent's version, for `If-Match`"),
            ("Location" = String, description = "The agent's URL"))),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
    ))]
fn register_agent() {}

/// The agents by category.
#[utoipa::path(get, path = "/v1/agents/categories", tag = "agents",
    responses((status = 200, body = CategoryList)))]
fn agent_categories() {}

/// The registry's health at a glance.
#[utoipa::path(get, path = "/v1/agents/health", tag = "agents",
    responses((status = 200, body = HealthSummary)))]
fn agent_health() {}

/// One agent.
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)),
    responses(
        (status = 200, body = AgentView, headers(("ETag" = String))),
        (status = 404, response = NotFound),
    ))]
fn get_agent() {}

/// Replaces an agent's registration (`If-Match` required), or registers it (no `If-Match`).
#[utoipa::path(put, path = "/v1/agents/{name}", tag = "agents",
    params(
        ("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read: `\"3\"`, `W/\"3\"`, a list, or `*`"),
    ),
    request_body(content = ref("#/components/schemas/AgentReplacement")),
    responses(
        (status = 200, description = "Replaced", body = AgentView, headers(("ETag" = String))),
        (status = 201, description = "Registered", body = AgentView, headers(("ETag" = String), ("Location" = String))),
        (status = 404, response = NotFound),
        (status = 405, response = MethodNotAllowed),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 428, response = PreconditionRequired),
    ))]
fn replace_agent() {}

/// Changes an agent by a JSON merge patch (RFC 7396) of its registration; `null` puts a
/// field back to its default.
#[utoipa::path(patch, path = "/v1/agents/{name}", tag = "agents",
    params(
        ("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64),
        ("If-Match" = String, Header, description = "The `ETag` read: `\"3\"`, `W/\"3\"`, a list, or `*`"),
    ),
    request_body(content(
        (Object = "application/merge-patch+json"),
        (Object = "application/json"),
    )),
    responses(
        (status = 200, body = AgentView, headers(("ETag" = String))),
        (status = 404, response = NotFound),
        (status = 405, response = MethodNotAllowed),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 428, response = PreconditionRequired),
    ))]
fn patch_agent() {}

/// Removes an agent no enabled agent needs.
#[utoipa::path(delete, path = "/v1/agents/{name}", tag = "agents",
    params(
        ("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read (optional)"),
    ),
    responses(
        (status = 200, body = AgentDeleted),
        (status = 404, response = NotFound),
        (status = 405, response = MethodNotAllowed),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
    ))]
fn delete_agent() {}

/// Turns an agent on; asking for the state it is in changes nothing.
#[utoipa::path(post, path = "/v1/agents/{name}/enable", tag = "agents",
    params(
        ("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read (optional)"),
    ),
    responses(
        (status = 200, body = AgentView, headers(("ETag" = String))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
    ))]
fn enable_agent() {}

/// Turns an agent off, unless enabled agents need it.
#[utoipa::path(post, path = "/v1/agents/{name}/disable", tag = "agents",
    params(
        ("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read (optional)"),
    ),
    responses(
        (status = 200, body = AgentView, headers(("ETag" = String))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
    ))]
fn disable_agent() {}

// ---- workflows ----------------------------------------------------------------------------

/// Submits a workflow: at most 500 tasks, 64 KB of input per task. Tasks beyond the tenant's
/// burst start at their turn at its pace (`pacing`); past its backlog or its running
/// workflows it is refused (429) and nothing is stored.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
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
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = QuotaExceeded),
    ))]
fn submit_workflow() {}

/// The tenant's workflows, newest first, a page at a time (from an index, never a scan).
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    params(
        ("status" = Option<String>, Query, description = "`running`, `paused`, `cancelling`, `succeeded`, `failed` or `cancelled`"),
        ("name" = Option<String>, Query, description = "Only workflows of exactly this name", min_length = 1, max_length = 200),
        ("since" = Option<String>, Query, format = DateTime, description = "Only workflows created at or after this RFC 3339 time"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the page before"),
    ),
    responses((status = 200, body = WorkflowList)))]
fn list_workflows() {}

/// A workflow and all its tasks (outputs over 8 KiB left out: see `output_truncated`).
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = WorkflowDetail),
        (status = 404, response = NotFound),
    ))]
fn get_workflow() {}

/// The workflow's plan, from what is learned now.
#[utoipa::path(get, path = "/v1/workflows/{id}/plan", tag = "workflows",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = WorkflowPlan),
        (status = 404, response = NotFound),
    ))]
fn workflow_plan() {}

/// One task, its output whole.
#[utoipa::path(get, path = "/v1/workflows/{id}/tasks/{task}", tag = "workflows",
    params(
        ("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36),
        ("task" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64),
    ),
    responses(
        (status = 200, body = crate::workflows::TaskView),
        (status = 404, response = NotFound),
    ))]
fn workflow_task() {}

/// Every transition of the workflow, oldest first, derived from what is stored.
#[utoipa::path(get, path = "/v1/workflows/{id}/history", tag = "workflows",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = WorkflowHistory),
        (status = 404, response = NotFound),
    ))]
fn workflow_history() {}

/// The DAG as Mermaid or DOT, with statuses, agents and the critical path.
#[utoipa::path(get, path = "/v1/workflows/{id}/graph", tag = "workflows",
    params(
        ("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36),
        ("format" = Option<String>, Query, description = "`mermaid` (the default) or `dot`"),
    ),
    responses(
        (status = 200, description = "The graph", content_type = "text/plain; charset=utf-8", body = String),
        (status = 404, response = NotFound),
    ))]
fn workflow_graph() {}

/// Cancels the workflow: tasks not started end `cancelled`, running ones finish (with
/// `force=true`, they are cancelled too, and their late results change nothing).
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(
        ("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36),
        ("force" = Option<bool>, Query, description = "Also stop waiting on running tasks"),
    ),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
fn cancel_workflow() {}

/// Pauses the workflow: nothing new starts; running tasks finish and keep their results.
#[utoipa::path(post, path = "/v1/workflows/{id}/pause", tag = "workflows",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
fn pause_workflow() {}

/// Resumes a paused workflow: what became ready meanwhile starts now.
#[utoipa::path(post, path = "/v1/workflows/{id}/resume", tag = "workflows",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
fn resume_workflow() {}

/// Redrives a failed or cancelled workflow: its failed, cancelled and skipped tasks run
/// again as new attempts; succeeded ones keep their outputs.
#[utoipa::path(post, path = "/v1/workflows/{id}/retry", tag = "workflows",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = ControlAnswer),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
fn retry_workflow() {}

// ---- conversations ------------------------------------------------------------------------

/// Opens a session; without `agents`, every agent with a conversation role takes part.
#[utoipa::path(post, path = "/v1/sessions", tag = "conversations",
    request_body = SessionInput,
    responses(
        (status = 201, body = SessionCreated, headers(("Location" = String))),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
    ))]
fn open_session() {}

/// A session, unless it ended or idled out.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "conversations",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = SessionView),
        (status = 404, response = NotFound),
    ))]
fn get_session() {}

/// Ends a session and removes everything it holds.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "conversations",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    responses(
        (status = 200, body = SessionEnded),
        (status = 404, response = NotFound),
    ))]
fn end_session() {}

/// Sends a message: a turn, answered within `wait` seconds (200) or still running (202).
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "conversations",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    request_body = TurnInput,
    responses(
        (status = 200, description = "The turn ended, or the session is paused for a human",
            body = TurnAnswer, headers(("Server-Timing" = String))),
        (status = 202, description = "The turn is still running",
            body = TurnView, headers(("Server-Timing" = String), ("Location" = String))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = QuotaExceeded),
    ))]
fn send_message() {}

/// One turn of a session.
#[utoipa::path(get, path = "/v1/sessions/{id}/turns/{turn}", tag = "conversations",
    params(
        ("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36),
        ("turn" = u32, Path, minimum = 1),
    ),
    responses(
        (status = 200, body = TurnView),
        (status = 404, response = NotFound),
    ))]
fn get_turn() {}

/// Resumes a session paused for a human, with the human's reply if any.
#[utoipa::path(post, path = "/v1/sessions/{id}/resume", tag = "conversations",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)),
    request_body = Option<ResumeInput>,
    responses(
        (status = 200, body = SessionResumed),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
    ))]
fn resume_session() {}

/// Seed 001's `OrchestratorQuery`: a turn of the conversation `conversation_id`, opened if new.
#[utoipa::path(post, path = "/orchestrate", tag = "conversations",
    request_body = OrchestratorQuery,
    responses(
        (status = 200, description = "The turn ended, or the session is paused for a human",
            body = TurnAnswer, headers(("Server-Timing" = String))),
        (status = 202, description = "The turn is still running",
            body = TurnView, headers(("Server-Timing" = String), ("Location" = String))),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = QuotaExceeded),
    ))]
fn orchestrate() {}

// ---- settings -----------------------------------------------------------------------------

/// The capabilities with routing defaults set.
#[utoipa::path(get, path = "/v1/capabilities", tag = "settings",
    responses((status = 200, body = CapabilityList)))]
fn list_capabilities() {}

/// A capability's routing defaults (the built-in ones if none were set).
#[utoipa::path(get, path = "/v1/capabilities/{name}", tag = "settings",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length = 64)),
    responses((status = 200, body = CapabilityView)))]
fn get_capability() {}

/// Sets a capability's routing defaults.
#[utoipa::path(put, path = "/v1/capabilities/{name}", tag = "settings",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length = 64)),
    request_body = CapabilityDefaultsInput,
    responses(
        (status = 200, body = CapabilityView),
        (status = 413, response = PayloadTooLarge),
    ))]
fn set_capability() {}

/// The priority levels, multipliers and bands.
#[utoipa::path(get, path = "/v1/priorities", tag = "settings",
    responses((status = 200, body = PrioritiesView)))]
fn get_priorities() {}

/// Sets the tenant's priority multipliers by task type.
#[utoipa::path(put, path = "/v1/priorities", tag = "settings",
    request_body = PrioritiesInput,
    responses(
        (status = 200, body = PrioritiesView),
        (status = 413, response = PayloadTooLarge),
    ))]
fn set_priorities() {}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

    /// The served document is the generated one; `BLESS=1` rewrites the file.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let generated = document();
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(DOCUMENT, &generated).expect("docs/openapi.json is writable");
            return;
        }
        let committed = std::fs::read_to_string(DOCUMENT).unwrap_or_default();
        if committed != generated || crate::OPENAPI_JSON != generated {
            let at = committed
                .bytes()
                .zip(generated.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(committed.len().min(generated.len()));
            let around = |text: &str| {
                let from = at.saturating_sub(60);
                String::from_utf8_lossy(&text.as_bytes()[from..(at + 60).min(text.len())])
                    .into_owned()
            };
            panic!(
                "docs/openapi.json is not the document the types describe; regenerate it:\n  \
                 cargo run -q -p baton-orchestrate --features openapi --example openapi > \
                 docs/openapi.json\n(or BLESS=1 cargo test -p baton-orchestrate openapi).\n\
                 First difference at byte {at}:\n  committed: {}\n  generated: {}",
                around(&committed),
                around(&generated),
            );
        }
    }

    #[test]
    fn every_error_answer_is_an_error_body() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('2') {
                        continue;
                    }
                    let reference = response["$ref"].as_str().unwrap_or_default();
                    let name = reference.trim_start_matches("#/components/responses/");
                    let schema = &doc["components"]["responses"][name]["content"]
                        ["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

// ---- observe -------------------------------------------------------------------------------

/// Routing, health and learning summaries and the tenant's running workflows; with the
/// operator's scope, every queue's depth too.
#[utoipa::path(get, path = "/v1/stats", tag = "observe",
    responses((status = 200, body = crate::stats::Stats)))]
fn stats() {}

// ---- tenancy ------------------------------------------------------------------------------

/// The tenant's secrets: names and dates, never values.
#[utoipa::path(get, path = "/v1/secrets", tag = "tenancy",
    responses((status = 200, body = crate::secrets::SecretList)))]
fn list_secrets() {}

/// One secret's name, reference and dates; never its value.
#[utoipa::path(get, path = "/v1/secrets/{name}", tag = "tenancy",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)),
    responses(
        (status = 200, body = crate::secrets::SecretView),
        (status = 404, response = NotFound),
    ))]
fn get_secret() {}

/// Stores a value as the tenant's secret `name` (an agent's `api_key` then names its
/// `reference`). The value is write-only: no answer, log or item ever holds it.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "tenancy",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)),
    request_body(content = crate::secrets::SecretInput, example = json!({ "value": "sk-..." })),
    responses(
        (status = 200, description = "Its value replaced", body = crate::secrets::SecretView),
        (status = 201, description = "Created", body = crate::secrets::SecretView, headers(("Location" = String))),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
    ))]
fn put_secret() {}

/// Deletes a secret at once; refused while one of the tenant's agents names it.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "tenancy",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)),
    responses(
        (status = 200, body = crate::secrets::SecretDeleted),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
fn delete_secret() {}

/// The tenant's quotas in effect, and what it uses now.
#[utoipa::path(get, path = "/v1/quotas", tag = "tenancy",
    responses((status = 200, body = crate::tenants::QuotaView)))]
fn own_quotas() {}

/// A tenant's quotas (the operator's scope only).
#[utoipa::path(get, path = "/v1/tenants/{id}/quotas", tag = "tenancy",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)),
    responses(
        (status = 200, body = crate::tenants::QuotaView),
        (status = 403, response = Forbidden),
    ))]
fn get_tenant_quotas() {}

/// Sets a tenant's quotas over the deployment's defaults (the operator's scope only); each
/// field left out keeps the default.
#[utoipa::path(put, path = "/v1/tenants/{id}/quotas", tag = "tenancy",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)),
    request_body(content = baton_types::quota::QuotaOverrides,
        example = json!({ "tasks_per_second": 20, "running_workflows": 50 })),
    responses(
        (status = 200, body = crate::tenants::QuotaView),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
    ))]
fn set_tenant_quotas() {}
