//! AWS APIs called as single SigV4-signed JSON requests over HTTPS: the agents' (Lambda's
//! Invoke, Bedrock's Converse, and the API-key reads of Secrets Manager and SSM) and the
//! tenants' secrets API (Secrets Manager, see [`crate::vault`]).
//!
//! Each is a few operations with small JSON contracts, and the generated SDK clients cost far
//! more than they give here: a client links every operation's error parsers and its own
//! endpoint rules (Lambda's Invoke error parser alone is 131 KiB), which put execute-agent and
//! orchestrate over the 8 MB binary budget (docs/BENCHMARKS.md). Signing is the SDK's own
//! `aws-sigv4`, with the credentials and region of the function's SDK configuration. The
//! store, the queues and the payload bucket keep the SDK clients. Nothing is retried here:
//! the caller decides (a task's retry policy; an API client, after a 503).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use baton_types::tenancy::redact_aws_identifiers;

/// Bytes a path segment keeps as they are: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How long a connection may take to open; the call's own time-out bounds the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One AWS service as the signed requests reach it.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// Its name in failures ("Lambda").
    pub label: &'static str,
    /// Its SigV4 signing name.
    pub signing_name: &'static str,
    /// Its host's first label (`{prefix}.{region}.amazonaws.com`).
    pub host_prefix: &'static str,
}

pub const LAMBDA: Service = Service {
    label: "Lambda",
    signing_name: "lambda",
    host_prefix: "lambda",
};
pub const BEDROCK: Service = Service {
    label: "Bedrock",
    signing_name: "bedrock",
    host_prefix: "bedrock-runtime",
};
pub const SECRETS_MANAGER: Service = Service {
    label: "Secrets Manager",
    signing_name: "secretsmanager",
    host_prefix: "secretsmanager",
};
pub const SSM: Service = Service {
    label: "SSM",
    signing_name: "ssm",
    host_prefix: "ssm",
};

/// A path segment, percent-encoded (a model id holds `:`).
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A service's answer, of any status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// An error answer's code and message (see [`error_code_and_message`]).
    pub fn refusal(&self) -> (Option<String>, Option<String>) {
        error_code_and_message(&self.headers, &self.body)
    }
}

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    /// It could not be made: no region or credentials, or a signing fault.
    #[error("the request could not be made: {0}")]
    Config(String),
    #[error("no answer in time")]
    Timeout,
    /// The connection failed or broke (its description has no identifiers).
    #[error("unreachable: {0}")]
    Connection(String),
}

/// Signs and sends requests with the SDK configuration's region and credentials. Its HTTP
/// client is built on first use.
#[derive(Debug)]
pub struct SignedClient {
    aws: SdkConfig,
    http: OnceLock<reqwest::Client>,
}

/// One request: `POST {endpoint}{path}` with a JSON body.
#[derive(Debug)]
pub struct Request<'a> {
    pub service: Service,
    /// The endpoint in place of the service's own (a stand-in), if any.
    pub endpoint: Option<&'a str>,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl<'a> Request<'a> {
    /// A request of the JSON 1.1 protocol (Secrets Manager, SSM): `target` names the
    /// operation.
    pub fn json_rpc(service: Service, target: &str, body: &Value) -> Self {
        Request {
            service,
            endpoint: None,
            path: "/".into(),
            headers: vec![
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amz-target", target.into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }
}

impl SignedClient {
    pub fn new(aws: SdkConfig) -> Self {
        SignedClient {
            aws,
            http: OnceLock::new(),
        }
    }

    pub fn is_built(&self) -> bool {
        self.http.get().is_some()
    }

    fn http(&self) -> Result<&reqwest::Client, SignedError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = crate::transport::reqwest_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| SignedError::Config(format!("the HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| client))
    }

    fn endpoint(&self, request: &Request<'_>) -> Result<String, SignedError> {
        if let Some(url) = request.endpoint.or(self.aws.endpoint_url()) {
            return Ok(url.trim_end_matches('/').to_string());
        }
        let region = self.region()?;
        let domain = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        Ok(format!(
            "https://{}.{region}.{domain}",
            request.service.host_prefix
        ))
    }

    fn region(&self) -> Result<&str, SignedError> {
        self.aws
            .region()
            .map(|r| r.as_ref())
            .ok_or_else(|| SignedError::Config("no AWS region is configured".into()))
    }

    /// Signs and sends the request, and reads the whole answer, whatever its status.
    pub async fn send(&self, request: Request<'_>) -> Result<Answer, SignedError> {
        Answer::read(self.open(request).await?).await
    }

    /// Signs and sends the request, and gives the answer with its body still to read.
    pub async fn open(&self, request: Request<'_>) -> Result<reqwest::Response, SignedError> {
        let url = format!("{}{}", self.endpoint(&request)?, request.path);
        let credentials = self
            .aws
            .credentials_provider()
            .ok_or_else(|| SignedError::Config("no AWS credentials are configured".into()))?
            .provide_credentials()
            .await
            .map_err(|e| SignedError::Config(format!("the AWS credentials: {e}")))?;
        let identity = Identity::from(credentials);
        let signing = |e: &dyn std::fmt::Display| SignedError::Config(format!("signing: {e}"));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region()?)
            .name(request.service.signing_name)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            request.headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(&request.body),
        )
        .and_then(|signable| sign(signable, &params))
        .map_err(|e| signing(&e))?;
        let (instructions, _signature) = signable.into_parts();
        let mut http = self.http()?.post(&url);
        for (name, value) in request.headers.iter() {
            http = http.header(*name, value);
        }
        for (name, value) in instructions.headers() {
            http = http.header(name, value);
        }
        http.body(request.body).send().await.map_err(transport)
    }
}

impl Answer {
    /// The answer with its whole body.
    pub async fn read(response: reqwest::Response) -> Result<Answer, SignedError> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn transport(error: reqwest::Error) -> SignedError {
    if error.is_timeout() {
        SignedError::Timeout
    } else {
        SignedError::Connection(redact_aws_identifiers(&error.to_string()))
    }
}

/// An error answer's code and message, as AWS's JSON protocols carry them: the code in the
/// `x-amzn-ErrorType` header or the body's `__type` (either may carry a namespace before `#`
/// and details after `:`), the message in `message` or `Message`.
pub fn error_code_and_message(
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> (Option<String>, Option<String>) {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    let code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .or_else(|| text("__type"))
        .or_else(|| text("code"))
        .or_else(|| text("Type"))
        .map(|raw| {
            let raw = raw.split(':').next().unwrap_or(raw);
            raw.rsplit('#').next().unwrap_or(raw).trim().to_string()
        })
        .filter(|code| !code.is_empty());
    let message = text("message")
        .or_else(|| text("Message"))
        .map(str::to_string);
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_the_header_or_the_body() {
        let mut headers = reqwest::header::HeaderMap::new();
        let body = br#"{"message": "Rate exceeded"}"#;
        headers.insert(
            "x-amzn-ErrorType",
            "TooManyRequestsException:http://internal.amazon.com/coral/com.amazon.coral/"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            error_code_and_message(&headers, body),
            (
                Some("TooManyRequestsException".into()),
                Some("Rate exceeded".into())
            )
        );
        let body = br#"{"__type": "com.amazonaws.ssm#ParameterNotFound", "Message": "x"}"#;
        assert_eq!(
            error_code_and_message(&Default::default(), body),
            (Some("ParameterNotFound".into()), Some("x".into()))
        );
        assert_eq!(
            error_code_and_message(&Default::default(), b"<html>bad gateway"),
            (None, None)
        );
    }

    #[test]
    fn a_model_id_is_one_path_segment() {
        assert_eq!(
            segment("anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1%3A0"
        );
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
