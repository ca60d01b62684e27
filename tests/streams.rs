//! Streaming on the local stack: an agent's answer reaches clients as it is produced, as a
//! numbered log read from any point over the HTTP API.

use baton_local::openai_service::BRIEF_MODEL;
use baton_local::stack::LocalStack;
use baton_tests::*;
use serde_json::{json, Value};

const TEXT: &str = "Streams carry an answer while it is written, word after word after word. \
                    Nothing else.";

/// Every event of a task's stream, read in pieces of at most one answer each, `after` the
/// last number read, until the stream ends.
async fn read_stream(stack: &LocalStack, workflow: &str, task: &str) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut after = 0;
    for _ in 0..200 {
        let path = format!("/v1/workflows/{workflow}/tasks/{task}/events?after={after}&wait=5");
        let answer = get(stack, &path).await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        events.extend(answer.body["events"].as_array().unwrap().iter().cloned());
        after = answer.body["next_after"].as_u64().unwrap();
        if answer.body["done"] == true {
            return events;
        }
    }
    panic!("the stream never ended: {events:#?}");
}

/// Registers an openai agent on the stand-in's brief model, with `extra` fields.
async fn register_openai(stack: &LocalStack, name: &str, capability: &str, extra: Value) {
    let stand_ins = stack.stand_ins().expect("the stack runs the stand-ins");
    let mut body = json!({
        "name": name, "capabilities": [capability], "timeout_ms": 10000,
        "kind": "openai", "base_url": format!("{}/v1", stand_ins.openai.url()),
        "model": BRIEF_MODEL, "api_key": stand_ins.key_parameter,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    register(stack, body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_openai_agents_answer_streams_and_its_chunks_add_up_to_the_output() {
    let stack = start_stack("stream-openai", |_| {}).await;
    let stand_ins = stack.stand_ins().expect("the stack runs the stand-ins");
    register_openai(&stack, "writer", "write", json!({})).await;
    let workflow = json!({ "name": "streamed", "tasks": [
        { "id": "t", "capability": "write", "stream": true, "input": { "text": TEXT } },
    ]});
    let id = submit(&stack, &workflow).await;
    let events = read_stream(&stack, &id, "t").await;
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");

    let numbers: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        numbers,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "numbered from 1, each once, in order"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"end"));
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "chunk"),
        "{kinds:?}"
    );
    assert!(
        kinds.len() > 3,
        "the answer came in more than one chunk: {kinds:?}"
    );
    let streamed: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    let output = &task(&finished, "t")["output"];
    assert_eq!(
        output["content"].as_str(),
        Some(streamed.as_str()),
        "the chunks add up to the recorded output"
    );
    assert_eq!(
        streamed,
        "Streams carry an answer while it is written, word after word after word."
    );
    assert_eq!(events.last().unwrap()["status"], "succeeded");
    // The stand-in was asked to stream, with the usage at the end.
    let calls = stand_ins.openai.calls();
    assert_eq!(calls[0]["request"]["stream"], true);
    assert!(output["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Read again from the middle: the same events, from there on.
    let middle = numbers[numbers.len() / 2];
    let again = get(
        &stack,
        &format!("/v1/workflows/{id}/tasks/t/events?after={middle}&wait=0"),
    )
    .await;
    let again: Vec<Value> = again.body["events"].as_array().unwrap().clone();
    assert_eq!(again, events[middle as usize..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_does_not_stream_has_only_its_end_and_bad_reads_are_refused() {
    let stack = start_stack("stream-plain", |_| {}).await;
    let server = agent_replying(baton_local::agents::AgentReply::ok(json!({ "ok": true }))).await;
    register_agent(&stack, "plain", &server, &["work"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "plain", "tasks": [{ "id": "t", "capability": "work", "input": {} }] }),
    )
    .await;
    let events = read_stream(&stack, &id, "t").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0]["seq"].as_u64(), events[0]["type"].as_str()),
        (Some(1), Some("end"))
    );
    let past = get(
        &stack,
        &format!("/v1/workflows/{id}/tasks/t/events?after=1"),
    )
    .await;
    assert_eq!(
        (
            past.status,
            past.body["events"].clone(),
            past.body["done"].clone()
        ),
        (200, json!([]), json!(true))
    );
    for (query, field) in [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("wait=99", "wait"),
    ] {
        let bad = get(
            &stack,
            &format!("/v1/workflows/{id}/tasks/t/events?{query}"),
        )
        .await;
        assert_eq!(bad.status, 400, "{query}: {:#}", bad.body);
        assert_eq!(bad.body["error"]["details"]["field"], field);
    }
    for path in [
        format!("/v1/workflows/{id}/tasks/nope/events"),
        "/v1/workflows/nope/tasks/t/events".to_string(),
    ] {
        assert_eq!(get(&stack, &path).await.status, 404, "{path}");
    }
    let theirs = request(
        &stack,
        reqwest::Method::GET,
        &format!("/v1/workflows/{id}/tasks/t/events?wait=0"),
        None,
        Some("someone-else"),
    )
    .await;
    assert_eq!(theirs.status, 404, "another tenant's task is not there");
}

fn text_parts(words: &[&str]) -> Vec<Value> {
    words.iter().map(|w| json!({ "text": w })).collect()
}

async fn streamed_task(stack: &LocalStack, name: &str) -> String {
    let workflow = json!({ "name": name, "tasks": [
        { "id": "t", "capability": "write", "stream": true,
          "retry": { "max_attempts": 3, "backoff": "fixed", "base_ms": 50, "jitter": "none" },
          "input": { "text": "anything" } },
    ]});
    submit(stack, &workflow).await
}

fn texts_by_attempt(events: &[Value]) -> Vec<(u64, String)> {
    let mut by_attempt: Vec<(u64, String)> = Vec::new();
    for event in events.iter().filter(|e| e["type"] == "chunk") {
        let attempt = event["attempt"].as_u64().unwrap();
        let text = event["text"].as_str().unwrap();
        match by_attempt.last_mut() {
            Some((a, t)) if *a == attempt => t.push_str(text),
            _ => by_attempt.push((attempt, text.to_string())),
        }
    }
    by_attempt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_agent_streams_server_sent_events_or_ndjson() {
    let stack = start_stack("stream-http", |_| {}).await;
    let pace = std::time::Duration::from_millis(30);
    let mut parts = text_parts(&["one ", "two ", "three"]);
    parts.push(json!({ "output": { "answer": "one two three", "words": 3 } }));
    let sse = agent_replying(baton_local::agents::AgentReply::streamed(
        true, &parts, pace,
    ))
    .await;
    register_agent(&stack, "sse", &sse, &["write"]).await;
    let id = streamed_task(&stack, "sse").await;
    let events = read_stream(&stack, &id, "t").await;
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(
        task(&finished, "t")["output"],
        json!({ "answer": "one two three", "words": 3 }),
        "the last part is the output"
    );
    assert_eq!(
        texts_by_attempt(&events),
        [(1, "one two three".to_string())]
    );

    let stack = start_stack("stream-ndjson", |_| {}).await;
    let lines = baton_local::agents::AgentReply::streamed(false, &text_parts(&["a", "b"]), pace);
    let ndjson = agent_replying(lines).await;
    register_agent(&stack, "ndjson", &ndjson, &["write"]).await;
    let id = streamed_task(&stack, "ndjson").await;
    let events = read_stream(&stack, &id, "t").await;
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(task(&finished, "t")["output"], json!({ "text": "ab" }));
    assert_eq!(texts_by_attempt(&events), [(1, "ab".to_string())]);
    let call = &ndjson.calls()[0];
    assert!(call.body["input"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_mid_stream_shows_the_abandoned_attempt_and_the_next() {
    let stack = start_stack("stream-retry", |_| {}).await;
    let pace = std::time::Duration::from_millis(20);
    let broken =
        baton_local::agents::AgentReply::streamed(true, &text_parts(&["half ", "an "]), pace)
            .broken();
    let whole = baton_local::agents::AgentReply::streamed(
        true,
        &text_parts(&["the ", "whole ", "answer"]),
        pace,
    );
    let server = agent_scripted(vec![broken], whole).await;
    register_agent(&stack, "flaky", &server, &["write"]).await;
    let id = streamed_task(&stack, "retried").await;
    let events = read_stream(&stack, &id, "t").await;
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    assert_eq!(
        task(&finished, "t")["output"],
        json!({ "text": "the whole answer" }),
        "only the last attempt's text is the output"
    );
    let kinds: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["type"] != "chunk")
        .map(|e| (e["attempt"].as_u64().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [(1, "start"), (1, "abandoned"), (2, "start"), (2, "end")],
        "{events:#?}"
    );
    assert_eq!(
        texts_by_attempt(&events),
        [
            (1, "half an ".to_string()),
            (2, "the whole answer".to_string())
        ]
    );
    let numbers: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=events.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_stops_the_agents_stream_and_the_agent_sees_it_closed() {
    let stack = start_stack("stream-cancel", |_| {}).await;
    let words: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let slow = baton_local::agents::AgentReply::streamed(
        true,
        &text_parts(&words),
        std::time::Duration::from_millis(100),
    );
    let server = agent_replying(slow).await;
    register(
        &stack,
        json!({ "name": "slow", "endpoint": server.url, "capabilities": ["write"], "timeout_ms": 30000 }),
    )
    .await;
    let id = streamed_task(&stack, "cancelled").await;
    eventually("the answer has begun", || async {
        let path = format!("/v1/workflows/{id}/tasks/t/events?after=0&wait=1");
        let answer = get(&stack, &path).await;
        let events = answer.body["events"].as_array()?.clone();
        events.iter().any(|e| e["type"] == "chunk").then_some(())
    })
    .await;
    let cancel = post(&stack, &format!("/v1/workflows/{id}/cancel"), "{}").await;
    assert_eq!(cancel.status, 200, "{:#}", cancel.body);
    let events = read_stream(&stack, &id, "t").await;
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(finished["status"], "cancelled", "{finished:#}");
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    eventually("the agent saw its stream closed", || async {
        (server.streams_cut() == 1).then_some(())
    })
    .await;
    let streamed: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert!(
        streamed.len() < words.concat().len(),
        "the stream stopped before the answer's end: {streamed}"
    );
}

/// Registers `talker`, an openai core agent, opens a session and sends it `message`: the
/// session and the turn's answer.
async fn talkers_turn(stack: &LocalStack, message: Value) -> (String, Answer) {
    register_openai(
        stack,
        "talker",
        "chat",
        json!({ "conversation": { "role": "core" } }),
    )
    .await;
    let opened = post(stack, "/v1/sessions", "{}").await;
    let session = opened.body["session_id"].as_str().unwrap().to_string();
    let turn = post(
        stack,
        &format!("/v1/sessions/{session}/messages"),
        &message.to_string(),
    )
    .await;
    (session, turn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_turn_streams_its_answer() {
    let stack = start_stack("stream-turn", |_| {}).await;
    let (_, turn) = talkers_turn(&stack, json!({ "text": TEXT })).await;
    assert_eq!(turn.body["status"], "answered", "{:#}", turn.body);
    let events_path = turn.body["events"]
        .as_str()
        .expect("the turn names its stream");
    let (workflow, task) = {
        let parts: Vec<&str> = events_path.trim_matches('/').split('/').collect();
        (parts[2].to_string(), parts[4].to_string())
    };
    assert_eq!(workflow, turn.body["workflow_id"].as_str().unwrap());
    let events = read_stream(&stack, &workflow, &task).await;
    let streamed: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(
        turn.body["response"].as_str(),
        Some(streamed.as_str()),
        "{events:#?}"
    );
    assert!(events.iter().filter(|e| e["type"] == "chunk").count() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bedrock_agent_streams_through_converse_stream() {
    let stack = start_stack("stream-bedrock", |_| {}).await;
    let stand_ins = stack.stand_ins().expect("the stack runs the stand-ins");
    register(
        &stack,
        json!({
            "name": "brief", "capabilities": ["write"], "timeout_ms": 10000,
            "kind": "bedrock", "model_id": baton_local::bedrock_service::BRIEF_MODEL,
        }),
    )
    .await;
    let workflow = json!({ "name": "streamed", "tasks": [
        { "id": "t", "capability": "write", "stream": true, "input": { "text": TEXT } },
    ]});
    let id = submit(&stack, &workflow).await;
    let events = read_stream(&stack, &id, "t").await;
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    let output = &task(&finished, "t")["output"];
    let streamed: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(output["content"].as_str(), Some(streamed.as_str()));
    assert_eq!(
        streamed,
        "Streams carry an answer while it is written, word after word after word."
    );
    assert_eq!(output["stop_reason"], "end_turn");
    assert!(output["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(events.iter().filter(|e| e["type"] == "chunk").count() > 1);
    assert_eq!(stand_ins.bedrock.calls()[0]["operation"], "converse-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_is_written_while_the_agent_pauses_not_held_until_its_next_part() {
    let stack = start_stack("stream-pause", |_| {}).await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let parts = text_parts(&["first ", "second ", "third"]);
    let reply = baton_local::agents::AgentReply::streamed(
        true,
        &parts,
        std::time::Duration::from_millis(20),
    )
    .gated(2, gate.clone());
    let server = agent_replying(reply).await;
    register_agent(&stack, "pausing", &server, &["write"]).await;
    let id = streamed_task(&stack, "paused").await;
    // The agent holds its third part: the second is written while it waits.
    eventually("the text before the agent's pause is written", || async {
        let path = format!("/v1/workflows/{id}/tasks/t/events?after=0&wait=1");
        let answer = get(&stack, &path).await;
        let text: String = answer.body["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["text"].as_str())
            .collect();
        (text == "first second ").then_some(())
    })
    .await;
    gate.notify_one();
    let events = read_stream(&stack, &id, "t").await;
    let streamed: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(streamed, "first second third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lambda_agent_streams_through_invoke_with_response_stream() {
    use baton_local::lambda_service::{function, FAILS, STREAMS, SUMMARIZE};
    let stack = start_stack("stream-lambda", |_| {}).await;
    let tenant = "default";
    for (name, example) in [("streams", STREAMS), ("whole", SUMMARIZE), ("fails", FAILS)] {
        register(
            &stack,
            json!({
                "name": name, "capabilities": [name], "timeout_ms": 10000,
                "kind": "lambda", "function": function(tenant, example),
                "retry": { "max_attempts": 1 },
            }),
        )
        .await;
    }
    let workflow = json!({ "name": "lambdas", "tasks": [
        { "id": "streams", "capability": "streams", "stream": true, "input": { "text": TEXT } },
        { "id": "whole", "capability": "whole", "stream": true, "input": { "text": TEXT } },
        { "id": "fails", "capability": "fails", "stream": true, "input": { "text": TEXT } },
    ]});
    let id = submit(&stack, &workflow).await;
    let streamed = read_stream(&stack, &id, "streams").await;
    let finished = wait_until_finished(&stack, &id).await;
    let text: String = streamed.iter().filter_map(|e| e["text"].as_str()).collect();
    let summary = "Streams carry an answer while it is written, word after word after word.";
    assert_eq!(text, summary);
    assert_eq!(
        task(&finished, "streams")["output"],
        json!({ "summary": summary })
    );
    assert!(streamed.iter().filter(|e| e["type"] == "chunk").count() > 1);
    // A function that does not stream answers its result whole, and it is the output.
    assert_eq!(task(&finished, "whole")["output"]["summary"], summary);
    let whole = read_stream(&stack, &id, "whole").await;
    assert!(whole.iter().all(|e| e["type"] != "chunk"), "{whole:#?}");
    // A function that fails fails the task as a plain invoke's failure would.
    let failed = task(&finished, "fails");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["kind"], "function_error", "{failed:#}");
}

/// One server-sent event as a client reads it: its id, type and data.
#[derive(Debug, Clone, PartialEq)]
struct Pushed {
    id: String,
    event: String,
    data: Value,
}

/// Reads server-sent events from the streaming endpoint until the stream closes, or until
/// `stop_after` events have come (then the connection is dropped, as a client that goes away
/// mid-stream). Answers the status and the events.
async fn push(
    url: &str,
    last_event_id: Option<&str>,
    stop_after: Option<usize>,
) -> (u16, Vec<Pushed>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request
        .send()
        .await
        .expect("the streaming endpoint answers");
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
    }
    let mut events = Vec::new();
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await.expect("the stream reads") {
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
            };
            if let (Some(id), Some(event), Some(data)) =
                (field("id"), field("event"), field("data"))
            {
                events.push(Pushed {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                });
                if stop_after == Some(events.len()) {
                    return (status, events);
                }
            }
        }
    }
    (status, events)
}

/// A link to a stream on the streaming endpoint, from the API.
async fn stream_link(stack: &LocalStack, path: &str) -> String {
    let minted = post(
        stack,
        "/v1/stream-tokens",
        &json!({ "path": path }).to_string(),
    )
    .await;
    assert_eq!(minted.status, 201, "{:#}", minted.body);
    let url = minted.body["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&stack.stream_url), "{url}");
    url
}

/// Each task's milestones as `task:type:attempt`, in the order of the stream.
fn milestones(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["task"].as_str() {
            Some(task) => format!("{task}:{}:{}", e["type"].as_str().unwrap(), e["attempt"]),
            None => format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["status"].as_str().unwrap_or("")
            ),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflows_events_reach_readers_and_sse_clients_once_each_in_order() {
    let stack = start_stack("stream-workflow", |_| {}).await;
    let flaky = agent_scripted(
        vec![baton_local::agents::AgentReply::error(503, "busy")],
        baton_local::agents::AgentReply::ok(json!({ "first": "done" })),
    )
    .await;
    register_agent(&stack, "flaky", &flaky, &["first"]).await;
    let steady = agent_replying(baton_local::agents::AgentReply::ok(json!({ "second": 2 }))).await;
    register_agent(&stack, "steady", &steady, &["second"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "watched", "tasks": [
            { "id": "a", "capability": "first", "input": {},
              "retry": { "max_attempts": 3, "backoff": "fixed", "base_ms": 50, "jitter": "none" } },
            { "id": "b", "capability": "second", "input": {}, "depends_on": ["a"] },
        ]}),
    )
    .await;

    // Over the HTTP API, in pieces.
    let mut events: Vec<Value> = Vec::new();
    let mut after = 0;
    for _ in 0..100 {
        let answer = get(
            &stack,
            &format!("/v1/workflows/{id}/events?after={after}&wait=5"),
        )
        .await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        events.extend(answer.body["events"].as_array().unwrap().iter().cloned());
        after = answer.body["next_after"].as_u64().unwrap();
        if answer.body["done"] == true {
            break;
        }
    }
    assert_eq!(
        milestones(&events),
        [
            "a:ready:1",
            "a:started:1",
            "a:retried:1",
            "a:started:2",
            "a:ended:2",
            "b:ready:1",
            "b:started:1",
            "b:ended:1",
            "end:succeeded"
        ],
        "{events:#?}"
    );
    let numbers: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<_>>());
    assert_eq!(
        events[2]["error"].as_str().map(|e| e.contains("503")),
        Some(true),
        "{:#}",
        events[2]
    );
    assert_eq!(events[4]["output_preview"], r#"{"first":"done"}"#);

    // Pushed: the same events, with their numbers as ids; a client that drops the
    // connection and comes back with Last-Event-ID gets the rest once.
    let url = stream_link(&stack, &format!("/v1/workflows/{id}/events")).await;
    let (status, first) = push(&url, None, Some(4)).await;
    assert_eq!(status, 200);
    let (_, rest) = push(&url, Some(&first.last().unwrap().id), None).await;
    let pushed: Vec<Pushed> = first.into_iter().chain(rest).collect();
    assert_eq!(
        pushed.iter().map(|p| p.data.clone()).collect::<Vec<_>>(),
        events,
        "every event once, in order, across the reconnect"
    );
    for (p, n) in pushed.iter().zip(1..) {
        assert_eq!(p.id, n.to_string());
        assert_eq!(p.event, p.data["type"].as_str().unwrap());
    }
    // Read to its end, the stream answers 204: an EventSource does not reconnect.
    let (status, none) = push(&url, Some("9"), None).await;
    assert_eq!((status, none.len()), (204, 0));
    // A number the stream never gave is refused, not taken as a place to wait.
    assert_eq!(push(&url, Some("10"), None).await.0, 400);
    // A task's stream is pushed too.
    let url = stream_link(&stack, &format!("/v1/workflows/{id}/tasks/b/events")).await;
    let (_, task_events) = push(&url, None, None).await;
    assert_eq!(
        task_events
            .iter()
            .map(|p| p.event.as_str())
            .collect::<Vec<_>>(),
        ["end"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_open_only_with_their_own_tenants_token() {
    let stack = start_stack("stream-tokens", |_| {}).await;
    let server = agent_replying(baton_local::agents::AgentReply::ok(json!({ "ok": true }))).await;
    register_agent(&stack, "plain", &server, &["work"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "mine", "tasks": [{ "id": "t", "capability": "work", "input": {} }] }),
    )
    .await;
    let path = format!("/v1/workflows/{id}/events");
    let url = stream_link(&stack, &path).await;
    let base = format!("{}{path}", stack.stream_url);
    let token = url.split("token=").nth(1).unwrap().to_string();

    // Another tenant cannot have a link to it: the workflow is not there for them.
    let theirs = request(
        &stack,
        reqwest::Method::POST,
        "/v1/stream-tokens",
        Some(&json!({ "path": path }).to_string()),
        Some("someone-else"),
    )
    .await;
    assert_eq!(theirs.status, 404, "{:#}", theirs.body);
    assert_eq!(
        theirs.body["error"]["message"],
        format!("no stream at `{path}`"),
        "as for a workflow that exists nowhere"
    );
    for bad in ["/v1/workflows", "/v1/agents/x/events", "not a path"] {
        let refused = post(
            &stack,
            "/v1/stream-tokens",
            &json!({ "path": bad }).to_string(),
        )
        .await;
        assert_eq!(refused.status, 400, "{bad}: {:#}", refused.body);
        assert_eq!(refused.body["error"]["details"]["field"], "path");
    }

    let client = reqwest::Client::new();
    let status_of = |url: String, bearer: Option<String>| {
        let client = client.clone();
        async move {
            let mut request = client.get(url);
            if let Some(bearer) = bearer {
                request = request.header("authorization", format!("Bearer {bearer}"));
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = if status == 200 {
                Value::Null
            } else {
                response.json().await.unwrap()
            };
            (status, body)
        }
    };
    // No token, a changed one, one for another stream: 401, in the API's error shape.
    let (status, body) = status_of(base.clone(), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let mut changed = token.clone();
    changed.insert(3, 'x');
    assert_eq!(
        status_of(format!("{base}?token={changed}"), None).await.0,
        401
    );
    let other = format!(
        "{}/v1/workflows/{id}/tasks/t/events?token={token}",
        stack.stream_url
    );
    assert_eq!(status_of(other, None).await.0, 401);
    // The token as a bearer opens the stream as the query does.
    assert_eq!(status_of(base.clone(), Some(token.clone())).await.0, 200);
    // A bad Last-Event-ID is a 400.
    let bad_resume = client
        .get(&url)
        .header("last-event-id", "x.y")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_resume.status().as_u16(), 400);
    // CORS: the local stack lets any page read its streams.
    let with_origin = client
        .get(&url)
        .header("origin", "http://localhost:8000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_origin.headers()["access-control-allow-origin"],
        "http://localhost:8000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turns_stream_pushes_its_helpers_milestones_and_its_answers_tokens() {
    let stack = start_stack("stream-turn-push", |_| {}).await;
    let helper = agent_replying(baton_local::agents::AgentReply::ok(
        json!({ "checked": true }),
    ))
    .await;
    register(
        &stack,
        json!({ "name": "checker", "endpoint": helper.url, "capabilities": ["check"],
                "conversation": { "role": "sync" } }),
    )
    .await;
    let (session, turn) = talkers_turn(&stack, json!({ "text": TEXT, "wait": 0 })).await;
    assert!([200, 202].contains(&turn.status), "{:#}", turn.body);
    let stream = turn.body["stream"]
        .as_str()
        .expect("the turn names its stream");
    let workflow = turn.body["workflow_id"].as_str().unwrap();
    assert_eq!(
        stream,
        format!("/v1/workflows/{workflow}/events?task=talker")
    );
    let url = stream_link(&stack, stream).await;
    let (status, pushed) = push(&url, None, None).await;
    assert_eq!(status, 200);

    // Ids count both streams, each on from its last: `workflow.task`.
    let cursors: Vec<(u64, u64)> = pushed
        .iter()
        .map(|p| {
            let (w, t) = p.id.split_once('.').expect("two numbers");
            (w.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert!(
        cursors
            .windows(2)
            .all(|w| w[0] < w[1] && w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
        "{cursors:?}"
    );
    let helper_events: Vec<&str> = pushed
        .iter()
        .filter(|p| p.data["task"] == "checker")
        .map(|p| p.event.as_str())
        .collect();
    assert_eq!(helper_events, ["ready", "started", "ended"], "{pushed:#?}");
    let answer: String = pushed
        .iter()
        .filter(|p| p.event == "chunk")
        .map(|p| p.data["text"].as_str().unwrap())
        .collect();
    let finished = get(&stack, &format!("/v1/sessions/{session}/turns/1")).await;
    assert_eq!(
        finished.body["response"].as_str(),
        Some(answer.as_str()),
        "{pushed:#?}"
    );
    assert!(pushed.iter().filter(|p| p.event == "chunk").count() > 1);
    // Both streams end: the task's `end` and the workflow's.
    assert_eq!(
        pushed.iter().filter(|p| p.event == "end").count(),
        2,
        "{pushed:#?}"
    );

    // The answering task's `started` comes before its text, its text before its `ended`
    // and the workflow's `end`.
    let started = pushed
        .iter()
        .position(|p| p.event == "started" && p.data["task"] == "talker")
        .unwrap();
    let first_chunk = pushed.iter().position(|p| p.event == "chunk").unwrap();
    assert!(started < first_chunk, "{pushed:#?}");
    assert_eq!(push(&url, Some("99.99"), None).await.0, 400);
    let last_chunk = pushed.iter().rposition(|p| p.event == "chunk").unwrap();
    let ended = pushed
        .iter()
        .position(|p| p.event == "ended" && p.data["task"] == "talker");
    assert!(Some(last_chunk) < ended, "{pushed:#?}");
    assert_eq!(
        pushed.last().unwrap().data["attempt"],
        0,
        "the workflow's end closes it"
    );

    // Resumed from the middle, the rest of each stream comes once, in its order.
    let middle = pushed.len() / 2;
    let (_, rest) = push(&url, Some(&pushed[middle].id), None).await;
    let of_stream = |events: &[Pushed], workflow: bool| -> Vec<Value> {
        events
            .iter()
            .filter(|p| (p.data["task"].is_string() || p.data["attempt"] == 0) == workflow)
            .map(|p| p.data.clone())
            .collect()
    };
    for workflow in [true, false] {
        assert_eq!(
            of_stream(&rest, workflow),
            of_stream(&pushed[middle + 1..], workflow),
            "{rest:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_closes_the_openai_stand_ins_stream_so_the_model_stops() {
    let stack = start_stack("stream-cancel-openai", |_| {}).await;
    let stand_ins = stack.stand_ins().expect("the stack runs the stand-ins");
    register_openai(&stack, "writer", "write", json!({})).await;
    // One long sentence: the brief model streams all of it, a word every 20 ms (about 4 s).
    let long: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
    let workflow = json!({ "name": "cancelled", "tasks": [
        { "id": "t", "capability": "write", "stream": true, "input": { "text": long.join(" ") } },
    ]});
    let id = submit(&stack, &workflow).await;
    eventually("the answer has begun", || async {
        let path = format!("/v1/workflows/{id}/tasks/t/events?after=0&wait=1");
        let answer = get(&stack, &path).await;
        let events = answer.body["events"].as_array()?.clone();
        events.iter().any(|e| e["type"] == "chunk").then_some(())
    })
    .await;
    let cancel = post(&stack, &format!("/v1/workflows/{id}/cancel"), "{}").await;
    assert_eq!(cancel.status, 200, "{:#}", cancel.body);
    let finished = wait_until_finished(&stack, &id).await;
    assert_eq!(finished["status"], "cancelled", "{finished:#}");
    eventually(
        "the stand-in saw its stream closed before its end",
        || async { (stand_ins.openai.streams_cut() == 1).then_some(()) },
    )
    .await;
    let events = read_stream(&stack, &id, "t").await;
    let streamed: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert!(streamed.split_whitespace().count() < 200, "{streamed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_at_its_limit_of_open_streams_waits_and_other_tenants_do_not() {
    let stack = start_stack("stream-slots", |options| {
        options
            .env_overrides
            .insert("BATON_STREAMS_PER_TENANT".into(), "1".into());
    })
    .await;
    let slow = agent_replying(
        baton_local::agents::AgentReply::ok(json!({ "ok": true }))
            .after(std::time::Duration::from_secs(30)),
    )
    .await;
    let long =
        json!({ "name": "long", "tasks": [{ "id": "t", "capability": "slow", "input": {} }] });
    let mut links = Vec::new();
    for tenant in [baton_local::LOCAL_TENANT, "neighbour"] {
        let registered = request(
            &stack,
            reqwest::Method::POST,
            "/v1/agents",
            Some(&json!({ "name": "slow", "endpoint": slow.url, "capabilities": ["slow"], "timeout_ms": 60000 }).to_string()),
            Some(tenant),
        )
        .await;
        assert_eq!(registered.status, 201, "{:#}", registered.body);
        let submitted = request(
            &stack,
            reqwest::Method::POST,
            "/v1/workflows",
            Some(&long.to_string()),
            Some(tenant),
        )
        .await;
        assert_eq!(submitted.status, 202, "{:#}", submitted.body);
        let id = submitted.body["workflow_id"].as_str().unwrap().to_string();
        let minted = request(
            &stack,
            reqwest::Method::POST,
            "/v1/stream-tokens",
            Some(&json!({ "path": format!("/v1/workflows/{id}/events") }).to_string()),
            Some(tenant),
        )
        .await;
        assert_eq!(minted.status, 201, "{:#}", minted.body);
        links.push(minted.body["url"].as_str().unwrap().to_string());
    }
    let client = reqwest::Client::new();
    let first = client.get(&links[0]).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    // The tenant's one slot is held: a second stream waits, with Retry-After.
    let second = client.get(&links[0]).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // Another tenant's streams do not count against it.
    let neighbours = client.get(&links[1]).send().await.unwrap();
    assert_eq!(neighbours.status().as_u16(), 200);
    // The client goes away: its slot is freed, and the next stream opens.
    drop(first);
    eventually("the slot is free again", || {
        let (client, link) = (client.clone(), links[0].clone());
        async move {
            let again = client.get(&link).send().await.ok()?;
            (again.status().as_u16() == 200).then_some(())
        }
    })
    .await;
    drop(neighbours);
}
