//! Redrives at length, end to end on the local stack: a redrive moves a task's attempts of the
//! drive that ended to the workflow's archive, so its item stays the size of one drive however
//! often it is redriven, and the history still shows every attempt of every drive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use baton_aws::dynamo::keys;
use baton_local::agents::AgentReply;
use baton_local::stack::LocalStack;
use baton_local::LOCAL_TENANT;
use baton_tests::*;
use baton_types::control::MAX_CONTROL_EVENTS;
use serde_json::{json, Value};

type Item = HashMap<String, AttributeValue>;

/// The task's drives: the first, then 50 redrives, the last of which succeeds.
const DRIVES: u64 = 51;
/// The most the task's item may hold, however often it is redriven: its own fields and one
/// drive's attempt. With every drive's attempt kept on it (some 500 bytes each), 50 drives
/// come to about 25 KB.
const MAX_TASK_ITEM_BYTES: usize = 4 * 1024;

/// One task, one call per drive: the agent's 400 is not retried, and the policy allows no
/// retry anyway.
fn one_task() -> Value {
    json!({ "name": "redrives", "tasks": [
        { "id": "a", "capability": "work", "input": { "text": "again" },
          "retry": { "max_attempts": 1 } }
    ]})
}

/// An agent that fails every call with a long error text until `fixed` is set.
async fn fixable_agent(fixed: Arc<AtomicBool>) -> baton_local::agents::AgentServer {
    let error = "the input is not what this agent takes; ".repeat(20);
    agent(Arc::new(move |call: &Value| {
        if fixed.load(Ordering::SeqCst) {
            AgentReply::ok(json!({ "done": call["task_id"] }))
        } else {
            AgentReply::error(400, &error)
        }
    }))
    .await
}

async fn redrive(stack: &LocalStack, id: &str) {
    let answer = post(stack, &format!("/v1/workflows/{id}/retry"), "").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["tasks"]["restarted"], 1, "{:?}", answer.body);
}

/// The task's item as the table holds it.
async fn task_item(stack: &LocalStack, id: &str, task_id: &str) -> Item {
    stack
        .clients
        .dynamodb
        .get_item()
        .table_name(&stack.settings.state_table)
        .key("pk", AttributeValue::S(keys::workflow_pk(LOCAL_TENANT, id)))
        .key("sk", AttributeValue::S(keys::task_sk(task_id)))
        .consistent_read(true)
        .send()
        .await
        .expect("get the task item")
        .item
        .expect("the task item")
}

/// An item's size as DynamoDB counts it (names and values; numbers roughly).
fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(name, v)| name.len() + value_bytes(v))
        .sum()
}

fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

fn attempts_on(item: &Item) -> usize {
    match item.get("attempts") {
        Some(AttributeValue::L(list)) => list.len(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_redriven_fifty_times_keeps_a_small_item_and_a_complete_history() {
    let stack = start_stack("redrives", |_| {}).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let worker = fixable_agent(fixed.clone()).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let id = submit(&stack, &one_task()).await;
    let first = wait_until_finished(&stack, &id).await;
    assert_eq!(first["status"], "failed", "{first:#}");

    for drive in 1..DRIVES {
        if drive == DRIVES - 1 {
            fixed.store(true, Ordering::SeqCst);
        }
        redrive(&stack, &id).await;
        let workflow = wait_until_finished(&stack, &id).await;
        let expected = if drive == DRIVES - 1 {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(workflow["status"], expected, "drive {drive}: {workflow:#}");
        let item = task_item(&stack, &id, "a").await;
        assert_eq!(attempts_on(&item), 1, "drive {drive}: only its own attempt");
        let bytes = item_bytes(&item);
        assert!(
            bytes <= MAX_TASK_ITEM_BYTES,
            "drive {drive}: the task's item holds {bytes} bytes"
        );
    }
    assert_eq!(worker.calls().len() as u64, DRIVES, "one call per drive");

    let workflow = workflow_view(&stack, &id).await;
    assert_eq!(workflow["redrives"], DRIVES - 1);
    let a = task(&workflow, "a");
    assert_eq!(a["attempt"], DRIVES, "{a:#}");
    assert_eq!(a["output"]["done"], "a");

    // The ended drives' attempts are in the archive, one item per drive, each left to TTL.
    let archive_pk = keys::workflow_archive_pk(LOCAL_TENANT, &id);
    let archived: Vec<Item> = table_items(&stack, &stack.settings.state_table)
        .await
        .into_iter()
        .filter(|item| item.get("pk").and_then(|v| v.as_s().ok()) == Some(&archive_pk))
        .collect();
    assert_eq!(archived.len() as u64, DRIVES - 1);
    let now_s = baton_types::clock::now_ms() / 1000;
    for item in &archived {
        assert_eq!(attempts_on(item), 1);
        let expires: i64 = item["expires_at"]
            .as_n()
            .expect("expires_at")
            .parse()
            .unwrap();
        assert!(expires > now_s);
    }

    // The history shows every attempt of every drive, in order.
    let history = get(&stack, &format!("/v1/workflows/{id}/history")).await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    let events = history.body["events"].as_array().expect("events");
    let ended: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e["task"] == "a" && (e["event"] == "failed" || e["event"] == "succeeded"))
        .map(|e| (e["event"].as_str().unwrap(), e["attempt"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(&str, u64)> = (1..=DRIVES)
        .map(|n| (if n == DRIVES { "succeeded" } else { "failed" }, n))
        .collect();
    assert_eq!(ended, expected);
    let claims = events
        .iter()
        .filter(|e| e["task"] == "a" && e["event"] == "claimed")
        .count() as u64;
    assert_eq!(claims, DRIVES);
    // The record keeps its newest controls and counts the rest (the attempts are all kept).
    let redriven = events.iter().filter(|e| e["event"] == "redriven").count();
    assert_eq!(redriven, MAX_CONTROL_EVENTS.min(DRIVES as usize - 1));
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redriven_task_shows_no_output_of_the_drive_before() {
    let stack = start_stack("stale-output", |_| {}).await;
    let worker = fixable_agent(Arc::new(AtomicBool::new(false))).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let id = submit(&stack, &one_task()).await;
    assert_eq!(wait_until_finished(&stack, &id).await["status"], "failed");

    // Written by hand, as an ended drive could leave it: a pointer to an output in the payload
    // bucket, with its preview.
    stack
        .clients
        .dynamodb
        .update_item()
        .table_name(&stack.settings.state_table)
        .key(
            "pk",
            AttributeValue::S(keys::workflow_pk(LOCAL_TENANT, &id)),
        )
        .key("sk", AttributeValue::S(keys::task_sk("a")))
        .update_expression("SET output_ref = :ref, output_preview = :preview")
        .expression_attribute_values(
            ":ref",
            AttributeValue::S(json!({ "key": "stale", "bytes": 40_000 }).to_string()),
        )
        .expression_attribute_values(":preview", AttributeValue::S("{\"stale\":".into()))
        .send()
        .await
        .expect("leave an output on the item");
    let before = workflow_view(&stack, &id).await;
    assert_eq!(
        task(&before, "a")["output_truncated"]["bytes"],
        40_000,
        "{before:#}"
    );

    redrive(&stack, &id).await;
    let running = workflow_view(&stack, &id).await;
    let a = task(&running, "a");
    assert!(a["output_truncated"].is_null(), "{a:#}");
    let after = wait_until_finished(&stack, &id).await;
    assert_eq!(after["status"], "failed");
    let a = task(&after, "a");
    assert!(
        a["output"].is_null() && a["output_truncated"].is_null(),
        "{a:#}"
    );
    let item = task_item(&stack, &id, "a").await;
    for stale in ["output", "output_ref", "output_preview"] {
        assert!(!item.contains_key(stale), "{stale} stays: {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_archives_a_late_attempt_too_and_a_repeated_reset_changes_nothing() {
    use baton_chain::hold::redrive_tasks;
    use baton_chain::store::{AttemptEnd, WorkflowControls, WorkflowStore};
    use baton_types::control::redrive_plan;
    use baton_types::messages::TaskRef;
    use baton_types::outcome::{FailureKind, TaskFailure};
    use baton_types::task::TaskProfile;

    let stack = api_only_stack("reset-once").await;
    let nobody = ClosedPort::new();
    register_url(&stack, "worker", &nobody.url, &["work"]).await;
    let id = submit(&stack, &one_task()).await;
    let first = TaskRef {
        tenant: LOCAL_TENANT.parse().unwrap(),
        workflow_id: id.parse().unwrap(),
        task_id: "a".parse().unwrap(),
        attempt: 1,
    };
    let failure = TaskFailure::new(FailureKind::InvalidInput, "no");
    claim_and_record(&stack, &first, AttemptEnd::Failed(failure)).await;
    let store = &stack.execute_deps().store;
    let view = store
        .workflow(&LOCAL_TENANT.parse().unwrap(), &id.parse().unwrap())
        .await
        .unwrap()
        .expect("the workflow");
    let read = view.tasks[0].clone();
    assert_eq!(read.attempts.len(), 1);

    // A cancelled attempt's late result lands after the read: the reset must archive it too.
    let mut late = read.attempts[0].clone();
    late.late = true;
    stack
        .clients
        .dynamodb
        .update_item()
        .table_name(&stack.settings.state_table)
        .key(
            "pk",
            AttributeValue::S(keys::workflow_pk(LOCAL_TENANT, &id)),
        )
        .key("sk", AttributeValue::S(keys::task_sk("a")))
        .update_expression("SET attempts = list_append(attempts, :late)")
        .expression_attribute_values(
            ":late",
            AttributeValue::L(vec![AttributeValue::S(
                serde_json::to_string(&late).unwrap(),
            )]),
        )
        .send()
        .await
        .expect("append a late attempt");

    let reset = redrive_plan(&redrive_tasks(&view), 1).remove(0);
    let profile = TaskProfile {
        prior_attempts: reset.prior_attempts,
        ..read.profile.clone()
    };
    let now = baton_types::clock::now_ms();
    // Twice: a retried request, or a second handler, meets the first reset.
    for _ in 0..2 {
        let reset = store
            .reset_task(&read, &reset, &profile, 1, now + 600_000, now / 1000 + 3600)
            .await
            .expect("reset");
        assert!(reset, "reset now or before");
    }

    let archive = store
        .archived_drives(&LOCAL_TENANT.parse().unwrap(), &id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(archive.len(), 1, "{archive:?}");
    assert_eq!((archive[0].task_id.as_str(), archive[0].drive), ("a", 0));
    let late_flags: Vec<bool> = archive[0].attempts.iter().map(|a| a.late).collect();
    assert_eq!(late_flags, [false, true]);
    let item = task_item(&stack, &id, "a").await;
    assert_eq!(attempts_on(&item), 0);
    assert_eq!(item["drive"].as_n().unwrap(), "1");
    assert_eq!(item["attempt"].as_n().unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_a_session_deletes_the_archive_of_its_redriven_turn_workflow() {
    let stack = start_stack("session-archive", |_| {}).await;
    let worker = fixable_agent(Arc::new(AtomicBool::new(false))).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let id = submit(&stack, &one_task()).await;
    assert_eq!(wait_until_finished(&stack, &id).await["status"], "failed");
    redrive(&stack, &id).await;
    assert_eq!(wait_until_finished(&stack, &id).await["status"], "failed");

    // The workflow as a session's turn: the turn names it, and the session's end deletes it.
    let opened = post(&stack, "/v1/sessions", &json!({}).to_string()).await;
    assert_eq!(opened.status, 201, "{:?}", opened.body);
    let session = opened.body["session_id"].as_str().unwrap().to_string();
    stack
        .clients
        .dynamodb
        .put_item()
        .table_name(&stack.settings.state_table)
        .item(
            "pk",
            AttributeValue::S(keys::session_pk(LOCAL_TENANT, &session)),
        )
        .item("sk", AttributeValue::S(keys::turn_sk(1)))
        .item("workflow_id", AttributeValue::S(id.clone()))
        .send()
        .await
        .expect("a turn naming the workflow");
    let partitions = [
        keys::workflow_pk(LOCAL_TENANT, &id),
        keys::workflow_archive_pk(LOCAL_TENANT, &id),
    ];
    let left = |keys: &std::collections::BTreeSet<(String, String)>, pk: &str| {
        keys.iter().filter(|(p, _)| p == pk).count()
    };
    let before = state_keys(&stack).await;
    assert_eq!(left(&before, &partitions[1]), 1, "one archived drive");

    let path = format!("/v1/sessions/{session}");
    let ended = request(&stack, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    let after = state_keys(&stack).await;
    for pk in &partitions {
        assert_eq!(left(&after, pk), 0, "{pk} is left");
    }
}
