//! The `lambda` kind: a synchronous (`RequestResponse`) Invoke of the agent's function.
//!
//! The payload is the JSON an http agent is POSTed, plus `idempotency_key` (an http agent gets
//! it as a header) and `tenant`. The function's JSON result is the task's output. A function error (the
//! function threw, or timed out) fails the task for good; throttling and Lambda's own faults
//! are retried.
//!
//! A task that streams is invoked with InvokeWithResponseStream. A function that streams its
//! response writes NDJSON lines, the http agents' contract: `{"text": "…"}` as text is written
//! (passed on to the task's stream) and, optionally, last, `{"output": {…}}`. A function that
//! does not stream returns its JSON result as usual, and it is the output.

use serde_json::Value;

use super::aws::{self, ErrorCodes};
use crate::signed::{segment, Request, SignedClient, LAMBDA};
use baton_chain::invoker::{AgentAnswer, AgentCall, StreamSink, MAX_OUTPUT_BYTES};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::stream::{AgentStream, Lines};

/// Lambda's error codes for Invoke, by whether another try can succeed.
pub const LAMBDA_CODES: ErrorCodes = ErrorCodes {
    retryable: &[
        "TooManyRequestsException",
        "ServiceException",
        "ResourceNotReadyException",
        "ResourceConflictException",
        "EC2ThrottledException",
        "EC2UnexpectedException",
        "ENILimitReachedException",
        "EFSMountTimeoutException",
        "EFSIOException",
        "SubnetIPAddressLimitReachedException",
        "SnapStartTimeoutException",
    ],
    permanent: &[
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDeniedExceptionException",
        "InvalidRequestContentException",
        "InvalidParameterValueException",
        "RequestTooLargeException",
        "UnsupportedMediaTypeException",
        "InvalidRuntimeException",
        "RecursiveInvocationException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSNotFoundException",
    ],
};

const ERROR_MESSAGE_CHARS: usize = 300;

/// Invokes `function` with the call and takes its result as the output. `endpoint` replaces
/// Lambda's own (a stand-in).
pub async fn invoke(
    client: &SignedClient,
    endpoint: Option<&str>,
    function: &str,
    call: &AgentCall<'_>,
) -> Result<AgentAnswer, TaskFailure> {
    let subject = format!("function `{function}`");
    if let Some(sink) = call.stream {
        let request = Request {
            service: LAMBDA,
            endpoint,
            path: format!(
                "/2021-11-15/functions/{}/response-streaming-invocations",
                segment(function)
            ),
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-amz-invocation-type", "RequestResponse".into()),
            ],
            body: payload(call),
        };
        let mut response = aws::open(client, request, &subject, &LAMBDA_CODES).await?;
        let streamed = read_stream(&mut response, sink, &subject).await;
        sink.close().await;
        return streamed.map(AgentAnswer::reported);
    }
    let request = Request {
        service: LAMBDA,
        endpoint,
        path: format!("/2015-03-31/functions/{}/invocations", segment(function)),
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-amz-invocation-type", "RequestResponse".into()),
        ],
        body: payload(call),
    };
    let answer = aws::call(client, request, &subject, &LAMBDA_CODES).await?;
    let result = answer.body.as_slice();
    if result.len() > MAX_OUTPUT_BYTES {
        return Err(TaskFailure::new(
            FailureKind::OutputTooLarge,
            format!("{subject} returned more than {MAX_OUTPUT_BYTES} bytes"),
        ));
    }
    if let Some(error) = answer.header("x-amz-function-error") {
        return Err(TaskFailure::new(
            FailureKind::FunctionError,
            format!(
                "{subject} failed ({error}): {}",
                function_error_message(result)
            ),
        ));
    }
    let output: Value = serde_json::from_slice(result).map_err(|e| {
        TaskFailure::new(
            FailureKind::InvalidResponse,
            format!("{subject} returned a result that is not JSON: {e}"),
        )
    })?;
    Ok(AgentAnswer::reported(output))
}

/// What a streaming invocation returned: NDJSON parts as they come, or a whole JSON result.
#[derive(Default)]
struct Streamed {
    lines: Lines,
    parts: AgentStream,
    /// Not NDJSON parts: the payload is kept whole, to be read as one JSON result.
    whole: Option<Vec<u8>>,
    /// `InvokeComplete`'s error, if the function failed.
    error: Option<(String, String)>,
    /// Why a part after the first was not one of the contract's.
    invalid: Option<String>,
}

impl Streamed {
    fn payload(&mut self, bytes: &[u8]) -> String {
        if let Some(whole) = &mut self.whole {
            whole.extend_from_slice(bytes);
            return String::new();
        }
        let mut text = String::new();
        let lines = self.lines.feed(bytes).unwrap_or_default();
        for line in lines {
            match self.parts.apply(&line) {
                Ok(part) => text.push_str(&part),
                Err(_) if self.parts.text.is_empty() && self.parts.output.is_none() => {
                    // Not the streaming contract: a plain result, read whole at the end.
                    let mut whole = line.into_bytes();
                    whole.push(b'\n');
                    self.whole = Some(whole);
                    return text;
                }
                Err(why) => {
                    self.invalid.get_or_insert(why);
                }
            }
        }
        text
    }

    fn output(mut self, subject: &str) -> Result<Value, TaskFailure> {
        if let Some((code, details)) = self.error {
            return Err(TaskFailure::new(
                FailureKind::FunctionError,
                format!(
                    "{subject} failed ({code}): {}",
                    function_error_message(details.as_bytes())
                ),
            ));
        }
        if let Some(why) = self.invalid {
            return Err(TaskFailure::new(
                FailureKind::InvalidResponse,
                format!("{subject} streamed a part that is not one of the contract's: {why}"),
            ));
        }
        if self.whole.is_none() {
            if let Some(last) = self.lines.finish() {
                if self.parts.apply(&last).is_err() && self.parts.text.is_empty() {
                    self.whole = Some(last.into_bytes());
                }
            }
        }
        match self.whole {
            Some(whole) => serde_json::from_slice(&whole).map_err(|e| {
                TaskFailure::new(
                    FailureKind::InvalidResponse,
                    format!("{subject} returned a result that is not JSON: {e}"),
                )
            }),
            None => Ok(self.parts.output()),
        }
    }
}

/// Reads InvokeWithResponseStream's events: `PayloadChunk`s, then `InvokeComplete`.
async fn read_stream(
    response: &mut reqwest::Response,
    sink: &dyn StreamSink,
    subject: &str,
) -> Result<Value, TaskFailure> {
    let mut streamed = Streamed::default();
    aws::read_events(
        response,
        sink,
        "Lambda",
        subject,
        |message| match aws::header(message, ":event-type") {
            Some("PayloadChunk") => Ok(streamed.payload(message.payload())),
            Some("InvokeComplete") => {
                let complete: Value =
                    serde_json::from_slice(message.payload()).unwrap_or(Value::Null);
                if let Some(code) = complete["ErrorCode"].as_str().filter(|c| !c.is_empty()) {
                    let details = complete["ErrorDetails"].as_str().unwrap_or_default();
                    streamed.error = Some((code.to_string(), details.to_string()));
                }
                Ok(String::new())
            }
            _ => Ok(String::new()),
        },
    )
    .await?;
    streamed.output(subject)
}

/// The call as the function receives it: with the tenant, so that a function can keep its
/// own boundary too.
pub fn payload(call: &AgentCall<'_>) -> Vec<u8> {
    let mut body = serde_json::to_value(call).unwrap_or_default();
    if let Value::Object(fields) = &mut body {
        fields.insert(
            "idempotency_key".into(),
            Value::String(call.task.idempotency_key()),
        );
        fields.insert("tenant".into(), Value::String(call.task.tenant.to_string()));
    }
    body.to_string().into_bytes()
}

/// What a function error's payload says: `errorType: errorMessage` as the runtimes write it,
/// or the payload's start.
pub fn function_error_message(payload: &[u8]) -> String {
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let message = match serde_json::from_slice::<Value>(payload) {
        Ok(error) => match (text(&error, "errorType"), text(&error, "errorMessage")) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            (None, Some(message)) => message,
            _ => error.to_string(),
        },
        Err(_) => String::from_utf8_lossy(payload).into_owned(),
    };
    message.chars().take(ERROR_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_types::messages::TaskRef;

    #[test]
    fn a_function_error_is_told_by_its_type_and_message() {
        let payload = br#"{"errorMessage":"no summary","errorType":"ValueError","stackTrace":[]}"#;
        assert_eq!(function_error_message(payload), "ValueError: no summary");
        assert_eq!(
            function_error_message(br#"{"errorMessage":"x"}"#),
            "x".to_string()
        );
        assert_eq!(function_error_message(b"Task timed out"), "Task timed out");
    }

    #[test]
    fn the_payload_is_the_http_body_with_the_idempotency_key() {
        let task = TaskRef {
            tenant: "acme".parse().unwrap(),
            workflow_id: "w".parse().unwrap(),
            task_id: "t".parse().unwrap(),
            attempt: 2,
        };
        let input = serde_json::json!({"text": "hi"});
        let call = AgentCall {
            task: &task,
            workflow_id: "w",
            task_id: "t",
            attempt: 2,
            capability: "summarize",
            input: &input,
            dependencies: Default::default(),
            memories: Vec::new(),
            context: None,
            timeout_ms: 1_000,
            stream: None,
        };
        let body: Value = serde_json::from_slice(&payload(&call)).unwrap();
        assert_eq!(body["input"], input);
        assert_eq!(body["attempt"], 2);
        assert_eq!(body["idempotency_key"], task.idempotency_key());
        assert_eq!(body["tenant"], "acme");
    }

    #[test]
    fn throttling_and_service_faults_are_retried_and_mistakes_are_not() {
        use super::super::aws::service_failure;
        let retryable = |code: &str, status| {
            service_failure("Lambda", "f", Some(code), None, status, &LAMBDA_CODES).retryable
        };
        assert!(retryable("TooManyRequestsException", 429));
        assert!(retryable("ResourceNotReadyException", 502));
        assert!(retryable("ServiceException", 500));
        assert!(!retryable("ResourceNotFoundException", 404));
        assert!(!retryable("AccessDeniedException", 403));
        assert!(!retryable("InvalidRequestContentException", 400));
        assert!(!retryable("RequestTooLargeException", 413));
    }
}
