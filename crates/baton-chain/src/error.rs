//! The one error type of the chain's steps, and what the ports' errors share: an adapter's
//! failure is kept whole as the source, and said with its causes.

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

/// An adapter's own error, kept as the source of a port's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `error` and each of its causes, joined by `: `, so that a log line that shows one error
/// says what the service answered (an SDK error's own text is only its kind).
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_is_said_with_its_causes() {
        let error = Outer(std::io::Error::other("throttled"));
        assert_eq!(with_causes(&error), "outer: throttled");
        let store = crate::store::StoreError::Request(Box::new(error));
        assert_eq!(
            store.to_string(),
            "the store request failed: outer: throttled"
        );
        assert!(
            std::error::Error::source(&store).is_some(),
            "the source is kept"
        );
    }
}
