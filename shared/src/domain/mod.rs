//! Pure domain logic: no I/O, tested without mocks.

pub mod agent;
pub mod circuit;
pub mod control;
pub mod conversation;
pub mod dag;
pub mod endpoint;
pub mod health;
pub mod learning;
pub mod names;
pub mod priority;
pub mod quota;
pub mod registry;
pub mod resources;
pub mod retry;
pub mod routing;
pub mod session;
pub mod stats;
pub mod task;
pub mod tenancy;
pub mod turn;
