//! Baton's local stack: the whole chain in one process against an emulator, with no Docker.
//!
//! - [`emulator`] starts moto server from the project's virtualenv;
//! - [`template`] and [`provision`] create the tables and queues `template.yaml` declares;
//! - [`stack`] drives the five handlers as Lambda would: [`api_gateway`] for the HTTP API,
//!   [`event_sources`] for the SQS event-source mappings and the schedule, [`function_url`]
//!   for the streaming endpoint's function URL;
//! - [`agents`] runs agents as real local HTTP servers, including the examples, and
//!   [`conversation_agents`] holds the example conversational set;
//! - [`stand_ins`] runs the APIs behind the other agent kinds as local servers:
//!   [`lambda_service`] (Lambda Invoke), [`bedrock_service`] (Bedrock Converse) and
//!   [`openai_service`] (an OpenAI-compatible Chat Completions server), on what
//!   [`stand_in`] gives them all;
//! - [`faults`] is a proxy between the handlers' SDK clients and the emulator that injects
//!   faults, and [`chaos`] the misbehaving agents, workflow and audit the chaos test and
//!   benchmark share;
//! - [`cli`] is the `baton-local` command: `run`, and the client commands of `baton_cli`.

pub mod agents;
pub mod api_gateway;
pub mod bedrock_service;
pub mod chaos;
pub mod cli;
pub mod conversation_agents;
pub mod emulator;
pub mod event_sources;
pub mod faults;
pub mod function_url;
pub mod invocations;
pub mod lambda_service;
pub mod openai_service;
pub mod provision;
pub mod stack;
pub mod stand_in;
pub mod stand_ins;
pub mod template;

use std::path::PathBuf;

// The client's, kept here too: the stack's tests and tools name the tenant by these paths.
pub use baton_cli::{tenant_client, LOCAL_TENANT};

/// The repository root, where `template.yaml`, `infra/` and `.venv/` live.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}
