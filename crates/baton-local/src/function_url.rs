//! The stand-in for a Lambda function URL in `RESPONSE_STREAM` mode: each request becomes the
//! payload-v2 event a URL sends, and the handler's body is passed on as it is produced, so a
//! client reads each event when the function writes it.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body as AxumBody;
use axum::extract::Request as AxumRequest;
use axum::response::Response as AxumResponse;
use bytes::Bytes;
use futures::StreamExt;
use lambda_http::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A function URL's own limit on the request payload (6 MB).
const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// Serves `handler` on `listener` until `shutdown` turns true.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let handler = Arc::new(handler);
    let app = axum::Router::new().fallback(move |request: AxumRequest| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let mut bytes = Vec::new();
            let mut stream = body.into_data_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                if bytes.len() + chunk.len() > MAX_REQUEST_BYTES {
                    return plain(413, "the request is larger than a function URL takes");
                }
                bytes.extend_from_slice(&chunk);
            }
            match crate::api_gateway::function_url_request(parts, bytes) {
                Ok(request) => {
                    let (parts, body) = handler(request).await.into_parts();
                    AxumResponse::from_parts(parts, AxumBody::new(body))
                }
                Err(refusal) => plain(400, &refusal),
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
        tracing::error!(%error, "local function URL stopped");
    }
}

fn plain(status: u16, message: &str) -> AxumResponse {
    let body = serde_json::json!({"error": {"code": "invalid_request", "message": message, "details": {}}});
    let mut response = AxumResponse::new(AxumBody::from(body.to_string()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
