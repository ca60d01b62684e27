//! Chaos: the whole chain under every fault at once, and what must always hold.
//!
//! Faults: 10 % of SQS sends duplicated, 2 % of DynamoDB writes applied with their response
//! lost, 2 % of DynamoDB requests throttled, a 2-second outage of the emulator, 3 % of handler
//! invocations killed mid-run, and agents that fail 20 % of calls with a 5xx and let 5 % time
//! out. With retries and fallbacks on, every workflow must succeed; nothing may be lost,
//! stuck, run twice or fed the wrong data. Inputs and outputs come in every size, from a few
//! bytes to a mebibyte, inline and in the payload bucket.

use std::collections::HashMap;
use std::time::Duration;

use baton_local::agents::AgentServer;
use baton_local::chaos::{self, AGENT_FAULTS};
use baton_local::faults::FaultPlan;
use baton_tests::*;
use futures::future::join_all;
use serde_json::{json, Value};

const WORKFLOWS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_faults_nothing_is_lost_stuck_duplicated_or_corrupted() {
    let stack = start_stack("chaos", |s| {
        s.faults = Some(FaultPlan::default());
        s.handler_death_rate = 0.03;
        s.pollers = 2;
        recover_quickly(s);
        // Leases here are short (a 2 s margin) and the outages long, so a live handler can
        // outlast its lease; the production cap of 3 would then fail a task now and then, a
        // legitimate end that would make "every workflow succeeds" a matter of chance. The
        // cap itself is tested in cleanup's sweep tests.
        s.env_overrides
            .insert("MAX_LEASE_ATTEMPTS".into(), "10".into());
    })
    .await;
    // Two agents per capability, each misbehaving on its own.
    let mut agents: Vec<AgentServer> = Vec::new();
    for (i, name) in ["left", "right"].iter().enumerate() {
        let server = agent(chaos::summing_agent(AGENT_FAULTS, 11 + i as u64)).await;
        register(
            &stack,
            json!({ "name": name, "endpoint": server.url, "capabilities": ["sum"],
                    "timeout_ms": 1000, "circuit_breaker": { "cooldown_s": 2 } }),
        )
        .await;
        agents.push(server);
    }

    let proxy = stack.faults().unwrap();
    proxy.set_plan(FaultPlan {
        seed: 2026,
        duplicate_send_rate: 0.10,
        lost_write_response_rate: 0.02,
        throttle_rate: 0.02,
    });
    let submissions = join_all((0..WORKFLOWS).map(|i| {
        let stack = &stack;
        async move {
            let body = chaos::workflow_with_payloads(&format!("chaos-{i}"), "sum", i).to_string();
            post(stack, "/v1/workflows", &body).await
        }
    }))
    .await;
    proxy.outage(Duration::from_secs(2));
    let mut accepted = Vec::new();
    for answer in &submissions {
        match answer.status {
            202 => accepted.push(answer.body["workflow_id"].as_str().unwrap().to_string()),
            // A refused submission must not run: checked below by name.
            status => assert!(status >= 500, "{status}: {:?}", answer.body),
        }
    }

    let mut views: HashMap<String, Value> = HashMap::new();
    for id in &accepted {
        let mut view = wait_until_finished(&stack, id).await;
        with_whole_outputs(&stack, id, &mut view).await;
        views.insert(id.clone(), view);
    }
    let calls: Vec<_> = agents.iter().flat_map(AgentServer::calls).collect();
    let last_views: Vec<Option<Value>> = accepted.iter().map(|id| views.get(id).cloned()).collect();
    let audit = chaos::audit(&last_views, &calls);
    let faults = proxy.report();
    eprintln!(
        "audit: {audit:?}\nfaults: {faults:?}\nhandler deaths: {}",
        stack.handler_deaths()
    );

    assert!(audit.holds(), "{audit:#?}");
    assert_eq!(audit.succeeded, accepted.len(), "{audit:#?}");
    assert!(
        accepted.len() >= WORKFLOWS - 2,
        "most submissions are accepted: {}",
        accepted.len()
    );
    assert_eq!(
        named_workflows(&stack).await,
        accepted.len(),
        "no refused submission was stored and run"
    );
    // The faults did happen.
    assert!(faults.duplicated_sends > 0 && faults.lost_responses > 0 && faults.throttled > 0);
    assert!(faults.outage_drops > 0, "{faults:?}");
    assert!(stack.handler_deaths() > 0);
    assert!(
        audit.attempts > accepted.len() * chaos::TASKS.len(),
        "agents failed and were retried"
    );
}

/// The view with every output the workflow view leaves out (past 8 KiB) read whole from its
/// task's own URL, so the audit compares whole values.
async fn with_whole_outputs(stack: &baton_local::stack::LocalStack, id: &str, view: &mut Value) {
    for task in view["tasks"].as_array_mut().into_iter().flatten() {
        if task.get("output_truncated").is_some() {
            let path = format!("/v1/workflows/{id}/tasks/{}", task["id"].as_str().unwrap());
            let whole = get(stack, &path).await;
            assert_eq!(whole.status, 200, "{:?}", whole.body);
            task["output"] = whole.body["output"].clone();
        }
    }
}

/// Workflow records in the table, whatever their state.
async fn named_workflows(stack: &baton_local::stack::LocalStack) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let out = stack
            .clients
            .dynamodb
            .scan()
            .table_name(&stack.settings.state_table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        count += out
            .items
            .unwrap_or_default()
            .iter()
            .filter(|i| i["sk"].as_s().is_ok_and(|sk| sk == "WORKFLOW"))
            .count();
        start = out.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}
