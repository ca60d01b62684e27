//! Baton's local stack: the whole chain in one process against an emulator, with no Docker.
//!
//! - [`emulator`] starts moto server from the project's virtualenv;
//! - [`template`] and [`provision`] create the tables and queues `template.yaml` declares;
//! - [`stack`] drives the five handlers as Lambda would: [`api_gateway`] for the HTTP API,
//!   [`event_sources`] for the SQS event-source mappings and the schedule;
//! - [`agents`] runs agents as real local HTTP servers, including the examples, and
//!   [`conversation_agents`] holds the example conversational set;
//! - [`stand_ins`] runs the APIs behind the other agent kinds as local servers:
//!   [`lambda_service`] (Lambda Invoke), [`bedrock_service`] (Bedrock Converse) and
//!   [`openai_service`] (an OpenAI-compatible Chat Completions server);
//! - [`faults`] is a proxy between the handlers' SDK clients and the emulator that injects
//!   faults, and [`chaos`] the misbehaving agents, workflow and audit the chaos test and
//!   benchmark share.

pub mod agents;
pub mod api_gateway;
pub mod bedrock_service;
pub mod chaos;
pub mod chat;
pub mod cli;
pub mod conversation_agents;
pub mod emulator;
pub mod event_sources;
pub mod faults;
pub mod lambda_service;
pub mod openai_service;
pub mod provision;
pub mod stack;
pub mod stand_ins;
pub mod template;

use std::path::PathBuf;

/// The tenant the local tools act as unless told otherwise (`X-Tenant-Id`).
pub const LOCAL_TENANT: &str = "default";

/// An HTTP client that names `tenant` on every request, as a header-mode API requires.
pub fn tenant_client(tenant: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_str(tenant) {
        headers.insert("x-tenant-id", value);
    }
    reqwest::Client::builder().default_headers(headers)
}

/// The repository root, where `template.yaml`, `infra/` and `.venv/` live.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}
