//! What a conversation's agents receive of its past: the last turns word for word and, when
//! the tenant has a `summarize` agent, a running summary of the older ones. Pure: the turn's
//! start plans the fold, the summarizer's end records it, the turn's end trims the turns.
//!
//! - A session keeps `history_turns` turns word for word (default [`DEFAULT_HISTORY_TURNS`]).
//! - Without a summarizer, older turns are dropped, and each answer says through which turn.
//! - With one, a turn that starts with `history_turns` turns not yet summarised also calls it,
//!   in the background, with the summary so far and the oldest of those turns (all but the
//!   newest half). Its answer becomes the summary, and the turns it covers leave the history.
//!   Turns wait for the summary until twice `history_turns` of them wait; past that, the
//!   oldest are dropped as without a summarizer.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use super::conversation::RunningSummary;
use super::conversation::{ConversationState, TurnSummary};
use super::text::clipped;

/// The capability of the agent that keeps a conversation's running summary.
pub const SUMMARIZE: &str = "summarize";
pub const DEFAULT_HISTORY_TURNS: u32 = 10;
pub const MAX_HISTORY_TURNS: u32 = 20;
/// The longest summary kept, in bytes: longer answers are cut.
pub const MAX_SUMMARY_BYTES: usize = 4 * 1024;

/// What a turn's agents received of the conversation before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryNote {
    /// The earlier turns the agents received word for word (a model as its message history).
    pub earlier_turns: u32,
    /// The agents received a running summary of the turns up to this one, before the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarized_through: Option<u32>,
    /// The turns after the summary (or from the first) up to this one were dropped: neither
    /// word for word nor summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_through: Option<u32>,
}

/// The turns an agent receives word for word: those the summary does not cover.
pub fn kept_turns(state: &ConversationState) -> impl Iterator<Item = &TurnSummary> {
    let covered = summarized_through(state);
    state.recent.iter().filter(move |t| t.turn > covered)
}

fn summarized_through(state: &ConversationState) -> u32 {
    state.summary.as_ref().map_or(0, |s| s.through_turn)
}

impl HistoryNote {
    /// The note of turn `turn` (1-based) starting from `state`; None when it has no history.
    pub fn of(state: &ConversationState, turn: u32) -> Option<HistoryNote> {
        let earlier = turn.checked_sub(1).filter(|n| *n > 0)?;
        let covered = summarized_through(state);
        let kept: Vec<u32> = kept_turns(state)
            .map(|t| t.turn)
            .filter(|t| *t <= earlier)
            .collect();
        let first_kept = kept.iter().min().copied().unwrap_or(earlier + 1);
        Some(HistoryNote {
            earlier_turns: kept.len() as u32,
            summarized_through: state.summary.as_ref().map(|s| s.through_turn),
            dropped_through: (first_kept > covered + 1).then(|| first_kept - 1),
        })
    }
}

/// The turns a summarizer folds into the summary in the turn that starts from `state`, if the
/// fold is due: the oldest of the turns not summarised, leaving the newest half of
/// `history_turns`.
pub fn fold_due(state: &ConversationState, history_turns: u32) -> Option<Vec<TurnSummary>> {
    let waiting: Vec<&TurnSummary> = kept_turns(state).collect();
    if waiting.len() < history_turns as usize {
        return None;
    }
    let leave = (history_turns as usize).div_ceil(2);
    let folded: Vec<TurnSummary> = waiting[..waiting.len() - leave]
        .iter()
        .map(|t| (*t).clone())
        .collect();
    (!folded.is_empty()).then_some(folded)
}

/// The input of the summarizer's call: an instruction a model follows as its prompt, with the
/// summary so far and the turns to fold, also given as data for other agents.
pub fn fold_input(state: &ConversationState, folded: &[TurnSummary]) -> Value {
    let mut text = String::from(
        "Update the running summary of this conversation with the turns below. Keep facts, \
         names, decisions and open questions; answer with the summary alone, in under 300 words.",
    );
    if let Some(summary) = &state.summary {
        text.push_str(&format!(
            "\n\nSummary so far (turns 1-{}):\n{}",
            summary.through_turn, summary.text
        ));
    }
    for turn in folded {
        text.push_str(&format!("\n\nTurn {}\nUser: {}", turn.turn, turn.text));
        if let Some(reply) = &turn.human_reply {
            text.push_str(&format!("\nHuman operator: {reply}"));
        }
        if let Some(response) = &turn.response {
            text.push_str(&format!("\nAssistant: {response}"));
        }
    }
    json!({
        "task": SUMMARIZE,
        "text": text,
        "summary": state.summary,
        "turns": folded,
        "through_turn": folded.last().map(|t| t.turn),
    })
}

/// The summary a summarizer answered: its `summary`, `content`, `response` or `text` field, or
/// the output itself when it is a string; cut to [`MAX_SUMMARY_BYTES`].
pub fn summary_of(output: &Value) -> Option<String> {
    let text = match output {
        Value::String(text) => Some(text.as_str()),
        _ => ["summary", "content", "response", "text"]
            .iter()
            .find_map(|field| output.get(field).and_then(Value::as_str)),
    }?;
    let text = text.trim();
    (!text.is_empty()).then(|| clipped(text, MAX_SUMMARY_BYTES))
}

/// Records a finished turn, then trims the history: turns the summary covers leave it, and it
/// holds at most `history_turns` turns, or twice that while a summarizer is expected to fold
/// them.
pub fn remember(
    state: &mut ConversationState,
    turn: TurnSummary,
    history_turns: u32,
    summarizing: bool,
) {
    state.recent.push(turn);
    let covered = summarized_through(state);
    state.recent.retain(|t| t.turn > covered);
    let cap = history_turns.clamp(1, MAX_HISTORY_TURNS) as usize * if summarizing { 2 } else { 1 };
    let excess = state.recent.len().saturating_sub(cap);
    state.recent.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(n: u32) -> TurnSummary {
        TurnSummary {
            turn: n,
            text: format!("asked {n}"),
            response: Some(format!("answered {n}")),
            agents: vec!["core".into()],
            human_reply: None,
        }
    }

    fn after_turns(count: u32, history_turns: u32, summarizing: bool) -> ConversationState {
        let mut state = ConversationState::default();
        for n in 1..=count {
            remember(&mut state, turn(n), history_turns, summarizing);
        }
        state
    }

    fn summary(through_turn: u32) -> RunningSummary {
        RunningSummary {
            through_turn,
            text: "so far".into(),
            agent: "sum".into(),
        }
    }

    #[test]
    fn without_a_summarizer_the_oldest_turns_are_dropped_and_the_note_says_which() {
        assert_eq!(HistoryNote::of(&ConversationState::default(), 1), None);
        let state = after_turns(2, 10, false);
        assert_eq!(
            HistoryNote::of(&state, 3),
            Some(HistoryNote {
                earlier_turns: 2,
                summarized_through: None,
                dropped_through: None
            })
        );
        let state = after_turns(13, 10, false);
        assert_eq!(state.recent.first().map(|t| t.turn), Some(4));
        assert_eq!(
            HistoryNote::of(&state, 14),
            Some(HistoryNote {
                earlier_turns: 10,
                summarized_through: None,
                dropped_through: Some(3)
            })
        );
    }

    #[test]
    fn the_fold_is_due_at_history_turns_and_takes_all_but_the_newest_half() {
        assert_eq!(fold_due(&after_turns(3, 4, true), 4), None);
        let state = after_turns(4, 4, true);
        let folded = fold_due(&state, 4).unwrap();
        assert_eq!(folded.iter().map(|t| t.turn).collect::<Vec<_>>(), [1, 2]);
        let input = fold_input(&state, &folded);
        assert_eq!(input["through_turn"], 2);
        let text = input["text"].as_str().unwrap();
        assert!(text.contains("Turn 1\nUser: asked 1\nAssistant: answered 1"));
        assert!(!text.contains("asked 3"), "{text}");
    }

    #[test]
    fn with_one_turn_kept_the_fold_waits_for_a_second() {
        assert_eq!(fold_due(&after_turns(1, 1, true), 1), None);
        let folded = fold_due(&after_turns(2, 1, true), 1).unwrap();
        assert_eq!(folded.iter().map(|t| t.turn).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_summary_replaces_the_turns_it_covers_and_the_note_says_so() {
        let mut state = after_turns(4, 4, true);
        state.summary = Some(summary(2));
        assert_eq!(
            HistoryNote::of(&state, 5),
            Some(HistoryNote {
                earlier_turns: 2,
                summarized_through: Some(2),
                dropped_through: None
            })
        );
        assert_eq!(
            kept_turns(&state).map(|t| t.turn).collect::<Vec<_>>(),
            [3, 4]
        );
        remember(&mut state, turn(5), 4, true);
        assert_eq!(
            state.recent.iter().map(|t| t.turn).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(fold_due(&state, 4), None, "three turns wait");
        let input = fold_input(&state, &[turn(3)]);
        assert!(input["text"]
            .as_str()
            .unwrap()
            .contains("Summary so far (turns 1-2):\nso far"));
    }

    #[test]
    fn a_failing_summarizer_lets_turns_wait_up_to_twice_the_window_then_drops() {
        let state = after_turns(8, 4, true);
        assert_eq!(state.recent.len(), 8, "waiting for a summary");
        let mut state = after_turns(11, 4, true);
        assert_eq!(state.recent.first().map(|t| t.turn), Some(4));
        state.summary = Some(summary(1));
        assert_eq!(
            HistoryNote::of(&state, 12),
            Some(HistoryNote {
                earlier_turns: 8,
                summarized_through: Some(1),
                dropped_through: Some(3)
            })
        );
    }

    #[test]
    fn a_summary_is_read_from_the_usual_fields_and_kept_bounded() {
        assert_eq!(summary_of(&json!("  short  ")).as_deref(), Some("short"));
        assert_eq!(
            summary_of(&json!({ "content": "from a model" })).as_deref(),
            Some("from a model")
        );
        assert_eq!(
            summary_of(&json!({ "summary": "s", "content": "c" })).as_deref(),
            Some("s")
        );
        assert_eq!(summary_of(&json!({ "summary": "   " })), None);
        assert_eq!(summary_of(&json!({ "other": 1 })), None);
        let long = "word ".repeat(2_000);
        assert!(summary_of(&json!(long)).unwrap().len() <= MAX_SUMMARY_BYTES);
    }
}
