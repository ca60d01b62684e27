//! How an AWS API's refusal or fault becomes a task failure: by the error's code where the
//! service documents it as transient or final, by its HTTP status otherwise (5xx, 408 and
//! 429 retryable, other 4xx not).

use crate::domain::task::{FailureKind, TaskFailure};
use crate::domain::tenancy::redact_aws_identifiers;

/// A service's error codes that say whether trying again can help.
#[derive(Debug)]
pub struct ErrorCodes {
    pub retryable: &'static [&'static str],
    pub permanent: &'static [&'static str],
}

const MESSAGE_CHARS: usize = 300;

/// A service's error answer as a failure. `subject` names what was asked (a function, a
/// model, a secret).
pub fn service_failure(
    service: &str,
    subject: &str,
    code: Option<&str>,
    message: Option<&str>,
    status: u16,
    codes: &ErrorCodes,
) -> TaskFailure {
    let retryable = match code {
        Some(code) if codes.retryable.contains(&code) => true,
        Some(code) if codes.permanent.contains(&code) => false,
        _ => status >= 500 || status == 408 || status == 429,
    };
    // The service's words may name the operator's account, role and resources: the code and
    // status stay, the identifiers go (the failure is shown to the tenant).
    let message = redact_aws_identifiers(message.unwrap_or(""));
    let message: String = message.chars().take(MESSAGE_CHARS).collect();
    TaskFailure {
        kind: FailureKind::ServiceError,
        message: format!(
            "{service} answered {} (HTTP {status}) for {subject}: {message}",
            code.unwrap_or("an error")
        )
        .trim_end_matches([' ', ':'])
        .to_string(),
        http_status: Some(status),
        retryable,
        retry_after_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODES: ErrorCodes = ErrorCodes {
        retryable: &["ResourceConflictException"],
        permanent: &["TooLarge"],
    };

    #[test]
    fn listed_codes_decide_and_the_status_decides_the_rest() {
        let failure = |code, status| {
            service_failure("Lambda", "function `f`", code, Some("m"), status, &CODES)
        };
        assert!(failure(Some("ResourceConflictException"), 409).retryable);
        assert!(!failure(Some("TooLarge"), 500).retryable);
        assert!(failure(Some("TooManyRequestsException"), 429).retryable);
        assert!(failure(None, 503).retryable);
        assert!(!failure(Some("AccessDeniedException"), 403).retryable);
        let f = failure(Some("X"), 400);
        assert_eq!(f.kind, FailureKind::ServiceError);
        assert_eq!(f.http_status, Some(400));
        assert_eq!(
            f.message,
            "Lambda answered X (HTTP 400) for function `f`: m"
        );
        let denied = service_failure(
            "Lambda",
            "function `f`",
            Some("AccessDeniedException"),
            Some("User: arn:aws:sts::123456789012:assumed-role/r/s is not authorized"),
            403,
            &CODES,
        );
        assert_eq!(
            denied.message,
            "Lambda answered AccessDeniedException (HTTP 403) for function `f`: User: [arn] is \
             not authorized"
        );
    }
}
