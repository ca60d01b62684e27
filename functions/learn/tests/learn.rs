//! learn's handler on the memory store: each outcome is learned once, per agent.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_chain::memory::fixtures::{settings, sqs_event, task_ref, tenant, CAPABILITY};
use baton_chain::memory::{Fault, MemoryStore};
use baton_chain::store::LearningStore;
use baton_learn::{handle_batch, LearnDeps};
use baton_types::ids::AgentName;
use baton_types::messages::{OutcomeMessage, FORMAT_VERSION};
use lambda_runtime::{Context, LambdaEvent};

fn outcome(agent: &str, task: &str, success: bool) -> OutcomeMessage {
    OutcomeMessage {
        v: FORMAT_VERSION,
        task: task_ref("w", task, 1),
        agent: agent.parse().unwrap(),
        task_type: CAPABILITY.into(),
        success,
        latency_ms: 200,
        failure: None,
        usage: None,
        finished_at_ms: 10_000,
        counts_for_circuit: true,
        breaker: None,
        details: Default::default(),
    }
}

async fn deliver(deps: &LearnDeps<MemoryStore>, outcomes: &[OutcomeMessage]) -> SqsBatchResponse {
    let event: SqsEvent = serde_json::from_value(sqs_event(outcomes)).unwrap();
    handle_batch(deps, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap()
}

/// Each agent's count of calls learned, and of successes.
async fn learned(deps: &LearnDeps<MemoryStore>, agents: &[&str]) -> Vec<(u64, u64)> {
    let names: Vec<AgentName> = agents.iter().map(|a| a.parse().unwrap()).collect();
    let stats = deps
        .store
        .agent_stats(&tenant(), CAPABILITY, &names)
        .await
        .unwrap();
    names
        .iter()
        .map(|a| {
            stats
                .get(a.as_str())
                .map_or((0, 0), |s| (s.count, s.successes))
        })
        .collect()
}

fn deps() -> LearnDeps<MemoryStore> {
    LearnDeps {
        store: MemoryStore::new(),
        settings: settings(),
    }
}

#[tokio::test]
async fn outcomes_are_folded_into_each_agents_stats() {
    let deps = deps();
    let batch = [
        outcome("a1", "x", true),
        outcome("a1", "y", false),
        outcome("a2", "z", true),
    ];
    let response = deliver(&deps, &batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(learned(&deps, &["a1", "a2"]).await, [(2, 1), (1, 1)]);
}

#[tokio::test]
async fn a_redelivered_outcome_is_learned_once() {
    let deps = deps();
    let batch = [outcome("a1", "x", true), outcome("a1", "x", true)];
    deliver(&deps, &batch).await;
    deliver(&deps, &batch[..1]).await;
    assert_eq!(learned(&deps, &["a1"]).await, [(1, 1)]);
}

#[tokio::test]
async fn a_failed_write_fails_its_group_alone_and_the_redelivery_learns_it() {
    let deps = deps();
    deps.store.inject("record_outcomes", Fault::Fail, 1);
    let batch = [outcome("a1", "x", true), outcome("a2", "y", true)];
    let response = deliver(&deps, &batch).await;
    // Groups are written in (tenant, agent) order: a1's is the one that failed.
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m0"]);
    assert_eq!(learned(&deps, &["a1", "a2"]).await, [(0, 0), (1, 1)]);
    deliver(&deps, &batch[..1]).await;
    assert_eq!(learned(&deps, &["a1", "a2"]).await, [(1, 1), (1, 1)]);
}

#[tokio::test]
async fn a_write_whose_response_was_lost_is_not_learned_twice_on_redelivery() {
    let deps = deps();
    deps.store.inject("record_outcomes", Fault::LoseResponse, 1);
    let batch = [outcome("a1", "x", false)];
    assert_eq!(deliver(&deps, &batch).await.batch_item_failures.len(), 1);
    assert!(deliver(&deps, &batch).await.batch_item_failures.is_empty());
    assert_eq!(learned(&deps, &["a1"]).await, [(1, 0)]);
}
