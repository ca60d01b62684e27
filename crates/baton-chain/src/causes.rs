//! What the ports' errors share: an adapter's failure is kept whole as the source of the
//! port's error, and said with its causes. A leaf: the ports use it, and the steps' error type
//! wraps the ports' errors.

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
