//! The conversation routes: sessions, their messages and turns, and `/orchestrate`. The turns
//! themselves are `conversation`'s.

use baton_chain::queue::TaskQueue;
use baton_types::clock::{now_ms, rfc3339};
use baton_types::ids::SessionId;
use baton_types::session::SessionInput;
use lambda_http::{Body, Response};
use std::time::Instant;

use crate::bodies::{SessionCreated, SessionEnded};
use crate::conversation::{self, OrchestratorQuery, TurnInput};
use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::{Api, ApiStore};

/// Opens a session; without `agents`, every agent with a conversation role takes part.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/sessions", tag = "conversations",
    request_body = SessionInput,
    responses(
        (status = 201, body = SessionCreated, headers(("Location" = String))),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn open_session<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let input: SessionInput = parse_body(call.request)?;
    let id = conversation::new_session_id();
    let session = conversation::open_session(api, &tenant, input, id).await?;
    let body = SessionCreated {
        expires_at: rfc3339(session.expires_at_ms()),
        session_id: session.id.into(),
    };
    let mut response = json_response(201, &body);
    if let Ok(location) = format!("/v1/sessions/{}", body.session_id).parse() {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

/// A session, unless it ended or idled out.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/sessions/{id}",
    tag = "conversations",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = crate::bodies::SessionView),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn get_session<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let id = call.param("id");
    let not_found = || conversation::session_not_found(id);
    let id = &SessionId::parse(id).map_err(|_| not_found())?;
    let now = now_ms();
    let bundle = timed("store", api.store.session_bundle(&tenant, id))
        .await?
        .filter(|b| !b.session.is_expired(now))
        .ok_or_else(not_found)?;
    Ok(json_response(200, &conversation::session_view(&bundle)))
}

/// Ends a session and removes everything it holds.
#[cfg_attr(feature = "openapi", utoipa::path(delete, path = "/v1/sessions/{id}",
    tag = "conversations",
    params(crate::paths::IdPath),
    responses(
        (status = 200, body = SessionEnded),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn end_session<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let id = call.param("id");
    let not_found = || conversation::session_not_found(id);
    let id = &SessionId::parse(id).map_err(|_| not_found())?;
    if !timed("store", api.store.end_session(&tenant, id)).await? {
        return Err(not_found());
    }
    baton_chain::metrics::session_ended();
    tracing::info!(%tenant, session = %id, "session ended");
    let body = SessionEnded {
        session_id: id.into(),
        status: "ended".into(),
    };
    Ok(json_response(200, &body))
}

/// Sends a message: a turn, answered within `wait` seconds (200) or still running (202).
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/sessions/{id}/messages",
    tag = "conversations",
    params(crate::paths::IdPath),
    request_body = TurnInput,
    responses(
        (status = 200, description = "The turn ended, or the session is paused for a human",
            body = crate::bodies::TurnAnswer, headers(("Server-Timing" = String))),
        (status = 202, description = "The turn is still running",
            body = crate::bodies::TurnView,
            headers(("Server-Timing" = String), ("Location" = String))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 429, response = crate::openapi::QuotaExceeded),
    )))]
pub async fn send_message<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let arrived = Instant::now();
    let tenant = call.tenant()?;
    let input: TurnInput = parse_body(call.request)?;
    let ask = input.check()?;
    let id = call.param("id");
    let id = &SessionId::parse(id).map_err(|_| conversation::session_not_found(id))?;
    let reply = conversation::run_turn(api, &tenant, id, ask, arrived).await?;
    Ok(conversation::turn_response(reply, arrived))
}

/// One turn of a session.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/sessions/{id}/turns/{turn}",
    tag = "conversations",
    params(
        crate::paths::TurnPath,
    ),
    responses(
        (status = 200, body = crate::bodies::TurnView),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn get_turn<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let (id, number) = (call.param("id"), call.param("turn"));
    let not_found = || ApiError::NotFound(format!("session `{id}` has no turn `{number}`"));
    let id = &SessionId::parse(id).map_err(|_| not_found())?;
    let number: u32 = number.parse().map_err(|_| not_found())?;
    let turn = timed("store", api.store.turn(&tenant, id, number))
        .await?
        .ok_or_else(not_found)?;
    Ok(json_response(200, &conversation::turn_view(&turn)))
}

/// Resumes a session paused for a human, with the human's reply if any.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/v1/sessions/{id}/resume",
    tag = "conversations",
    params(crate::paths::IdPath),
    request_body = Option<conversation::ResumeInput>,
    responses(
        (status = 200, body = crate::bodies::SessionResumed),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn resume_session<S: ApiStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    conversation::resume(api, &tenant, call.param("id"), call.request).await
}

/// The compatibility endpoint: a turn of the conversation `conversation_id`, opened if new.
#[cfg_attr(feature = "openapi", utoipa::path(post, path = "/orchestrate", tag = "conversations",
    request_body = OrchestratorQuery,
    responses(
        (status = 200, description = "The turn ended, or the session is paused for a human",
            body = crate::bodies::TurnAnswer, headers(("Server-Timing" = String))),
        (status = 202, description = "The turn is still running",
            body = crate::bodies::TurnView,
            headers(("Server-Timing" = String), ("Location" = String))),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 429, response = crate::openapi::QuotaExceeded),
    )))]
pub async fn orchestrate<S: ApiStore, Q: TaskQueue>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let arrived = Instant::now();
    let tenant = call.tenant()?;
    let query: OrchestratorQuery = parse_body(call.request)?;
    let reply = conversation::orchestrate(api, &tenant, query, arrived).await?;
    Ok(conversation::turn_response(reply, arrived))
}
