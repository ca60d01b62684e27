//! A stand-in for the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) that
//! runs local example functions for every tenant, named as a deployment's tenants name theirs,
//! `baton-agent-{tenant}-{name}` (see [`function`]):
//! - [`SUMMARIZE`] returns the first sentence of the input's text, its word count, and usage
//!   counted in words, as a model-backed function would report it;
//! - [`FAILS`] always raises: a function error (`X-Amz-Function-Error: Unhandled`);
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

use crate::stand_in::{tokens, CallLog, ModelRule, StandIn};

pub const SUMMARIZE: &str = "summarize";
pub const FAILS: &str = "fails";
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
    StandIn::start("/2015-03-31/functions/{name}/invocations", invoke).await
}

fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("x-amzn-errortype", code)],
        axum::Json(json!({ "Type": "User", "message": message })),
    )
        .into_response()
}

/// The function's name in a name, partial ARN or ARN, without its qualifier.
fn function_name(named: &str) -> &str {
    let rest = named.rsplit_once("function:").map_or(named, |(_, r)| r);
    rest.split(':').next().unwrap_or(rest)
}

async fn invoke(
    State(log): State<Arc<CallLog>>,
    Path(named): Path<String>,
    body: String,
) -> Response {
    let name = function_name(&named).to_string();
    let payload: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if log.record(json!({ "function": name, "payload": payload })) {
        return aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate Exceeded.",
        );
    }
    let input = &payload["input"];
    let Some((tenant, example)) = tenant_and_example(&name) else {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: arn:aws:lambda:us-east-1:123456789012:function:{name}"),
        );
    };
    if payload["tenant"].as_str() != Some(tenant) {
        return (
            StatusCode::OK,
            [
                ("x-amz-function-error", "Unhandled"),
                ("x-amz-executed-version", "$LATEST"),
            ],
            axum::Json(json!({
                "errorType": "PermissionError",
                "errorMessage": "this function serves another tenant",
                "stackTrace": [],
            })),
        )
            .into_response();
    }
    match example {
        SUMMARIZE => {
            let text = baton_aws::invoker::prompt::input_text(input);
            let summary = ModelRule::Brief.answer(&text);
            let result = json!({
                "summary": summary,
                "words": tokens(&text),
                "usage": { "input_tokens": tokens(&text), "output_tokens": tokens(&summary) },
            });
            (
                StatusCode::OK,
                [("x-amz-executed-version", "$LATEST")],
                axum::Json(result),
            )
                .into_response()
        }
        FAILS => (
            StatusCode::OK,
            [
                ("x-amz-function-error", "Unhandled"),
                ("x-amz-executed-version", "$LATEST"),
            ],
            axum::Json(json!({
                "errorType": "RuntimeError",
                "errorMessage": "this example function always fails",
                "stackTrace": [],
            })),
        )
            .into_response(),
        _ => aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: arn:aws:lambda:us-east-1:123456789012:function:{name}"),
        ),
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
