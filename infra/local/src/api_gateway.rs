//! The stand-in for API Gateway: an HTTP server that turns each request into the same
//! payload-v2 event API Gateway sends, and the handler's response back into HTTP. With
//! `AuthMode=jwt` it also plays the HTTP API's JWT authorizer.

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body as AxumBody};
use axum::extract::Request as AxumRequest;
use axum::response::Response as AxumResponse;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// API Gateway's own payload limit.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// The routes the template leaves without an authorizer.
const OPEN_ROUTES: [(&str, &str); 1] = [("GET", "/health")];

/// What API Gateway checks before a request reaches the handler, as the template's `AuthMode`
/// configures it.
#[derive(Debug, Clone, Default)]
pub enum Authorizer {
    /// `AuthMode=header`: no authorizer; every request reaches the handler as it came.
    #[default]
    None,
    /// `AuthMode=jwt`: the JWT authorizer on every route but `GET /health`.
    Jwt(Arc<JwtAuthorizer>),
}

/// The HTTP API's JWT authorizer, with a locally configured HS256 secret instead of the
/// issuer's published keys: it checks the signature, `iss`, `aud` (or `client_id`), `exp` and
/// `nbf`, and hands the verified claims to the handler where API Gateway puts them,
/// `requestContext.authorizer.jwt`. Nothing else a client sends can put claims there.
pub struct JwtAuthorizer {
    issuer: String,
    audience: Vec<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthorizer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused, in the words of the 401's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NoToken,
    InvalidToken(String),
}

impl JwtAuthorizer {
    /// The local stack's issuer and audience, unless configured otherwise.
    pub const LOCAL_ISSUER: &'static str = "https://baton-local.invalid/";
    pub const LOCAL_AUDIENCE: &'static str = "baton";
    /// How long a token from [`JwtAuthorizer::token`] is valid when its claims do not say.
    pub const TOKEN_LIFETIME_S: i64 = 12 * 3600;

    pub fn new(issuer: impl Into<String>, audience: Vec<String>, secret: &[u8]) -> Self {
        JwtAuthorizer {
            issuer: issuer.into(),
            audience,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// The local issuer and audience with `secret`.
    pub fn local(secret: &[u8]) -> Self {
        Self::new(
            Self::LOCAL_ISSUER,
            vec![Self::LOCAL_AUDIENCE.to_string()],
            secret,
        )
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// A token signed with this authorizer's secret, as its issuer would mint one: `iss`, the
    /// first audience, `iat` and `exp` are filled in, then `claims` are laid over them (a null
    /// claim is left out), so tests can also mint expired or foreign tokens.
    pub fn token(&self, claims: &Value) -> String {
        let now = baton::clock::now_ms() / 1000;
        let mut all = Map::from_iter([
            ("iss".to_string(), json!(self.issuer)),
            ("aud".to_string(), json!(self.audience.first())),
            ("iat".to_string(), json!(now)),
            ("exp".to_string(), json!(now + Self::TOKEN_LIFETIME_S)),
        ]);
        for (name, value) in claims.as_object().into_iter().flatten() {
            if value.is_null() {
                all.remove(name);
            } else {
                all.insert(name.clone(), value.clone());
            }
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &all, &self.encoding)
            .unwrap_or_default()
    }

    /// The verified claims of the `Authorization` header's bearer token.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Map<String, Value>, Rejection> {
        let token = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(Rejection::NoToken)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        // API Gateway accepts `aud` or, without it, `client_id` (Cognito access tokens).
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|e| Rejection::InvalidToken(token_error(e.kind())))?
            .claims;
        let audiences: Vec<&str> = match claims.get("aud").or_else(|| claims.get("client_id")) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| self.audience.iter().any(|ok| ok == a))
        {
            return Err(Rejection::InvalidToken(
                "its audience is not accepted".to_string(),
            ));
        }
        Ok(claims)
    }

    /// What API Gateway puts in `requestContext.authorizer`: every claim as a string, and the
    /// scopes of `scope` (or `scp`).
    fn request_context(claims: &Map<String, Value>) -> Value {
        let strings: Map<String, Value> = claims
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(claim_text(value))))
            .collect();
        let scopes: Option<Vec<String>> = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(list)) => Some(list.split_whitespace().map(String::from).collect()),
            Some(Value::Array(list)) => Some(
                list.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            ),
            _ => None,
        };
        json!({ "jwt": { "claims": strings, "scopes": scopes } })
    }
}

/// A claim as API Gateway passes it: strings as they are, lists as `[a b]`, the rest as JSON.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(claim_text).collect();
            format!("[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

fn token_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "it has expired".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "its issuer is not accepted".into(),
        ErrorKind::InvalidSignature => "its signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "its algorithm is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no `{claim}` claim"),
        _ => "it is not a well-formed JWT".into(),
    }
}

/// The 401 of a refused request, in the API's error shape, with the bearer challenge.
fn unauthorized(rejection: Rejection) -> AxumResponse {
    let (message, challenge) = match rejection {
        Rejection::NoToken => (
            "the request carries no bearer token: send `Authorization: Bearer <token>`".to_string(),
            "Bearer".to_string(),
        ),
        Rejection::InvalidToken(why) => (
            format!("the bearer token is not valid: {why}"),
            "Bearer error=\"invalid_token\"".to_string(),
        ),
    };
    let body = json!({ "error": { "code": "unauthorized", "message": message, "details": {} } });
    AxumResponse::builder()
        .status(401)
        .header("content-type", "application/json")
        .header("www-authenticate", challenge)
        .body(AxumBody::from(body.to_string()))
        .unwrap_or_default()
}

/// Serves `handler` on `listener` until `shutdown` turns true, behind `authorizer`.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: H,
    authorizer: Authorizer,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    let handler = Arc::new(handler);
    let app = axum::Router::new().fallback(move |request: AxumRequest| {
        let handler = handler.clone();
        let authorizer = authorizer.clone();
        async move {
            let open = OPEN_ROUTES
                .iter()
                .any(|(method, path)| request.method() == *method && request.uri().path() == *path);
            let authorization = match &authorizer {
                Authorizer::Jwt(jwt) if !open => {
                    let header = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    match jwt.verify(header) {
                        Ok(claims) => Some(JwtAuthorizer::request_context(&claims)),
                        Err(rejection) => return unauthorized(rejection),
                    }
                }
                _ => None,
            };
            match to_lambda_request(request, authorization).await {
                Ok(request) => from_lambda_response(handler(request).await),
                Err(status) => AxumResponse::builder()
                    .status(status)
                    .body(AxumBody::from(
                        json!({"message": "Request Entity Too Large"}).to_string(),
                    ))
                    .unwrap_or_default(),
            }
        }
    });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "local API server stopped");
    }
}

/// The payload-v2 event of `request`; `authorizer` is what a passed authorizer hands over.
async fn to_lambda_request(
    request: AxumRequest,
    authorizer: Option<Value>,
) -> Result<Request, u16> {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_PAYLOAD_BYTES)
        .await
        .map_err(|_| 413u16)?;
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = value.to_str().unwrap_or_default().to_string();
        let joined = match headers.remove(name.as_str()) {
            Some(Value::String(previous)) => format!("{previous},{value}"),
            _ => value,
        };
        headers.insert(name.as_str().to_string(), Value::String(joined));
    }
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let query_parameters: Map<String, Value> = url_pairs(&query)
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let now = baton::clock::now_ms();
    let (body, is_base64) = match std::str::from_utf8(&body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64_encode(&body), true),
    };
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let route_key = if OPEN_ROUTES
        .iter()
        .any(|(method, open)| parts.method == *method && path == *open)
    {
        format!("{} {path}", parts.method)
    } else {
        "ANY /{proxy+}".to_string()
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "queryStringParameters": query_parameters,
        "pathParameters": { "proxy": path.trim_start_matches('/') },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": parts.headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or_default(),
            },
            "requestId": uuid_like(now),
            "routeKey": route_key,
            "stage": "$default",
            "time": baton::clock::rfc3339(now),
            "timeEpoch": now,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    });
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    let event: ApiGatewayV2httpRequest = serde_json::from_value(event).map_err(|_| 400u16)?;
    Ok(LambdaRequest::ApiGatewayV2(event).into())
}

fn from_lambda_response(response: Response<Body>) -> AxumResponse {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Text(text) => text.into_bytes(),
        Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    AxumResponse::from_parts(parts, AxumBody::from(bytes))
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_string(), v.to_string())
        })
}

fn uuid_like(now: i64) -> String {
    format!("local-{now:x}-{:x}", std::process::id())
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_encode(b"M"), "TQ==");
        assert_eq!(base64_encode(&[0xff, 0xfe]), "//4=");
    }

    fn bearer(token: &str) -> Option<String> {
        Some(format!("Bearer {token}"))
    }

    fn invalid(authorizer: &JwtAuthorizer, claims: Value) -> String {
        match authorizer.verify(bearer(&authorizer.token(&claims)).as_deref()) {
            Err(Rejection::InvalidToken(why)) => why,
            other => panic!("{claims}: expected an invalid token, got {other:?}"),
        }
    }

    #[test]
    fn a_token_of_the_issuer_for_the_audience_is_verified() {
        let authorizer = JwtAuthorizer::local(b"secret");
        let token = authorizer.token(&json!({ "tenant_id": "acme" }));
        let claims = authorizer.verify(bearer(&token).as_deref()).unwrap();
        assert_eq!(claims["tenant_id"], "acme");
        assert_eq!(claims["iss"], JwtAuthorizer::LOCAL_ISSUER);
        // Cognito access tokens name their audience in client_id.
        let token = authorizer.token(&json!({ "aud": null, "client_id": "baton" }));
        assert!(authorizer.verify(bearer(&token).as_deref()).is_ok());
        let lower = format!("bearer {}", authorizer.token(&json!({})));
        assert!(authorizer.verify(Some(&lower)).is_ok());
    }

    #[test]
    fn tokens_that_api_gateway_would_refuse_are_refused() {
        let authorizer = JwtAuthorizer::local(b"secret");
        let past = baton::clock::now_ms() / 1000 - 3600;
        let future = baton::clock::now_ms() / 1000 + 3600;
        assert_eq!(
            invalid(&authorizer, json!({ "exp": past })),
            "it has expired"
        );
        assert!(invalid(&authorizer, json!({ "nbf": future })).contains("nbf"));
        assert!(invalid(&authorizer, json!({ "exp": null })).contains("`exp`"));
        assert!(invalid(&authorizer, json!({ "iss": "https://other/" })).contains("issuer"));
        assert!(invalid(&authorizer, json!({ "aud": "other" })).contains("audience"));
        assert!(invalid(&authorizer, json!({ "aud": null })).contains("audience"));
        let forger = JwtAuthorizer::local(b"another secret");
        let forged = forger.token(&json!({ "tenant_id": "acme" }));
        assert_eq!(
            authorizer.verify(bearer(&forged).as_deref()),
            Err(Rejection::InvalidToken(
                "its signature does not verify".into()
            ))
        );
        // An unsigned token, `alg: none`, whatever its claims.
        let unsigned = {
            let mut parts: Vec<&str> = forged.split('.').collect();
            parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
            parts[2] = "";
            parts.join(".")
        };
        assert!(matches!(
            authorizer.verify(bearer(&unsigned).as_deref()),
            Err(Rejection::InvalidToken(_))
        ));
        for missing in [None, Some(""), Some("Bearer "), Some("Basic dXNlcjpwYXNz")] {
            assert_eq!(
                authorizer.verify(missing),
                Err(Rejection::NoToken),
                "{missing:?}"
            );
        }
        assert!(matches!(
            authorizer.verify(Some("Bearer not-a-jwt")),
            Err(Rejection::InvalidToken(_))
        ));
    }

    #[test]
    fn claims_reach_the_handler_as_api_gateway_passes_them() {
        let claims = json!({
            "tenant_id": "acme",
            "exp": 1700000000,
            "email_verified": true,
            "cognito:groups": ["admin", "ops"],
            "scope": "read write",
        });
        let context = JwtAuthorizer::request_context(claims.as_object().unwrap());
        assert_eq!(
            context,
            json!({ "jwt": {
                "claims": {
                    "tenant_id": "acme",
                    "exp": "1700000000",
                    "email_verified": "true",
                    "cognito:groups": "[admin ops]",
                    "scope": "read write",
                },
                "scopes": ["read", "write"],
            } })
        );
        let none = JwtAuthorizer::request_context(json!({ "sub": "u" }).as_object().unwrap());
        assert_eq!(none["jwt"]["scopes"], Value::Null);
    }
}
