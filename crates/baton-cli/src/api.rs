//! The client commands' one way to the API: a request, answered by its body or by the API's
//! error.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

use crate::options::ApiTarget;

/// Long enough for the slowest endpoint, short enough that a hung API does not hang the CLI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API refused with a 4xx or 5xx: its `{"error": {code, message, details}}`, or what
    /// a proxy in front of it sent instead (no code then).
    #[error("{message} ({}HTTP {status})", code_then_comma(.code))]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
        details: Value,
    },
    /// No answer at all: nothing listens there, the name does not resolve, the request timed out.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered with something that is not JSON: {excerpt}")]
    NotJson { url: String, excerpt: String },
    #[error("`{0}` is not a URL (--api)")]
    BadUrl(String),
}

impl ApiError {
    /// Whether asking again later may succeed: the API said it is unavailable for now.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Refused { status: 503, .. })
    }
}

/// An API client that sends the target's token and tenant with every request.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
}

impl ApiClient {
    pub fn new(target: &ApiTarget) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(ApiClient {
            http: target.client()?,
            base: target.api.trim_end_matches('/').to_string(),
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let (url, body) = self.send(Method::GET, path, query, None).await?;
        parse_json(&url, &body)
    }

    /// A GET whose answer is text (`text/plain`), returned as it is.
    pub async fn get_text(&self, path: &str, query: &[(&str, &str)]) -> Result<String, ApiError> {
        Ok(self.send(Method::GET, path, query, None).await?.1)
    }

    /// A POST with `body` as JSON, or with no body.
    pub async fn post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Value, ApiError> {
        let (url, body) = self.send(Method::POST, path, query, body).await?;
        parse_json(&url, &body)
    }

    /// The body of a 2xx answer; anything else is an error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<(Url, String), ApiError> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|_| ApiError::BadUrl(self.base.clone()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method, url.clone())
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let unreachable = |error: reqwest::Error| ApiError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            Ok((url, text))
        } else {
            Err(refusal(status.as_u16(), &text))
        }
    }
}

fn code_then_comma(code: &Option<String>) -> String {
    code.as_deref()
        .map(|code| format!("{code}, "))
        .unwrap_or_default()
}

/// The API's error from a refusal's body.
fn refusal(status: u16, body: &str) -> ApiError {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
    let error = &body["error"];
    let message = error["message"]
        .as_str()
        // API Gateway's own answers (an unknown route, a refused token) carry only a message.
        .or_else(|| body["message"].as_str())
        .or_else(|| body.as_str().filter(|text| !text.trim().is_empty()))
        .map_or_else(|| "the API refused the request".to_string(), excerpt);
    ApiError::Refused {
        status,
        code: error["code"].as_str().map(str::to_string),
        message,
        details: error["details"].clone(),
    }
}

fn parse_json(url: &Url, body: &str) -> Result<Value, ApiError> {
    serde_json::from_str(body).map_err(|_| ApiError::NotJson {
        url: url.to_string(),
        excerpt: excerpt(body),
    })
}

/// At most 200 characters of a body, for a message.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The innermost cause, which names what actually went wrong ("Connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_reads_message_code_and_status() {
        let error = refusal(
            404,
            r#"{"error":{"code":"not_found","message":"no workflow w1","details":{}}}"#,
        );
        assert_eq!(error.to_string(), "no workflow w1 (not_found, HTTP 404)");
        assert!(!error.is_transient());
    }

    #[test]
    fn a_proxy_refusal_without_the_error_shape_still_reads() {
        let gateway = refusal(404, r#"{"message":"Not Found"}"#);
        assert_eq!(gateway.to_string(), "Not Found (HTTP 404)");
        let plain = refusal(502, "Bad Gateway\n");
        assert_eq!(plain.to_string(), "Bad Gateway (HTTP 502)");
        let empty = refusal(503, "");
        assert_eq!(empty.to_string(), "the API refused the request (HTTP 503)");
        assert!(empty.is_transient());
    }

    #[tokio::test]
    async fn an_unreachable_api_is_named_with_its_url() {
        // A port just freed: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let target = ApiTarget {
            api: format!("http://127.0.0.1:{port}/"),
            token: None,
            tenant: None,
        };
        let client = ApiClient::new(&target).expect("client");
        let error = client
            .get("/v1/agents", &[("enabled", "true")])
            .await
            .expect_err("nothing listens");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot reach http://127.0.0.1:{port}/v1/agents?enabled=true: "
            )),
            "{message}"
        );
    }
}
