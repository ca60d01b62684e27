//! A task's stream: what its agents produce while they run, as a numbered log a client reads
//! from any point. Pure: execute-agent feeds the decoders and the batcher and writes the
//! batches; the API and the streaming endpoint read them.
//!
//! - Events are numbered from 1 per task, across its attempts, in the order they were
//!   written: a client that has read up to `n` asks for what follows `n`, and gets each event
//!   once, in order, however often it reconnects.
//! - An attempt's events start with `start` (its agent); its text comes as `chunk`s; an
//!   attempt that stops without its answer (a retry, a fallback, a cancel, a lost handler)
//!   gets `abandoned` before the next one's `start`; `end` closes the task's stream.
//! - Chunks are written in batches ([`Batcher`]): at most every [`FLUSH_MS`] or
//!   [`FLUSH_BYTES`] of text, whichever comes first, so a long answer costs a bounded number
//!   of writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest a chunk waits for its batch to be written.
pub const FLUSH_MS: i64 = 100;
/// The text that makes a batch written at once.
pub const FLUSH_BYTES: usize = 4 * 1024;
/// The most events one read answers.
pub const MAX_EVENTS_PER_READ: usize = 500;
/// The longest line a decoder keeps while it waits for the line's end: a stream whose lines
/// are longer is not one Baton reads.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One event of a task's stream. (The API document describes it flat, as it is written.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// Its number in the task's stream, from 1.
    pub seq: u64,
    /// When it was written (epoch ms).
    pub at_ms: i64,
    /// The attempt it belongs to.
    pub attempt: u32,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// An attempt's call began answering.
    Start { agent: String },
    /// Text the agent produced.
    Chunk { text: String },
    /// The attempt stopped before its answer; what it streamed is not part of the output.
    Abandoned { reason: String },
    /// The task (or, in a workflow's stream, the workflow) is final: no event follows.
    End {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_preview: Option<String>,
    },
    /// A workflow's task can run: its dependencies are done.
    Ready {
        task: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        drive: u32,
    },
    /// A workflow's task's attempt began, with its agent when one took it.
    Started {
        task: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        drive: u32,
    },
    /// A workflow's task's attempt failed, and another follows.
    Retried {
        task: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        drive: u32,
    },
    /// A workflow's task is final.
    Ended {
        task: String,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_preview: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        drive: u32,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl EventKind {
    /// The name a server-sent event carries as its `event:`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Start { .. } => "start",
            EventKind::Chunk { .. } => "chunk",
            EventKind::Abandoned { .. } => "abandoned",
            EventKind::End { .. } => "end",
            EventKind::Ready { .. } => "ready",
            EventKind::Started { .. } => "started",
            EventKind::Retried { .. } => "retried",
            EventKind::Ended { .. } => "ended",
        }
    }
}

/// The event as a server-sent event: `id` (its number, or a cursor over several streams) so
/// that a client's `Last-Event-ID` resumes right after it, its type as `event`, and itself as
/// one line of `data`.
pub fn sse_frame(event: &StreamEvent, id: &str) -> String {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    format!("id: {id}\nevent: {}\ndata: {data}\n\n", event.kind.name())
}

/// Where a client resumes: its `Last-Event-ID`, else its `after`, else the start; each a
/// number per stream read (`7`, or `3.7` for a workflow's events with one task's). None
/// when one is given that is not `streams` numbers.
pub fn resume_after(
    last_event_id: Option<&str>,
    after: Option<&str>,
    streams: usize,
) -> Option<Vec<u64>> {
    match last_event_id.or(after).map(str::trim) {
        None | Some("") => Some(vec![0; streams]),
        Some(cursor) => {
            let numbers: Vec<u64> = cursor
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            (numbers.len() == streams).then_some(numbers)
        }
    }
}

/// The events that open attempt `attempt`, by `agent`, after the task's last event: an
/// `abandoned` for an attempt left open (an earlier one that failed mid-stream, or this one,
/// whose handler was lost and which is called again), then `start`; numbered on from `last`.
pub fn opening(
    last: Option<&StreamEvent>,
    attempt: u32,
    agent: &str,
    now_ms: i64,
) -> Vec<StreamEvent> {
    let mut seq = last.map_or(0, |e| e.seq);
    let mut next = |kind: EventKind, attempt: u32| {
        seq += 1;
        StreamEvent {
            seq,
            at_ms: now_ms,
            attempt,
            kind,
        }
    };
    let left_open = last.filter(|e| !matches!(e.kind, EventKind::Abandoned { .. }));
    let mut events = Vec::with_capacity(2);
    if let Some(open) = left_open {
        let reason = if open.attempt == attempt {
            format!("attempt {attempt}'s handler was lost; it is called again")
        } else {
            format!(
                "attempt {} ended without its answer; attempt {attempt} follows",
                open.attempt
            )
        };
        events.push(next(EventKind::Abandoned { reason }, open.attempt));
    }
    events.push(next(
        EventKind::Start {
            agent: agent.to_string(),
        },
        attempt,
    ));
    events
}

/// Text collected for the next batch, and when its first part came.
#[derive(Debug, Default)]
pub struct Batcher {
    text: String,
    since_ms: Option<i64>,
}

impl Batcher {
    /// Adds text that arrived at `now_ms`; the text to write now, if the batch is due.
    pub fn push(&mut self, text: &str, now_ms: i64) -> Option<String> {
        if text.is_empty() {
            return self.due(now_ms);
        }
        self.text.push_str(text);
        self.since_ms.get_or_insert(now_ms);
        self.due(now_ms)
    }

    /// The text to write now, if the batch is due at `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Option<String> {
        let waited = self
            .since_ms
            .is_some_and(|since| now_ms - since >= FLUSH_MS);
        (waited || self.text.len() >= FLUSH_BYTES).then(|| self.take())?
    }

    /// When the batch must be written if nothing else comes (None: it is empty).
    pub fn deadline_ms(&self) -> Option<i64> {
        self.since_ms.map(|since| since + FLUSH_MS)
    }

    /// Whatever is collected, to write at the stream's end.
    pub fn take(&mut self) -> Option<String> {
        self.since_ms = None;
        (!self.text.is_empty()).then(|| std::mem::take(&mut self.text))
    }
}

/// Splits a byte stream into lines (`\n` or `\r\n`), keeping a partial line until its end.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The complete lines in `bytes`, after what came before; Err once a line passes
    /// [`MAX_LINE_BYTES`].
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                if self.partial.last() == Some(&b'\r') {
                    self.partial.pop();
                }
                lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            } else {
                self.partial.push(byte);
                if self.partial.len() > MAX_LINE_BYTES {
                    return Err(format!("a line longer than {MAX_LINE_BYTES} bytes"));
                }
            }
        }
        Ok(lines)
    }

    /// The last line, if the stream ended without its newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned())
    }
}

/// One server-sent event as a stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Decodes a `text/event-stream` body: `data:` lines joined, an event ending at a blank line,
/// comments (`:`) and other fields left out.
#[derive(Debug, Default)]
pub struct SseDecoder {
    lines: Lines,
    event: Option<String>,
    data: Vec<String>,
}

impl SseDecoder {
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let lines = self.lines.feed(bytes)?;
        Ok(lines.into_iter().filter_map(|l| self.line(&l)).collect())
    }

    /// The event left open when the stream ended, if any.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let last = self.lines.finish().and_then(|l| self.line(&l));
        last.or_else(|| self.line(""))
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event = None;
                return None;
            }
            return Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

/// An http agent's streamed answer, from server-sent events or NDJSON lines: each a JSON
/// object, `{"text": "…"}` adding text, `{"output": {…}}` giving the task's output. Without an
/// `output`, the output is `{"text": all the text}`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AgentStream {
    pub text: String,
    pub output: Option<Value>,
}

impl AgentStream {
    /// Applies one event or line: the text it adds; Err when it is not one of the two.
    pub fn apply(&mut self, data: &str) -> Result<String, String> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(String::new());
        }
        let value: Value = serde_json::from_str(data).map_err(|e| format!("not JSON: {e}"))?;
        if let Some(output) = value.get("output") {
            self.output = Some(output.clone());
            return Ok(String::new());
        }
        match value.get("text").and_then(Value::as_str) {
            Some(text) => {
                self.text.push_str(text);
                Ok(text.to_string())
            }
            None => Err("each part is {\"text\": …} or {\"output\": …}".into()),
        }
    }

    /// The task's output the parts add up to.
    pub fn output(self) -> Value {
        self.output
            .unwrap_or_else(|| serde_json::json!({ "text": self.text }))
    }
}

/// A streamed Chat Completion as its chunks add up: the text, the model, why it finished, and
/// the usage when the server reports it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChatStream {
    pub content: String,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    /// `(prompt_tokens, completion_tokens)`.
    pub usage: Option<(u64, u64)>,
    pub done: bool,
}

impl ChatStream {
    /// Applies one event's data: the text it adds (empty when none); Err when it is not a
    /// completion chunk.
    pub fn apply(&mut self, data: &str) -> Result<String, String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(String::new());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if let Some(error) = chunk.get("error") {
            return Err(format!("the stream reported an error: {error}"));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some((count("prompt_tokens"), count("completion_tokens")));
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let Some(choice) = choice else {
            // Usage-only chunks have no choices.
            return Ok(String::new());
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let text = choice
            .pointer("/delta/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.content.push_str(text);
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_batch_is_due_after_its_wait_or_its_size_and_the_rest_at_the_end() {
        let mut batcher = Batcher::default();
        assert_eq!(batcher.push("He", 1_000), None);
        assert_eq!(batcher.deadline_ms(), Some(1_100));
        assert_eq!(batcher.push("llo", 1_050), None);
        assert_eq!(batcher.push(",", 1_100).as_deref(), Some("Hello,"));
        assert_eq!(batcher.deadline_ms(), None);
        let big = "x".repeat(FLUSH_BYTES);
        assert_eq!(
            batcher.push(&big, 1_101).map(|t| t.len()),
            Some(FLUSH_BYTES)
        );
        assert_eq!(batcher.push(" world", 1_200), None);
        assert_eq!(batcher.due(1_250), None);
        assert_eq!(batcher.due(1_300).as_deref(), Some(" world"));
        assert_eq!(batcher.take(), None);
        batcher.push("end", 1_400);
        assert_eq!(batcher.take().as_deref(), Some("end"));
    }

    #[test]
    fn server_sent_events_are_decoded_across_reads() {
        let mut decoder = SseDecoder::default();
        let first = decoder
            .feed(b": comment\r\nevent: delta\r\ndata: {\"a\"")
            .unwrap();
        assert!(first.is_empty());
        let rest = decoder
            .feed(b":1}\r\n\r\ndata: one\ndata: two\n\ndata: [DONE]")
            .unwrap();
        assert_eq!(
            rest,
            [
                SseEvent {
                    event: Some("delta".into()),
                    data: r#"{"a":1}"#.into()
                },
                SseEvent {
                    event: None,
                    data: "one\ntwo".into()
                },
            ]
        );
        assert_eq!(
            decoder.finish(),
            Some(SseEvent {
                event: None,
                data: "[DONE]".into()
            })
        );
        let mut long = SseDecoder::default();
        assert!(long.feed(&vec![b'x'; MAX_LINE_BYTES + 1]).is_err());
    }

    #[test]
    fn chat_chunks_add_up_to_the_completion() {
        let mut stream = ChatStream::default();
        let chunks = [
            json!({"model": "m1", "choices": [{"delta": {"role": "assistant"}}]}),
            json!({"choices": [{"delta": {"content": "Te"}}]}),
            json!({"choices": [{"delta": {"content": "al."}, "finish_reason": "stop"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
        ];
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| stream.apply(&c.to_string()).unwrap())
            .collect();
        assert_eq!(texts, ["", "Te", "al.", ""]);
        assert_eq!(stream.apply("[DONE]").unwrap(), "");
        assert_eq!(
            stream,
            ChatStream {
                content: "Teal.".into(),
                model: Some("m1".into()),
                finish_reason: Some("stop".into()),
                usage: Some((9, 2)),
                done: true,
            }
        );
        assert!(stream.apply("not json").is_err());
        assert!(stream
            .apply(r#"{"error": {"message": "overloaded"}}"#)
            .is_err());
    }

    #[test]
    fn an_attempt_opens_after_closing_one_left_open() {
        let first = opening(None, 1, "a", 5);
        assert_eq!(
            first,
            [StreamEvent {
                seq: 1,
                at_ms: 5,
                attempt: 1,
                kind: EventKind::Start { agent: "a".into() }
            }]
        );
        let chunk = StreamEvent {
            seq: 2,
            at_ms: 6,
            attempt: 1,
            kind: EventKind::Chunk { text: "x".into() },
        };
        let retry = opening(Some(&chunk), 2, "b", 7);
        assert_eq!(
            retry
                .iter()
                .map(|e| (e.seq, e.attempt, e.kind.name()))
                .collect::<Vec<_>>(),
            [(3, 1, "abandoned"), (4, 2, "start")]
        );
        let again = opening(Some(&chunk), 1, "a", 7);
        assert!(
            matches!(&again[0].kind, EventKind::Abandoned { reason } if reason.contains("lost"))
        );
        let after_abandon = opening(Some(&retry[0]), 2, "b", 8);
        assert_eq!(after_abandon.len(), 1, "already closed");
    }

    #[test]
    fn an_agents_parts_add_up_to_its_text_or_its_output() {
        let mut stream = AgentStream::default();
        assert_eq!(stream.apply(r#"{"text": "Hel"}"#).unwrap(), "Hel");
        assert_eq!(stream.apply(" ").unwrap(), "");
        assert_eq!(stream.apply(r#"{"text": "lo"}"#).unwrap(), "lo");
        assert_eq!(stream.clone().output(), json!({ "text": "Hello" }));
        stream
            .apply(r#"{"output": {"answer": "Hello", "n": 1}}"#)
            .unwrap();
        assert_eq!(stream.output(), json!({ "answer": "Hello", "n": 1 }));
        assert!(AgentStream::default().apply("{}").is_err());
        assert!(AgentStream::default().apply("text").is_err());
    }

    #[test]
    fn an_event_is_framed_for_server_sent_events_and_a_resume_starts_after_its_number() {
        let event = StreamEvent {
            seq: 7,
            at_ms: 1,
            attempt: 1,
            kind: EventKind::Chunk {
                text: "two\nlines".into(),
            },
        };
        let frame = sse_frame(&event, "7");
        assert!(frame.starts_with("id: 7\nevent: chunk\ndata: {"), "{frame}");
        assert!(frame.ends_with("}\n\n"));
        assert_eq!(
            frame.matches('\n').count(),
            4,
            "the data is one line: {frame}"
        );
        let mut decoder = SseDecoder::default();
        let decoded = decoder.feed(frame.as_bytes()).unwrap();
        let back: StreamEvent = serde_json::from_str(&decoded[0].data).unwrap();
        assert_eq!(back, event);
        assert_eq!(resume_after(Some("7"), Some("3"), 1), Some(vec![7]));
        assert_eq!(resume_after(None, Some("3"), 1), Some(vec![3]));
        assert_eq!(resume_after(None, None, 2), Some(vec![0, 0]));
        assert_eq!(resume_after(Some("4.9"), None, 2), Some(vec![4, 9]));
        assert_eq!(resume_after(Some("x"), None, 1), None);
        assert_eq!(resume_after(Some("4"), None, 2), None);
        assert_eq!(resume_after(Some("4.-1"), None, 2), None);
    }

    #[test]
    fn events_are_written_with_their_type_beside_their_number() {
        let event = StreamEvent {
            seq: 3,
            at_ms: 10,
            attempt: 2,
            kind: EventKind::Chunk { text: "hi".into() },
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"seq": 3, "at_ms": 10, "attempt": 2, "type": "chunk", "text": "hi"})
        );
        assert_eq!(event.kind.name(), "chunk");
    }
}
