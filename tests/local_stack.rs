//! The local stand-in for API Gateway refuses what API Gateway or HTTP/1.1 would not take in
//! the API's error shape, `{"error":{"code","message","details"}}` with
//! `content-type: application/json`, as the handler answers its own errors: a body over the
//! payload limit, a request line over API Gateway's limit, a malformed request head.
//!
//! Heads hyper would refuse by itself cannot be sent through reqwest (it will not put a NUL
//! in a header), so those requests are written as raw bytes on a TCP connection.

use std::time::Duration;

use baton_local::stack::LocalStack;
use baton_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// API Gateway's payload limit, and its limit on the request line and header values.
const PAYLOAD_LIMIT: u64 = 10 * 1024 * 1024;
const HEAD_LIMIT: u64 = 10_240;

/// An answer as it came off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answered a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Asserts the documented error shape and returns its details.
fn assert_refused(answer: &Raw, status: u16, code: &str) -> Value {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{answer:?}"
    );
    let body = answer.json();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body:#}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
    assert!(error["details"].is_object(), "{body:#}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error`: {body:#}"
    );
    error["details"].clone()
}

fn address(stack: &LocalStack) -> String {
    stack.api_url.trim_start_matches("http://").to_string()
}

async fn connect(stack: &LocalStack) -> TcpStream {
    TcpStream::connect(address(stack))
        .await
        .expect("the API accepts connections")
}

/// Reads one answer off `stream`: its head, then as much body as `content-length` says.
async fn read_answer(stream: &mut TcpStream) -> Raw {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .expect("the connection reads");
        assert!(
            n > 0,
            "the connection closed before an answer: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the body within 10 s")
            .expect("the connection reads");
        assert!(n > 0, "the connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Raw {
        status,
        headers,
        body,
    }
}

/// Sends `request` as it is on a new connection and reads the answer.
async fn send_raw(stack: &LocalStack, request: &[u8]) -> Raw {
    let mut stream = connect(stack).await;
    stream
        .write_all(request)
        .await
        .expect("the request is sent");
    read_answer(&mut stream).await
}

/// After a refused head the stand-in closes the connection, as hyper does after a parse error.
async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest))
        .await
        .expect("the connection closes within 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing follows a refusal");
}

async fn send(request: reqwest::RequestBuilder) -> Raw {
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let body = response.bytes().await.expect("the body").to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_payload_limit_gets_413_in_the_error_shape() {
    let stack = api_only_stack("bigbody").await;
    let client = baton_local::tenant_client("default").build().unwrap();
    let body = vec![b'x'; 11 * 1024 * 1024];
    let answer = send(
        client
            .post(format!("{}/v1/workflows", stack.api_url))
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    let details = assert_refused(&answer, 413, "payload_too_large");
    assert_eq!(details["limit_bytes"], PAYLOAD_LIMIT);

    // Chunked, with no length announced, the same.
    let mut stream = connect(&stack).await;
    stream
        .write_all(
            b"POST /v1/workflows HTTP/1.1\r\nHost: baton\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = [b"100000\r\n".as_slice(), &[b'x'; 0x10_0000], b"\r\n"].concat();
    for _ in 0..11 {
        stream.write_all(&chunk).await.expect("a chunk is sent");
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut stream).await;
    let details = assert_refused(&answer, 413, "payload_too_large");
    assert_eq!(details["limit_bytes"], PAYLOAD_LIMIT);
    assert_eq!(state_items(&stack).await, 0, "nothing is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_line_over_api_gateways_limit_gets_414_in_the_error_shape() {
    let stack = api_only_stack("longurl").await;
    let client = baton_local::tenant_client("default").build().unwrap();
    let long = "a".repeat(20_000);
    for url in [
        format!("{}/v1/workflows/{long}", stack.api_url),
        format!("{}/v1/agents?name={long}", stack.api_url),
    ] {
        let answer = send(client.get(&url)).await;
        let details = assert_refused(&answer, 414, "uri_too_long");
        assert_eq!(details["limit_bytes"], HEAD_LIMIT);
    }
    // Longer than hyper itself takes (64 KiB; reqwest will not send it), the same answer, not
    // hyper's empty 414.
    let longest = format!(
        "GET /{} HTTP/1.1\r\nHost: baton\r\n\r\n",
        "a".repeat(70_000)
    );
    let answer = send_raw(&stack, longest.as_bytes()).await;
    assert_refused(&answer, 414, "uri_too_long");

    // Just under the limit, the request reaches the handler.
    let under = "a".repeat(10_000);
    let answer = send(client.get(format!("{}/v1/agents/{under}", stack.api_url))).await;
    assert_ne!(answer.status, 414, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{answer:?}"
    );

    // Header values count towards the same limit.
    let answer = send(
        client
            .get(format!("{}/health", stack.api_url))
            .header("x-padding", "p".repeat(11_000)),
    )
    .await;
    let details = assert_refused(&answer, 431, "headers_too_large");
    assert_eq!(details["limit_bytes"], HEAD_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_the_tenant_header_gets_400_naming_the_header() {
    let stack = api_only_stack("nulheader").await;
    let request =
        b"GET /v1/agents HTTP/1.1\r\nHost: baton\r\nX-Tenant-Id: ac\x00me\r\nAccept: */*\r\n\r\n";
    let mut stream = connect(&stack).await;
    stream
        .write_all(request)
        .await
        .expect("the request is sent");
    let answer = read_answer(&mut stream).await;
    let details = assert_refused(&answer, 400, "invalid_request");
    assert_eq!(details["header"], "x-tenant-id");
    assert!(answer.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("x-tenant-id") && m.contains("0x00")));
    assert_eq!(answer.header("connection"), Some("close"));
    assert_closed(&mut stream).await;

    // Any other control byte, in any header, the same.
    let answer = send_raw(
        &stack,
        b"GET /v1/agents HTTP/1.1\r\nHost: baton\r\nX-Trace: a\x07b\r\n\r\n",
    )
    .await;
    let details = assert_refused(&answer, 400, "invalid_request");
    assert_eq!(details["header"], "x-trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_head_hyper_would_refuse_gets_the_error_shape() {
    let stack = api_only_stack("badheads").await;
    let many_headers: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a method that is not a token",
            b"G@T /health HTTP/1.1\r\nHost: baton\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a target that is not a URI",
            b"GET /he\x01lth HTTP/1.1\r\nHost: baton\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "HTTP/2.0 on an HTTP/1 connection",
            b"GET /health HTTP/2.0\r\nHost: baton\r\n\r\n".to_vec(),
            505,
            "http_version_not_supported",
        ),
        (
            "not a version",
            b"GET /health SPDY\r\nHost: baton\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a header line without a colon",
            b"GET /health HTTP/1.1\r\nHost baton\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a space before the colon",
            b"GET /health HTTP/1.1\r\nHost : baton\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a Content-Length that is not a number",
            b"POST /v1/workflows HTTP/1.1\r\nHost: baton\r\nContent-Length: ten\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "Content-Lengths that disagree",
            b"POST /v1/workflows HTTP/1.1\r\nHost: baton\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a Transfer-Encoding that does not end with chunked",
            b"POST /v1/workflows HTTP/1.1\r\nHost: baton\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "more than 100 headers",
            format!("GET /health HTTP/1.1\r\nHost: baton\r\n{many_headers}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    for (what, request, status, code) in &cases {
        eprintln!("{what}");
        let answer = send_raw(&stack, request).await;
        let details = assert_refused(&answer, *status, code);
        eprintln!("  {} {details}", answer.json()["error"]["message"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_requests_with_bodies_of_either_framing() {
    let stack = api_only_stack("keepalive").await;
    let mut stream = connect(&stack).await;
    // A body with a length, whose bytes look like a malformed head: it is a body, not a head.
    let body = b"GET /x HTTP/1.1\r\nBad\x00: y\r\n\r\n";
    let request = [
        format!(
            "POST /v1/workflows HTTP/1.1\r\nHost: baton\r\nX-Tenant-Id: default\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        body,
    ]
    .concat();
    stream.write_all(&request).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_refused(&answer, 400, "invalid_json");

    // A chunked body, with an extension and a trailer.
    let chunked = b"POST /v1/workflows HTTP/1.1\r\nHost: baton\r\nX-Tenant-Id: default\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
5;note=x\r\n{\"nam\r\n3\r\ne\":\r\n0\r\nX-Trailer: t\r\n\r\n";
    stream.write_all(chunked).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_refused(&answer, 400, "invalid_json");

    // The connection is still good, for a request in two pieces too.
    stream
        .write_all(b"GET /hea")
        .await
        .expect("the first piece");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"lth HTTP/1.1\r\nHost: baton\r\n\r\n")
        .await
        .expect("the second piece");
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["status"], "ok");

    // A malformed head after all that is still caught.
    stream
        .write_all(b"GET /v1/agents HTTP/1.1\r\nHost: baton\r\nX-Tenant-Id: a\x00\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    let details = assert_refused(&answer, 400, "invalid_request");
    assert_eq!(details["header"], "x-tenant-id");
    assert_closed(&mut stream).await;
}

/// A table kept from an older template (no `workflows` and `running` indexes) gets the
/// indexes a restart's template added, with what it already holds kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adds_the_index_a_newer_template_added_to_a_kept_table() {
    use baton_local::provision::provision;
    use baton_local::template::Template;
    let config = baton_local::emulator::sdk_config(emulator_endpoint());
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let template =
        Template::load(&baton_local::project_root().join("template.yaml")).expect("template");
    let mut older = template.clone();
    let state = older.tables.get_mut("StateTable").expect("state table");
    state
        .global_secondary_indexes
        .retain(|i| i.index_name != "workflows" && i.index_name != "running");
    state
        .attribute_definitions
        .retain(|a| !a.attribute_name.starts_with("list_") && a.attribute_name != "run_pk");
    let prefix = "index-upgrade";
    let s3 = baton_local::provision::s3_client(&config);
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let clients = baton_local::provision::ProvisionClients {
        dynamodb: &dynamodb,
        sqs: &sqs,
        s3: &s3,
        secrets: &secrets,
    };
    let first = provision(&older, prefix, clients)
        .await
        .expect("older stack");
    let table = first.tables["StateTable"].clone();
    let indexes = |described: aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput| {
        let mut names: Vec<String> = described
            .table()
            .map(|t| {
                t.global_secondary_indexes()
                    .iter()
                    .filter_map(|i| i.index_name().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let describe = || dynamodb.describe_table().table_name(&table).send();
    assert_eq!(
        indexes(describe().await.expect("table")),
        ["leases", "sweeps"]
    );

    provision(&template, prefix, clients)
        .await
        .expect("restart");
    assert_eq!(
        indexes(describe().await.expect("table")),
        ["leases", "running", "sweeps", "workflows"]
    );
    // A second restart finds nothing to add.
    provision(&template, prefix, clients).await.expect("again");
}
