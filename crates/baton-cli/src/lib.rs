//! Baton's client: the commands a user runs against a Baton API, local or deployed, over
//! HTTP alone. The `baton` binary offers them; `baton-local` offers them beside `run`.
//!
//! - [`options`] says which API a command talks to and as whom, and each command's options;
//! - [`commands`] is the set of commands and how each is carried out;
//! - [`client`] the commands that ask the API once (or follow a workflow), through [`api`],
//!   the one HTTP helper; [`render`] how answers are printed and [`progress`] how `submit`
//!   shows a workflow running;
//! - [`events`] shows a workflow's events as the streaming endpoint pushes them (`submit
//!   --follow`);
//! - [`chat`] holds a conversation with the conversational agents.

pub mod api;
pub mod chat;
pub mod client;
pub mod commands;
pub mod events;
pub mod options;
pub mod progress;
pub mod render;

pub use commands::{completions, execute, ClientCommand};
pub use options::{
    ApiTarget, CancelOptions, ClientOptions, GraphFormat, GraphOptions, SubmitOptions,
    WorkflowOptions, WorkflowsOptions, DEFAULT_PORT, LOCAL_TENANT,
};

/// An HTTP client that names `tenant` on every request, as a header-mode API requires.
pub fn tenant_client(tenant: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_str(tenant) {
        headers.insert("x-tenant-id", value);
    }
    reqwest::Client::builder().default_headers(headers)
}
