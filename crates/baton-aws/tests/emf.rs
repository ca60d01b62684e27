//! The metrics helpers through the real EMF collector: the lines a function writes after an
//! invocation. Its own test binary, since the collector is the process's one recorder.

use baton_chain::metrics;
use baton_chain::store::AttemptEnd;
use baton_types::routing::RoutingStrategy;
use baton_types::task::WorkflowStatus;
use serde_json::{json, Value};

/// The EMF document among `lines` whose dimensions are `dimensions`, with those values.
fn document<'a>(lines: &'a [Value], dimensions: &[(&str, &str)]) -> &'a Value {
    lines
        .iter()
        .find(|line| {
            let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0] == json!(names)
                && dimensions.iter().all(|(name, value)| line[*name] == *value)
        })
        .unwrap_or_else(|| panic!("no document with {dimensions:?} in {lines:#?}"))
}

/// (name, unit) of each metric a document declares.
fn declared(document: &Value) -> Vec<(String, String)> {
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| {
            let unit = m["Unit"].as_str().unwrap_or("None");
            (m["Name"].as_str().unwrap().to_string(), unit.to_string())
        })
        .collect()
}

#[test]
fn each_helper_writes_its_metric_with_its_unit_and_bounded_dimensions() {
    baton_aws::emf::install("execute-agent").expect("the collector installs once");
    assert!(
        baton_aws::emf::install("route").is_err(),
        "a second install is refused"
    );

    metrics::task_started();
    metrics::task_started();
    metrics::attempt_ended(&AttemptEnd::Succeeded(json!({})));
    metrics::attempt_ended(&AttemptEnd::Retry {
        not_before_ms: 0,
        lease_until_ms: 0,
    });
    metrics::agent_call("summarizer", 120, false);
    metrics::agent_call("summarizer", 80, true);
    metrics::routed(RoutingStrategy::RoundRobin);
    metrics::circuit_changed("summarizer", true);
    metrics::queue_wait(Some(1_000), 1_250);
    metrics::queue_wait(None, 1_250);
    let workflow = uuid::Uuid::now_v7().to_string();
    metrics::workflow_finished(
        &workflow,
        WorkflowStatus::Succeeded,
        baton_types::clock::now_ms() + 2_000,
    );
    metrics::session_started();

    let mut out = Vec::new();
    baton_aws::emf::flush_into(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON document"))
        .collect();
    for line in &lines {
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Baton");
        assert!(line["_aws"]["Timestamp"].is_u64());
        assert_eq!(line["Function"], "execute-agent");
    }

    let plain = document(&lines, &[("Function", "execute-agent")]);
    let names = declared(plain);
    for (name, unit) in [
        ("TasksStarted", "Count"),
        ("TasksSucceeded", "Count"),
        ("TasksRetried", "Count"),
        ("QueueWait", "Milliseconds"),
        ("SessionsStarted", "Count"),
    ] {
        assert!(
            names.contains(&(name.into(), unit.into())),
            "{name}: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|(n, _)| n == "TasksFailed"),
        "none failed"
    );
    assert_eq!(plain["TasksStarted"], 2);
    assert_eq!(plain["QueueWait"], json!([250.0]));

    let agent = document(
        &lines,
        &[("Function", "execute-agent"), ("Agent", "summarizer")],
    );
    assert_eq!(
        declared(agent),
        [
            ("AgentErrors".to_string(), "Count".to_string()),
            ("AgentLatency".into(), "Milliseconds".into()),
            ("CircuitsOpened".into(), "Count".into()),
        ]
    );
    assert_eq!(agent["AgentLatency"], json!([120.0, 80.0]));
    assert_eq!(agent["AgentErrors"], 1);

    let strategy = document(
        &lines,
        &[("Function", "execute-agent"), ("Strategy", "round_robin")],
    );
    assert_eq!(strategy["RoutingDecisions"], 1);

    let finished = document(
        &lines,
        &[("Function", "execute-agent"), ("Outcome", "succeeded")],
    );
    let duration = finished["WorkflowDuration"][0].as_f64().unwrap();
    assert!((1_900.0..=2_100.0).contains(&duration), "{duration}");

    // What was flushed is gone: the next invocation starts from nothing.
    let mut again = Vec::new();
    baton_aws::emf::flush_into(&mut again).unwrap();
    assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
}
