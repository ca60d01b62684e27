//! `/v1/contexts/{name}`: named, versioned JSON shared by related tasks across workflows.
//!
//! Each answer carries the context's `ETag` (its version); a change names the version it read
//! in `If-Match` (required for `PATCH`, optional for `PUT` and `DELETE`) and is refused with
//! 412 when another change came first. An expired context reads as one that does not exist.
//! A task names one with `"context"`; see [`baton_chain::context`] for its agent's updates.

use baton_chain::store::ContextStore;
use baton_types::clock::{now_ms, rfc3339};
use baton_types::contexts::{ContextError, ContextInput, StoredContext, MAX_CONTEXT_BYTES};
use baton_types::ids::AgentName;
use baton_types::registry::{etag, IfMatch};
use lambda_http::{Body, Response};
use serde::Serialize;
use serde_json::{json, Value};

use crate::agents::if_match;
use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::Api;

/// A context as the API shows it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextView {
    pub name: String,
    pub version: u64,
    pub value: Value,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: Option<String>,
}

/// The answer to `DELETE /v1/contexts/{name}`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextDeleted {
    pub name: String,
    pub deleted: bool,
}

fn respond(status: u16, context: &StoredContext) -> Response<Body> {
    let view = ContextView {
        name: context.name.clone(),
        version: context.version,
        value: context.value.clone(),
        updated_at: rfc3339(context.updated_at_ms),
        expires_at: context.expires_at_ms.map(rfc3339),
    };
    let mut response = json_response(status, &view);
    if let Ok(tag) = etag(context.version).parse() {
        response.headers_mut().insert("etag", tag);
    }
    response
}

/// The path's name, checked: one that breaks the rules names nothing.
fn context_name(call: &Call<'_>) -> Result<String, ApiError> {
    let name = call.param("name");
    AgentName::parse(name).map_err(|_| not_found(name))?;
    Ok(name.to_string())
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("context `{name}` does not exist"))
}

fn refused(error: ContextError) -> ApiError {
    match error {
        ContextError::TooLarge { .. } => ApiError::PayloadTooLarge {
            limit: MAX_CONTEXT_BYTES,
        },
        ContextError::BadTtl(_) => {
            ApiError::invalid(error.to_string(), json!({ "field": "ttl_s" }))
        }
    }
}

fn version_mismatch(context: Option<&StoredContext>) -> ApiError {
    let version = context.map_or(0, |c| c.version);
    ApiError::Refused {
        status: 412,
        code: "version_mismatch",
        message: match context {
            Some(c) => format!(
                "context `{}` changed since you read it: it is at version {version} now",
                c.name
            ),
            None => "the context does not exist, so no version matches".to_string(),
        },
        details: json!({ "header": "if-match", "etag": etag(version) }),
    }
}

/// The stored context that is live at `now` (an expired one is kept for its version).
async fn current<S: ContextStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
    name: &str,
) -> Result<(Option<StoredContext>, Option<StoredContext>), ApiError> {
    let tenant = call.tenant()?;
    let stored = timed("store", api.store.context(&tenant, name)).await?;
    let live = stored.clone().filter(|c| !c.is_expired(now_ms()));
    Ok((stored, live))
}

/// Creates or replaces the context; with `If-Match`, only over the version named.
#[cfg_attr(feature = "openapi", utoipa::path(put, path = "/v1/contexts/{name}", tag = "memory",
    params(crate::paths::NamePath, crate::paths::OptionalIfMatch),
    request_body(content = ContextInput, example = json!({ "value": { "audience": "developers" }, "ttl_s": 86400 })),
    responses(
        (status = 200, body = ContextView, headers(("ETag" = String))),
        (status = 201, body = ContextView, headers(("ETag" = String))),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn put_context<S: ContextStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    // A name that breaks the rules cannot be created: bad input, not an absent context.
    let name = call.param("name").to_string();
    AgentName::parse(&name)
        .map_err(|e| ApiError::invalid(format!("name: {e}"), json!({ "parameter": "name" })))?;
    let condition = if_match(call.request)?;
    let input: ContextInput = parse_body(call.request)?;
    let (stored, live) = current(api, call, &name).await?;
    if let Some(condition) = &condition {
        if !live.as_ref().is_some_and(|c| condition.matches(c.version)) {
            return Err(version_mismatch(live.as_ref()));
        }
    }
    let next = StoredContext::replace(&name, stored.as_ref(), input, now_ms()).map_err(refused)?;
    if !timed("store", api.store.write_context(&tenant, &next)).await? {
        let (_, live) = current(api, call, &name).await?;
        return Err(version_mismatch(live.as_ref()));
    }
    Ok(respond(if live.is_some() { 200 } else { 201 }, &next))
}

/// The context, with its version as the `ETag`.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/contexts/{name}", tag = "memory",
    params(crate::paths::NamePath),
    responses(
        (status = 200, body = ContextView, headers(("ETag" = String))),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn get_context<S: ContextStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let name = context_name(call)?;
    let (_, live) = current(api, call, &name).await?;
    let live = live.ok_or_else(|| not_found(&name))?;
    Ok(respond(200, &live))
}

/// Changes the context by a JSON merge patch (RFC 7396) over the version `If-Match` names.
#[cfg_attr(feature = "openapi", utoipa::path(patch, path = "/v1/contexts/{name}", tag = "memory",
    params(
        crate::paths::NamePath,
        ("If-Match" = String, Header, description = "The `ETag` read"),
    ),
    request_body(content = Object, description = "A JSON merge patch: null removes a member",
        example = json!({ "audience": "architects", "draft": null })),
    responses(
        (status = 200, body = ContextView, headers(("ETag" = String))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 428, response = crate::openapi::PreconditionRequired),
    )))]
pub async fn patch_context<S: ContextStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let name = context_name(call)?;
    let condition = if_match(call.request)?.ok_or_else(|| ApiError::Refused {
        status: 428,
        code: "precondition_required",
        message: format!("changing context `{name}` needs If-Match with the ETag you read"),
        details: json!({ "header": "if-match" }),
    })?;
    let patch: Value = parse_body(call.request)?;
    let (_, live) = current(api, call, &name).await?;
    let live = live.ok_or_else(|| not_found(&name))?;
    if !condition.matches(live.version) {
        return Err(version_mismatch(Some(&live)));
    }
    let next = live.patched(&patch, None, now_ms()).map_err(refused)?;
    if !timed("store", api.store.write_context(&tenant, &next)).await? {
        let (_, live) = current(api, call, &name).await?;
        return Err(version_mismatch(live.as_ref()));
    }
    Ok(respond(200, &next))
}

/// Deletes the context; with `If-Match`, only at the version named.
#[cfg_attr(feature = "openapi", utoipa::path(delete, path = "/v1/contexts/{name}", tag = "memory",
    params(crate::paths::NamePath, crate::paths::OptionalIfMatch),
    responses(
        (status = 200, body = ContextDeleted),
        (status = 404, response = crate::openapi::NotFound),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )))]
pub async fn delete_context<S: ContextStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let name = context_name(call)?;
    let condition = if_match(call.request)?;
    let (stored, live) = current(api, call, &name).await?;
    let live = live.ok_or_else(|| not_found(&name))?;
    if condition
        .as_ref()
        .is_some_and(|c: &IfMatch| !c.matches(live.version))
    {
        return Err(version_mismatch(Some(&live)));
    }
    let version = stored.map_or(live.version, |s| s.version);
    if !timed("store", api.store.delete_context(&tenant, &name, version)).await? {
        let (_, live) = current(api, call, &name).await?;
        return Err(version_mismatch(live.as_ref()));
    }
    Ok(json_response(
        200,
        &ContextDeleted {
            name,
            deleted: true,
        },
    ))
}
