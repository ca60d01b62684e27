//! How a task becomes a model's prompt, for the `openai` and `bedrock` kinds. Pure: the
//! invokers send what these functions build.
//!
//! - The agent's `system_prompt`, if it has one, comes first.
//! - A conversation's running summary, if it has one, follows: [`SUMMARY_PREAMBLE`], the last
//!   turn it covers, and its text.
//! - The outputs of the task's dependencies, if any, follow as one more system text:
//!   [`DEPENDENCIES_PREAMBLE`] and then a JSON object of each dependency's id to its output.
//! - The past results the task asked for (`memory.relevant`), if any, follow the same way:
//!   [`MEMORIES_PREAMBLE`] and then their JSON list, most relevant first; then the task's
//!   shared context, if it names one: [`CONTEXT_PREAMBLE`] and `{name, version, value}`.
//! - Then the conversation: an openai task whose input has a `messages` array sends it as it
//!   is (each a `{role, content}` object); otherwise a conversation's earlier turns come first
//!   as user and assistant messages ([`history`]), then one user message holds the input's text:
//!   `input.prompt` or `input.text` if it is a string, the input itself if it is a string, and
//!   the input as JSON otherwise.

use serde_json::{json, Map, Value};

pub const DEPENDENCIES_PREAMBLE: &str = "Results of the steps this one depends on:";
pub const MEMORIES_PREAMBLE: &str = "Past results of similar tasks, most relevant first:";
/// Before a conversation's running summary, followed by the last turn it covers.
pub const SUMMARY_PREAMBLE: &str = "Summary of the earlier conversation, through turn";
pub const CONTEXT_PREAMBLE: &str =
    "The shared context of this work ({name, version, value}); answer `context_update`, a JSON merge patch, to change it:";
/// The roles a Chat Completions message may take.
const CHAT_ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// A conversation's earlier turns, oldest first, as (user, assistant) texts: what a model in a
/// conversation receives as its message history. A turn's input carries them as
/// `context.recent_turns` (the session's last turns, each cut to 2,000 characters); a turn
/// that has no answer is left out, so the roles keep alternating.
pub fn history(input: &Value) -> Vec<(String, String)> {
    input
        .pointer("/context/recent_turns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|turn| {
            let text = turn.get("text")?.as_str()?;
            let response = turn.get("response")?.as_str()?;
            Some((text.to_string(), response.to_string()))
        })
        .collect()
}

/// The user's text for a task's input.
pub fn input_text(input: &Value) -> String {
    let field = |name: &str| input.get(name).and_then(Value::as_str).map(str::to_string);
    match input {
        Value::String(text) => text.clone(),
        _ => field("prompt")
            .or_else(|| field("text"))
            .unwrap_or_else(|| input.to_string()),
    }
}

/// The system text that passes the dependencies' outputs, if there are any.
pub fn dependencies_text(dependencies: &Map<String, Value>) -> Option<String> {
    (!dependencies.is_empty()).then(|| {
        format!(
            "{DEPENDENCIES_PREAMBLE}\n{}",
            Value::Object(dependencies.clone())
        )
    })
}

/// What a call adds to a model's system texts besides the agent's prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// A conversation's running summary, `{through_turn, text}` (its turn's
    /// `context.summary`).
    pub summary: Option<&'a Value>,
    pub dependencies: Option<&'a Map<String, Value>>,
    pub memories: &'a [Value],
    /// `{name, version, value}` of the task's shared context.
    pub context: Option<&'a Value>,
}

impl<'a> Extras<'a> {
    pub fn of(call: &'a baton_chain::invoker::AgentCall<'_>) -> Self {
        Extras {
            summary: call
                .input
                .pointer("/context/summary")
                .filter(|s| !s.is_null()),
            dependencies: Some(&call.dependencies),
            memories: &call.memories,
            context: call.context.as_ref(),
        }
    }
}

/// The system texts, in order: the agent's prompt, the conversation's summary, the
/// dependencies' outputs, the memories, the shared context.
pub fn system_texts(system_prompt: Option<&str>, extras: Extras<'_>) -> Vec<String> {
    let summary = extras.summary.and_then(|summary| {
        let text = summary.get("text")?.as_str()?;
        let through = summary.get("through_turn")?;
        Some(format!("{SUMMARY_PREAMBLE} {through}:\n{text}"))
    });
    let memories = (!extras.memories.is_empty()).then(|| {
        format!(
            "{MEMORIES_PREAMBLE}\n{}",
            Value::Array(extras.memories.to_vec())
        )
    });
    let context = extras
        .context
        .map(|context| format!("{CONTEXT_PREAMBLE}\n{context}"));
    system_prompt
        .map(str::to_string)
        .into_iter()
        .chain(summary)
        .chain(extras.dependencies.and_then(dependencies_text))
        .chain(memories)
        .chain(context)
        .collect()
}

/// The `messages` of a Chat Completions request; `Err` says what is wrong with the input's
/// own `messages`.
pub fn chat_messages(
    system_prompt: Option<&str>,
    input: &Value,
    extras: Extras<'_>,
) -> Result<Vec<Value>, String> {
    let mut messages: Vec<Value> = system_texts(system_prompt, extras)
        .into_iter()
        .map(|text| json!({ "role": "system", "content": text }))
        .collect();
    match input.get("messages") {
        Some(Value::Array(given)) => {
            if given.is_empty() {
                return Err("`messages` is empty".into());
            }
            for (i, message) in given.iter().enumerate() {
                check_chat_message(message).map_err(|why| format!("messages[{i}]: {why}"))?;
            }
            messages.extend(given.iter().cloned());
        }
        Some(_) => return Err("`messages` must be an array of {role, content} objects".into()),
        None => {
            for (asked, answered) in history(input) {
                messages.push(json!({ "role": "user", "content": asked }));
                messages.push(json!({ "role": "assistant", "content": answered }));
            }
            messages.push(json!({ "role": "user", "content": input_text(input) }));
        }
    }
    Ok(messages)
}

fn check_chat_message(message: &Value) -> Result<(), String> {
    let Some(object) = message.as_object() else {
        return Err("each message is a {role, content} object".into());
    };
    match object.get("role").and_then(Value::as_str) {
        Some(role) if CHAT_ROLES.contains(&role) => {}
        _ => return Err(format!("`role` must be one of {}", CHAT_ROLES.join(", "))),
    }
    match object.get("content") {
        Some(Value::String(_) | Value::Array(_)) => Ok(()),
        _ => Err("`content` must be a string or an array of parts".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_conversation_turn_sends_the_earlier_turns_as_history() {
        let input = json!({
            "text": "And tomorrow?",
            "context": { "recent_turns": [
                { "turn": 1, "text": "Weather today?", "response": "Sunny." },
                { "turn": 2, "text": "Failed turn", "response": null },
                { "turn": 3, "text": "Wind?", "response": "Calm." },
            ]},
        });
        let messages = chat_messages(None, &input, Extras::default()).unwrap();
        let turns: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(
            turns,
            [
                ("user", "Weather today?"),
                ("assistant", "Sunny."),
                ("user", "Wind?"),
                ("assistant", "Calm."),
                ("user", "And tomorrow?"),
            ]
        );
    }

    #[test]
    fn a_running_summary_comes_before_the_turns_it_does_not_cover() {
        let input = json!({
            "text": "And now?",
            "context": {
                "summary": { "through_turn": 4, "text": "They planned a trip.", "agent": "sum" },
                "recent_turns": [{ "turn": 5, "text": "Where to?", "response": "Oslo." }],
            },
        });
        let summary = input.pointer("/context/summary");
        let extras = Extras {
            summary,
            ..Extras::default()
        };
        let messages = chat_messages(Some("Be brief."), &input, extras).unwrap();
        let contents: Vec<&str> = messages
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            contents,
            [
                "Be brief.",
                "Summary of the earlier conversation, through turn 4:\nThey planned a trip.",
                "Where to?",
                "Oslo.",
                "And now?",
            ]
        );
    }

    #[test]
    fn the_input_text_is_the_prompt_the_text_or_the_input_itself() {
        assert_eq!(input_text(&json!({"prompt": "hi", "text": "no"})), "hi");
        assert_eq!(
            input_text(&json!({"text": "summarize this"})),
            "summarize this"
        );
        assert_eq!(input_text(&json!("plain")), "plain");
        assert_eq!(input_text(&json!({"prompt": 3})), r#"{"prompt":3}"#);
        assert_eq!(input_text(&json!([1, 2])), "[1,2]");
    }

    #[test]
    fn one_user_message_follows_the_system_prompt_the_dependencies_and_the_memories() {
        let messages = chat_messages(
            Some("Be brief."),
            &json!({"prompt": "Sum it up"}),
            Extras {
                dependencies: Some(&deps(json!({"fetch": {"n": 2}}))),
                memories: &[json!({"task_id": "earlier"})],
                context: None,
                summary: None,
            },
        )
        .unwrap();
        assert_eq!(
            messages,
            vec![
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "system", "content": format!("{DEPENDENCIES_PREAMBLE}\n{{\"fetch\":{{\"n\":2}}}}")}),
                json!({"role": "system", "content": format!("{MEMORIES_PREAMBLE}\n[{{\"task_id\":\"earlier\"}}]")}),
                json!({"role": "user", "content": "Sum it up"}),
            ]
        );
        let bare = chat_messages(None, &json!({"a": 1}), Extras::default()).unwrap();
        assert_eq!(bare, vec![json!({"role": "user", "content": r#"{"a":1}"#})]);
    }

    #[test]
    fn given_messages_are_sent_as_they_are_once_checked() {
        let given = json!([
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "More"}]},
        ]);
        let messages = chat_messages(None, &json!({"messages": given}), Extras::default()).unwrap();
        assert_eq!(Value::Array(messages), given);
        for (bad, says) in [
            (json!({"messages": "hi"}), "must be an array"),
            (json!({"messages": []}), "is empty"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0]: `role`",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0]: `content`",
            ),
            (
                json!({"messages": [{"role": "user", "content": "a"}, 3]}),
                "messages[1]",
            ),
        ] {
            let err = chat_messages(None, &bad, Extras::default()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn system_texts_leave_out_what_is_absent() {
        assert!(system_texts(None, Extras::default()).is_empty());
        assert_eq!(
            system_texts(Some("p"), Extras::default()),
            vec!["p".to_string()]
        );
    }
}
