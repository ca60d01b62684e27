//! One HTTP stack for every outbound call: reqwest (HTTP/1.1) on rustls, with ring as rustls'
//! cryptography. The AWS SDK's clients use it too ([`sdk_http_client`]), in place of the SDK's
//! default client (hyper with HTTP/2, rustls on aws-lc): two stacks and aws-lc cost about
//! 1 MB of each Lambda binary, and orchestrate would not fit its 8 MB budget. Ring does the
//! same TLS 1.2/1.3 suites; what it lacks is the post-quantum hybrid key exchange
//! (X25519MLKEM768), so connections use X25519. Roots: [`tls_config`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;

/// Makes ring rustls' process-wide provider, which reqwest's clients use (the functions build
/// reqwest without a provider of its own). Idempotent: a provider already installed stays.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest builder with the process's one TLS configuration ([`tls_config`]).
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    match tls_config() {
        Ok(config) => reqwest::Client::builder().tls_backend_preconfigured(config.clone()),
        // Unreachable with ring (it has every default suite); reqwest's own roots then.
        Err(why) => {
            tracing::warn!(reason = %why, "TLS configuration not built; the system's roots are used");
            reqwest::Client::builder()
        }
    }
}

/// The TLS configuration of every client, built once per process: ring, TLS 1.2 and 1.3, and
/// as roots Mozilla's (webpki-roots, compiled in as parsed trust anchors) plus the PEM bundle
/// `SSL_CERT_FILE` names, if any (agents behind a private CA). Reading and parsing the
/// system's roots instead took about 5 ms of each client's construction, at every cold start.
fn tls_config() -> Result<&'static rustls::ClientConfig, &'static str> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            if let Some(bundle) = std::env::var_os("SSL_CERT_FILE") {
                add_bundle(&mut roots, std::path::Path::new(&bundle));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Ok(rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth())
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Adds the certificates of the PEM bundle at `path` to `roots`; one that cannot be read or
/// parsed is logged and skipped (the compiled-in roots stay).
fn add_bundle(roots: &mut rustls::RootCertStore, path: &std::path::Path) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    match CertificateDer::pem_file_iter(path) {
        Ok(certificates) => {
            let (added, ignored) = roots.add_parsable_certificates(certificates.flatten());
            tracing::info!(bundle = %path.display(), added, ignored, "roots added from SSL_CERT_FILE");
        }
        Err(e) => {
            tracing::warn!(bundle = %path.display(), error = %e, "SSL_CERT_FILE not read; the compiled-in roots are used")
        }
    }
}

/// The HTTP client every SDK configuration carries (DynamoDB, SQS, S3): reqwest, one
/// connection pool per timeout setting the SDK asks for.
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(SdkHttpClient::default())
}

/// A connector's (connect, read) time-outs.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct SdkHttpClient {
    /// By time-outs: every client of one configuration asks for the same.
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        connectors
            .entry(timeouts)
            .or_insert_with(|| SharedHttpConnector::new(ReqwestConnector::new(timeouts)))
            .clone()
    }
}

/// Sends the SDK's requests with reqwest; a client that cannot be built is reported on each
/// request (the SDK's interface gives a connector no other way to fail).
#[derive(Debug, Clone)]
struct ReqwestConnector {
    client: Result<reqwest::Client, Arc<reqwest::Error>>,
}

impl ReqwestConnector {
    fn new((connect, read): Timeouts) -> Self {
        let mut builder = reqwest_builder().no_proxy();
        if let Some(connect) = connect {
            builder = builder.connect_timeout(connect);
        }
        if let Some(read) = read {
            builder = builder.read_timeout(read);
        }
        ReqwestConnector {
            client: builder.build().map_err(Arc::new),
        }
    }
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::user(e.to_string().into()))?;
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // Every body Baton sends is in memory (items, messages, payloads).
            let body = body.bytes().map(<[u8]>::to_vec).ok_or_else(|| {
                ConnectorError::user(
                    "a streaming request body (this client sends bodies held in memory)".into(),
                )
            })?;
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(connector_error)?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await.map_err(connector_error)?;
            let answer = answer
                .body(SdkBody::from(body))
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK retries time-outs and I/O errors: a connection refused, reset or closed before the
/// whole response arrived (a write whose response was lost is sent again, as the SDK's own
/// client does).
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_builder() {
        ConnectorError::user(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() || error.is_decode() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), Some(ErrorKind::TransientError))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that reads each request, then does `answer` with the connection.
    async fn server(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = connection.read(&mut request).await;
                if answer.is_empty() {
                    // Hold it open without answering: the read time-out's case.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        drop(connection);
                    });
                } else {
                    let _ = connection.write_all(answer).await;
                }
            }
        });
        url
    }

    async fn send(url: &str, read_timeout: Duration) -> Result<HttpResponse, ConnectorError> {
        let connector = ReqwestConnector::new((Some(Duration::from_secs(2)), Some(read_timeout)));
        let mut request = HttpRequest::new(SdkBody::from(r#"{"TableName":"t"}"#));
        request.set_uri(url).expect("uri");
        request.set_method("POST").expect("method");
        request
            .headers_mut()
            .insert("x-amz-target", "DynamoDB_20120810.PutItem");
        connector.call(request).await
    }

    #[tokio::test]
    async fn an_answer_comes_back_with_its_status_headers_and_body() {
        let url = server(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await;
        let response = send(&url, Duration::from_secs(2)).await.expect("answered");
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(
            response.headers().get("content-type"),
            Some("application/x-amz-json-1.0")
        );
        assert_eq!(response.body().bytes(), Some(&b"{}"[..]));
    }

    #[tokio::test]
    async fn a_response_lost_with_its_connection_is_an_io_error_which_the_sdk_retries() {
        // The answer stops halfway: the write may have happened, the SDK sends it again.
        let url = server(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\"").await;
        let error = send(&url, Duration::from_secs(2)).await.expect_err("cut");
        assert!(error.is_io(), "{error:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_and_a_silent_server_a_timeout() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", closed.local_addr().expect("address"));
        drop(closed);
        let refused = send(&url, Duration::from_secs(2))
            .await
            .expect_err("refused");
        assert!(refused.is_io(), "{refused:?}");

        let silent = server(b"").await;
        let timed_out = send(&silent, Duration::from_millis(200))
            .await
            .expect_err("no answer");
        assert!(timed_out.is_timeout(), "{timed_out:?}");
    }
}
