//! Conversation sessions: opened, read, ended by the client or by their idle time-out, with
//! everything they hold, and never seen across tenants.

use baton_local::agents::AgentReply;
use baton_tests::*;
use baton_types::clock::now_ms;
use serde_json::json;

async fn open(stack: &baton_local::stack::LocalStack, body: serde_json::Value) -> String {
    let answer = post(stack, "/v1/sessions", &body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert!(answer.body["expires_at"].is_string());
    answer.body["session_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_opened_read_and_ended_with_everything_it_holds() {
    let stack = api_only_stack("sessions").await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register_agent(&stack, "helper", &server, &["chat"]).await;
    let items_before = state_items(&stack).await;
    let id = open(
        &stack,
        json!({ "agents": ["helper"], "metadata": { "user": "u-1" }, "idle_timeout_s": 600 }),
    )
    .await;
    let view = get(&stack, &format!("/v1/sessions/{id}")).await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    assert_eq!(view.body["agents"], json!(["helper"]));
    assert_eq!(view.body["metadata"]["user"], "u-1");
    assert_eq!(view.body["idle_timeout_s"], 600);

    let path = format!("/v1/sessions/{id}");
    let ended = request(&stack, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    assert_eq!(get(&stack, &path).await.status, 404);
    let again = request(&stack, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(again.status, 404);
    assert_eq!(
        state_items(&stack).await,
        items_before,
        "nothing of the session is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_ended_by_the_sweep_and_an_active_one_is_not() {
    let stack = api_only_stack("idle-sessions").await;
    let idle = open(&stack, json!({ "idle_timeout_s": 60 })).await;
    let lasting = open(&stack, json!({ "idle_timeout_s": 3600 })).await;
    let report = sweep_at(&stack, now_ms() + 61_000).await;
    assert_eq!(report.sessions_ended, 1, "{report:?}");
    assert_eq!(
        get(&stack, &format!("/v1/sessions/{idle}")).await.status,
        404
    );
    assert_eq!(
        get(&stack, &format!("/v1/sessions/{lasting}")).await.status,
        200
    );
    assert_eq!(
        state_items(&stack).await,
        1,
        "only the lasting session's record"
    );
    // A sweep finds nothing more to end.
    assert_eq!(sweep_at(&stack, now_ms() + 61_000).await.sessions_ended, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_invisible_to_other_tenants() {
    let stack = api_only_stack("session-tenants").await;
    let answer = request(
        &stack,
        reqwest::Method::POST,
        "/v1/sessions",
        Some("{}"),
        Some("acme"),
    )
    .await;
    assert_eq!(answer.status, 201);
    let path = format!(
        "/v1/sessions/{}",
        answer.body["session_id"].as_str().unwrap()
    );
    let other = request(&stack, reqwest::Method::GET, &path, None, Some("globex")).await;
    assert_eq!(other.status, 404);
    let delete = request(&stack, reqwest::Method::DELETE, &path, None, Some("globex")).await;
    assert_eq!(delete.status, 404);
    let own = request(&stack, reqwest::Method::GET, &path, None, Some("acme")).await;
    assert_eq!(own.status, 200, "another tenant's delete changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_input_is_refused_naming_the_field_and_stores_nothing() {
    let stack = api_only_stack("session-errors").await;
    for (body, field) in [
        (json!({ "idle_timeout_s": 5 }), "idle_timeout_s"),
        (json!({ "metadata": "text" }), "metadata"),
        (json!({ "agents": ["nobody"] }), "agents"),
        (json!({ "agents": ["a", "a"] }), "agents"),
    ] {
        let answer = post(&stack, "/v1/sessions", &body.to_string()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["details"]["field"], field, "{body}");
    }
    let unknown = post(&stack, "/v1/sessions", r#"{"colour": 1}"#).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(state_items(&stack).await, 0);
}

/// The state table's keys that mention any of `needles`.
async fn keys_mentioning(
    stack: &baton_local::stack::LocalStack,
    needles: &[&str],
) -> Vec<(String, String)> {
    state_keys(stack)
        .await
        .into_iter()
        .filter(|(pk, sk)| needles.iter().any(|n| pk.contains(n) || sk.contains(n)))
        .collect()
}

/// A stack without pollers, a core agent and a session of it with one turn started (nothing
/// answers it: the turn stays running, its workflow stored). Returns the session and the
/// turn's workflow.
async fn session_with_a_turn(name: &str) -> (baton_local::stack::LocalStack, String, String) {
    let stack = api_only_stack(name).await;
    let server = agent_replying(AgentReply::ok(json!({ "response": "hi" }))).await;
    let body = json!({ "name": "primary", "endpoint": server.url, "capabilities": ["chat"],
                       "conversation": { "role": "core" } });
    register(&stack, body).await;
    let id = open(&stack, json!({ "agents": ["primary"] })).await;
    let workflow = start_turn(&stack, &id).await;
    (stack, id, workflow)
}

/// Starts a turn and returns its workflow.
async fn start_turn(stack: &baton_local::stack::LocalStack, id: &str) -> String {
    let path = format!("/v1/sessions/{id}/messages");
    let asked = post(
        stack,
        &path,
        &json!({ "text": "hello", "wait": 0 }).to_string(),
    )
    .await;
    assert_eq!(asked.status, 202, "{:?}", asked.body);
    asked.body["workflow_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_that_read_an_earlier_opening_leaves_the_session_opened_again_whole() {
    use baton_chain::store::SessionStore;
    use baton_types::session::SessionInput;
    let (stack, id, first) = session_with_a_turn("session-generations").await;
    let store = &stack.cleanup_deps().store;
    let tenant = &baton_local::LOCAL_TENANT.parse().unwrap();
    let session: baton_types::ids::SessionId = id.parse().unwrap();
    // An end reads the session's items (as the sweep and `POST /orchestrate` both may)…
    let late_end = store
        .session_contents(tenant, &session)
        .await
        .unwrap()
        .expect("the session's items");
    // …another end completes first, and the id is opened again, with a turn of its own…
    assert!(store.end_session(tenant, &session).await.unwrap());
    let reopened = SessionInput {
        agents: Some(vec!["primary".into()]),
        ..SessionInput::default()
    }
    .into_session(session.clone(), now_ms())
    .unwrap();
    store.create_session(tenant, &reopened).await.unwrap();
    let workflow = start_turn(&stack, &id).await;
    let keys = state_keys(&stack).await;
    // …then the first end goes on with what it read: the new opening loses nothing.
    let deleted = store
        .delete_session_contents(tenant, &late_end)
        .await
        .unwrap();
    assert_eq!(
        state_keys(&stack).await,
        keys,
        "every item of the new opening is kept"
    );
    assert!(
        !deleted,
        "nothing of the earlier opening was left to delete"
    );
    let view = get(&stack, &format!("/v1/sessions/{id}")).await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    assert_eq!(view.body["active_turn"], 1);
    let turn = get(&stack, &format!("/v1/sessions/{id}/turns/1")).await;
    assert_eq!(turn.status, 200, "{:?}", turn.body);
    assert_eq!(turn.body["workflow_id"], workflow.as_str());
    // Ending the new opening ends it whole.
    assert!(store.end_session(tenant, &session).await.unwrap());
    let left = keys_mentioning(&stack, &[&id, &first, &workflow]).await;
    assert_eq!(left, Vec::new(), "nothing of either opening is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stored_before_generations_is_ended_whole() {
    let (stack, id, workflow) = session_with_a_turn("session-before-generations").await;
    // Every item of the session as written before generations were: without one.
    let session_pk = format!("{}#SESSION#{id}", baton_local::LOCAL_TENANT);
    let mut stripped = 0;
    for item in table_items(&stack, &stack.settings.state_table).await {
        if item["pk"].as_s().unwrap() != &session_pk {
            continue;
        }
        stack
            .clients
            .dynamodb
            .update_item()
            .table_name(&stack.settings.state_table)
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .update_expression("REMOVE generation")
            .send()
            .await
            .expect("update");
        stripped += 1;
    }
    assert_eq!(stripped, 2, "the record and the turn");
    let view = get(&stack, &format!("/v1/sessions/{id}")).await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    let path = format!("/v1/sessions/{id}");
    let ended = request(&stack, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    let left = keys_mentioning(&stack, &[&id, &workflow]).await;
    assert_eq!(left, Vec::new(), "nothing of the session is left");
}
