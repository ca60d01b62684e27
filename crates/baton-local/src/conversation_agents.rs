//! The example conversational agents, a small health-coaching set: honest,
//! simple rule-based behaviours, each a real HTTP server when the stack runs them.
//!
//! privacy and followup answer first, nutrition after both, and the primary last with all
//! three (three dependency levels); checklist evaluates the checkpoints, human asks for a person
//! when the user wants one, history summarises in the background, and two specialists take
//! the turns their keywords match.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::agents::{AgentReply, Behaviour};

/// One example: its registration (everything but the endpoint) and its behaviour.
pub struct ConversationExample {
    pub name: &'static str,
    pub registration: Value,
    pub behaviour: Behaviour,
}

fn example(
    name: &'static str,
    capabilities: &[&str],
    extra: Value,
    behaviour: fn(&Value) -> AgentReply,
) -> ConversationExample {
    let mut registration =
        json!({ "name": name, "capabilities": capabilities, "timeout_ms": 5000 });
    if let (Some(target), Some(extra)) = (registration.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    ConversationExample {
        name,
        registration,
        behaviour: Arc::new(behaviour),
    }
}

fn role(role: &str) -> Value {
    json!({ "conversation": { "role": role } })
}

/// The set the local stack registers.
pub fn conversation_set() -> Vec<ConversationExample> {
    vec![
        example("privacy", &["conversation.privacy"], role("sync"), privacy),
        example(
            "followup",
            &["conversation.followup"],
            role("sync"),
            followup,
        ),
        example(
            "nutrition",
            &["conversation.nutrition"],
            json!({ "conversation": { "role": "sync", "depends_on": ["privacy", "followup"] } }),
            nutrition,
        ),
        example("history", &["conversation.history"], role("async"), history),
        example(
            "checklist",
            &[
                "conversation.checklist",
                "checkpoints.evaluate",
                "checkpoints.generate",
            ],
            role("sync"),
            checklist,
        ),
        example("human", &["conversation.escalate"], role("sync"), human),
        example("primary", &["conversation.respond"], role("core"), primary),
        example(
            "sleep_coach",
            &["conversation.sleep"],
            json!({
                "conversation": { "role": "specialist" },
                "keywords": ["sleep", "insomnia", "tired", "nap", "bedtime"],
                "task_types": ["sleep_advice"],
            }),
            sleep_coach,
        ),
        example(
            "fitness_coach",
            &["conversation.fitness"],
            json!({
                "conversation": { "role": "specialist" },
                "keywords": ["workout", "exercise", "run", "gym", "steps"],
                "task_types": ["exercise_plan"],
            }),
            fitness_coach,
        ),
    ]
}

/// A rule-based `classify` agent: not registered by default; register it to have turns
/// analysed by an agent (with the keyword rules as its fallback).
pub fn classifier() -> ConversationExample {
    example("classifier", &["classify"], json!({}), classify)
}

fn text(call: &Value) -> String {
    call.pointer("/input/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase()
}

fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Flags personal data: e-mail addresses, long digit runs (phone numbers), and phrases.
pub fn privacy(call: &Value) -> AgentReply {
    let text = text(call);
    let mut kinds = Vec::new();
    let email = text.split_whitespace().any(|token| {
        token
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
    });
    if email {
        kinds.push("email");
    }
    let longest_digits = text
        .split(|c: char| !c.is_ascii_digit() && c != ' ' && c != '-')
        .map(|run| run.chars().filter(char::is_ascii_digit).count())
        .max()
        .unwrap_or(0);
    if longest_digits >= 7 {
        kinds.push("phone");
    }
    for (phrase, kind) in [
        ("my address", "address"),
        ("i live at", "address"),
        ("ssn", "government id"),
        ("social security", "government id"),
        ("date of birth", "birth date"),
        ("born on", "birth date"),
    ] {
        if text.contains(phrase) && !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let personal = !kinds.is_empty();
    AgentReply::ok(json!({
        "personal_data": personal,
        "kinds": kinds,
        "note": if personal { "personal data found: keep it out of the answer" } else { "no personal data found" },
    }))
}

/// Proposes a follow-up question; counts the questions asked in this session in its state.
pub fn followup(call: &Value) -> AgentReply {
    let text = text(call);
    let asked = call
        .pointer("/input/state/asked")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let question = [
        ("breakfast", "What do you usually have for breakfast?"),
        ("lunch", "Where do you usually eat lunch?"),
        ("dinner", "Who cooks dinner at home?"),
        ("water", "How many glasses of water do you drink a day?"),
        ("sugar", "When in the day do sugar cravings come?"),
        ("protein", "Which protein foods do you like?"),
        ("goal", "What would reaching that goal change for you?"),
    ]
    .iter()
    .find(|(word, _)| text.contains(word))
    .map_or("What would you like to change first?", |(_, q)| q);
    AgentReply::ok(json!({ "question": question, "state": { "asked": asked + 1 } }))
}

/// A nutrition tip from keywords, holding detail back when privacy found personal data.
pub fn nutrition(call: &Value) -> AgentReply {
    let text = text(call);
    let personal = call
        .pointer("/dependencies/privacy/personal_data")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tip = [
        (
            "breakfast",
            "A breakfast with protein and fibre keeps you full until lunch.",
        ),
        (
            "protein",
            "Spread protein over the day: eggs, beans, fish or yoghurt at each meal.",
        ),
        (
            "sugar",
            "Pair something sweet with protein or fibre to soften the sugar spike.",
        ),
        (
            "water",
            "Keep a glass of water next to you; thirst often passes for hunger.",
        ),
        (
            "lunch",
            "Half a plate of vegetables at lunch is an easy win.",
        ),
        (
            "dinner",
            "Cooking at home twice more a week is a realistic first step.",
        ),
    ]
    .iter()
    .find(|(word, _)| text.contains(word))
    .map_or(
        "Small steady changes beat big ones: pick one meal to improve this week.",
        |(_, t)| t,
    );
    let mut answer = json!({
        "tip": tip,
        "used": ["privacy", "followup"],
        "withheld_personal_detail": personal,
    });
    if text.contains("goal") || text.contains("plan") {
        if let Some(id) = current_checkpoint(call) {
            answer["checkpoint_progress"] = json!({ id: "in_progress" });
        }
    }
    AgentReply::ok(answer)
}

/// Summarises the conversation so far, in the background (it takes a moment on purpose).
pub fn history(call: &Value) -> AgentReply {
    let turns: Vec<Value> = call
        .pointer("/input/context/recent_turns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let current = call.pointer("/input/text").and_then(Value::as_str);
    let texts: Vec<&str> = turns
        .iter()
        .filter_map(|t| t["text"].as_str())
        .chain(current)
        .collect();
    let first: Vec<&str> = texts
        .first()
        .map_or(Vec::new(), |t| t.split_whitespace().take(8).collect());
    AgentReply::ok(json!({
        "summary": format!("{} message(s) so far, the first: \"{}\"", texts.len(), first.join(" ")),
        "turns_seen": texts.len(),
    }))
    .after(Duration::from_millis(300))
}

/// The id of the current task's first checkpoint that is not complete.
fn current_checkpoint(call: &Value) -> Option<String> {
    call.pointer("/input/context/checkpoints")?
        .as_array()?
        .iter()
        .find(|c| c["status"] != "complete")?["id"]
        .as_str()
        .map(str::to_string)
}

/// Generates the checkpoints when there are none; otherwise completes the current one when
/// the message says something substantive, and pushes a support task when asked for more help.
pub fn checklist(call: &Value) -> AgentReply {
    let text = text(call);
    let none_yet = call
        .pointer("/input/context/task_stack")
        .and_then(Value::as_array)
        .is_none_or(|tasks| {
            tasks
                .iter()
                .all(|t| t["checkpoints"].as_array().is_none_or(Vec::is_empty))
        });
    if none_yet {
        return AgentReply::ok(json!({
            "checkpoints": ["Share your goal", "Describe a typical day of eating", "Agree on one change"],
        }));
    }
    let mut answer = json!({});
    if let Some(id) = current_checkpoint(call).filter(|_| words(&text).len() >= 4) {
        answer["checkpoint_progress"] = json!({ id: "complete" });
    }
    if text.contains("also") && text.contains("help with") {
        let topic = text
            .split("help with")
            .nth(1)
            .map(|rest| rest.trim().trim_end_matches(['.', '!', '?']).to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "something else".into());
        answer["push_task"] = json!({
            "name": format!("help with {topic}"),
            "checkpoints": [format!("Describe what is hard about {topic}"), "Agree on one step"],
        });
    }
    AgentReply::ok(answer)
}

/// Asks for a person when the user wants one.
pub fn human(call: &Value) -> AgentReply {
    let text = text(call);
    let wants = [
        "human",
        "real person",
        "talk to someone",
        "speak to someone",
        "agent please",
    ]
    .iter()
    .any(|p| text.contains(p));
    if wants {
        AgentReply::ok(json!({ "requires_human": true, "reason": "the user asked for a person" }))
    } else {
        AgentReply::ok(json!({ "requires_human": false }))
    }
}

/// Composes the answer from the sync agents' results.
pub fn primary(call: &Value) -> AgentReply {
    let deps = &call["dependencies"];
    let mut parts = vec!["Thanks for telling me.".to_string()];
    if deps.pointer("/human/requires_human") == Some(&json!(true)) {
        parts.push("I am bringing in a person from our team; they will reply here.".into());
    }
    if deps.pointer("/privacy/personal_data") == Some(&json!(true)) {
        parts.push("Please keep personal details out of the chat; I have not used them.".into());
    }
    if let Some(tip) = deps.pointer("/nutrition/tip").and_then(Value::as_str) {
        parts.push(tip.to_string());
    }
    if let Some(summary) = call
        .pointer("/input/context/async_agent_results/history/result/summary")
        .and_then(Value::as_str)
    {
        parts.push(format!("(Earlier: {summary}.)"));
    }
    if let Some(question) = deps.pointer("/followup/question").and_then(Value::as_str) {
        parts.push(question.to_string());
    }
    AgentReply::ok(json!({ "response": parts.join(" ") }))
}

pub fn sleep_coach(call: &Value) -> AgentReply {
    let text = text(call);
    let advice = if text.contains("nap") {
        "Keep naps under 30 minutes and before 3 pm, so they do not steal your night's sleep."
    } else {
        "Go to bed and get up at the same time every day, and keep screens out of the last hour."
    };
    AgentReply::ok(json!({ "response": advice }))
}

pub fn fitness_coach(call: &Value) -> AgentReply {
    let text = text(call);
    let advice = if text.contains("run") {
        "Start with run-walk intervals: one minute running, two walking, for 20 minutes."
    } else {
        "Aim for 150 minutes of moderate exercise a week: a brisk 30-minute walk on 5 days does it."
    };
    AgentReply::ok(json!({ "response": advice }))
}

/// Picks the agent whose keywords and task types best match the text, or none.
pub fn classify(call: &Value) -> AgentReply {
    let text = text(call);
    if text.contains("fail-classifier") {
        return AgentReply::error(500, "the classifier failed on purpose");
    }
    let words = words(&text);
    let agents = call
        .pointer("/input/agents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let score = |agent: &Value| {
        let terms = agent["keywords"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(agent["task_types"].as_array().into_iter().flatten())
            .filter_map(Value::as_str);
        terms
            .flat_map(|term| term.split(['_', ' ']))
            .filter(|part| words.contains(part))
            .count()
    };
    let best = agents
        .iter()
        .map(|a| (score(a), a))
        .filter(|(s, _)| *s > 0)
        .fold(None::<(usize, &Value)>, |best, c| match best {
            Some(b) if b.0 >= c.0 => Some(b),
            _ => Some(c),
        });
    match best {
        Some((score, agent)) => AgentReply::ok(json!({
            "agent": agent["name"],
            "reason": format!("{score} matching term(s)"),
        })),
        None => AgentReply::ok(json!({ "agent": null, "reason": "no agent matches" })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(text: &str, extra: Value) -> Value {
        let mut call = json!({ "input": { "text": text } });
        for (k, v) in extra.as_object().unwrap() {
            call["input"][k] = v.clone();
        }
        call
    }

    #[test]
    fn privacy_flags_an_email_and_a_phone_number() {
        let found = privacy(&call(
            "mail me at sam@example.com or 555 123 4567",
            json!({}),
        ));
        assert_eq!(found.body["personal_data"], true);
        assert_eq!(found.body["kinds"], json!(["email", "phone"]));
        let clean = privacy(&call("I like apples", json!({})));
        assert_eq!(clean.body["personal_data"], false);
    }

    #[test]
    fn followup_counts_its_questions_in_its_state() {
        let first = followup(&call("breakfast", json!({})));
        assert_eq!(first.body["state"], json!({ "asked": 1 }));
        let next = followup(&call("x", json!({ "state": first.body["state"] })));
        assert_eq!(next.body["state"], json!({ "asked": 2 }));
    }

    #[test]
    fn checklist_generates_then_completes_and_pushes() {
        let generated = checklist(&call("hi", json!({ "context": { "task_stack": [] } })));
        assert_eq!(generated.body["checkpoints"].as_array().unwrap().len(), 3);
        let context = json!({ "context": {
            "task_stack": [{ "checkpoints": [{ "id": "main-1", "status": "in_progress" }] }],
            "checkpoints": [{ "id": "main-1", "status": "in_progress" }],
        }});
        let done = checklist(&call(
            "I want to have more energy, also help with sleep",
            context,
        ));
        assert_eq!(
            done.body["checkpoint_progress"],
            json!({ "main-1": "complete" })
        );
        assert_eq!(done.body["push_task"]["name"], "help with sleep");
    }

    #[test]
    fn human_asks_for_a_person_only_when_the_user_does() {
        assert_eq!(
            human(&call("Can I talk to a human?", json!({}))).body["requires_human"],
            true
        );
        assert_eq!(
            human(&call("hello", json!({}))).body["requires_human"],
            false
        );
    }

    #[test]
    fn the_classifier_picks_the_best_match_and_fails_on_purpose() {
        let agents = json!({ "agents": [
            { "name": "sleep_coach", "keywords": ["sleep", "tired"], "task_types": ["sleep_advice"] },
            { "name": "fitness_coach", "keywords": ["gym"], "task_types": ["exercise_plan"] },
        ]});
        let picked = classify(&call("I can't sleep and I am tired", agents.clone()));
        assert_eq!(picked.body["agent"], "sleep_coach");
        assert_eq!(
            classify(&call("hello", agents.clone())).body["agent"],
            Value::Null
        );
        assert_eq!(classify(&call("fail-classifier", agents)).status, 500);
    }

    #[test]
    fn the_primary_composes_the_sync_results() {
        let mut c = call("hi", json!({}));
        c["dependencies"] = json!({
            "nutrition": { "tip": "Drink water." },
            "followup": { "question": "Why?" },
            "privacy": { "personal_data": false },
        });
        let answer = primary(&c);
        assert_eq!(
            answer.body["response"],
            "Thanks for telling me. Drink water. Why?"
        );
    }
}
