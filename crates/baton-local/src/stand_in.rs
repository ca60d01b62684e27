//! What the stand-ins share: serving a router on a free loopback port, one AWS API's route
//! with its call log and throttle, and the honest rules the stand-in models answer by. A leaf:
//! the services use it and [`crate::stand_ins`] starts the services, so calls go one way.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A stand-in server on a free loopback port; it stops when its handle is dropped.
#[derive(Debug)]
pub struct Served {
    pub url: String,
    stop: watch::Sender<bool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub async fn serve(app: axum::Router) -> std::io::Result<Served> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(Served { url, stop })
}

/// A stand-in for one AWS API: the route it serves, its log of calls and its throttle.
pub struct StandIn {
    served: Served,
    log: Arc<CallLog>,
}

impl StandIn {
    /// Serves `handler` at `path` (POST) on a free loopback port.
    pub async fn start<H, T>(path: &str, handler: H) -> std::io::Result<StandIn>
    where
        H: axum::handler::Handler<T, Arc<CallLog>>,
        T: 'static,
    {
        let log = Arc::new(CallLog::default());
        let app = axum::Router::new()
            .route(path, axum::routing::post(handler))
            .with_state(log.clone());
        Ok(StandIn {
            served: serve(app).await?,
            log,
        })
    }

    pub fn url(&self) -> &str {
        &self.served.url
    }

    /// Throttles the next `calls` requests.
    pub fn throttle_next(&self, calls: u32) {
        self.log.throttle_next(calls);
    }

    /// Every request so far, as the handler recorded it.
    pub fn calls(&self) -> Vec<Value> {
        self.log.calls()
    }
}

/// Calls to refuse as throttled before answering again, and the calls received.
#[derive(Debug, Default)]
pub struct CallLog {
    throttle: AtomicU32,
    calls: Mutex<Vec<Value>>,
}

impl CallLog {
    /// Records a call; true if it is to be throttled.
    pub fn record(&self, call: Value) -> bool {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        self.throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn throttle_next(&self, calls: u32) {
        self.throttle.store(calls, Ordering::SeqCst);
    }

    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// What a stand-in model does with the user's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRule {
    /// The text's first sentence.
    Brief,
    /// The text's five most frequent words of four letters or more, most frequent first.
    Keywords,
}

impl ModelRule {
    pub fn answer(self, text: &str) -> String {
        match self {
            ModelRule::Brief => first_sentence(text),
            ModelRule::Keywords => keywords(text, 5).join(", "),
        }
    }
}

fn first_sentence(text: &str) -> String {
    let text = text.trim();
    let end = text
        .char_indices()
        .find(|(_, c)| matches!(c, '.' | '!' | '?'))
        .map_or(text.len(), |(i, c)| i + c.len_utf8());
    text[..end].to_string()
}

fn keywords(text: &str, n: usize) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_lowercase)
    {
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, count)) => *count += 1,
            None => counts.push((word, 1)),
        }
    }
    // Most frequent first; ties keep the order of first appearance.
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    counts.into_iter().take(n).map(|(w, _)| w).collect()
}

/// A stand-in's token count: its words.
pub fn tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Cuts an answer to at most `max_tokens` words: `(answer, cut)`.
pub fn limit_words(answer: &str, max_tokens: Option<u64>) -> (String, bool) {
    match max_tokens {
        Some(max) if tokens(answer) > max => (
            answer
                .split_whitespace()
                .take(max as usize)
                .collect::<Vec<_>>()
                .join(" "),
            true,
        ),
        _ => (answer.to_string(), false),
    }
}

/// One event of an AWS event stream, framed as AWS frames it.
pub fn event_frame(event_type: &str, content_type: &str, payload: Vec<u8>) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let string = |value: &str| HeaderValue::String(value.to_string().into());
    let message = Message::new(payload)
        .add_header(Header::new(":event-type", string(event_type)))
        .add_header(Header::new(":message-type", string("event")))
        .add_header(Header::new(":content-type", string(content_type)));
    let mut bytes = Vec::new();
    // Writing a message into a Vec cannot fail.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut bytes);
    bytes
}

/// An AWS event stream answer: `frames`, one every `pace`.
pub fn event_stream(frames: Vec<Vec<u8>>, pace: std::time::Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let paced = futures::stream::iter(frames).then(move |bytes| async move {
        tokio::time::sleep(pace).await;
        Ok::<_, std::convert::Infallible>(bytes)
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/vnd.amazon.eventstream",
        )],
        axum::body::Body::from_stream(paced),
    )
        .into_response()
}

/// Counts a streamed answer dropped before its last part: its client went away (a cancel, a
/// pause, a time-out).
pub(crate) struct CutWatch {
    finished: bool,
    cut: Arc<AtomicUsize>,
}

impl CutWatch {
    pub(crate) fn new(cut: Arc<AtomicUsize>) -> Self {
        CutWatch {
            finished: false,
            cut,
        }
    }

    /// The answer was sent whole.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CutWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.cut.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_answer_from_the_text() {
        assert_eq!(
            ModelRule::Brief.answer("  Rust is fast. It is also safe."),
            "Rust is fast."
        );
        assert_eq!(ModelRule::Brief.answer("no stop"), "no stop");
        assert_eq!(
            ModelRule::Keywords.answer("Queue the queue; drain the queue, then drain it. Done"),
            "queue, drain, then, done"
        );
        assert_eq!(limit_words("a b c d", Some(2)), ("a b".to_string(), true));
        assert_eq!(limit_words("a b", Some(2)), ("a b".to_string(), false));
        assert_eq!(tokens(" one two\nthree "), 3);
    }

    #[test]
    fn throttling_counts_down_then_stops() {
        let log = CallLog::default();
        log.throttle_next(2);
        let throttled: Vec<bool> = (0..3).map(|i| log.record(Value::from(i))).collect();
        assert_eq!(throttled, vec![true, true, false]);
        assert_eq!(log.calls().len(), 3);
    }
}
