//! The stand-in for API Gateway: an HTTP server that turns each request into the same
//! payload-v2 event API Gateway sends, and the handler's response back into HTTP. With
//! `AuthMode=jwt` it also plays the HTTP API's JWT authorizer.
//!
//! What it refuses itself (a token, the payload limit, a request head API Gateway or HTTP/1.1
//! would not take) it answers in the API's error shape, `{"error":{"code","message","details"}}`
//! with `content-type: application/json`, as the handler answers its own errors: a client of
//! the local stack should meet one shape, whoever refused. (API Gateway's own refusals have
//! other bodies, such as `{"message":"Request Entity Too Large"}`.)

use std::future::Future;
use std::sync::Arc;

use axum::body::Body as AxumBody;
use axum::extract::Request as AxumRequest;
use axum::response::Response as AxumResponse;
use futures::StreamExt;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// API Gateway's own payload limit (HTTP API quotas: 10 MB).
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;
/// How much of a body over the limit is read and dropped before the 413, so that a client
/// still sending gets the answer instead of a reset connection.
const MAX_DRAINED_BYTES: usize = 4 * MAX_PAYLOAD_BYTES;

/// The routes the template leaves without an authorizer.
const OPEN_ROUTES: [(&str, &str); 2] = [("GET", "/health"), ("GET", "/openapi.json")];

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
        let now = baton_types::clock::now_ms() / 1000;
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
    let mut response = error_response(&ApiRefusal::new(401, "unauthorized", message));
    if let Ok(challenge) = http::HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// A request the stand-in refuses before the handler sees it, as the API's errors say it.
#[derive(Debug, Clone, PartialEq)]
struct ApiRefusal {
    status: u16,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiRefusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiRefusal {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    fn with_details(self, details: Value) -> Self {
        ApiRefusal { details, ..self }
    }

    fn payload_too_large() -> Self {
        ApiRefusal::new(
            413,
            "payload_too_large",
            format!(
                "the request body is larger than API Gateway's limit of {MAX_PAYLOAD_BYTES} bytes"
            ),
        )
        .with_details(json!({ "limit_bytes": MAX_PAYLOAD_BYTES }))
    }

    fn body(&self) -> String {
        json!({ "error": { "code": self.code, "message": self.message, "details": self.details } })
            .to_string()
    }
}

fn error_response(refusal: &ApiRefusal) -> AxumResponse {
    AxumResponse::builder()
        .status(refusal.status)
        .header("content-type", "application/json")
        .body(AxumBody::from(refusal.body()))
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
                Err(refusal) => error_response(&refusal),
            }
        }
    });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(head_screen::ScreenedListener(listener), app)
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
) -> Result<Request, ApiRefusal> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        // Bytes beyond ASCII reach the handler as text, as API Gateway passes them on.
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
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
    let now = baton_types::clock::now_ms();
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
            "time": baton_types::clock::rfc3339(now),
            "timeEpoch": now,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    });
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    let event: ApiGatewayV2httpRequest = serde_json::from_value(event).map_err(|e| {
        ApiRefusal::new(
            400,
            "invalid_request",
            format!("the request cannot be passed on as an API Gateway event: {e}"),
        )
    })?;
    Ok(LambdaRequest::ApiGatewayV2(event).into())
}

/// The whole body, up to API Gateway's payload limit. A larger body is read on (up to
/// [`MAX_DRAINED_BYTES`]) and dropped before the 413 is sent: answering while the client is
/// still sending would close a connection with unread data, which resets it, and the client
/// would see the reset rather than the answer.
async fn read_body(body: AxumBody) -> Result<Vec<u8>, ApiRefusal> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(ApiRefusal::new(
                400,
                "invalid_request",
                "the request body ended before it was complete",
            ));
        };
        seen = seen.saturating_add(chunk.len());
        if seen <= MAX_PAYLOAD_BYTES {
            bytes.extend_from_slice(&chunk);
        } else {
            bytes = Vec::new();
            if seen > MAX_DRAINED_BYTES {
                break;
            }
        }
    }
    if seen > MAX_PAYLOAD_BYTES {
        return Err(ApiRefusal::payload_too_large());
    }
    Ok(bytes)
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

/// Request heads read and checked before hyper parses them.
///
/// hyper answers a request head it cannot parse by itself, before any service sees the
/// request, with an empty body: 400 for a NUL or other control byte in a header, a bad method,
/// target or version; 414 for a target over 64 KiB; 431 for over 100 headers or a head over its
/// buffer. hyper has no hook to shape those answers, and `axum::serve` hands none of hyper's
/// settings through (the nearest, `ignore_invalid_headers`, would drop the bad header silently,
/// and the handler could not name it). So the stand-in reads each request head off the
/// connection itself, with hyper's rules, before hyper does: a head hyper would refuse, or that
/// is over API Gateway's limit on the request line and header values (10,240 bytes, which
/// hyper does not know), is answered here in the API's error shape, and the connection is
/// closed, as hyper closes it after a parse error. Every other byte reaches hyper unchanged; the
/// bodies are only followed (by `Content-Length` or chunks) to find where the next head starts.
mod head_screen {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde_json::json;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    use super::ApiRefusal;

    /// API Gateway's limit on the request line and the header values together (HTTP API
    /// quotas: "Total combined size of request line and header values").
    pub(super) const MAX_REQUEST_LINE_AND_HEADERS: usize = 10_240;
    /// hyper's limit on the number of headers.
    pub(super) const MAX_HEADERS: usize = 100;
    /// The most of one head held before it is refused: far past API Gateway's limit and far
    /// below hyper's buffer (about 400 KiB), so hyper never meets a head too large for it.
    const MAX_HEAD_BYTES: usize = 64 * 1024;
    /// A chunk-size or trailer line longer than this is left to hyper.
    const MAX_CHUNK_LINE: usize = 4096;
    /// After a refusal, what the client still sends is read and dropped for this long (or up
    /// to this much): closing a socket with unread data resets it, and the client would see
    /// the reset instead of the answer.
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_LINGER_BYTES: usize = 1024 * 1024;
    const READ_CHUNK: usize = 16 * 1024;

    /// The API's listener: every connection it accepts is screened.
    pub(in crate::api_gateway) struct ScreenedListener(pub(in crate::api_gateway) TcpListener);

    impl axum::serve::Listener for ScreenedListener {
        type Io = ScreenedStream;
        type Addr = std::net::SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            let (stream, address) = axum::serve::Listener::accept(&mut self.0).await;
            (ScreenedStream::new(stream), address)
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            self.0.local_addr()
        }
    }

    /// How the body after a head is framed, as hyper reads it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Framing {
        Length(u64),
        Chunked,
        /// `CONNECT` or `Upgrade`: what follows may not be HTTP, so nothing more is screened.
        Tunnel,
    }

    /// Where the connection is in its stream of requests.
    #[derive(Debug)]
    enum Phase {
        Head,
        Body(u64),
        Chunked(Chunk),
        Tunnel,
    }

    /// Where a chunked body is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Chunk {
        Size,
        Data(u64),
        DataEnd,
        Trailer,
    }

    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum ChunkEnd {
        More,
        Done,
        /// Not chunks hyper would read: hyper gets the bytes and refuses them itself.
        Unreadable,
    }

    /// Sending a refusal, then closing.
    enum Refusing {
        Write(Vec<u8>, usize),
        Flush,
        Shutdown,
        Linger(Pin<Box<tokio::time::Sleep>>, usize),
        Done,
    }

    /// A connection whose request heads are checked before hyper reads them.
    pub(in crate::api_gateway) struct ScreenedStream {
        inner: TcpStream,
        phase: Phase,
        /// The head being collected.
        head: Vec<u8>,
        /// The chunk-size or trailer line being collected.
        line: Vec<u8>,
        /// Checked bytes hyper has yet to read, from `ready_from`.
        ready: Vec<u8>,
        ready_from: usize,
        scratch: Vec<u8>,
        eof: bool,
        refusing: Option<Refusing>,
        write_closed: bool,
    }

    impl ScreenedStream {
        fn new(inner: TcpStream) -> Self {
            ScreenedStream {
                inner,
                phase: Phase::Head,
                head: Vec::new(),
                line: Vec::new(),
                ready: Vec::new(),
                ready_from: 0,
                scratch: vec![0; READ_CHUNK],
                eof: false,
                refusing: None,
                write_closed: false,
            }
        }

        /// Moves `input` on: heads are held until they are whole and checked, bodies pass.
        fn feed(&mut self, mut input: &[u8]) {
            while !input.is_empty() && self.refusing.is_none() {
                match &mut self.phase {
                    Phase::Tunnel => {
                        self.ready.extend_from_slice(input);
                        return;
                    }
                    Phase::Body(left) => {
                        let n = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                        self.ready.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        *left -= n as u64;
                        if *left == 0 {
                            self.phase = Phase::Head;
                        }
                    }
                    Phase::Chunked(chunk) => {
                        let (n, end) = scan_chunked(chunk, &mut self.line, input);
                        self.ready.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        match end {
                            ChunkEnd::More => {}
                            ChunkEnd::Done => self.phase = Phase::Head,
                            ChunkEnd::Unreadable => self.phase = Phase::Tunnel,
                        }
                    }
                    Phase::Head => {
                        let n = self.take_head(input);
                        input = &input[n..];
                    }
                }
            }
        }

        /// Collects head bytes from `input`; returns how many it took.
        fn take_head(&mut self, input: &[u8]) -> usize {
            let mut used = 0;
            let mut whole = false;
            for &byte in input {
                used += 1;
                if self.head.is_empty() && (byte == b'\r' || byte == b'\n') {
                    // Empty lines before a request line are skipped by hyper.
                    self.ready.push(byte);
                    continue;
                }
                self.head.push(byte);
                if byte == b'\n' && (self.head.ends_with(b"\n\n") || self.head.ends_with(b"\n\r\n"))
                {
                    whole = true;
                    break;
                }
                if self.head.len() > MAX_HEAD_BYTES {
                    break;
                }
            }
            let verdict = if whole {
                inspect_head(&self.head).map(Some)
            } else {
                check_partial_head(&self.head).map(|()| None)
            };
            match verdict {
                Ok(None) => {}
                Ok(Some(framing)) => {
                    self.ready.extend_from_slice(&self.head);
                    self.head.clear();
                    self.phase = match framing {
                        Framing::Length(0) => Phase::Head,
                        Framing::Length(n) => Phase::Body(n),
                        Framing::Chunked => Phase::Chunked(Chunk::Size),
                        Framing::Tunnel => Phase::Tunnel,
                    };
                }
                Err(refusal) => {
                    tracing::debug!(
                        status = refusal.status,
                        code = refusal.code,
                        "request head refused"
                    );
                    self.head.clear();
                    self.refusing = Some(Refusing::Write(refusal_bytes(&refusal), 0));
                }
            }
            used
        }

        /// Sends the refusal, closes the writing side, lingers, then reports the end of the
        /// stream to hyper, which closes the connection. The refusal goes out as soon as the
        /// head is read: a client that pipelines (sends a request before the answer to the one
        /// before has come) could see it cut into that answer. None of the usual clients do.
        fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let ScreenedStream {
                inner,
                refusing,
                scratch,
                write_closed,
                ..
            } = self;
            let Some(state) = refusing else {
                return Poll::Ready(Ok(()));
            };
            loop {
                match state {
                    Refusing::Write(bytes, at) => {
                        match ready!(Pin::new(&mut *inner).poll_write(cx, &bytes[*at..])) {
                            Ok(0) | Err(_) => *state = Refusing::Done,
                            Ok(n) if *at + n == bytes.len() => *state = Refusing::Flush,
                            Ok(n) => *at += n,
                        }
                    }
                    Refusing::Flush => {
                        let _ = ready!(Pin::new(&mut *inner).poll_flush(cx));
                        *state = Refusing::Shutdown;
                    }
                    Refusing::Shutdown => {
                        let _ = ready!(Pin::new(&mut *inner).poll_shutdown(cx));
                        *write_closed = true;
                        *state = Refusing::Linger(Box::pin(tokio::time::sleep(LINGER)), 0);
                    }
                    Refusing::Linger(deadline, drained) => {
                        if deadline.as_mut().poll(cx).is_ready() || *drained > MAX_LINGER_BYTES {
                            *state = Refusing::Done;
                            continue;
                        }
                        let mut buf = ReadBuf::new(scratch);
                        match ready!(Pin::new(&mut *inner).poll_read(cx, &mut buf)) {
                            Ok(()) if !buf.filled().is_empty() => *drained += buf.filled().len(),
                            _ => *state = Refusing::Done,
                        }
                    }
                    Refusing::Done => return Poll::Ready(Ok(())),
                }
            }
        }
    }

    impl AsyncRead for ScreenedStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            loop {
                if this.ready_from < this.ready.len() {
                    let n = buf.remaining().min(this.ready.len() - this.ready_from);
                    buf.put_slice(&this.ready[this.ready_from..this.ready_from + n]);
                    this.ready_from += n;
                    if this.ready_from == this.ready.len() {
                        this.ready.clear();
                        this.ready_from = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                if this.refusing.is_some() {
                    return this.poll_refusal(cx);
                }
                if this.eof {
                    // A head cut short by the client goes to hyper as it is; hyper closes.
                    if !this.head.is_empty() {
                        this.ready = std::mem::take(&mut this.head);
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                let mut scratch = std::mem::take(&mut this.scratch);
                let mut read = ReadBuf::new(&mut scratch);
                let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
                let n = read.filled().len();
                let result = match polled {
                    Poll::Ready(Ok(())) if n == 0 => {
                        this.eof = true;
                        Ok(())
                    }
                    Poll::Ready(Ok(())) => {
                        this.feed(&scratch[..n]);
                        Ok(())
                    }
                    Poll::Ready(Err(error)) => Err(error),
                    Poll::Pending => {
                        this.scratch = scratch;
                        return Poll::Pending;
                    }
                };
                this.scratch = scratch;
                result?;
            }
        }
    }

    impl AsyncWrite for ScreenedStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.write_closed {
                return Poll::Ready(Ok(()));
            }
            let result = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
            this.write_closed = true;
            Poll::Ready(result)
        }
    }

    /// `tchar` of RFC 9110: what methods and header names are made of.
    fn is_token(byte: u8) -> bool {
        byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
    }

    /// What hyper's parser takes in a request target.
    fn is_target_byte(byte: u8) -> bool {
        (0x21..=0x7e).contains(&byte) || byte >= 0x80
    }

    /// What hyper's parser takes in a header value: tab, space, visible ASCII and obs-text.
    fn is_value_byte(byte: u8) -> bool {
        byte == b'\t' || (0x20..=0x7e).contains(&byte) || byte >= 0x80
    }

    fn trim_whitespace(mut bytes: &[u8]) -> &[u8] {
        while let [b' ' | b'\t', rest @ ..] = bytes {
            bytes = rest;
        }
        while let [rest @ .., b' ' | b'\t'] = bytes {
            bytes = rest;
        }
        bytes
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).chars().take(64).collect()
    }

    fn invalid(message: impl Into<String>, details: serde_json::Value) -> ApiRefusal {
        ApiRefusal::new(400, "invalid_request", message).with_details(details)
    }

    fn uri_too_long() -> ApiRefusal {
        ApiRefusal::new(
            414,
            "uri_too_long",
            format!(
                "the request line (method, URL and version) is longer than API Gateway takes: \
                 {MAX_REQUEST_LINE_AND_HEADERS} bytes of request line and header values"
            ),
        )
        .with_details(json!({ "limit_bytes": MAX_REQUEST_LINE_AND_HEADERS }))
    }

    fn headers_too_large(message: String, details: serde_json::Value) -> ApiRefusal {
        ApiRefusal::new(431, "headers_too_large", message).with_details(details)
    }

    fn too_many_bytes() -> ApiRefusal {
        headers_too_large(
            format!(
                "the request line and header values are longer than API Gateway takes: \
                 {MAX_REQUEST_LINE_AND_HEADERS} bytes"
            ),
            json!({ "limit_bytes": MAX_REQUEST_LINE_AND_HEADERS }),
        )
    }

    /// What can already be told of a head that is not whole yet.
    pub(super) fn check_partial_head(head: &[u8]) -> Result<(), ApiRefusal> {
        let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        if request_line.len() > MAX_REQUEST_LINE_AND_HEADERS {
            return Err(uri_too_long());
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(too_many_bytes());
        }
        let method_end = head.iter().position(|&b| b == b' ').unwrap_or(head.len());
        if !head[..method_end].iter().all(|&b| is_token(b)) {
            return Err(bad_method());
        }
        Ok(())
    }

    fn bad_method() -> ApiRefusal {
        invalid(
            "the request line does not start with a method",
            json!({ "part": "method" }),
        )
    }

    /// A whole head (ending with its empty line), checked as hyper parses it: the framing of
    /// its body, or why it is refused.
    pub(super) fn inspect_head(head: &[u8]) -> Result<Framing, ApiRefusal> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        let request_line = lines.next().unwrap_or_default();
        if request_line.len() > MAX_REQUEST_LINE_AND_HEADERS {
            return Err(uri_too_long());
        }
        let header_lines: Vec<&[u8]> = lines.take_while(|line| !line.is_empty()).collect();
        if header_lines.len() > MAX_HEADERS {
            return Err(headers_too_large(
                format!("the request has more than {MAX_HEADERS} headers"),
                json!({ "limit_headers": MAX_HEADERS }),
            ));
        }
        let size = request_line.len()
            + header_lines
                .iter()
                .map(|line| split_header(line).map_or(line.len(), |(_, value)| value.len()))
                .sum::<usize>();
        if size > MAX_REQUEST_LINE_AND_HEADERS {
            return Err(too_many_bytes());
        }

        let mut parts = request_line.splitn(3, |&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let version = parts.next().unwrap_or_default();
        if method.is_empty()
            || !method.iter().all(|&b| is_token(b))
            || http::Method::from_bytes(method).is_err()
        {
            return Err(bad_method());
        }
        let target_ok = !target.is_empty()
            && target.iter().all(|&b| is_target_byte(b))
            && std::str::from_utf8(target).is_ok()
            && http::Uri::try_from(target).is_ok();
        if !target_ok {
            return Err(invalid(
                "the request target is not a valid URI",
                json!({ "part": "target" }),
            ));
        }
        let http_11 = match version {
            b"HTTP/1.1" => true,
            b"HTTP/1.0" => false,
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                return Err(ApiRefusal::new(
                    505,
                    "http_version_not_supported",
                    format!("{} is not supported: send HTTP/1.1", text(version)),
                ));
            }
            _ => {
                return Err(invalid(
                    "the request line does not end with an HTTP version",
                    json!({ "part": "version" }),
                ))
            }
        };

        // Framing by hyper's rules (RFC 9112, 6.3): a last `Transfer-Encoding` of `chunked`
        // wins over `Content-Length`; `Content-Length`s must agree.
        let mut length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut chunked = false;
        let mut upgrade = false;
        for (index, line) in header_lines.iter().enumerate() {
            let Some((name, value)) = split_header(line)
                .filter(|(name, _)| !name.is_empty() && name.iter().all(|&b| is_token(b)))
            else {
                let name = line.split(|&b| b == b':').next().unwrap_or_default();
                return Err(invalid(
                    format!("header line {} is not `name: value`", index + 1),
                    json!({ "header": text(name) }),
                ));
            };
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            if let Some(byte) = value.iter().find(|&&b| !is_value_byte(b)) {
                return Err(invalid(
                    format!("the value of header `{name}` has a byte that is not allowed (0x{byte:02x})"),
                    json!({ "header": name }),
                ));
            }
            match name.as_str() {
                "transfer-encoding" => {
                    if !http_11 {
                        return Err(invalid(
                            "an HTTP/1.0 request cannot have Transfer-Encoding",
                            json!({ "header": name }),
                        ));
                    }
                    transfer_encoding = true;
                    length = None;
                    chunked = value
                        .iter()
                        .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b))
                        && value.rsplit(|&b| b == b',').next().is_some_and(|last| {
                            trim_whitespace(last).eq_ignore_ascii_case(b"chunked")
                        });
                }
                "content-length" if !transfer_encoding => {
                    let parsed = (!value.is_empty() && value.iter().all(u8::is_ascii_digit))
                        .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                        .flatten();
                    match (parsed, length) {
                        (None, _) => {
                            return Err(invalid(
                                "the Content-Length header is not a number",
                                json!({ "header": name }),
                            ))
                        }
                        (Some(new), Some(old)) if new != old => {
                            return Err(invalid(
                                "the request has Content-Length headers that disagree",
                                json!({ "header": name }),
                            ))
                        }
                        (Some(new), _) => length = Some(new),
                    }
                }
                "upgrade" => upgrade = http_11,
                _ => {}
            }
        }
        if transfer_encoding && !chunked {
            return Err(invalid(
                "Transfer-Encoding must end with `chunked`",
                json!({ "header": "transfer-encoding" }),
            ));
        }
        Ok(if method == b"CONNECT" || upgrade {
            Framing::Tunnel
        } else if chunked {
            Framing::Chunked
        } else {
            Framing::Length(length.unwrap_or(0))
        })
    }

    /// A header line's name and its value without the whitespace around it.
    fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], trim_whitespace(&line[colon + 1..])))
    }

    /// Follows a chunked body through `input`: how many bytes of it belong to the body, and
    /// whether the body ended there.
    pub(super) fn scan_chunked(
        chunk: &mut Chunk,
        line: &mut Vec<u8>,
        input: &[u8],
    ) -> (usize, ChunkEnd) {
        let mut at = 0;
        while at < input.len() {
            if let Chunk::Data(left) = chunk {
                let n =
                    usize::try_from(*left).map_or(input.len() - at, |l| l.min(input.len() - at));
                at += n;
                *left -= n as u64;
                if *left == 0 {
                    *chunk = Chunk::DataEnd;
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            if byte != b'\n' {
                if line.len() >= MAX_CHUNK_LINE {
                    return (at, ChunkEnd::Unreadable);
                }
                line.push(byte);
                continue;
            }
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            match chunk {
                Chunk::Size => {
                    let digits =
                        trim_whitespace(content.split(|&b| b == b';').next().unwrap_or_default());
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| {
                            (1..=16).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                        .and_then(|d| u64::from_str_radix(d, 16).ok());
                    *chunk = match size {
                        Some(0) => Chunk::Trailer,
                        Some(n) => Chunk::Data(n),
                        None => {
                            line.clear();
                            return (at, ChunkEnd::Unreadable);
                        }
                    };
                }
                Chunk::DataEnd if content.is_empty() => *chunk = Chunk::Size,
                Chunk::DataEnd => {
                    line.clear();
                    return (at, ChunkEnd::Unreadable);
                }
                Chunk::Trailer if content.is_empty() => {
                    line.clear();
                    return (at, ChunkEnd::Done);
                }
                Chunk::Trailer | Chunk::Data(_) => {}
            }
            line.clear();
        }
        (at, ChunkEnd::More)
    }

    /// The whole HTTP/1.1 answer of a refusal; the connection closes after it.
    fn refusal_bytes(refusal: &ApiRefusal) -> Vec<u8> {
        let body = refusal.body();
        let reason = http::StatusCode::from_u16(refusal.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("Error");
        format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\ndate: {}\r\n\r\n{body}",
            refusal.status,
            body.len(),
            http_date(SystemTime::now()),
        )
        .into_bytes()
    }

    /// An IMF-fixdate, as the `Date` header has it: `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub(super) fn http_date(at: SystemTime) -> String {
        const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let days = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or_default();
        // 1970-01-01 was a Thursday.
        let weekday = WEEKDAYS[(days % 7) as usize];
        let stamp = humantime::format_rfc3339_seconds(at).to_string();
        let part = |range: std::ops::Range<usize>| stamp.get(range).unwrap_or_default();
        let month = part(5..7)
            .parse::<usize>()
            .ok()
            .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
            .copied()
            .unwrap_or("Jan");
        format!(
            "{weekday}, {} {month} {} {} GMT",
            part(8..10),
            part(0..4),
            part(11..19)
        )
    }
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

    fn refusal(head: &[u8]) -> (u16, &'static str, Value) {
        match head_screen::inspect_head(head) {
            Err(refusal) => (refusal.status, refusal.code, refusal.details),
            Ok(framing) => panic!("{:?} was taken: {framing:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        use head_screen::{inspect_head, Framing};
        let framing = |head: &[u8]| inspect_head(head).unwrap();
        assert_eq!(
            framing(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Framing::Length(0)
        );
        assert_eq!(framing(b"GET / HTTP/1.0\n\n"), Framing::Length(0));
        assert_eq!(
            framing(b"POST /x HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n"),
            Framing::Length(12)
        );
        assert_eq!(
            framing(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n"),
            Framing::Chunked,
            "a Content-Length after chunked is ignored, as hyper ignores it"
        );
        assert_eq!(framing(b"CONNECT a:443 HTTP/1.1\r\n\r\n"), Framing::Tunnel);
        assert_eq!(
            framing(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Framing::Tunnel
        );
        // Values beyond ASCII (obs-text) and tabs are taken, as hyper takes them.
        assert_eq!(
            framing(b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\t!\r\n\r\n"),
            Framing::Length(0)
        );
    }

    #[test]
    fn heads_hyper_or_api_gateway_would_refuse_are_refused_in_the_api_shape() {
        let limit = head_screen::MAX_REQUEST_LINE_AND_HEADERS;
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(limit));
        assert_eq!(refusal(long_line.as_bytes()).0, 414);
        let big_value = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "a".repeat(limit));
        assert_eq!(refusal(big_value.as_bytes()).0, 431);
        let many: String = (0..=head_screen::MAX_HEADERS)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        let (status, code, details) = refusal(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert_eq!((status, code), (431, "headers_too_large"));
        assert_eq!(details["limit_headers"], head_screen::MAX_HEADERS);
        assert_eq!(
            refusal(b"GET / HTTP/1.1\r\nX-Tenant-Id: a\x00b\r\n\r\n"),
            (400, "invalid_request", json!({ "header": "x-tenant-id" }))
        );
        assert_eq!(
            refusal(b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n").2,
            json!({ "header": "x-a" })
        );
        assert_eq!(refusal(b"GET / HTTP/1.1\r\nX-A: \x7f\r\n\r\n").0, 400);
        assert_eq!(refusal(b"GET / HTTP/1.1\r\n folded\r\n\r\n").0, 400);
        assert_eq!(
            refusal(b"GET / HTTP/1.1\r\nX A: b\r\n\r\n").2,
            json!({ "header": "X A" })
        );
        assert_eq!(
            refusal(b"GET  / HTTP/1.1\r\n\r\n").2,
            json!({ "part": "target" })
        );
        assert_eq!(
            refusal(b"GET / HTTP/1.1 \r\n\r\n").2,
            json!({ "part": "version" })
        );
        assert_eq!(refusal(b"GET / HTTP/3.0\r\n\r\n").0, 505);
        assert_eq!(refusal(b"GET /a\x7fb HTTP/1.1\r\n\r\n").0, 400);
        assert_eq!(refusal(b"GET /a\xffb HTTP/1.1\r\n\r\n").0, 400, "not UTF-8");
        assert_eq!(refusal(b"GET http://[::1 HTTP/1.1\r\n\r\n").0, 400);
        assert_eq!(
            refusal(b"G\x00T / HTTP/1.1\r\n\r\n").2,
            json!({ "part": "method" })
        );
        for framing in [
            &b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                refusal(framing).0,
                400,
                "{:?}",
                String::from_utf8_lossy(framing)
            );
        }
        // What is already wrong is refused before the head is whole.
        assert!(head_screen::check_partial_head(b"\x16\x03\x01").is_err());
        assert!(head_screen::check_partial_head(b"GET /a").is_ok());
        assert!(head_screen::check_partial_head("G".repeat(limit + 1).as_bytes()).is_err());
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        use head_screen::{scan_chunked, Chunk, ChunkEnd};
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        // Whole, and fed one byte at a time.
        let (mut chunk, mut line) = (Chunk::Size, Vec::new());
        assert_eq!(
            scan_chunked(&mut chunk, &mut line, body),
            (end, ChunkEnd::Done)
        );
        let (mut chunk, mut line) = (Chunk::Size, Vec::new());
        for (at, byte) in body[..end].iter().enumerate() {
            let expected = if at + 1 == end {
                ChunkEnd::Done
            } else {
                ChunkEnd::More
            };
            assert_eq!(
                scan_chunked(&mut chunk, &mut line, &[*byte]),
                (1, expected),
                "byte {at}"
            );
        }
        for unreadable in [&b"zz\r\n"[..], b"4\r\nWikiX\r\n", b"\r\n"] {
            let (mut chunk, mut line) = (Chunk::Size, Vec::new());
            assert_eq!(
                scan_chunked(&mut chunk, &mut line, unreadable).1,
                ChunkEnd::Unreadable
            );
        }
    }

    #[test]
    fn refusals_carry_an_http_date() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(head_screen::http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            head_screen::http_date(std::time::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
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
        let past = baton_types::clock::now_ms() / 1000 - 3600;
        let future = baton_types::clock::now_ms() / 1000 + 3600;
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
