//! The stand-in for API Gateway: an HTTP server that turns each request into the same
//! payload-v2 event API Gateway sends, and the handler's response back into HTTP.

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body as AxumBody};
use axum::extract::Request as AxumRequest;
use axum::response::Response as AxumResponse;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// API Gateway's own payload limit.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// Serves `handler` on `listener` until `shutdown` turns true.
pub async fn serve<H, Fut>(listener: TcpListener, handler: H, mut shutdown: watch::Receiver<bool>)
where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    let handler = Arc::new(handler);
    let app = axum::Router::new().fallback(move |request: AxumRequest| {
        let handler = handler.clone();
        async move {
            match to_lambda_request(request).await {
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

async fn to_lambda_request(request: AxumRequest) -> Result<Request, u16> {
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
    let event = json!({
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
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
            "routeKey": "ANY /{proxy+}",
            "stage": "$default",
            "time": baton::clock::rfc3339(now),
            "timeEpoch": now,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    });
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
}
