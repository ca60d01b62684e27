//! The parameters operations share in the document, declared once; each handler parses its
//! own where it starts, by the same rules ([`baton_types::ids`]).

// The fields exist for their attributes.
#![allow(dead_code)]

use utoipa::IntoParams;

/// A workflow's or a session's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)]
    id: String,
}

/// An agent's or a secret's name.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamePath {
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)]
    name: String,
}

/// A capability, which may hold `:`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CapabilityPath {
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length = 64)]
    name: String,
}

/// A tenant's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)]
    id: String,
}

/// A task of a workflow.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)]
    id: String,
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)]
    task: String,
}

/// A turn of a session.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TurnPath {
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)]
    id: String,
    #[param(minimum = 1)]
    turn: u32,
}

/// The version a change to an agent was decided on, when the caller names one.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct OptionalIfMatch {
    /// The `ETag` read (optional)
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

/// A suggestion's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SuggestionPath {
    #[param(pattern = "^[0-9a-f]{16}-[0-9]{1,6}$", max_length = 24)]
    id: String,
}

/// Where a stream read starts, and how long it waits.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The number of the last event read (default 0: from the start).
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    after: Option<u64>,
    /// Seconds to wait for an event when none follows yet (default 10).
    #[param(minimum = 0, maximum = 25)]
    wait: Option<f64>,
}
