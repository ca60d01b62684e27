//! The one error type of the chain's steps.

use crate::queue::QueueError;
use crate::store::StoreError;

/// The errors of the chain's handlers: a step's store or queue request failed. SQS delivers
/// the message again and the handler resumes where the conditions say it stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A step ran out of the time it is given; every step being conditional, it resumes later.
    #[error("{0} ran out of its time budget; it resumes later")]
    OutOfTime(&'static str),
}
