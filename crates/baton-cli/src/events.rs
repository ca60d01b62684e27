//! `submit --follow`: a workflow's events as they happen, read from the streaming endpoint as
//! server-sent events. A dropped connection is opened again with `Last-Event-ID`, so each
//! event shows once; a deployment without the endpoint falls back to the progress line.

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use baton_types::stream::SseDecoder;
use serde_json::{json, Value};

use crate::api::ApiClient;

type Outcome<T = ()> = Result<T, Box<dyn Error>>;

/// How long a lost connection waits before it is opened again.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Prints the workflow's events (one line each, or one JSON document each with `json`)
/// until its `end`, or until `timeout`.
pub async fn follow(
    api: &ApiClient,
    id: &str,
    timeout: Option<Duration>,
    json: bool,
    out: &mut dyn Write,
) -> Outcome {
    let path = format!("/v1/workflows/{id}/events");
    let link = match api
        .post(
            "/v1/stream-tokens",
            &[],
            Some(json!({ "path": path }).to_string()),
        )
        .await
    {
        Ok(link) => link,
        Err(error) => {
            eprintln!("(no event stream: {error}; following by polling)");
            return Ok(());
        }
    };
    let url = link["url"].as_str().ok_or("no url in the stream link")?;
    // The link carries its own token: no API credentials go to the streaming endpoint.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut last_seq: Option<u64> = None;
    loop {
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            return Ok(());
        }
        let mut request = http.get(url);
        if let Some(seq) = last_seq {
            request = request.header("last-event-id", seq.to_string());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        match response.status().as_u16() {
            // Read to its end already.
            204 => return Ok(()),
            200 => {}
            status if status >= 500 => {
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(format!("the stream refused (HTTP {status}): {body}").into());
            }
        }
        let mut decoder = SseDecoder::default();
        while let Ok(Some(bytes)) = response.chunk().await {
            for event in decoder.feed(&bytes)? {
                let Ok(event) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                last_seq = event["seq"].as_u64().or(last_seq);
                if json {
                    writeln!(out, "{event}")?;
                } else {
                    writeln!(out, "{}", line(&event))?;
                }
                out.flush()?;
                if event["type"] == "end" {
                    return Ok(());
                }
            }
        }
        // The connection closed before the end: open it again from the last event.
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// One event as a person reads it.
pub fn line(event: &Value) -> String {
    let text = |field: &str| event[field].as_str().unwrap_or("");
    let task = text("task");
    match text("type") {
        "ready" => format!("  ready    {task}"),
        "started" => format!(
            "  started  {task} (attempt {}, {})",
            event["attempt"],
            event["agent"].as_str().unwrap_or("no agent")
        ),
        "retried" => format!(
            "  retried  {task} after attempt {}: {}",
            event["attempt"],
            text("error")
        ),
        "ended" => {
            let detail = event["output_preview"]
                .as_str()
                .or(event["error"].as_str())
                .unwrap_or("");
            format!("  ended    {task} {}  {detail}", text("status"))
        }
        "end" => format!("workflow {}", text("status")),
        other => format!("  {other}"),
    }
}
