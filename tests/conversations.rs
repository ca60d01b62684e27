//! Conversation turns end to end on the local stack, with real HTTP agents: query analysis,
//! sync agents in dependency order, async results in the next turn, per-session agent
//! instances, checkpoints and the task stack, human intervention, one turn at a time, and
//! the compatibility endpoint `POST /orchestrate`.

use std::sync::Arc;

use baton_local::agents::{AgentReply, AgentServer, Behaviour};
use baton_local::stack::LocalStack;
use baton_tests::*;
use baton_types::clock::now_ms;
use serde_json::{json, Value};

/// The conversational agents of these tests, each a real HTTP server.
struct Agents {
    privacy: AgentServer,
    followup: AgentServer,
    nutrition: AgentServer,
    history: AgentServer,
    primary: AgentServer,
    sleep: AgentServer,
}

fn text_of(call: &Value) -> String {
    call.pointer("/input/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn dependency_names(call: &Value) -> Vec<String> {
    let mut names: Vec<String> = call["dependencies"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn behaviour(f: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Behaviour {
    Arc::new(move |call| AgentReply::ok(f(call)))
}

async fn register_conversational(
    stack: &LocalStack,
    name: &str,
    server: &AgentServer,
    extra: Value,
) {
    let mut body = json!({
        "name": name,
        "endpoint": server.url,
        "capabilities": [format!("conversation.{name}")],
        "timeout_ms": 5000,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    register(stack, body).await;
}

async fn register_role(stack: &LocalStack, name: &str, server: &AgentServer, role: &str) {
    let extra = json!({ "conversation": { "role": role } });
    register_conversational(stack, name, server, extra).await;
}

/// A stack with privacy and followup (sync), nutrition (sync, after both), history (async),
/// primary (core) and a sleep specialist found by keywords.
async fn conversation_stack(name: &str) -> (LocalStack, Agents) {
    let stack = start_stack(name, |_| {}).await;
    let agents = Agents {
        privacy: agent(behaviour(|call| {
            json!({ "personal_data": text_of(call).contains('@') })
        }))
        .await,
        followup: agent(behaviour(|call| {
            let asked = call.pointer("/input/state/asked").and_then(Value::as_u64).unwrap_or(0);
            json!({ "question": "What did you eat today?", "state": { "asked": asked + 1 } })
        }))
        .await,
        nutrition: agent(behaviour(|call| {
            json!({ "tip": "Drink water.", "saw": dependency_names(call) })
        }))
        .await,
        history: agent(Arc::new(|call: &Value| {
            let seen = call
                .pointer("/input/context/recent_turns")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            AgentReply::ok(json!({ "summary": format!("{seen} earlier turn(s)") }))
                .after(std::time::Duration::from_millis(200))
        }))
        .await,
        primary: agent(behaviour(|call| {
            json!({
                "response": format!("primary heard `{}` with {}", text_of(call), dependency_names(call).join(",")),
            })
        }))
        .await,
        sleep: agent(behaviour(|_| json!({ "response": "Keep a regular bedtime." }))).await,
    };
    register_role(&stack, "privacy", &agents.privacy, "sync").await;
    register_role(&stack, "followup", &agents.followup, "sync").await;
    register_conversational(
        &stack,
        "nutrition",
        &agents.nutrition,
        json!({ "conversation": { "role": "sync", "depends_on": ["privacy", "followup"] } }),
    )
    .await;
    register_role(&stack, "history", &agents.history, "async").await;
    register_role(&stack, "primary", &agents.primary, "core").await;
    register_conversational(
        &stack,
        "sleep_coach",
        &agents.sleep,
        json!({
            "conversation": { "role": "specialist" },
            "keywords": ["sleep", "insomnia"],
            "task_types": ["sleep_advice"],
        }),
    )
    .await;
    (stack, agents)
}

async fn open_session(stack: &LocalStack, body: Value) -> String {
    let answer = post(stack, "/v1/sessions", &body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    answer.body["session_id"].as_str().unwrap().to_string()
}

async fn say(stack: &LocalStack, session: &str, body: Value) -> Answer {
    post(
        stack,
        &format!("/v1/sessions/{session}/messages"),
        &body.to_string(),
    )
    .await
}

/// A turn that must be answered.
async fn turn(stack: &LocalStack, session: &str, text: &str) -> Value {
    let answer = say(stack, session, json!({ "text": text })).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "answered", "{:?}", answer.body);
    answer.body
}

/// Every item of both tables that mentions `needle`.
async fn items_mentioning(stack: &LocalStack, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for table in [&stack.settings.state_table, &stack.settings.memory_table] {
        let out = stack
            .clients
            .dynamodb
            .scan()
            .table_name(table)
            .send()
            .await
            .expect("scan");
        for item in out.items.unwrap_or_default() {
            let text = format!("{item:?}");
            if needles.iter().any(|n| text.contains(n.as_str())) {
                found.push(text);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_agents_run_in_dependency_order_and_their_results_reach_the_primary() {
    let (stack, agents) = conversation_stack("conv-sync").await;
    let session = open_session(&stack, json!({})).await;
    let answer = turn(&stack, &session, "Hello, I want to eat better").await;

    assert_eq!(
        answer["response"],
        "primary heard `Hello, I want to eat better` with followup,nutrition,privacy"
    );
    assert_eq!(answer["analysis"]["method"], "none");
    let results = answer["sync_agent_results"].as_object().unwrap();
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results["nutrition"]["saw"], json!(["followup", "privacy"]));
    assert!(
        results["followup"].get("state").is_none(),
        "an agent's state stays with its instance"
    );
    assert_eq!(answer["is_enriched"], true);
    // Nutrition started only after both of its dependencies had answered.
    let started = |server: &AgentServer| server.calls()[0].at_ms;
    let nutrition = started(&agents.nutrition);
    assert!(nutrition >= started(&agents.privacy) && nutrition >= started(&agents.followup));
    assert!(started(&agents.primary) >= nutrition);
    // Every agent got the turn's text, its role and the conversation's context.
    let call = &agents.nutrition.calls()[0].body;
    assert_eq!(call["input"]["role"], "sync");
    assert_eq!(call["input"]["session_id"], session.as_str());
    assert!(call["input"]["context"]["recent_turns"].is_array());
    let timing = &answer["timing_metrics"];
    for part in [
        "state_load_ms",
        "analysis_ms",
        "save_ms",
        "primary_ms",
        "total_ms",
    ] {
        assert!(timing[part].is_u64(), "{part}: {timing}");
    }
    assert!(timing["agents"]["nutrition"].is_u64(), "{timing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_async_agents_result_shows_up_in_the_next_turn() {
    let (stack, agents) = conversation_stack("conv-async").await;
    let session = open_session(&stack, json!({})).await;
    let first = turn(&stack, &session, "first message").await;
    assert_eq!(first["async_agent_results"], json!({}));
    let path = format!("/v1/sessions/{session}");
    eventually("the async result is kept for the next turn", || async {
        (get(&stack, &path).await.body["pending_async_results"] == 1).then_some(())
    })
    .await;
    let second = turn(&stack, &session, "second message").await;
    let history = &second["async_agent_results"]["history"];
    assert_eq!(history["turn"], 1, "{second}");
    assert_eq!(history["result"]["summary"], "0 earlier turn(s)");
    // The primary saw it in its context, and it is shown once only.
    let primary_call = &agents.primary.calls()[1].body;
    assert_eq!(
        primary_call["input"]["context"]["async_agent_results"]["history"]["result"]["summary"],
        "0 earlier turn(s)"
    );
    eventually("the second turn's async result is kept", || async {
        (get(&stack, &path).await.body["pending_async_results"] == 1).then_some(())
    })
    .await;
    let third = turn(&stack, &session, "third").await;
    assert_eq!(third["async_agent_results"]["history"]["turn"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_specialist_detected_by_keywords_answers_alone() {
    let (stack, agents) = conversation_stack("conv-specialist").await;
    let session = open_session(&stack, json!({})).await;
    let answer = turn(&stack, &session, "I cannot sleep at night").await;
    assert_eq!(answer["response"], "Keep a regular bedtime.");
    assert_eq!(answer["analysis"]["method"], "rules");
    assert_eq!(answer["analysis"]["detected_agent"], "sleep_coach");
    assert_eq!(answer["analysis"]["matched"], json!(["sleep"]));
    assert_eq!(answer["agents"]["specialist"], "sleep_coach");
    assert!(agents.primary.calls().is_empty());
    assert!(agents.privacy.calls().is_empty());
    // The client can name the agent too; a chain member named is recorded, the chain runs.
    let named = say(
        &stack,
        &session,
        json!({ "text": "hello", "detected_agent": "sleep_coach" }),
    )
    .await;
    assert_eq!(named.body["analysis"]["method"], "client");
    assert_eq!(named.body["response"], "Keep a regular bedtime.");
    let task_type = turn(&stack, &session, "some sleep advice please").await;
    assert_eq!(
        task_type["analysis"]["matched"],
        json!(["sleep", "sleep_advice"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_classifier_agent_is_asked_first_and_the_rules_are_its_fallback() {
    let (stack, _agents) = conversation_stack("conv-classifier").await;
    let classifier = agent(Arc::new(|call: &Value| {
        let text = text_of(call);
        if text.contains("broken") {
            AgentReply::error(500, "classifier down")
        } else if text.contains("rest") {
            AgentReply::ok(json!({ "agent": "sleep_coach" }))
        } else {
            AgentReply::ok(json!({ "agent": null }))
        }
    }))
    .await;
    register(
        &stack,
        json!({ "name": "classifier", "endpoint": classifier.url, "capabilities": ["classify"], "timeout_ms": 2000 }),
    )
    .await;
    let session = open_session(&stack, json!({})).await;

    let by_classifier = turn(&stack, &session, "I need some rest").await;
    assert_eq!(by_classifier["analysis"]["method"], "classifier");
    assert_eq!(by_classifier["analysis"]["classifier"], "classifier");
    assert_eq!(by_classifier["response"], "Keep a regular bedtime.");
    let call = &classifier.calls()[0].body;
    assert_eq!(call["capability"], "classify");
    assert!(call["input"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "sleep_coach" && a["keywords"] == json!(["sleep", "insomnia"])));

    let nothing = turn(&stack, &session, "hello there").await;
    assert_eq!(nothing["analysis"]["method"], "none");
    assert_eq!(nothing["analysis"]["classifier"], "classifier");

    let fallback = turn(&stack, &session, "broken sleep again").await;
    assert_eq!(fallback["analysis"]["method"], "rules");
    assert_eq!(fallback["analysis"]["detected_agent"], "sleep_coach");
    assert!(fallback["analysis"]["classifier_error"]
        .as_str()
        .unwrap()
        .contains("500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_instance_is_reused_across_turns_and_gone_with_its_session() {
    let (stack, agents) = conversation_stack("conv-instance").await;
    let session = open_session(&stack, json!({})).await;
    let first = turn(&stack, &session, "one").await;
    let second = turn(&stack, &session, "two").await;
    let calls = agents.followup.calls();
    assert_eq!(calls[0].body["input"]["state"], Value::Null);
    assert_eq!(calls[1].body["input"]["state"], json!({ "asked": 1 }));

    let path = format!("/v1/sessions/{session}");
    let view = get(&stack, &path).await.body;
    let followup = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["agent"] == "followup")
        .cloned()
        .expect("followup's instance");
    assert_eq!(followup["instance_id"], format!("followup#{session}"));
    assert_eq!(followup["state"], json!({ "asked": 2 }));
    assert_eq!(followup["calls"], 2);
    assert_eq!(view["turns"], 2);

    // Let the async agent finish, so that nothing of the session is in flight.
    eventually("the async result is kept", || async {
        (get(&stack, &path).await.body["pending_async_results"] == 1).then_some(())
    })
    .await;
    let mut needles = vec![session.clone()];
    for answer in [&first, &second] {
        for key in ["workflow_id", "async_workflow_id"] {
            needles.push(answer[key].as_str().unwrap().to_string());
        }
    }
    assert!(!items_mentioning(&stack, &needles).await.is_empty());
    let ended = request(&stack, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    assert_eq!(
        items_mentioning(&stack, &needles).await,
        Vec::<String>::new(),
        "nothing of the session is left in either table"
    );
    assert_eq!(get(&stack, &path).await.status, 404);
    let after = say(&stack, &session, json!({ "text": "still there?" })).await;
    assert_eq!(after.status, 404, "{:?}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_idle_time_out_ends_a_session_with_all_of_its_items() {
    let (stack, _agents) = conversation_stack("conv-idle").await;
    let session = open_session(&stack, json!({ "idle_timeout_s": 60 })).await;
    let answer = turn(&stack, &session, "hello").await;
    let path = format!("/v1/sessions/{session}");
    eventually("the async result is kept", || async {
        (get(&stack, &path).await.body["pending_async_results"] == 1).then_some(())
    })
    .await;
    let needles = vec![
        session.clone(),
        answer["workflow_id"].as_str().unwrap().to_string(),
        answer["async_workflow_id"].as_str().unwrap().to_string(),
    ];
    let report = sweep_at(&stack, now_ms() + 30_000).await;
    assert_eq!(report.sessions_ended, 0, "not idle long enough yet");
    let report = sweep_at(&stack, now_ms() + 61_000).await;
    assert_eq!(report.sessions_ended, 1, "{report:?}");
    assert_eq!(
        items_mentioning(&stack, &needles).await,
        Vec::<String>::new()
    );
    assert_eq!(get(&stack, &path).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_advance_and_the_task_stack_moves_to_the_next_task() {
    let stack = start_stack("conv-checkpoints", |_| {}).await;
    // Completes the current checkpoint on "done"; pushes a support task on "also".
    let checklist = agent(behaviour(|call| {
        let text = text_of(call);
        let current = call
            .pointer("/input/context/checkpoints")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["status"] != "complete"))
            .and_then(|c| c["id"].as_str())
            .map(str::to_string);
        let mut answer = json!({});
        if let (true, Some(id)) = (text.contains("done"), current) {
            answer["checkpoint_progress"] = json!({ id: "complete" });
        }
        if text.contains("also") {
            answer["push_task"] =
                json!({ "name": "sleep help", "checkpoints": ["Describe your nights"] });
        }
        answer
    }))
    .await;
    let primary = agent(behaviour(|_| json!({ "response": "ok" }))).await;
    register_conversational(
        &stack,
        "checklist",
        &checklist,
        json!({ "capabilities": ["conversation.checklist", "checkpoints.evaluate"], "conversation": { "role": "sync" } }),
    )
    .await;
    register_role(&stack, "primary", &primary, "core").await;
    let session = open_session(
        &stack,
        json!({ "task": "eat better", "checkpoints": ["Share your goal", { "id": "diet", "description": "Describe your diet" }] }),
    )
    .await;
    let view = get(&stack, &format!("/v1/sessions/{session}")).await.body;
    assert_eq!(view["checkpoints"][0]["id"], "main-1");
    assert_eq!(view["checkpoints"][0]["status"], "in_progress");
    assert_eq!(view["checkpoints"][1]["status"], "pending");

    let pushed = turn(&stack, &session, "I also need help with sleep").await;
    assert_eq!(pushed["task_stack"].as_array().unwrap().len(), 2);
    assert_eq!(pushed["task_stack"][1]["kind"], "support");
    assert_eq!(
        pushed["checkpoints"][0]["description"],
        "Describe your nights"
    );
    assert_eq!(pushed["checkpoints"][0]["status"], "in_progress");

    let support_done = turn(&stack, &session, "done with that").await;
    assert_eq!(support_done["task_stack"][1]["status"], "complete");
    assert_eq!(
        support_done["checkpoints"][0]["id"], "main-1",
        "back on the main task"
    );
    let moves = support_done["checkpoint_progress"].as_array().unwrap();
    assert!(moves
        .iter()
        .any(|m| m["task"] == "support-1" && m["to"] == "complete" && m["by"] == "checklist"));

    let goal_done = turn(&stack, &session, "done: I want more energy").await;
    assert_eq!(goal_done["checkpoints"][0]["status"], "complete");
    assert_eq!(goal_done["checkpoints"][1]["id"], "diet");
    assert_eq!(goal_done["checkpoints"][1]["status"], "in_progress");
    let last = turn(&stack, &session, "done, mostly bread").await;
    assert_eq!(last["task_stack"][0]["status"], "complete");
    assert_eq!(last["checkpoints"], json!([]), "no task is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_human_intervention_pauses_the_session_until_it_is_resumed() {
    let (stack, agents) = conversation_stack("conv-human").await;
    let human = agent(behaviour(
        |call| json!({ "requires_human": text_of(call).contains("human") }),
    ))
    .await;
    register_role(&stack, "human", &human, "sync").await;
    let session = open_session(&stack, json!({})).await;
    let asked = turn(&stack, &session, "let me talk to a human").await;
    assert_eq!(asked["requires_human"], true);
    assert_eq!(asked["is_paused"], true);

    let primary_calls = agents.primary.calls().len();
    let paused = say(&stack, &session, json!({ "text": "hello?" })).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["is_paused"], true);
    assert_eq!(paused.body["response"], Value::Null);
    assert_eq!(agents.primary.calls().len(), primary_calls, "no agent ran");

    let path = format!("/v1/sessions/{session}/resume");
    let resumed = post(
        &stack,
        &path,
        &json!({ "reply": "Hi, I am Sam." }).to_string(),
    )
    .await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    let again = post(&stack, &path, "{}").await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.body["error"]["code"], "not_paused");

    let after = turn(&stack, &session, "thanks").await;
    assert_eq!(after["is_paused"], false);
    let calls = agents.primary.calls();
    let context = &calls.last().unwrap().body["input"]["context"];
    assert_eq!(context["recent_turns"][0]["human_reply"], "Hi, I am Sam.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_turns_of_one_session_never_run_at_once() {
    let stack = start_stack("conv-concurrent", |_| {}).await;
    let slow = agent(Arc::new(|_: &Value| {
        AgentReply::ok(json!({ "response": "slow answer" }))
            .after(std::time::Duration::from_millis(1500))
    }))
    .await;
    register_role(&stack, "primary", &slow, "core").await;
    let session = open_session(&stack, json!({})).await;
    let (a, b) = tokio::join!(
        say(&stack, &session, json!({ "text": "first" })),
        say(&stack, &session, json!({ "text": "second" })),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let refused = if a.status == 409 { &a } else { &b };
    assert_eq!(refused.body["error"]["code"], "turn_in_progress");
    assert_eq!(slow.calls().len(), 1);

    // A turn not answered within `wait` is fetched later.
    let pending = say(&stack, &session, json!({ "text": "third", "wait": 0 })).await;
    assert_eq!(pending.status, 202, "{:?}", pending.body);
    let turn_path = pending.body["location"].as_str().unwrap().to_string();
    let answered = eventually("the turn is answered", || async {
        let view = get(&stack, &turn_path).await.body;
        (view["status"] == "answered").then_some(view)
    })
    .await;
    assert_eq!(answered["response"], "slow answer");
    assert_eq!(answered["turn"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrate_speaks_seed_001s_contract() {
    let (stack, _agents) = conversation_stack("conv-orchestrate").await;
    let query = json!({
        "text": "What should I eat for breakfast?",
        "conversation_id": "conv-001",
        "plan": "premium",
        "services": ["privacy", "followup", "nutrition"],
        "individual_id": "ind-42",
        "user_profile_id": "profile-7",
        "detected_agent": null,
        "agent_instance_id": "instance-3",
        "call_log_id": "call-9",
        "channel": "sms",
    });
    let response = baton_local::tenant_client("default")
        .build()
        .unwrap()
        .post(format!("{}/orchestrate", stack.api_url))
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let timing_header = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "state;dur=",
        "analysis;dur=",
        "primary;dur=",
        "total;dur=",
        "agent-nutrition;dur=",
    ] {
        assert!(timing_header.contains(part), "{timing_header}");
    }
    let body: Value = response.json().await.unwrap();
    for field in [
        "response",
        "conversation_id",
        "checkpoints",
        "checkpoint_progress",
        "task_stack",
        "sync_agent_results",
        "async_agent_results",
        "requires_human",
        "is_paused",
        "is_enriched",
        "timing_metrics",
    ] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    assert_eq!(body["conversation_id"], "conv-001");
    assert_eq!(body["sync_agent_results"].as_object().unwrap().len(), 3);
    let session = get(&stack, "/v1/sessions/conv-001").await.body;
    assert_eq!(session["metadata"]["call_log_id"], "call-9");
    assert_eq!(session["metadata"]["plan"], "premium");
    let again = post(
        &stack,
        "/orchestrate",
        &json!({ "text": "and lunch?", "conversation_id": "conv-001", "services": ["privacy"] })
            .to_string(),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["turn"], 2);
    assert_eq!(
        again.body["sync_agent_results"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["privacy"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_turns_are_refused_naming_the_field_and_store_nothing() {
    let (stack, _agents) = conversation_stack("conv-errors").await;
    let session = open_session(&stack, json!({})).await;
    let before = state_items(&stack).await;
    for (body, field) in [
        (json!({ "text": "   " }), "text"),
        (json!({ "text": "x".repeat(8_001) }), "text"),
        (
            json!({ "text": "hi", "detected_agent": "nobody" }),
            "detected_agent",
        ),
        (json!({ "text": "hi", "services": ["nobody"] }), "services"),
        (json!({ "text": "hi", "wait": 60 }), "wait"),
    ] {
        let answer = say(&stack, &session, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["details"]["field"], field, "{body}");
    }
    assert_eq!(
        say(&stack, &session, json!({ "txt": "hi" })).await.status,
        400
    );
    assert_eq!(
        say(&stack, "no-such-session", json!({ "text": "hi" }))
            .await
            .status,
        404
    );
    let resume = post(&stack, &format!("/v1/sessions/{session}/resume"), "{}").await;
    assert_eq!(resume.status, 409);
    assert_eq!(state_items(&stack).await, before, "nothing was stored");

    // Agents whose dependencies would form a cycle cannot be registered, so no session
    // meets one.
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register_conversational(
        &stack,
        "b",
        &server,
        json!({ "conversation": { "role": "sync" } }),
    )
    .await;
    register_conversational(
        &stack,
        "a",
        &server,
        json!({ "conversation": { "role": "sync", "depends_on": ["b"] } }),
    )
    .await;
    let cycle = request_with(
        &stack,
        reqwest::Method::PATCH,
        "/v1/agents/b",
        json!({ "conversation": { "role": "sync", "depends_on": ["a"] } }),
        &[("if-match", "\"1\"")],
    )
    .await;
    assert_eq!(cycle.status, 400, "{:?}", cycle.body);
    assert_eq!(
        cycle.body["error"]["details"]["field"],
        "conversation.depends_on"
    );
    assert_eq!(
        cycle.body["error"]["details"]["agents"],
        json!(["b", "a", "b"])
    );

    let ended = request(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/sessions/{session}"),
        None,
        None,
    )
    .await;
    assert_eq!(ended.status, 200);
    assert_eq!(
        say(&stack, &session, json!({ "text": "hi" })).await.status,
        404
    );
}

/// Sends a message the way a careful client does under faults: a 5xx or a 409 is followed by
/// a look at the session, and a turn that holds this text is the answer (it was started by an
/// earlier try whose answer was lost); otherwise the message is sent again.
async fn say_until_answered(stack: &LocalStack, session: &str, text: &str) -> Value {
    let session_path = format!("/v1/sessions/{session}");
    for _ in 0..60 {
        let answer = say(stack, session, json!({ "text": text, "wait": 5 })).await;
        let turn = match answer.status {
            200 => return answer.body,
            202 => answer.body["turn"].as_u64(),
            _ => {
                let view = get(stack, &session_path).await.body;
                let latest = view["turns"].as_u64().unwrap_or(0);
                let recorded = get(stack, &format!("{session_path}/turns/{latest}")).await;
                (recorded.body["text"] == text).then_some(latest)
            }
        };
        if let Some(turn) = turn {
            let path = format!("{session_path}/turns/{turn}");
            return eventually("the turn ends", || async {
                let view = get(stack, &path).await.body;
                (view["status"] != "running" && view["status"].is_string()).then_some(view)
            })
            .await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("`{text}` was never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_under_faults_are_answered_once_each_and_in_order() {
    let stack = start_stack("conv-chaos", |s| {
        s.faults = Some(baton_local::faults::FaultPlan::default());
        s.handler_death_rate = 0.05;
        recover_quickly(s);
    })
    .await;
    let counter = agent(behaviour(|call| {
        let seen = call
            .pointer("/input/state/seen")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        json!({ "seen": seen + 1, "state": { "seen": seen + 1 } })
    }))
    .await;
    let primary = agent(behaviour(
        |call| json!({ "response": format!("answer to {}", text_of(call)) }),
    ))
    .await;
    let background = agent(behaviour(|_| json!({ "noted": true }))).await;
    register_role(&stack, "counter", &counter, "sync").await;
    register_role(&stack, "primary", &primary, "core").await;
    register_role(&stack, "notes", &background, "async").await;
    let proxy = stack.faults().unwrap();
    // The first turn's start and end each lose their write's response: the retries meet their
    // own writes.
    use baton_local::faults::{Fault, FaultRule};
    proxy
        .add_rule(FaultRule::once(
            "TransactWriteItems",
            &["turn_request"],
            Fault::LoseResponse,
        ))
        .unwrap();
    proxy
        .add_rule(FaultRule::once(
            "TransactWriteItems",
            &["answered_at"],
            Fault::LoseResponse,
        ))
        .unwrap();
    proxy.set_plan(baton_local::faults::FaultPlan {
        seed: 7,
        duplicate_send_rate: 0.15,
        lost_write_response_rate: 0.03,
        throttle_rate: 0.02,
    });

    const SESSIONS: usize = 3;
    const TURNS: usize = 4;
    let sessions =
        futures::future::join_all((0..SESSIONS).map(|_| open_session(&stack, json!({})))).await;
    futures::future::join_all(sessions.iter().enumerate().map(|(s, session)| {
        let stack = &stack;
        async move {
            for t in 1..=TURNS {
                let text = format!("session {s} message {t}");
                let answer = say_until_answered(stack, session, &text).await;
                assert_eq!(answer["status"], "answered", "{answer}");
                assert_eq!(answer["response"], format!("answer to {text}"));
                assert_eq!(answer["turn"], t as u64, "{answer}");
            }
        }
    }))
    .await;
    assert_eq!(proxy.pending_rules(), 0, "both targeted faults happened");
    for session in &sessions {
        let view = get(&stack, &format!("/v1/sessions/{session}")).await.body;
        assert_eq!(view["turns"], TURNS as u64);
        assert_eq!(view["active_turn"], Value::Null);
        let turns: Vec<u64> = view["recent_turns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["turn"].as_u64().unwrap())
            .collect();
        assert_eq!(
            turns,
            (1..=TURNS as u64).collect::<Vec<_>>(),
            "each turn recorded once"
        );
        let counter = view["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["agent"] == "counter")
            .cloned()
            .unwrap();
        assert_eq!(
            counter["calls"], TURNS as u64,
            "one instance update per turn: {counter}"
        );
        assert_eq!(counter["state"]["seen"], TURNS as u64);
    }
    let faults = proxy.report();
    eprintln!(
        "faults: {faults:?}, handler deaths: {}",
        stack.handler_deaths()
    );
    assert!(faults.duplicated_sends > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_longer_than_the_idle_time_out_is_answered_and_the_idle_clock_starts_at_its_answer()
{
    use baton_types::session::MIN_IDLE_TIMEOUT_S;
    let idle_ms = MIN_IDLE_TIMEOUT_S as i64 * 1000;
    // The sweep every half second, as the schedule would run it if it ran that often.
    let stack = start_stack("conv-long-turn", |s| {
        s.sweep_every = Some(std::time::Duration::from_millis(500));
    })
    .await;
    let slow = agent(Arc::new(move |_: &Value| {
        AgentReply::ok(json!({ "response": "worth the wait" }))
            .after(std::time::Duration::from_secs(MIN_IDLE_TIMEOUT_S + 3))
    }))
    .await;
    register_conversational(
        &stack,
        "primary",
        &slow,
        json!({ "conversation": { "role": "core" }, "timeout_ms": idle_ms + 30_000 }),
    )
    .await;
    let session = open_session(&stack, json!({ "idle_timeout_s": MIN_IDLE_TIMEOUT_S })).await;
    let asked = say(
        &stack,
        &session,
        json!({ "text": "take your time", "wait": 28 }),
    )
    .await;
    assert_eq!(asked.status, 202, "{:?}", asked.body);
    let turn_path = asked.body["location"].as_str().unwrap().to_string();
    let answered = eventually("the turn is answered", || async {
        let view = get(&stack, &turn_path).await;
        assert_eq!(
            view.status, 200,
            "the session ended under its turn: {:?}",
            view.body
        );
        (view.body["status"] != "running").then_some(view.body)
    })
    .await;
    assert_eq!(answered["status"], "answered", "{answered}");
    assert_eq!(answered["response"], "worth the wait");

    // The idle clock runs from the answer.
    let answered_at = baton_types::clock::parse_rfc3339(answered["answered_at"].as_str().unwrap())
        .expect("answered_at");
    let path = format!("/v1/sessions/{session}");
    let view = get(&stack, &path).await.body;
    assert_eq!(view["active_turn"], Value::Null, "{view}");
    assert_eq!(view["last_active_at"], answered["answered_at"]);
    let expires_at =
        baton_types::clock::parse_rfc3339(view["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires_at, answered_at + idle_ms);
    // The sweep (the scheduled one, as of chosen times) leaves it until a whole idle time-out
    // has passed since the answer, and ends it then.
    let report = sweep_at(&stack, answered_at + idle_ms - 1).await;
    assert_eq!(report.sessions_ended, 0, "{report:?}");
    assert_eq!(get(&stack, &path).await.status, 200);
    let report = sweep_at(&stack, answered_at + idle_ms + 1).await;
    assert_eq!(report.sessions_ended, 1, "{report:?}");
    assert_eq!(get(&stack, &path).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_async_results_are_shown_as_bounded_previews_and_the_session_goes_on() {
    use baton_types::turn::RESULT_PREVIEW_BYTES;
    const LARGE: usize = 250 * 1024;
    let stack = start_stack("conv-large-async", |_| {}).await;
    let large = |name: &'static str| {
        behaviour(move |_| json!({ "notes": "n".repeat(LARGE), "from": name }))
    };
    let digest = agent(large("digest")).await;
    let archive = agent(large("archive")).await;
    let privacy = agent(behaviour(|_| json!({ "personal_data": false }))).await;
    let primary = agent(behaviour(
        |call| json!({ "response": format!("heard `{}`", text_of(call)), "mood": "calm" }),
    ))
    .await;
    register_role(&stack, "digest", &digest, "async").await;
    register_role(&stack, "archive", &archive, "async").await;
    register_role(&stack, "privacy", &privacy, "sync").await;
    register_role(&stack, "primary", &primary, "core").await;
    let session = open_session(&stack, json!({})).await;
    let path = format!("/v1/sessions/{session}");
    let both_kept = || async {
        eventually("both async results are kept", || async {
            (get(&stack, &path).await.body["pending_async_results"] == 2).then_some(())
        })
        .await
    };

    let first = turn(&stack, &session, "one").await;
    assert_eq!(first["async_agent_results"], json!({}));
    for (n, text) in [(2, "two"), (3, "three")] {
        both_kept().await;
        let answer = turn(&stack, &session, text).await;
        assert_eq!(answer["response"], format!("heard `{text}`"));
        assert_eq!(answer["answer"]["response"], format!("heard `{text}`"));
        assert_eq!(answer["answer"]["mood"], "calm");
        let shown = answer["async_agent_results"].as_object().unwrap();
        assert_eq!(shown.len(), 2, "{shown:?}");
        for agent in ["digest", "archive"] {
            let result = &shown[agent];
            assert_eq!(result["turn"], n - 1, "{result}");
            assert_eq!(result["truncated"], true, "{result}");
            assert!(result["bytes"].as_u64().unwrap() > LARGE as u64, "{result}");
            let preview = result["preview"].as_str().unwrap();
            assert!(preview.starts_with(r#"{"notes":"nnn"#), "{preview:.40}");
            assert!(json!(preview).to_string().len() <= RESULT_PREVIEW_BYTES);
            // The whole result is where the preview says.
            let url = result["url"].as_str().unwrap();
            let whole = get(&stack, url).await;
            assert_eq!(whole.status, 200, "{:?}", whole.body);
            assert_eq!(whole.body["output"]["notes"].as_str().unwrap().len(), LARGE);
        }
        // Only the answering agent received them, bounded too.
        let call = &primary.calls()[n as usize - 1].body;
        let context = &call["input"]["context"]["async_agent_results"];
        assert_eq!(context["digest"]["truncated"], true, "{context:.300}");
        let helper = &privacy.calls()[n as usize - 1].body;
        assert_eq!(helper["input"]["context"]["async_agent_results"], json!({}));
        assert!(helper["input"].get("async_agent_results").is_none());
    }
    // The turn's item keeps the response once: in `response`, not again in `answer`.
    let turns: Vec<_> = table_items(&stack, &stack.settings.state_table)
        .await
        .into_iter()
        .filter(|item| item["sk"].as_s().is_ok_and(|sk| sk.starts_with("TURN#")))
        .collect();
    assert_eq!(turns.len(), 3);
    for item in &turns {
        let answer = item["answer"].as_s().unwrap();
        assert!(!answer.contains("heard"), "{answer}");
        assert!(item["response"].as_s().unwrap().starts_with("heard"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_larger_than_a_turn_keeps_is_cut_with_its_url_and_the_session_goes_on() {
    use baton_types::turn::{AGENT_STATE_BYTES, ANSWER_BYTES};
    const LARGE: usize = 600 * 1024;
    let stack = start_stack("conv-large-answer", |_| {}).await;
    let primary = agent(behaviour(|call| {
        let text = text_of(call);
        let kept = call.pointer("/input/state/n").and_then(Value::as_u64);
        match text.as_str() {
            // An answer, and a state, each past what a turn keeps.
            "long" => json!({ "response": "r".repeat(LARGE), "state": { "n": 1,
                "pad": "s".repeat(AGENT_STATE_BYTES) } }),
            _ => json!({ "response": format!("short, state {kept:?}"), "state": { "n": 2 } }),
        }
    }))
    .await;
    register_role(&stack, "primary", &primary, "core").await;
    let session = open_session(&stack, json!({})).await;
    let first = turn(&stack, &session, "hello").await;
    assert_eq!(first["response"], "short, state None");

    let long = turn(&stack, &session, "long").await;
    let response = long["response"].as_str().expect("a response");
    assert!(response.len() <= ANSWER_BYTES && response.starts_with("rrr"));
    assert_eq!(long["answer"]["truncated"], true, "{:.300}", long["answer"]);
    assert!(long["answer"]["bytes"].as_u64().unwrap() > LARGE as u64);
    let url = long["answer"]["url"].as_str().expect("a url");
    let whole = get(&stack, url).await;
    assert_eq!(whole.status, 200, "{:?}", whole.body);
    assert_eq!(
        whole.body["output"]["response"].as_str().map(str::len),
        Some(LARGE)
    );

    // The state too large to keep was not kept: the next call gets the one before.
    let next = turn(&stack, &session, "again").await;
    assert_eq!(next["response"], "short, state Some(2)");
    for item in table_items(&stack, &stack.settings.state_table).await {
        let size = format!("{item:?}").len();
        assert!(size < 300 * 1024, "an item of {size} bytes");
    }
}
