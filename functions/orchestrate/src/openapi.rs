//! The OpenAPI 3.1 document of the HTTP API, generated (with utoipa, under the `openapi`
//! feature only) from the types the handlers parse and answer with. The Lambda binary does
//! not link this: it serves the committed docs/openapi.json, and a test fails when that file
//! differs from [`document`].
//!
//! To add an endpoint:
//! 1. write its handler, `async fn name(api, call) -> Result<Response<Body>, ApiError>`,
//!    under `#[cfg_attr(feature = "openapi", utoipa::path(method, path = "...", params(...),
//!    request_body = T, responses(...)))]`, where `T` is the type the handler parses, each
//!    success names the type it answers with (`body = ...`), and each error the operation
//!    itself can give is one of the shared responses here (`response = crate::openapi::
//!    NotFound`…). Every operation is tenant-scoped unless it says `security(())`: those get
//!    `X-Tenant-Id`, 400, 401 and 503 from `TenantScoped`;
//! 2. add it to the `routes!` table in the crate root, which serves it and documents it;
//! 3. give each new body type `#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]`;
//! 4. if it creates something other operations name by id, list them in `LINKS`;
//! 5. regenerate the file:
//!    `cargo run -q -p baton-orchestrate --features openapi --example openapi > docs/openapi.json`.

#![allow(dead_code)] // The error responses exist for their attributes.

use std::collections::HashMap;

use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Required, Schema};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::bodies::ErrorBody;

/// The document, as committed in docs/openapi.json: compact, with a final newline, since the
/// binary carries it (64 KB; pretty it would be twice that). `jq . docs/openapi.json` reads it.
pub fn document() -> String {
    let mut document = serde_json::to_value(spec()).expect("the document serializes");
    spell_links(&mut document);
    let mut json = document.to_string();
    json.push('\n');
    json
}

/// utoipa 5.5 writes a link's target as `operation_id`; OpenAPI spells it `operationId`.
fn spell_links(document: &mut serde_json::Value) {
    let links = document["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        if let Some(target) = link.shift_remove("operation_id") {
            link.shift_insert(0, "operationId".into(), target);
        }
    }
}

/// The document: the service's description and shared parts, the operations of the route
/// table, then what applies to every tenant-scoped operation.
fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::Operations::openapi());
    TenantScoped.modify(&mut doc);
    AgentReplacement.modify(&mut doc);
    Links.modify(&mut doc);
    doc
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
    components(schemas(ErrorBody), responses(
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
        PreconditionFailed, PayloadTooLarge, PreconditionRequired, QuotaExceeded, Unavailable,
    )),
    security(("jwt" = []), ()),
    tags(
        (name = "service", description = "Unauthenticated: the health check and this document."),
        (name = "agents", description = "The registry. Changes name the version they read in `If-Match`."),
        (name = "workflows", description = "DAGs of tasks routed to agents."),
        (name = "conversations", description = "Sessions and their turns, and the compatibility endpoint `/orchestrate`."),
        (name = "settings", description = "The tenant's routing defaults and priority multipliers."),
        (name = "improvements", description = "Suggestions from measured data, each with the API call a person could make; Baton never applies one itself."),
        (name = "memory", description = "What Baton remembers: recent results and relevant memories."),
        (name = "observe", description = "Routing, health, learning, queues and running workflows at a glance."),
        (name = "tenancy", description = "The tenant's own secrets (write-only values) and quotas; the operator's quotas per tenant."),
    ),
)]
struct ApiDoc;

// The errors, each an `ErrorBody` with the status's codes.

/// `invalid_json` or `invalid_request`: `details` names the field, header or parameter.
#[derive(ToResponse)]
pub struct BadRequest(ErrorBody);
/// `unauthorized`: no valid bearer token, or its claims name no tenant (`AuthMode=jwt`); no
/// `X-Tenant-Id` (`AuthMode=header`). API Gateway's own refusal of a missing or invalid token
/// has the body `{"message": "Unauthorized"}`.
#[derive(ToResponse)]
pub struct Unauthorized(ErrorBody);
/// `forbidden`: the route is the operator's, and the caller lacks the operator's scope (the
/// same for every id, so it tells nothing of what exists).
#[derive(ToResponse)]
pub struct Forbidden(ErrorBody);
/// `quota_exceeded`: the tenant's quota refuses it now (`details.quota`, `details.limit`);
/// nothing was stored. Try again after `Retry-After` seconds; without one, it can never fit.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds until trying again can succeed")))]
pub struct QuotaExceeded(ErrorBody);
/// `not_found`: nothing of that name for this tenant (another tenant's is answered the same).
#[derive(ToResponse)]
pub struct NotFound(ErrorBody);
/// `method_not_allowed`.
#[derive(ToResponse)]
#[response(headers(("Allow" = String, description = "The methods the path has")))]
pub struct MethodNotAllowed(ErrorBody);
/// `conflict`, `dependency_guard`, `concurrent_change`, `turn_in_progress`, `not_paused`,
/// `no_core_agent`, `secret_in_use`, `quota_exceeded` (a count the tenant must bring down:
/// agents, secrets) or `invalid_state` (a workflow control; `details.status` is the
/// workflow's): the state of what the request names forbids it now.
#[derive(ToResponse)]
pub struct Conflict(ErrorBody);
/// `version_mismatch`: `If-Match` names another version than the stored one (`details.etag`).
#[derive(ToResponse)]
pub struct PreconditionFailed(ErrorBody);
/// `payload_too_large`: the body is over 1 MB.
#[derive(ToResponse)]
pub struct PayloadTooLarge(ErrorBody);
/// `precondition_required`: changing an existing agent needs `If-Match`.
#[derive(ToResponse)]
pub struct PreconditionRequired(ErrorBody);
/// `unavailable`: a dependency (DynamoDB, SQS, Secrets Manager) failed; the request may be
/// sent again. `details.request_id` names it in the service's logs.
#[derive(ToResponse)]
pub struct Unavailable(ErrorBody);

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
        for operation in operations(openapi) {
            for parameter in operation.parameters.iter_mut().flatten() {
                not_null(parameter);
                if parameter.name == "If-Match" {
                    set_pattern(parameter, IF_MATCH_PATTERN);
                }
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

/// What `IfMatch::parse` reads: `*`, or a list of this API's tags, weak or strong.
const IF_MATCH_PATTERN: &str = r#"^ *(\*|(W/)?"[0-9]{1,19}"( *, *(W/)?"[0-9]{1,19}")*) *$"#;

fn set_pattern(parameter: &mut Parameter, pattern: &str) {
    if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema {
        schema.pattern = Some(pattern.to_string());
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

/// From an answer that creates something to the operations that take its id: the creating
/// operation and its status, the id's parameters and where the answer's body holds them, and
/// the operations they lead to. Generated clients and stateful testers follow these.
const LINKS: &[Created] = &[
    Created {
        by: "register_agent",
        status: "201",
        ids: &[("name", "$response.body#/name")],
        leads_to: &[
            "get_agent",
            "replace_agent",
            "patch_agent",
            "disable_agent",
            "enable_agent",
            "delete_agent",
        ],
    },
    Created {
        by: "submit_workflow",
        status: "202",
        // A submission has at least one task; the first's id reaches its task view.
        ids: &[
            ("id", "$response.body#/workflow_id"),
            ("task", "$request.body#/tasks/0/id"),
        ],
        leads_to: &[
            "get_workflow",
            "workflow_plan",
            "workflow_graph",
            "workflow_history",
            "workflow_task",
            "pause_workflow",
            "resume_workflow",
            "retry_workflow",
            "cancel_workflow",
        ],
    },
    Created {
        by: "open_session",
        status: "201",
        ids: &[("id", "$response.body#/session_id")],
        leads_to: &[
            "get_session",
            "send_message",
            "resume_session",
            "end_session",
        ],
    },
    Created {
        by: "send_message",
        status: "202",
        ids: &[
            ("id", "$response.body#/session_id"),
            ("turn", "$response.body#/turn"),
        ],
        leads_to: &["get_turn", "get_session"],
    },
    Created {
        by: "orchestrate",
        status: "202",
        ids: &[
            ("id", "$response.body#/session_id"),
            ("turn", "$response.body#/turn"),
        ],
        leads_to: &["get_turn", "get_session"],
    },
    Created {
        by: "put_secret",
        status: "201",
        ids: &[("name", "$response.body#/name")],
        leads_to: &["get_secret", "delete_secret"],
    },
];

/// One creating answer and where its ids lead.
struct Created {
    by: &'static str,
    status: &'static str,
    ids: &'static [(&'static str, &'static str)],
    leads_to: &'static [&'static str],
}

struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Each operation's path parameters: a link passes a target only those it takes.
        let path_parameters: HashMap<String, Vec<String>> = operations(openapi)
            .filter_map(|operation| {
                let names = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| p.parameter_in == ParameterIn::Path)
                    .map(|p| p.name.clone())
                    .collect();
                Some((operation.operation_id.clone()?, names))
            })
            .collect();
        for created in LINKS {
            let (by, status) = (created.by, created.status);
            let Some(response) = operations(openapi)
                .find(|operation| operation.operation_id.as_deref() == Some(by))
                .and_then(|operation| operation.responses.responses.get_mut(status))
            else {
                panic!("LINKS names `{by}` {status}, which the document does not have");
            };
            let RefOr::T(response) = response else {
                panic!("`{by}` {status} is a shared response; links belong to its own");
            };
            for target in created.leads_to {
                let Some(takes) = path_parameters.get(*target) else {
                    panic!("LINKS leads to `{target}`, which the document does not have");
                };
                let link = created
                    .ids
                    .iter()
                    .filter(|(name, _)| takes.iter().any(|p| p == name))
                    .fold(
                        Link::builder().operation_id(*target),
                        |link, (name, expression)| link.parameter(*name, *expression),
                    );
                response
                    .links
                    .insert(target.to_string(), RefOr::T(link.build()));
            }
        }
    }
}

/// Every operation of the document.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Agent and tenant names, and session ids (at most 36 of them).
const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";

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
        if committed != generated || crate::service::OPENAPI_JSON != generated {
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

    /// A link gives its target every path parameter the target takes, so a client can follow
    /// it without knowing anything else.
    #[test]
    fn every_link_fills_its_targets_path() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let operations: Vec<&serde_json::Value> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .collect();
        let path_of = |id: &str| {
            let operation = operations
                .iter()
                .find(|o| o["operationId"] == id)
                .unwrap_or_else(|| panic!("no operation `{id}`"));
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            parameters
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let mut links = 0;
        for operation in &operations {
            for response in operation["responses"].as_object().unwrap().values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"]
                        .as_str()
                        .expect("links name an operation");
                    let given = link["parameters"].as_object().unwrap();
                    for name in path_of(target) {
                        assert!(given.contains_key(&name), "{target} needs `{name}`: {link}");
                    }
                    assert_eq!(given.len(), path_of(target).len(), "{target}: {link}");
                    links += 1;
                }
            }
        }
        assert!(links >= LINKS.len(), "{links} links");
    }

    /// The route table and the document list the same operations: one cannot be served and
    /// not documented, or documented and not served.
    #[test]
    fn every_route_is_documented_and_every_operation_routed() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let documented: std::collections::BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().unwrap().keys();
                methods.map(|m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let routed: std::collections::BTreeSet<(String, String)> = crate::ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(
            routed.len(),
            crate::ROUTES.len(),
            "a route is declared twice"
        );
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routed, not documented: {undocumented:?}"
        );
        assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
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
