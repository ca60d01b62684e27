//! The agent kinds end to end on the local stack: `lambda` through the SDK's Lambda client,
//! `bedrock` through its Bedrock Runtime client, and `openai` through the HTTP client with its
//! key read from SSM or Secrets Manager in the emulator, each against the stack's stand-in.
//! Token usage lands on the attempt and in learning; failures retry or not as each kind's
//! contract says; bad registrations are refused by field and store nothing.

use baton_local::bedrock_service::{BRIEF_MODEL, KEYWORDS_MODEL};
use baton_local::lambda_service::{function, FAILS, SUMMARIZE};
use baton_local::openai_service;
use baton_local::stack::LocalStack;
use baton_local::stand_ins::StandIns;
use baton_tests::*;
use serde_json::{json, Value};

const TEXT: &str =
    "Queues decouple the steps of a workflow. Each step runs when its inputs are ready. \
                    Failures are retried with backoff.";

/// A quick policy, so tests do not wait for the built-in backoff.
fn quick_retry(max_attempts: u32) -> Value {
    json!({ "max_attempts": max_attempts, "backoff": "fixed", "base_ms": 50, "jitter": "none" })
}

fn stand_ins(stack: &LocalStack) -> &StandIns {
    stack.stand_ins().expect("the stack runs the stand-ins")
}

/// Registers an agent of any kind with `capability`, a quick retry policy and a short
/// time-out.
async fn register_kind(stack: &LocalStack, name: &str, capability: &str, target: Value) {
    let mut body = json!({
        "name": name, "capabilities": [capability], "timeout_ms": 5000, "retry": quick_retry(3),
    });
    body.as_object_mut()
        .unwrap()
        .extend(target.as_object().cloned().unwrap());
    register(stack, body).await;
}

fn one_task(capability: &str, input: Value) -> Value {
    json!({ "name": "one", "tasks": [{ "id": "t", "capability": capability, "input": input }] })
}

/// Two steps: `first` on `capability`, then `second` on the same capability, given the first's
/// output.
fn two_steps(capability: &str) -> Value {
    json!({ "name": "two", "tasks": [
        { "id": "first", "capability": capability, "input": { "text": TEXT } },
        { "id": "second", "capability": capability, "depends_on": ["first"],
          "input": { "prompt": "Say what the first step found." } },
    ]})
}

fn attempts(workflow: &Value, task_id: &str) -> Vec<Value> {
    task(workflow, task_id)["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn usage_of(attempt: &Value) -> (u64, u64) {
    let usage = &attempt["usage"];
    (
        usage["input_tokens"].as_u64().expect("input tokens"),
        usage["output_tokens"].as_u64().expect("output tokens"),
    )
}

/// Every attempt's usage, summed over the workflow's tasks.
fn total_usage(workflow: &Value) -> (u64, u64) {
    workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["attempts"].as_array().cloned().unwrap_or_default())
        .filter(|a| !a["usage"].is_null())
        .map(|a| usage_of(&a))
        .fold((0, 0), |(i, o), (di, dout)| (i + di, o + dout))
}

/// The agent's learned token totals once learning has seen `outcomes` calls.
async fn learned_tokens(
    stack: &LocalStack,
    agent: &str,
    task_type: &str,
    outcomes: u64,
) -> (u64, u64) {
    let stats = learned_stats(stack, agent, task_type, outcomes).await;
    (stats.input_tokens, stats.output_tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lambda_agent_runs_through_invoke_and_its_reported_usage_is_kept() {
    let stack = start_stack("lambda", |_| {}).await;
    let service = &stand_ins(&stack).lambda;
    register_kind(
        &stack,
        "summarizer",
        "summarize",
        json!({ "kind": "lambda", "function": function("default", SUMMARIZE) }),
    )
    .await;
    let id = submit(&stack, &two_steps("summarize")).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");

    let first = task(&workflow, "first");
    assert_eq!(
        first["output"]["summary"],
        "Queues decouple the steps of a workflow."
    );
    // The function reported its usage in its result; the attempt keeps what it reported.
    let tried = attempts(&workflow, "first");
    assert_eq!(tried.len(), 1);
    assert_eq!(tried[0]["usage"], first["output"]["usage"]);

    // The function got the http body, with the dependencies and the idempotency key.
    let calls = service.calls();
    let second = calls
        .iter()
        .find(|c| c["payload"]["task_id"] == "second")
        .expect("the second step was invoked");
    assert_eq!(second["function"], function("default", SUMMARIZE));
    assert_eq!(second["payload"]["tenant"], "default");
    assert_eq!(second["payload"]["dependencies"]["first"], first["output"]);
    assert!(second["payload"]["idempotency_key"]
        .as_str()
        .is_some_and(|k| k.contains("second")));

    // Learning sums the tokens of both calls.
    assert_eq!(
        learned_tokens(&stack, "summarizer", "summarize", 2).await,
        total_usage(&workflow)
    );
    // The calls built the client of the agents' AWS APIs.
    assert!(stack.execute_deps().invoker.aws_client_built());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lambda_function_error_fails_the_task_without_a_retry() {
    let stack = start_stack("lambda-error", |_| {}).await;
    register_kind(
        &stack,
        "faulty",
        "work",
        json!({ "kind": "lambda", "function": function("default", FAILS) }),
    )
    .await;
    let id = submit(&stack, &one_task("work", json!({ "text": "anything" }))).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let tried = attempts(&workflow, "t");
    assert_eq!(tried.len(), 1, "{tried:#?}");
    let error = &task(&workflow, "t")["error"];
    assert_eq!(error["kind"], "function_error");
    assert_eq!(error["retryable"], false);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("RuntimeError: this example function always fails"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_function_fails_for_good_and_a_throttled_one_is_retried_until_it_answers() {
    let stack = start_stack("lambda-throttle", |_| {}).await;
    register_kind(
        &stack,
        "missing",
        "gone",
        json!({ "kind": "lambda", "function": "baton-agent-default-none" }),
    )
    .await;
    let id = submit(&stack, &one_task("gone", json!({}))).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(attempts(&workflow, "t").len(), 1);
    let error = &task(&workflow, "t")["error"];
    assert_eq!(
        (error["kind"].as_str(), error["http_status"].as_u64()),
        (Some("service_error"), Some(404))
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("ResourceNotFoundException"));

    register_kind(
        &stack,
        "busy",
        "summarize",
        json!({ "kind": "lambda", "function": function("default", SUMMARIZE) }),
    )
    .await;
    stand_ins(&stack).lambda.throttle_next(2);
    let id = submit(&stack, &one_task("summarize", json!({ "text": TEXT }))).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let tried = attempts(&workflow, "t");
    let outcomes: Vec<&str> = tried
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    for throttled in &tried[..2] {
        assert_eq!(throttled["error"]["http_status"], 429);
        assert_eq!(throttled["error"]["retryable"], true);
        assert!(throttled["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TooManyRequestsException"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bedrock_agent_answers_through_converse_with_its_prompt_and_the_dependencies() {
    let stack = start_stack("bedrock", |_| {}).await;
    register_kind(
        &stack,
        "brief",
        "brief",
        json!({ "kind": "bedrock", "model_id": BRIEF_MODEL, "system_prompt": "Answer in one sentence.",
                "inference": { "max_tokens": 50, "temperature": 0.2, "stop_sequences": ["###"] } }),
    )
    .await;
    let id = submit(&stack, &two_steps("brief")).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");

    let first = task(&workflow, "first");
    assert_eq!(
        first["output"]["content"],
        "Queues decouple the steps of a workflow."
    );
    assert_eq!(first["output"]["stop_reason"], "end_turn");
    let tried = attempts(&workflow, "first");
    assert_eq!(tried[0]["usage"], first["output"]["usage"]);
    let second = task(&workflow, "second");
    assert_eq!(
        second["output"]["content"],
        "Say what the first step found."
    );

    // What Converse got: the system prompt, the dependencies as a second system block, the
    // input's text as the user message, and the inference configuration.
    let calls = stand_ins(&stack).bedrock.calls();
    let request = &calls
        .iter()
        .find(|c| {
            c["request"]["messages"][0]["content"][0]["text"] == "Say what the first step found."
        })
        .expect("the second step's request")["request"];
    assert_eq!(request["system"][0]["text"], "Answer in one sentence.");
    let dependencies = request["system"][1]["text"].as_str().unwrap();
    assert!(dependencies.starts_with(baton_aws::invoker::prompt::DEPENDENCIES_PREAMBLE));
    assert!(dependencies.contains("Queues decouple the steps of a workflow."));
    assert_eq!(request["inferenceConfig"]["maxTokens"], 50);
    assert_eq!(request["inferenceConfig"]["stopSequences"], json!(["###"]));

    assert_eq!(
        learned_tokens(&stack, "brief", "brief", 2).await,
        total_usage(&workflow)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_bedrock_call_is_retried_and_an_invalid_model_is_not() {
    // The operator allows a model the service does not have: Bedrock itself refuses it.
    let stack = start_stack("bedrock-errors", |options| {
        options.env_overrides.insert(
            "BATON_BEDROCK_MODELS".into(),
            format!("{KEYWORDS_MODEL},baton.none-v1"),
        );
    })
    .await;
    register_kind(
        &stack,
        "keywords",
        "keywords",
        json!({ "kind": "bedrock", "model_id": KEYWORDS_MODEL }),
    )
    .await;
    stand_ins(&stack).bedrock.throttle_next(1);
    let id = submit(&stack, &one_task("keywords", json!({ "text": TEXT }))).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let tried = attempts(&workflow, "t");
    assert_eq!(tried.len(), 2);
    assert!(tried[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ThrottlingException"));
    assert_eq!(tried[0]["error"]["retryable"], true);
    assert!(tried[0]["usage"].is_null());
    assert_eq!(tried[1]["usage"], task(&workflow, "t")["output"]["usage"]);

    register_kind(
        &stack,
        "unknown-model",
        "other",
        json!({ "kind": "bedrock", "model_id": "baton.none-v1" }),
    )
    .await;
    let id = submit(&stack, &one_task("other", json!({ "text": TEXT }))).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    assert_eq!(attempts(&workflow, "t").len(), 1);
    let error = &task(&workflow, "t")["error"];
    assert_eq!(error["retryable"], false);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("ValidationException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_openai_agent_uses_the_key_from_ssm_or_secrets_manager_and_never_shows_it() {
    let stack = start_stack("openai", |_| {}).await;
    let stand_ins = stand_ins(&stack);
    let key = stand_ins.openai.key().to_string();
    let base_url = format!("{}/v1", stand_ins.openai.url());
    register_kind(
        &stack,
        "chat-ssm",
        "chat",
        json!({ "kind": "openai", "base_url": base_url, "model": openai_service::BRIEF_MODEL,
                "system_prompt": "Be brief.", "parameters": { "temperature": 0.1, "max_tokens": 40 },
                "api_key": stand_ins.key_parameter }),
    )
    .await;
    register_kind(
        &stack,
        "chat-secret",
        "keywords",
        json!({ "kind": "openai", "base_url": base_url, "model": openai_service::KEYWORDS_MODEL,
                "api_key": stand_ins.key_secret_arn }),
    )
    .await;
    let workflow = json!({ "name": "chat", "tasks": [
        { "id": "brief", "capability": "chat", "input": { "prompt": TEXT } },
        { "id": "words", "capability": "keywords", "input": { "messages": [
            { "role": "user", "content": "Queues and queues of retried steps; steps again." } ] } },
    ]});
    let id = submit(&stack, &workflow).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let brief = &task(&workflow, "brief")["output"];
    assert_eq!(brief["content"], "Queues decouple the steps of a workflow.");
    assert_eq!(brief["model"], openai_service::BRIEF_MODEL);
    assert_eq!(brief["finish_reason"], "stop");
    assert_eq!(
        task(&workflow, "words")["output"]["content"],
        "queues, steps, retried, again"
    );
    assert_eq!(attempts(&workflow, "brief")[0]["usage"], brief["usage"]);

    // The key reached the server, with the agent's parameters and messages.
    let calls = stand_ins.openai.calls();
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call["authorization"], format!("Bearer {key}"));
    }
    let request = &calls
        .iter()
        .find(|c| c["request"]["model"] == openai_service::BRIEF_MODEL)
        .unwrap()["request"];
    assert_eq!(request["temperature"], 0.1);
    assert_eq!(
        request["messages"],
        json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": TEXT }])
    );

    // It never shows: not in the API's view of the agents, not in any stored item.
    for name in ["chat-ssm", "chat-secret"] {
        let view = agent_view(&stack, name).await;
        assert!(!view.to_string().contains(&key), "{view}");
    }
    assert_eq!(
        agent_view(&stack, "chat-ssm").await["api_key"],
        stand_ins.key_parameter.as_str()
    );
    let listed = get(&stack, "/v1/agents").await;
    assert!(!listed.body.to_string().contains(&key));
    for item in state_table(&stack).await {
        assert!(!format!("{item:?}").contains(&key));
    }
    assert!(!workflow.to_string().contains(&key));
    assert_eq!(
        learned_tokens(&stack, "chat-ssm", "chat", 1).await,
        usage_of(&attempts(&workflow, "brief")[0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_openai_call_waits_its_retry_after_and_then_succeeds() {
    let stack = start_stack("openai-429", |_| {}).await;
    let stand_ins = stand_ins(&stack);
    register_kind(
        &stack,
        "chat",
        "chat",
        json!({ "kind": "openai", "base_url": format!("{}/v1", stand_ins.openai.url()),
                "model": openai_service::BRIEF_MODEL, "api_key": stand_ins.key_parameter }),
    )
    .await;
    stand_ins.openai.throttle_next(1);
    let id = submit(
        &stack,
        &one_task("chat", json!("Rate limits pass. Then it answers.")),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let tried = attempts(&workflow, "t");
    assert_eq!(tried.len(), 2);
    assert_eq!(tried[0]["error"]["http_status"], 429);
    // The server asked for a second; the policy's 50 ms gave way to it.
    assert!(
        tried[0]["retry_delay_ms"].as_u64().unwrap() >= 1_000,
        "{:#}",
        tried[0]
    );
    assert_eq!(
        task(&workflow, "t")["output"]["content"],
        "Rate limits pass."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_registrations_name_their_field_and_store_nothing() {
    let stack = start_stack("kinds-refused", |_| {}).await;
    let before = state_items(&stack).await;
    let base = |extra: Value| {
        let mut body = json!({ "name": "refused", "capabilities": ["x"] });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap());
        body
    };
    for (extra, field) in [
        (
            json!({ "kind": "smtp", "endpoint": "https://agent.example/" }),
            "kind",
        ),
        (json!({ "kind": "lambda" }), "function"),
        (
            json!({ "kind": "openai", "base_url": "https://api.example/v1" }),
            "model",
        ),
        (json!({ "kind": "bedrock" }), "model_id"),
        (
            json!({ "kind": "lambda", "function": "f", "endpoint": "https://agent.example/" }),
            "endpoint",
        ),
        (
            json!({ "kind": "bedrock", "model_id": "m", "api_key": "/baton/k" }),
            "api_key",
        ),
        (
            json!({ "kind": "lambda", "function": "not a function" }),
            "function",
        ),
        (
            json!({ "kind": "openai", "base_url": "https://api.example/v1", "model": "m",
                 "api_key": "sk-live-1234567890 plain key" }),
            "api_key",
        ),
        (
            json!({ "kind": "openai", "base_url": "https://api.example/v1", "model": "m",
                 "api_key": "arn:aws:s3:::bucket/key" }),
            "api_key",
        ),
        (
            json!({ "kind": "openai", "base_url": "https://api.example/v1", "model": "m",
                 "parameters": { "messages": [] } }),
            "parameters.messages",
        ),
        (
            json!({ "kind": "bedrock", "model_id": "m", "inference": { "temperature": 3 } }),
            "inference.temperature",
        ),
        (
            json!({ "kind": "lambda", "function": "f", "health_check": { "path": "/health" } }),
            "health_check",
        ),
    ] {
        let body = base(extra);
        let answer = post(&stack, "/v1/agents", &body.to_string()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(
            answer.body["error"]["details"]["field"], field,
            "{body}: {}",
            answer.body
        );
    }
    assert_eq!(state_items(&stack).await, before);
    assert_eq!(get(&stack, "/v1/agents/refused").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stack_that_calls_only_http_agents_builds_no_aws_agent_client() {
    let stack = start_stack("http-only", |_| {}).await;
    let server = agent_replying(baton_local::agents::AgentReply::ok(json!({ "ok": true }))).await;
    register_agent(&stack, "plain", &server, &["work"]).await;
    let id = submit(&stack, &one_task("work", json!({}))).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    assert!(!stack.execute_deps().invoker.aws_client_built());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_openai_agent_in_a_conversation_receives_the_earlier_turns_as_its_history() {
    let stack = start_stack("openai-history", |_| {}).await;
    let stand_ins = stand_ins(&stack);
    register_kind(
        &stack,
        "talker",
        "chat",
        json!({ "kind": "openai", "base_url": format!("{}/v1", stand_ins.openai.url()),
                "model": openai_service::BRIEF_MODEL, "api_key": stand_ins.key_parameter,
                "system_prompt": "Be brief.", "conversation": { "role": "core" } }),
    )
    .await;
    let opened = post(&stack, "/v1/sessions", "{}").await;
    assert_eq!(opened.status, 201, "{:#}", opened.body);
    let session = opened.body["session_id"].as_str().unwrap().to_string();
    let path = format!("/v1/sessions/{session}/messages");
    let texts = [
        "Tell me about queues. They decouple.",
        "And retries? They repeat.",
        "Summing up now. Thanks.",
    ];
    let mut answers = Vec::new();
    for text in texts {
        let answer = post(&stack, &path, &json!({ "text": text }).to_string()).await;
        assert_eq!(
            (answer.status, answer.body["status"].as_str()),
            (200, Some("answered")),
            "{:#}",
            answer.body
        );
        answers.push(answer.body);
    }
    assert!(answers[0]["history"].is_null(), "the first turn has none");
    assert_eq!(
        answers[2]["history"],
        json!({ "earlier_turns": 2 }),
        "nothing dropped yet"
    );
    let calls = stand_ins.openai.calls();
    assert_eq!(calls.len(), 3);
    let third = &calls[2]["request"]["messages"];
    assert_eq!(
        third,
        &json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": texts[0] },
            { "role": "assistant", "content": "Tell me about queues." },
            { "role": "user", "content": texts[1] },
            { "role": "assistant", "content": "And retries?" },
            { "role": "user", "content": texts[2] },
        ]),
        "the third call carries the first two turns"
    );
    let first = &calls[0]["request"]["messages"];
    assert_eq!(
        first.as_array().unwrap().len(),
        2,
        "no history before the first turn: {first:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_conversation_is_summarised_by_the_tenants_summarizer_and_the_answer_says_so() {
    let stack = start_stack("openai-summary", |_| {}).await;
    let stand_ins = stand_ins(&stack);
    let openai = |system: &str, conversation: Option<Value>| {
        let mut target = json!({ "kind": "openai", "base_url": format!("{}/v1", stand_ins.openai.url()),
                "model": openai_service::BRIEF_MODEL, "api_key": stand_ins.key_parameter,
                "system_prompt": system });
        if let Some(conversation) = conversation {
            target["conversation"] = conversation;
        }
        target
    };
    register_kind(
        &stack,
        "talker",
        "chat",
        openai("Be brief.", Some(json!({ "role": "core" }))),
    )
    .await;
    // Not a session member: the tenant's summarizer is found by its capability.
    register_kind(&stack, "keeper", "summarize", openai("Summarise.", None)).await;
    let opened = post(&stack, "/v1/sessions", r#"{"history_turns": 2}"#).await;
    assert_eq!(opened.status, 201, "{:#}", opened.body);
    let session = opened.body["session_id"].as_str().unwrap().to_string();
    let say = |n: u32| {
        let (stack, session) = (&stack, &session);
        async move {
            let path = format!("/v1/sessions/{session}/messages");
            let text = format!("Message number {n}. More words.");
            let answer = post(stack, &path, &json!({ "text": text }).to_string()).await;
            assert_eq!(answer.body["status"], "answered", "{:#}", answer.body);
            answer.body
        }
    };
    let summary_through = |through: u32| {
        let (stack, session) = (&stack, &session);
        async move {
            eventually("the summary is kept", || async {
                let view = get(stack, &format!("/v1/sessions/{session}")).await.body;
                (view["summary"]["through_turn"].as_u64() >= Some(through as u64)).then_some(view)
            })
            .await
        }
    };
    say(1).await;
    say(2).await;
    let third = say(3).await;
    assert_eq!(third["history"], json!({ "earlier_turns": 2 }));
    assert_eq!(third["agents"]["summarizer"], "keeper");
    assert_eq!(third["agents"]["summarizes_through"], 1, "{:#}", third);
    let view = summary_through(1).await;
    assert_eq!(view["summary"]["agent"], "keeper");
    assert_eq!(
        view["summary"]["text"],
        "Update the running summary of this conversation with the turns below."
    );
    assert_eq!(view["history_turns"], 2);
    let fourth = say(4).await;
    assert_eq!(
        fourth["history"],
        json!({ "earlier_turns": 2, "summarized_through": 1 }),
        "turns 2 and 3 word for word, turn 1 in the summary"
    );
    let calls = stand_ins.openai.calls();
    let summarizer_call = calls
        .iter()
        .find(|c| c["request"]["messages"][0]["content"] == "Summarise.")
        .expect("the summarizer was called");
    let asked = summarizer_call["request"]["messages"][1]["content"]
        .as_str()
        .unwrap();
    assert!(
        asked.contains("Turn 1\nUser: Message number 1. More words.\nAssistant: Message number 1."),
        "{asked}"
    );
    assert!(
        !asked.contains("number 2"),
        "only turn 1 is folded: {asked}"
    );
    // The core's call for turn 4. Turn 4's summarizer (folding turn 2) runs beside it, so the
    // call may come before or after that summary is kept: either way each earlier turn comes
    // once, in the summary or word for word, never both and never neither.
    let fourth_call = calls
        .iter()
        .find(|c| {
            let messages = c["request"]["messages"].as_array().unwrap();
            c["request"]["messages"][0]["content"] == "Be brief."
                && messages.last().unwrap()["content"] == "Message number 4. More words."
        })
        .unwrap();
    let contents: Vec<&str> = fourth_call["request"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let summarized = contents[1]
        .strip_prefix("Summary of the earlier conversation, through turn ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the summary comes second: {contents:#?}"));
    assert!([1, 2].contains(&summarized), "{contents:#?}");
    let mut expected = vec![
        "Be brief.".to_string(),
        format!(
            "Summary of the earlier conversation, through turn {summarized}:\n\
             Update the running summary of this conversation with the turns below."
        ),
    ];
    for turn in summarized + 1..4 {
        expected.push(format!("Message number {turn}. More words."));
        expected.push(format!("Message number {turn}."));
    }
    expected.push("Message number 4. More words.".into());
    assert_eq!(contents, expected);
    // The fourth turn folds turn 2; the summary moves on and the history keeps turns 3 and 4.
    let view = summary_through(2).await;
    let kept: Vec<u64> = view["recent_turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["turn"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [3, 4]);
}
