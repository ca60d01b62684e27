//! Pure domain logic: no I/O, tested without mocks.

pub mod agent;
pub mod dag;
pub mod learning;
pub mod names;
pub mod routing;
pub mod task;
