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
use axum::extract::{ConnectInfo, Request as AxumRequest};
use axum::response::Response as AxumResponse;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::StreamExt;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use head_screen::Screen;

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
    let app = axum::Router::new().fallback(
        move |ConnectInfo(screen): ConnectInfo<Screen>, request: AxumRequest| {
            let handler = handler.clone();
            let authorizer = authorizer.clone();
            async move {
                if let Some(refusal) = screen.take_refusal() {
                    let mut response = error_response(&refusal);
                    // As after hyper's own parse errors: nothing more is read on this
                    // connection.
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    return response;
                }
                let (parts, body) = request.into_parts();
                let open = OPEN_ROUTES
                    .iter()
                    .any(|(method, path)| parts.method == *method && parts.uri.path() == *path);
                let authorization = match &authorizer {
                    Authorizer::Jwt(jwt) if !open => {
                        let header = parts
                            .headers
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        jwt.verify(header)
                            .map(|claims| Some(JwtAuthorizer::request_context(&claims)))
                    }
                    _ => Ok(None),
                };
                // Read even when refused, so that the connection is ready for its next request.
                let body = read_body(body, &screen).await;
                let authorization = match authorization {
                    Ok(authorization) => authorization,
                    Err(rejection) => return unauthorized(rejection),
                };
                match body.and_then(|body| to_lambda_request(parts, body, authorization)) {
                    Ok(request) => from_lambda_response(handler(request).await),
                    Err(refusal) => error_response(&refusal),
                }
            }
        },
    );
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let app = app.into_make_service_with_connect_info::<Screen>();
    if let Err(error) = axum::serve(head_screen::ScreenedListener(listener), app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "local API server stopped");
    }
}

/// The event a function URL sends for `parts` and `body`: the same payload v2 (a URL's
/// route key is `$default`, which the handlers do not read).
pub(crate) fn function_url_request(
    parts: http::request::Parts,
    body: Vec<u8>,
) -> Result<Request, String> {
    to_lambda_request(parts, body, None).map_err(|refusal| refusal.body())
}

/// The payload-v2 event of `request`; `authorizer` is what a passed authorizer hands over.
fn to_lambda_request(
    parts: http::request::Parts,
    body: Vec<u8>,
    authorizer: Option<Value>,
) -> Result<Request, ApiRefusal> {
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
        Err(_) => (BASE64.encode(&body), true),
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
async fn read_body(body: AxumBody, screen: &Screen) -> Result<Vec<u8>, ApiRefusal> {
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
                return Err(ApiRefusal::payload_too_large());
            }
        }
    }
    screen.body_read();
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

/// Request heads checked before hyper reads them.
///
/// hyper answers a request head it cannot parse by itself, before any service sees the
/// request, with an empty body (400, 414 or 431), and has no hook to shape that answer; nor
/// does it know API Gateway's limit on the request line and header values (10,240 bytes). So
/// each connection reads a request's head off the socket first and parses it with `httparse`,
/// the parser hyper itself uses, plus the framing rules hyper adds (`Content-Length`,
/// `Transfer-Encoding`). A head that passes reaches hyper unchanged. A refused one is replaced
/// by a request of the stand-in's own, which the service answers with the refusal, in the API's
/// shape and with `connection: close`, so hyper writes the answer and closes as after its own
/// parse errors. Bodies are not looked at: once the service has read a request's body to its
/// end, the next bytes are a head again.
mod head_screen {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{ready, Context, Poll};
    use std::time::Duration;

    use axum::extract::connect_info::Connected;
    use axum::serve::IncomingStream;
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
    /// below hyper's buffer (about 400 KiB).
    const MAX_HEAD_BYTES: usize = 64 * 1024;
    /// After a refusal, what the client still sends is read and dropped for this long (or up
    /// to this much): closing a socket with unread data resets it, and the client would see
    /// the reset instead of the answer.
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_LINGER_BYTES: usize = 1024 * 1024;
    const READ_CHUNK: usize = 16 * 1024;
    /// What hyper reads in place of a refused head.
    const REFUSED_HEAD: &[u8] = b"GET /refused HTTP/1.1\r\nconnection: close\r\n\r\n";

    /// What a connection's screen and the service answering its requests share.
    #[derive(Debug, Default)]
    struct Shared {
        /// Why the head hyper was handed [`REFUSED_HEAD`] for was refused.
        refusal: Mutex<Option<ApiRefusal>>,
        /// Set when the service has read a request's body to its end.
        body_read: AtomicBool,
    }

    /// The service's side of its connection's screen (as axum's `ConnectInfo`).
    #[derive(Debug, Clone)]
    pub(super) struct Screen(Arc<Shared>);

    impl Screen {
        /// The refusal this request stands for, if it is the stand-in's own.
        pub(super) fn take_refusal(&self) -> Option<ApiRefusal> {
            self.0.refusal.lock().ok()?.take()
        }

        /// The request's body was read to its end: what the client sends next is a head.
        pub(super) fn body_read(&self) {
            self.0.body_read.store(true, Ordering::SeqCst);
        }
    }

    impl Connected<IncomingStream<'_, ScreenedListener>> for Screen {
        fn connect_info(stream: IncomingStream<'_, ScreenedListener>) -> Self {
            Screen(stream.io().shared.clone())
        }
    }

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

    #[derive(Debug, PartialEq, Eq)]
    enum Phase {
        /// Collecting a head.
        Head,
        /// A head passed: its body goes to hyper as it comes.
        Body,
        /// A head was refused: what the client sends is dropped.
        Refused,
    }

    /// A connection whose request heads are checked before hyper reads them.
    pub(in crate::api_gateway) struct ScreenedStream {
        inner: TcpStream,
        shared: Arc<Shared>,
        phase: Phase,
        /// The head being collected.
        head: Vec<u8>,
        /// Checked bytes hyper has yet to read, from `ready_from`.
        ready: Vec<u8>,
        ready_from: usize,
        scratch: Vec<u8>,
        eof: bool,
        /// After a refusal, until when and how much more is read and dropped on closing.
        linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    }

    impl ScreenedStream {
        fn new(inner: TcpStream) -> Self {
            ScreenedStream {
                inner,
                shared: Arc::default(),
                phase: Phase::Head,
                head: Vec::new(),
                ready: Vec::new(),
                ready_from: 0,
                scratch: vec![0; READ_CHUNK],
                eof: false,
                linger: None,
            }
        }

        /// Judges the head collected so far: more is needed, it passes, or it is refused.
        fn judge_head(&mut self) {
            match inspect_head(&self.head) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    // The body's first bytes, if they came along, go to hyper with the head.
                    self.ready = std::mem::take(&mut self.head);
                    self.shared.body_read.store(false, Ordering::SeqCst);
                    self.phase = Phase::Body;
                }
                Err(refusal) => {
                    tracing::debug!(
                        status = refusal.status,
                        code = refusal.code,
                        "request head refused"
                    );
                    if let Ok(mut slot) = self.shared.refusal.lock() {
                        *slot = Some(refusal);
                    }
                    self.head.clear();
                    self.ready = REFUSED_HEAD.to_vec();
                    self.phase = Phase::Refused;
                }
            }
        }

        /// Reads and drops what the client sends; false once it stopped (or the linger is over).
        fn poll_drop_input(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
            loop {
                if let Some((deadline, drained)) = &mut self.linger {
                    if deadline.as_mut().poll(cx).is_ready() || *drained > MAX_LINGER_BYTES {
                        return Poll::Ready(false);
                    }
                }
                let mut buf = ReadBuf::new(&mut self.scratch);
                match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                    Ok(()) if !buf.filled().is_empty() => {
                        if let Some((_, drained)) = &mut self.linger {
                            *drained += buf.filled().len();
                        }
                    }
                    _ => return Poll::Ready(false),
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
                match this.phase {
                    // Never an end of stream: hyper, seeing one, would close before answering.
                    Phase::Refused => {
                        let _ = ready!(this.poll_drop_input(cx));
                        return Poll::Pending;
                    }
                    Phase::Body if this.shared.body_read.swap(false, Ordering::SeqCst) => {
                        this.phase = Phase::Head;
                    }
                    Phase::Body => return Pin::new(&mut this.inner).poll_read(cx, buf),
                    Phase::Head if this.eof => {
                        // A head cut short by the client goes to hyper as it is; hyper closes.
                        this.ready = std::mem::take(&mut this.head);
                        if this.ready.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Phase::Head => {
                        let mut read = ReadBuf::new(&mut this.scratch);
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                        let n = read.filled().len();
                        if n == 0 {
                            this.eof = true;
                        } else {
                            this.head.extend_from_slice(&this.scratch[..n]);
                            this.judge_head();
                        }
                    }
                }
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

        /// After a refusal, lingers once the writing side is closed (see [`LINGER`]).
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.linger.is_none() {
                ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                if this.phase != Phase::Refused {
                    return Poll::Ready(Ok(()));
                }
                this.linger = Some((Box::pin(tokio::time::sleep(LINGER)), 0));
            }
            let _ = ready!(this.poll_drop_input(cx));
            Poll::Ready(Ok(()))
        }
    }

    /// `tchar` of RFC 9110: what methods and header names are made of.
    fn is_token(byte: u8) -> bool {
        byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
    }

    /// What hyper takes in a header value: tab, space, visible ASCII and obs-text.
    fn is_value_byte(byte: u8) -> bool {
        byte == b'\t' || (0x20..=0x7e).contains(&byte) || byte >= 0x80
    }

    fn trim_whitespace(bytes: &[u8]) -> &[u8] {
        let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t'));
        let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
        match (start, end) {
            (Some(start), Some(end)) => &bytes[start..=end],
            _ => &[],
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).chars().take(64).collect()
    }

    fn invalid(message: impl Into<String>, details: serde_json::Value) -> ApiRefusal {
        ApiRefusal::new(400, "invalid_request", message).with_details(details)
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

    /// Judges a head, whole or not yet: `Ok(None)` while more is needed, else the length of
    /// the head hyper will read, or why it is refused.
    pub(super) fn inspect_head(buffer: &[u8]) -> Result<Option<usize>, ApiRefusal> {
        // Empty lines before the request line are skipped, as hyper skips them.
        let start = buffer
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(buffer.len());
        let head = &buffer[start..];
        let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
        if request_line.len() > MAX_REQUEST_LINE_AND_HEADERS {
            return Err(ApiRefusal::new(
                414,
                "uri_too_long",
                format!(
                    "the request line (method, URL and version) is longer than API Gateway \
                     takes: {MAX_REQUEST_LINE_AND_HEADERS} bytes of request line and header values"
                ),
            )
            .with_details(json!({ "limit_bytes": MAX_REQUEST_LINE_AND_HEADERS })));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buffer) {
            Ok(httparse::Status::Partial) if head.len() > MAX_HEAD_BYTES => Err(too_many_bytes()),
            Ok(httparse::Status::Partial) => Ok(None),
            Ok(httparse::Status::Complete(length)) => {
                check_request(&request, request_line).map(|()| Some(length))
            }
            Err(httparse::Error::TooManyHeaders) => Err(headers_too_large(
                format!("the request has more than {MAX_HEADERS} headers"),
                json!({ "limit_headers": MAX_HEADERS }),
            )),
            Err(error) => Err(explain(error, head, request_line)),
        }
    }

    /// What hyper checks of a head `httparse` took, and API Gateway's limit on its size.
    fn check_request(request: &httparse::Request, request_line: &[u8]) -> Result<(), ApiRefusal> {
        let values: usize = request.headers.iter().map(|h| h.value.len()).sum();
        if request_line.len() + values > MAX_REQUEST_LINE_AND_HEADERS {
            return Err(too_many_bytes());
        }
        if http::Method::from_bytes(request.method.unwrap_or_default().as_bytes()).is_err() {
            return Err(bad_part("method"));
        }
        if http::Uri::try_from(request.path.unwrap_or_default()).is_err() {
            return Err(bad_part("target"));
        }
        // hyper's framing rules (RFC 9112, 6.3): `Transfer-Encoding` is HTTP/1.1's and must end
        // with `chunked`, and then `Content-Length`s after it are ignored; those before it must
        // be numbers that agree.
        let http_11 = request.version == Some(1);
        let mut length: Option<u64> = None;
        let mut chunked = None;
        for header in request.headers.iter() {
            let name = header.name.to_ascii_lowercase();
            if name == "transfer-encoding" {
                if !http_11 {
                    return Err(invalid(
                        "an HTTP/1.0 request cannot have Transfer-Encoding",
                        json!({ "header": name }),
                    ));
                }
                chunked = Some(
                    header.value.is_ascii()
                        && header
                            .value
                            .rsplit(|&b| b == b',')
                            .next()
                            .is_some_and(|last| {
                                trim_whitespace(last).eq_ignore_ascii_case(b"chunked")
                            }),
                );
            } else if name == "content-length" && chunked.is_none() {
                let parsed = (!header.value.is_empty()
                    && header.value.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(header.value).ok()?.parse::<u64>().ok())
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
                    (new, _) => length = new,
                }
            }
        }
        if chunked == Some(false) {
            return Err(invalid(
                "Transfer-Encoding must end with `chunked`",
                json!({ "header": "transfer-encoding" }),
            ));
        }
        Ok(())
    }

    fn bad_part(part: &str) -> ApiRefusal {
        let message = match part {
            "method" => "the request line does not start with a method",
            "target" => "the request target is not a valid URI",
            _ => "the request line does not end with an HTTP version",
        };
        invalid(message, json!({ "part": part }))
    }

    /// Names what `httparse` refused: the part of the request line, or the header.
    fn explain(error: httparse::Error, head: &[u8], request_line: &[u8]) -> ApiRefusal {
        let mut parts = request_line.splitn(3, |&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let version = parts.nth(1).unwrap_or_default();
        if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
            return bad_part("method");
        }
        match error {
            httparse::Error::Version => match version {
                [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                    if major.is_ascii_digit() && minor.is_ascii_digit() =>
                {
                    ApiRefusal::new(
                        505,
                        "http_version_not_supported",
                        format!("{} is not supported: send HTTP/1.1", text(version)),
                    )
                }
                _ => bad_part("version"),
            },
            httparse::Error::HeaderName | httparse::Error::HeaderValue => {
                bad_header(head).unwrap_or_else(|| invalid("a header line is malformed", json!({})))
            }
            httparse::Error::NewLine => bad_header(head).unwrap_or_else(|| bad_part("version")),
            _ => bad_part("target"),
        }
    }

    /// The first header line that is not `name: value` with a value hyper takes.
    fn bad_header(head: &[u8]) -> Option<ApiRefusal> {
        let lines = head
            .split(|&b| b == b'\n')
            .skip(1)
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .take_while(|line| !line.is_empty());
        for (index, line) in lines.enumerate() {
            let colon = line.iter().position(|&b| b == b':');
            let name = &line[..colon.unwrap_or(line.len())];
            if colon.is_none() || name.is_empty() || !name.iter().all(|&b| is_token(b)) {
                return Some(invalid(
                    format!("header line {} is not `name: value`", index + 1),
                    json!({ "header": text(name) }),
                ));
            }
            let value = trim_whitespace(&line[name.len() + 1..]);
            if let Some(byte) = value.iter().find(|&&b| !is_value_byte(b)) {
                let name = text(name).to_ascii_lowercase();
                return Some(invalid(
                    format!("the value of header `{name}` has a byte that is not allowed (0x{byte:02x})"),
                    json!({ "header": name }),
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Ok(length) => panic!("{:?} was taken: {length:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn heads_hyper_takes_pass_whole_or_wait_for_more() {
        use head_screen::inspect_head;
        let taken = |head: &[u8]| inspect_head(head).unwrap();
        let head = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            taken(head),
            Some(head.len()),
            "empty lines before it are skipped"
        );
        assert_eq!(taken(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(
            taken(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
            Some(39)
        );
        for head in [
            &b"POST /x HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
            // A Content-Length after chunked is ignored, as hyper ignores it.
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            // Values beyond ASCII (obs-text) and tabs are taken, as hyper takes them.
            b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\t!\r\n\r\n",
        ] {
            assert!(taken(head).is_some(), "{:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(taken(b"GET /a"), None);
        assert_eq!(taken(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
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
        assert_eq!(refusal(b"\x16\x03\x01").2, json!({ "part": "method" }));
        assert_eq!(refusal("G".repeat(limit + 1).as_bytes()).0, 414);
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(70_000));
        assert_eq!(refusal(endless.as_bytes()).0, 431);
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
