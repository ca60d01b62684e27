//! How an AWS API's refusal or fault becomes a task failure: by the error's code where the
//! service documents it as transient or final, by its HTTP status otherwise (5xx, 408 and
//! 429 retryable, other 4xx not).

use serde_json::Value;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use baton_chain::invoker::{StreamSink, MAX_OUTPUT_BYTES};

use super::{next_part, stopped_failure};
use crate::signed::{Answer, Request, SignedClient, SignedError};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::tenancy::redact_aws_identifiers;

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

/// Sends a signed request for `subject` (what was asked: a function, a model, a key); no
/// answer, or an error answer, becomes the failure its code and status say.
pub async fn call(
    client: &SignedClient,
    request: Request<'_>,
    subject: &str,
    codes: &ErrorCodes,
) -> Result<Answer, TaskFailure> {
    let service = request.service.label;
    let answer = client
        .send(request)
        .await
        .map_err(|e| signed_failure(service, subject, e))?;
    refused(answer, service, subject, codes)
}

/// Sends a signed request for `subject` whose answer streams: the response, its body still to
/// read, once its status says it is not an error.
pub async fn open(
    client: &SignedClient,
    request: Request<'_>,
    subject: &str,
    codes: &ErrorCodes,
) -> Result<reqwest::Response, TaskFailure> {
    let service = request.service.label;
    let response = client
        .open(request)
        .await
        .map_err(|e| signed_failure(service, subject, e))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let answer = Answer::read(response)
        .await
        .map_err(|e| signed_failure(service, subject, e))?;
    Err(refused(answer, service, subject, codes)
        .err()
        .unwrap_or_else(|| {
            TaskFailure::new(
                FailureKind::ServiceError,
                format!("{service} refused {subject}"),
            )
        }))
}

fn signed_failure(service: &str, subject: &str, e: SignedError) -> TaskFailure {
    match e {
        SignedError::Timeout => TaskFailure::new(
            FailureKind::Timeout,
            format!("{service} did not answer in time for {subject}"),
        ),
        SignedError::Connection(cause) => TaskFailure::new(
            FailureKind::Connection,
            format!("{service} could not be reached for {subject}: {cause}"),
        ),
        SignedError::Config(cause) => {
            let mut failure = TaskFailure::new(
                FailureKind::ServiceError,
                format!("the {service} request for {subject} could not be made: {cause}"),
            );
            failure.retryable = false;
            failure
        }
    }
}

/// The answer, or the failure its code and status say when it is an error.
fn refused(
    answer: Answer,
    service: &str,
    subject: &str,
    codes: &ErrorCodes,
) -> Result<Answer, TaskFailure> {
    if answer.is_success() {
        return Ok(answer);
    }
    let (code, message) = answer.refusal();
    Err(service_failure(
        service,
        subject,
        code.as_deref(),
        message.as_deref(),
        answer.status,
        codes,
    ))
}

/// Reads an AWS event stream (the binary framing of ConverseStream and
/// InvokeWithResponseStream), giving each message to `on_message`, whose text goes to `sink`;
/// the body may be at most [`MAX_OUTPUT_BYTES`].
pub async fn read_events(
    response: &mut reqwest::Response,
    sink: &dyn StreamSink,
    service: &str,
    subject: &str,
    mut on_message: impl FnMut(&Message) -> Result<String, TaskFailure>,
) -> Result<(), TaskFailure> {
    let mut decoder = MessageFrameDecoder::new();
    let mut buffer = bytes::BytesMut::new();
    let mut read = 0usize;
    loop {
        let chunk = response.chunk();
        let chunk = next_part(
            async {
                chunk.await.map_err(|e| {
                    TaskFailure::new(
                        FailureKind::Connection,
                        format!("{service}'s stream for {subject} broke off: {e}"),
                    )
                })
            },
            sink,
        )
        .await?;
        let Some(chunk) = chunk else {
            return Ok(());
        };
        read += chunk.len();
        if read > MAX_OUTPUT_BYTES {
            return Err(TaskFailure::new(
                FailureKind::OutputTooLarge,
                format!("{service}'s stream for {subject} passed {MAX_OUTPUT_BYTES} bytes"),
            ));
        }
        buffer.extend_from_slice(&chunk);
        loop {
            let frame = decoder.decode_frame(&mut buffer).map_err(|e| {
                TaskFailure::new(
                    FailureKind::InvalidResponse,
                    format!("{service}'s stream for {subject} is not an event stream: {e}"),
                )
            })?;
            let DecodedFrame::Complete(message) = frame else {
                break;
            };
            let text = on_message(&message)?;
            if !text.is_empty() {
                sink.text(&text).await.map_err(stopped_failure)?;
            }
        }
    }
}

/// An event stream message's header, as a string.
pub fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|v| v.as_str())
}

/// A successful answer's JSON body.
pub fn json_body(answer: &Answer, service: &str, subject: &str) -> Result<Value, TaskFailure> {
    answer.json().map_err(|e| {
        TaskFailure::new(
            FailureKind::InvalidResponse,
            format!("{service}'s answer for {subject} is not JSON: {e}"),
        )
    })
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
