//! One conversation turn as stored and answered: what was asked, how it was analysed and
//! planned, and what came back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::conversation::{Analysis, ConversationState, ProgressChange, TurnPlan};
use super::ids::{SessionId, WorkflowId};
use super::recall::HistoryNote;
use super::text::prefix_within;

/// The most async results one turn shows: a turn's start is one transaction of at most 100
/// items (the session, the turn, two workflow records, at most 33 tasks waited for and 32
/// async, and the results it takes). Beyond it, the other results stay pending, oldest first,
/// and the next turns show them.
pub const MAX_SHOWN_PER_TURN: usize = 30;
/// The most of one helper's result, as JSON text, that a turn keeps: in the turn's
/// `async_agent_results` and `sync_agent_results` and in the answering agent's input. A larger
/// result is shown as `{"truncated": true, "bytes", "preview", "url"}`: its first bytes, its
/// whole size, and `GET /v1/workflows/{id}/tasks/{agent}`, which serves it whole until the
/// session ends.
pub const RESULT_PREVIEW_BYTES: usize = 8 * 1024;
/// The most all the async results a turn shows may take together, and as much for its sync
/// results: when many large results meet, they share it (small ones whole, the others cut to
/// equal previews), so a turn's item and its answering task's input stay far below
/// DynamoDB's 400 KB item limit whatever the helpers answer.
pub const RESULTS_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    Running,
    Answered,
    Failed,
}

impl TurnStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Running => "running",
            TurnStatus::Answered => "answered",
            TurnStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for TurnStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "running" => Ok(TurnStatus::Running),
            "answered" => Ok(TurnStatus::Answered),
            "failed" => Ok(TurnStatus::Failed),
            _ => Err(()),
        }
    }
}

/// Where a turn's time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnTiming {
    /// Reading the session, its instances and its async results.
    pub state_load_ms: u64,
    /// The query analysis (the classifier's call included).
    pub analysis_ms: u64,
    /// Writing the turn, its workflows and the session's lock in one transaction.
    pub save_ms: u64,
    /// Each agent's call, by agent (the last attempt's).
    #[serde(default)]
    pub agents: BTreeMap<String, u64>,
    /// The answering agent's call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ms: Option<u64>,
    /// From the message's arrival to the answer being recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// `total_ms` less the time the turn's critical path spent inside agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_ms: Option<u64>,
}

/// A turn as stored under its session.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub session_id: SessionId,
    pub turn: u32,
    pub text: String,
    pub channel: Option<String>,
    pub services: Option<Vec<String>>,
    pub analysis: Analysis,
    pub plan: TurnPlan,
    /// What the agents received of the conversation before this turn, as it stood when the
    /// turn started.
    pub history: Option<HistoryNote>,
    /// The workflow of the agents the turn waits for.
    pub workflow_id: WorkflowId,
    /// The workflow of its async agents, if it has any.
    pub async_workflow_id: Option<WorkflowId>,
    pub status: TurnStatus,
    pub response: Option<String>,
    /// The answering agent's answer (its `state` kept out); past 96 KiB, `{"truncated": true,
    /// "bytes", "preview", "url"}` with the url that serves it whole.
    pub answer: Option<Value>,
    pub sync_agent_results: Map<String, Value>,
    /// Async results of earlier turns, delivered with this one.
    pub async_agent_results: Map<String, Value>,
    /// Why the turn failed: `{agent, kind, message}`.
    pub error: Option<Value>,
    pub checkpoint_progress: Vec<ProgressChange>,
    /// The conversation as this turn left it (its recent turns left out).
    pub state: Option<ConversationState>,
    pub timing: TurnTiming,
    pub created_at_ms: i64,
    pub answered_at_ms: Option<i64>,
}

/// One agent's state in one session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentInstance {
    pub agent: String,
    pub state: Value,
    pub calls: u32,
    pub last_turn: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What an async agent came back with, waiting to be shown with the next turn.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncResult {
    pub turn: u32,
    pub agent: String,
    /// The agent's answer, or `{"error": {kind, message}}`: whole, or a preview of it
    /// ([`RESULT_PREVIEW_BYTES`]), as kept in the session until a turn shows it.
    pub result: Kept,
    pub finished_at_ms: i64,
    /// The async workflow whose task answered (None: kept before it was recorded), where the
    /// whole result stays until the session ends.
    pub workflow_id: Option<WorkflowId>,
}

/// An agent's answer as the turn shows it: its private `state` stays with its instance.
pub fn public_answer(output: &Value) -> Value {
    match output {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "state")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Where a turn's task serves its whole output.
pub fn task_url(workflow_id: &str, agent: &str) -> String {
    format!("/v1/workflows/{workflow_id}/tasks/{agent}")
}

/// A helper's result as a turn keeps it: whole, or the start of its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    Whole(Value),
    Cut(Preview),
}

/// The start of a result too large to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The whole result's size, as JSON text.
    pub bytes: usize,
    /// The start of its JSON text.
    pub preview: String,
    /// Where it is served whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Kept {
    /// `value` kept within `max_bytes` of JSON: whole if it fits, else cut.
    pub fn new(value: Value, max_bytes: usize, url: Option<String>) -> Kept {
        let text = value.to_string();
        if text.len() <= max_bytes {
            return Kept::Whole(value);
        }
        Kept::Cut(Preview {
            bytes: text.len(),
            preview: prefix_within(&text, max_bytes).to_string(),
            url,
        })
    }

    /// The size it takes kept whole: what budgets are shared by.
    fn size(&self) -> usize {
        match self {
            Kept::Whole(value) => value.to_string().len(),
            Kept::Cut(preview) => preview.bytes,
        }
    }

    /// The same within `max_bytes`: cut, or its preview shortened.
    fn within(self, max_bytes: usize, url: Option<String>) -> Kept {
        match self {
            Kept::Whole(value) => Kept::new(value, max_bytes, url),
            Kept::Cut(mut cut) => {
                let len = prefix_within(&cut.preview, max_bytes).len();
                cut.preview.truncate(len);
                Kept::Cut(cut)
            }
        }
    }

    /// As a turn shows it: the result itself, or `{"truncated": true, "bytes", "preview",
    /// "url"}`.
    pub fn to_value(&self) -> Value {
        match self {
            Kept::Whole(value) => value.clone(),
            Kept::Cut(cut) => {
                let mut shown = json!({
                    "truncated": true,
                    "bytes": cut.bytes,
                    "preview": cut.preview,
                });
                if let Some(url) = &cut.url {
                    shown["url"] = json!(url);
                }
                shown
            }
        }
    }
}

/// The most of the answering agent's answer, as JSON text, that its turn keeps; as much again
/// for its `response` text. A larger answer is kept as `{"truncated": true, "bytes",
/// "preview", "url"}` and its response cut to fit, with the answer served whole at the URL:
/// a turn's item (answer, response, results and the conversation's state) stays below
/// DynamoDB's 400 KB whatever the agent answers.
pub const ANSWER_BYTES: usize = 96 * 1024;
/// The most of an agent's `state`, as JSON text, that is kept for its next call. A larger
/// state is not kept (the agent's next call gets the one before), and the turn says so.
pub const AGENT_STATE_BYTES: usize = 64 * 1024;

/// The answering agent's output as its turn keeps it: the answer (without `state`) within
/// [`ANSWER_BYTES`], and its `response` text (a model's `content`), cut to fit when the answer is.
pub fn kept_answer(output: &Value, url: String) -> (Value, Option<String>) {
    let answer = Kept::new(public_answer(output), ANSWER_BYTES, Some(url));
    // An agent's `response`, or a model's text (`content`, as openai and bedrock agents answer).
    let response = output
        .get("response")
        .or_else(|| output.get("content"))
        .and_then(Value::as_str);
    let response = match &answer {
        Kept::Whole(_) => response.map(str::to_string),
        Kept::Cut(_) => response.map(|text| prefix_within(text, ANSWER_BYTES).to_string()),
    };
    (answer.to_value(), response)
}

/// Whether an agent's `state` is small enough to keep.
pub fn state_fits(state: &Value) -> bool {
    state.to_string().len() <= AGENT_STATE_BYTES
}

/// Results bounded together, each with the URL of its whole: each at most
/// [`RESULT_PREVIEW_BYTES`] of JSON, all at most [`RESULTS_BYTES`]. The smallest are kept
/// whole first; what is left of the budget is shared equally by the larger ones, which are cut
/// to it. Returned in the order given.
pub fn within_budget(results: Vec<(Kept, Option<String>)>) -> Vec<Kept> {
    let sizes: Vec<usize> = results.iter().map(|(kept, _)| kept.size()).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut left = RESULTS_BYTES;
    let mut share = vec![0; sizes.len()];
    for (done, &i) in order.iter().enumerate() {
        let fair = (left / (sizes.len() - done)).min(RESULT_PREVIEW_BYTES);
        share[i] = fair;
        left -= sizes[i].min(fair);
    }
    results
        .into_iter()
        .zip(share)
        .map(|((kept, url), share)| kept.within(share, url))
        .collect()
}

/// The async results a turn shows, by agent: `{"turn", "result"}`, or `{"turn",
/// "truncated": true, "bytes", "preview", "url"}` for a result beyond the bounds. The caller
/// takes at most [`MAX_SHOWN_PER_TURN`].
pub fn shown_async_results(shown: &[AsyncResult]) -> Map<String, Value> {
    let bounded = within_budget(
        shown
            .iter()
            .map(|r| {
                let url = r.workflow_id.as_deref().map(|w| task_url(w, &r.agent));
                (r.result.clone(), url)
            })
            .collect(),
    );
    shown
        .iter()
        .zip(bounded)
        .map(|(r, result)| {
            let mut entry = json!({ "turn": r.turn });
            match result {
                Kept::Whole(result) => entry["result"] = result,
                cut => {
                    if let (Value::Object(entry), Value::Object(cut)) = (&mut entry, cut.to_value())
                    {
                        entry.extend(cut);
                    }
                }
            }
            (r.agent.clone(), entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(agent: &str, bytes: usize) -> AsyncResult {
        let value = json!({ "notes": "x".repeat(bytes) });
        AsyncResult {
            turn: 1,
            agent: agent.into(),
            result: Kept::new(value, RESULT_PREVIEW_BYTES, Some(task_url("wf", agent))),
            finished_at_ms: 0,
            workflow_id: Some("wf".parse().unwrap()),
        }
    }

    #[test]
    fn a_small_result_is_shown_whole_and_a_large_one_as_a_bounded_preview() {
        let shown = shown_async_results(&[result("small", 100), result("large", 250 * 1024)]);
        assert_eq!(
            shown["small"]["result"]["notes"].as_str().unwrap().len(),
            100
        );
        let large = &shown["large"];
        assert_eq!(large["turn"], 1);
        assert_eq!(large["truncated"], true);
        assert_eq!(large["bytes"], 250 * 1024 + r#"{"notes":""}"#.len());
        assert_eq!(large["url"], "/v1/workflows/wf/tasks/large");
        assert!(large.get("result").is_none());
        let preview = large["preview"].as_str().unwrap();
        assert!(preview.starts_with(r#"{"notes":"xxx"#));
        assert!(json!(preview).to_string().len() <= RESULT_PREVIEW_BYTES);
    }

    #[test]
    fn a_large_answer_is_kept_cut_with_its_response_and_a_small_one_whole() {
        let small = json!({ "response": "hi", "state": { "n": 1 } });
        let (answer, response) = kept_answer(&small, "/u".into());
        assert_eq!(answer, json!({ "response": "hi" }));
        assert_eq!(response.as_deref(), Some("hi"));
        let large = json!({ "response": "y".repeat(300 * 1024), "extra": "z".repeat(50_000) });
        let (answer, response) = kept_answer(&large, "/u".into());
        assert_eq!(answer["truncated"], true);
        assert_eq!(answer["url"], "/u");
        assert!(answer.to_string().len() < ANSWER_BYTES + 1024);
        let response = response.expect("a response");
        assert!(response.len() <= ANSWER_BYTES && response.len() > ANSWER_BYTES - 16);
        assert!(state_fits(&json!({ "n": 1 })));
        assert!(!state_fits(&json!("s".repeat(AGENT_STATE_BYTES))));
    }

    #[test]
    fn many_large_results_share_the_turns_budget() {
        let many: Vec<AsyncResult> = (0..MAX_SHOWN_PER_TURN)
            .map(|i| result(&format!("a{i}"), 100 * 1024))
            .collect();
        let shown = shown_async_results(&many);
        assert_eq!(shown.len(), MAX_SHOWN_PER_TURN);
        let previews: usize = shown
            .values()
            .map(|r| json!(r["preview"]).to_string().len())
            .sum();
        assert!(previews <= RESULTS_BYTES, "{previews} bytes");
        // A small one among them is kept whole.
        let mut mixed = many;
        mixed.push(result("small", 10));
        let shown = shown_async_results(&mixed);
        assert_eq!(shown["small"]["result"]["notes"], "x".repeat(10));
    }

    #[test]
    fn a_preview_counts_its_escapes_and_never_splits_a_character() {
        let text = json!({ "q": "\"é\n".repeat(10_000) });
        let cut = Kept::new(text, RESULT_PREVIEW_BYTES, None).to_value();
        let preview = cut["preview"].as_str().unwrap();
        let written = json!(preview).to_string().len();
        assert!(written <= RESULT_PREVIEW_BYTES && written > RESULT_PREVIEW_BYTES - 8);
        assert!(cut.get("url").is_none());
    }
}
