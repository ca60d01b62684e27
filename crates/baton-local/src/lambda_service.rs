//! A stand-in for the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) that
//! runs local example functions for every tenant, named as a deployment's tenants name theirs,
//! `baton-agent-{tenant}-{name}` (see [`function`]):
//! - [`SUMMARIZE`] returns the first sentence of the input's text, its word count, and usage
//!   counted in words, as a model-backed function would report it;
//! - [`FAILS`] always raises: a function error (`X-Amz-Function-Error: Unhandled`);
//! - [`STREAMS`] writes the input text's first sentence as NDJSON parts, a word every
//!   [`STREAM_PACE`], then `{"output": {"summary"}}`, when invoked with
//!   InvokeWithResponseStream (`POST /2021-11-15/functions/{name}/response-streaming-invocations`);
//!   invoked plainly, it returns the same output whole. The other functions, invoked that way,
//!   answer their result in one `PayloadChunk`, as Lambda does for a function that does not
//!   stream, and a failure in `InvokeComplete`;
//! - any other name is not found (`ResourceNotFoundException`).
//!
//! Like a careful tenant's function, each keeps its own boundary too: a payload whose `tenant`
//! is not the one its name carries is refused with a function error.
//!
//! [`StandIn::throttle_next`] makes the next calls fail with `TooManyRequestsException`,
//! in the error shape the SDK reads (`x-amzn-errortype` and a JSON `message`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::stand_in::{event_frame, event_stream, tokens, CallLog, ModelRule, StandIn};

pub const SUMMARIZE: &str = "summarize";
pub const FAILS: &str = "fails";
pub const STREAMS: &str = "streams";
/// How long the streaming function takes per part.
pub const STREAM_PACE: std::time::Duration = std::time::Duration::from_millis(20);
/// The template's default `AgentFunctionPrefix`.
const PREFIX: &str = "baton-agent-";

/// The name of the example function `name` (`SUMMARIZE`, `FAILS`) for `tenant`.
pub fn function(tenant: &str, name: &str) -> String {
    format!("{PREFIX}{tenant}-{name}")
}

/// (tenant, example name) of a function name, if it has the shape [`function`] gives.
fn tenant_and_example(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(PREFIX)?.rsplit_once('-')
}

/// The Lambda Invoke API stand-in; its log holds `{function, payload}` per invocation.
pub async fn start() -> std::io::Result<StandIn> {
    StandIn::start("/{version}/functions/{name}/{operation}", invoke).await
}

/// The function's name in a name, partial ARN or ARN, without its qualifier.
fn function_name(named: &str) -> &str {
    let rest = named.rsplit_once("function:").map_or(named, |(_, r)| r);
    rest.split(':').next().unwrap_or(rest)
}

async fn invoke(
    State(log): State<Arc<CallLog>>,
    Path((version, named, operation)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let streaming = match (version.as_str(), operation.as_str()) {
        ("2015-03-31", "invocations") => false,
        ("2021-11-15", "response-streaming-invocations") => true,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let answer = run(&log, &named, &body).await;
    if !streaming {
        return answer.into_response();
    }
    streamed(answer)
}

/// What a function answered: its status, whether it failed, and its result.
struct Answered {
    status: StatusCode,
    function_error: bool,
    /// The API's own error (`x-amzn-errortype`), when the function did not run.
    error_type: Option<&'static str>,
    /// The NDJSON parts a streaming function writes, or the whole result.
    parts: Result<Vec<Value>, Value>,
}

impl Answered {
    fn result(result: Value) -> Self {
        Answered {
            status: StatusCode::OK,
            function_error: false,
            error_type: None,
            parts: Err(result),
        }
    }

    fn failed(error: Value) -> Self {
        Answered {
            function_error: true,
            ..Answered::result(error)
        }
    }

    /// The Invoke API's error, in the shape the SDK reads.
    fn api_error(status: StatusCode, code: &'static str, message: &str) -> Self {
        Answered {
            status,
            error_type: Some(code),
            ..Answered::result(json!({ "Type": "User", "message": message }))
        }
    }

    fn into_response(self) -> Response {
        let body = match self.parts {
            Err(whole) => whole,
            // Invoked plainly, a streaming function's output is its result.
            Ok(parts) => parts
                .last()
                .map(|p| p["output"].clone())
                .unwrap_or(Value::Null),
        };
        let mut response = (
            self.status,
            [("x-amz-executed-version", "$LATEST")],
            axum::Json(body),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.function_error {
            headers.insert(
                "x-amz-function-error",
                axum::http::HeaderValue::from_static("Unhandled"),
            );
        }
        if let Some(code) = self.error_type {
            headers.insert(
                "x-amzn-errortype",
                axum::http::HeaderValue::from_static(code),
            );
            headers.remove("x-amz-executed-version");
        }
        response
    }
}

/// InvokeWithResponseStream's answer: the payload in `PayloadChunk`s, then `InvokeComplete`
/// (with the error, if the function failed); an API error is answered as it is.
fn streamed(answer: Answered) -> Response {
    if !answer.status.is_success() {
        return answer.into_response();
    }
    let chunk = |bytes: Vec<u8>| event_frame("PayloadChunk", "application/octet-stream", bytes);
    let mut frames: Vec<Vec<u8>> = match &answer.parts {
        Ok(parts) => parts
            .iter()
            .map(|p| chunk(format!("{p}\n").into_bytes()))
            .collect(),
        Err(_) if answer.function_error => Vec::new(),
        Err(whole) => vec![chunk(whole.to_string().into_bytes())],
    };
    let complete = match (&answer.parts, answer.function_error) {
        (Err(error), true) => {
            json!({ "ErrorCode": "Unhandled", "ErrorDetails": error.to_string() })
        }
        _ => json!({}),
    };
    frames.push(event_frame(
        "InvokeComplete",
        "application/json",
        complete.to_string().into_bytes(),
    ));
    event_stream(frames, STREAM_PACE)
}

/// Runs the function `named` on the request's payload, or answers the API's error.
async fn run(log: &CallLog, named: &str, body: &str) -> Answered {
    let name = function_name(named).to_string();
    let not_found = || {
        Answered::api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: arn:aws:lambda:us-east-1:123456789012:function:{name}"),
        )
    };
    let payload: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if log.record(json!({ "function": name, "payload": payload })) {
        return Answered::api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate Exceeded.",
        );
    }
    let input = &payload["input"];
    let Some((tenant, example)) = tenant_and_example(&name) else {
        return not_found();
    };
    if payload["tenant"].as_str() != Some(tenant) {
        return Answered::failed(json!({
            "errorType": "PermissionError",
            "errorMessage": "this function serves another tenant",
            "stackTrace": [],
        }));
    }
    let text = baton_aws::invoker::prompt::input_text(input);
    match example {
        SUMMARIZE => {
            let summary = ModelRule::Brief.answer(&text);
            Answered::result(json!({
                "summary": summary,
                "words": tokens(&text),
                "usage": { "input_tokens": tokens(&text), "output_tokens": tokens(&summary) },
            }))
        }
        STREAMS => {
            let summary = ModelRule::Brief.answer(&text);
            let mut parts: Vec<Value> = summary
                .split_inclusive(' ')
                .map(|word| json!({ "text": word }))
                .collect();
            parts.push(json!({ "output": { "summary": summary } }));
            Answered {
                status: StatusCode::OK,
                function_error: false,
                error_type: None,
                parts: Ok(parts),
            }
        }
        FAILS => Answered::failed(json!({
            "errorType": "RuntimeError",
            "errorMessage": "this example function always fails",
            "stackTrace": [],
        })),
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_arns_and_qualifiers_resolve_to_the_function() {
        assert_eq!(function_name("baton-agent-fails"), "baton-agent-fails");
        assert_eq!(
            tenant_and_example(&function("a-b", SUMMARIZE)),
            Some(("a-b", SUMMARIZE))
        );
        assert_eq!(tenant_and_example("other-fn"), None);
        assert_eq!(function_name("f:live"), "f");
        assert_eq!(function_name("123456789012:function:f:3"), "f");
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:f"),
            "f"
        );
    }
}
