//! Baton's types: the domain's rules and the records and messages the chain passes around.
//! Pure: no I/O, no AWS, tested without mocks. Every other crate depends on this one, and it
//! depends on none of them.

pub mod advice;
pub mod agent;
pub mod circuit;
pub mod clock;
pub mod contexts;
pub mod control;
pub mod conversation;
pub mod dag;
pub mod endpoint;
pub mod graph;
pub mod health;
pub mod history;
pub mod ids;
pub mod improvements;
pub mod learning;
pub mod messages;
pub mod names;
pub mod outcome;
pub mod patterns;
pub mod priority;
pub mod progress;
pub mod quota;
pub mod recall;
pub mod records;
pub mod registry;
pub mod resources;
pub mod results;
pub mod retry;
pub mod roles;
pub mod routing;
pub mod session;
pub mod stats;
pub mod stream;
pub mod stream_token;
pub mod suggestions;
pub mod task;
pub mod tenancy;
pub mod text;
pub mod turn;
