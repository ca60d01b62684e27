//! The tenant's own analyst. An agent registered with the `improvements.analyze` capability
//! receives each analysis's evidence, digested, with what the rules found; it may answer
//! suggestions of its own, which are kept marked as its own. Like the rules', they are only
//! suggestions: a person applies them or not. Pure: the chain sends the digest and keeps what
//! [`advised`] accepts.
//!
//! The answer the analyst gives: `{"suggestions": [{subject?, title, area, priority,
//! expected_impact, evidence?, change: {method, path, body?, headers?}, metric}]}`, at most
//! [`MAX_ADVISED`] of them. A suggestion that breaks a rule below is left out, with the
//! reason logged.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::improvements::{group, p50, ApiCall, Area, Evidence, Metric, Suggestion};
use super::improvements::{SuggestionPriority, MAX_CALLS};
use super::text::clipped;

/// The capability of the tenant's analyst.
pub const ANALYZE: &str = "improvements.analyze";
/// The rule name the analyst's suggestions carry.
pub const ADVICE_RULE: &str = "advice";
/// The most suggestions kept from one answer.
pub const MAX_ADVISED: usize = 10;
/// The most agents the digest describes.
pub const MAX_DIGEST_AGENTS: usize = 100;
const MAX_TITLE_CHARS: usize = 200;
const MAX_SUBJECT_CHARS: usize = 128;
const MAX_IMPACT_BYTES: usize = 1_024;
const MAX_EVIDENCE_BYTES: usize = 4 * 1024;
const MAX_BODY_BYTES: usize = 8 * 1024;
const MAX_PATH_CHARS: usize = 512;
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// What the analyst's task is given: the window, each agent's settings and figures in it, the
/// routing strategies and priority multipliers, the rules' findings, and how to answer.
pub fn advisor_input(evidence: &Evidence, found: &[Suggestion]) -> Value {
    let calls = &evidence.calls[..evidence.calls.len().min(MAX_CALLS)];
    let by_agent = group(calls.iter(), |c| &c.agent);
    let agents: Vec<Value> = evidence
        .agents
        .iter()
        .take(MAX_DIGEST_AGENTS)
        .map(|agent| {
            let calls = by_agent
                .get(agent.name.as_str())
                .map_or(&[][..], Vec::as_slice);
            let failures: BTreeMap<&str, usize> = calls
                .iter()
                .filter_map(|c| c.failure.as_deref())
                .fold(BTreeMap::new(), |mut counts, kind| {
                    *counts.entry(kind).or_default() += 1;
                    counts
                });
            json!({
                "name": agent.name,
                "kind": agent.kind,
                "model": agent.model,
                "capabilities": agent.capabilities,
                "enabled": agent.enabled,
                "max_concurrency": agent.max_concurrency,
                "timeout_ms": agent.timeout_ms,
                "circuit_opened": agent.circuit_opens > 0,
                "calls": calls.len(),
                "succeeded": calls.iter().filter(|c| c.success).count(),
                "failures": failures,
                "p50_latency_ms": p50(calls, |c| c.latency_ms),
                "p50_queue_wait_ms": p50(calls, |c| c.queue_wait_ms),
                "busy_waits": calls.iter().map(|c| u64::from(c.busy_waits)).sum::<u64>(),
                "tokens": calls.iter().map(|c| c.input_tokens + c.output_tokens).sum::<u64>(),
            })
        })
        .collect();
    let findings: Vec<Value> = found
        .iter()
        .map(|s| json!({ "rule": s.rule, "subject": s.subject, "priority": s.priority, "title": s.title }))
        .collect();
    json!({
        "task": ANALYZE,
        "text": "You review how an orchestrator's agents performed over a window. Suggest at \
                 most 10 changes the rules have not found, each as the API call a person would \
                 make. Answer JSON: {\"suggestions\": [{\"subject\", \"title\", \"area\" \
                 (bottleneck|resource_use|service_health|optimisation), \"priority\" \
                 (high|medium|low), \"expected_impact\", \"evidence\", \"change\": {\"method\", \
                 \"path\" (under /v1/), \"body\"}, \"metric\": {\"kind\": success_rate|timeout_rate \
                 (with \"agent\"), queue_wait_p50|latency_p50|capability_success_rate (with \
                 \"capability\"), deadline_miss_rate|tokens_per_call (with \"task_type\")}}]}.",
        "window_start_ms": evidence.window_start_ms,
        "window_end_ms": evidence.window_end_ms,
        "calls": calls.len(),
        "agents": agents,
        "strategies": evidence.strategies,
        "priority_multipliers": evidence.priority_multipliers,
        "rules_found": findings,
    })
}

/// One suggestion as the analyst answers it.
#[derive(Debug, Deserialize)]
struct Advised {
    subject: Option<String>,
    title: String,
    area: Area,
    priority: SuggestionPriority,
    expected_impact: String,
    #[serde(default)]
    evidence: Value,
    change: AdvisedChange,
    metric: Metric,
}

#[derive(Debug, Deserialize)]
struct AdvisedChange {
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
}

/// The suggestions of an analyst's answer that keep the rules, and why each other one was
/// left out.
pub fn advised(output: &Value) -> (Vec<Suggestion>, Vec<String>) {
    let Some(list) = output.get("suggestions").and_then(Value::as_array) else {
        return (Vec::new(), vec!["no `suggestions` array".into()]);
    };
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for (i, item) in list.iter().enumerate() {
        if kept.len() == MAX_ADVISED {
            refused.push(format!(
                "suggestions past the first {MAX_ADVISED} are not kept"
            ));
            break;
        }
        match serde_json::from_value::<Advised>(item.clone())
            .map_err(|e| e.to_string())
            .and_then(checked)
        {
            Ok(suggestion) => kept.push(suggestion),
            Err(why) => refused.push(format!("suggestions[{i}]: {why}")),
        }
    }
    (kept, refused)
}

fn checked(advised: Advised) -> Result<Suggestion, String> {
    let title = advised.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!("a title has 1 to {MAX_TITLE_CHARS} characters"));
    }
    let change = advised.change;
    let method = change.method.to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(format!(
            "change.method must be one of {}",
            METHODS.join(", ")
        ));
    }
    let path = change.path.trim();
    let plain = path
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '\\' && c != '#');
    if !path.starts_with("/v1/")
        || path.contains("..")
        || !plain
        || path.chars().count() > MAX_PATH_CHARS
    {
        return Err(format!(
            "change.path must be a path of Baton's API under /v1/, at most {MAX_PATH_CHARS} characters"
        ));
    }
    let bytes = |value: &Value| serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if change
        .body
        .as_ref()
        .is_some_and(|b| bytes(b) > MAX_BODY_BYTES)
    {
        return Err(format!("change.body is over {MAX_BODY_BYTES} bytes"));
    }
    if bytes(&json!(change.headers)) > MAX_BODY_BYTES {
        return Err(format!("change.headers are over {MAX_BODY_BYTES} bytes"));
    }
    if bytes(&advised.evidence) > MAX_EVIDENCE_BYTES {
        return Err(format!("the evidence is over {MAX_EVIDENCE_BYTES} bytes"));
    }
    let subject = advised
        .subject
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(title);
    Ok(Suggestion {
        rule: ADVICE_RULE.into(),
        subject: subject.chars().take(MAX_SUBJECT_CHARS).collect(),
        area: advised.area,
        priority: advised.priority,
        title: title.to_string(),
        evidence: advised.evidence,
        expected_impact: clipped(advised.expected_impact.trim(), MAX_IMPACT_BYTES),
        change: ApiCall {
            method,
            path: path.to_string(),
            headers: change.headers,
            body: change.body,
        },
        metric: advised.metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::improvements::{AgentFacts, CallFact};

    fn evidence() -> Evidence {
        let call = |agent: &str, success: bool| CallFact {
            agent: agent.into(),
            task_type: "summary".into(),
            capability: "text".into(),
            success,
            failure: (!success).then(|| "timeout".into()),
            latency_ms: 200,
            queue_wait_ms: 30,
            busy_waits: 1,
            input_tokens: 10,
            output_tokens: 5,
            finished_at_ms: 1_000,
            deadline_slack_ms: None,
            strategy: "learned".into(),
        };
        Evidence {
            window_start_ms: 0,
            window_end_ms: 3_600_000,
            agents: vec![AgentFacts {
                name: "writer".into(),
                kind: "http".into(),
                capabilities: vec!["text".into()],
                enabled: true,
                ..AgentFacts::default()
            }],
            calls: vec![call("writer", true), call("writer", false)],
            strategies: BTreeMap::new(),
            priority_multipliers: BTreeMap::new(),
        }
    }

    fn good() -> Value {
        json!({
            "subject": "writer",
            "title": "Give writer a shorter prompt",
            "area": "optimisation",
            "priority": "low",
            "expected_impact": "Fewer tokens per call",
            "evidence": { "tokens": 15 },
            "change": { "method": "patch", "path": "/v1/agents/writer", "body": { "system_prompt": "Be brief." } },
            "metric": { "kind": "tokens_per_call", "task_type": "summary" },
        })
    }

    #[test]
    fn the_digest_gives_each_agents_figures_and_what_the_rules_found() {
        let input = advisor_input(&evidence(), &[]);
        let writer = &input["agents"][0];
        assert_eq!(writer["calls"], 2);
        assert_eq!(writer["succeeded"], 1);
        assert_eq!(writer["failures"], json!({ "timeout": 1 }));
        assert_eq!(writer["p50_latency_ms"], 200);
        assert_eq!(writer["tokens"], 30);
        assert_eq!(input["rules_found"], json!([]));
        assert!(input["text"].as_str().unwrap().contains("suggestions"));
    }

    #[test]
    fn an_analysts_suggestions_are_kept_when_they_keep_the_rules() {
        let mut no_metric = good();
        no_metric.as_object_mut().unwrap().remove("metric");
        let mut elsewhere = good();
        elsewhere["change"]["path"] = json!("https://evil.example/v1/agents");
        let mut climbing = good();
        climbing["change"]["path"] = json!("/v1/../admin");
        let mut shouting = good();
        shouting["change"]["method"] = json!("TRACE");
        let mut untitled = good();
        untitled["title"] = json!("  ");
        let (kept, refused) = advised(&json!({
            "suggestions": [good(), no_metric, elsewhere, climbing, shouting, untitled]
        }));
        assert_eq!(kept.len(), 1);
        let s = &kept[0];
        assert_eq!(
            (s.rule.as_str(), s.subject.as_str()),
            (ADVICE_RULE, "writer")
        );
        assert_eq!(s.change.method, "PATCH");
        assert_eq!(
            s.metric,
            Metric::TokensPerCall {
                task_type: "summary".into()
            }
        );
        assert_eq!(refused.len(), 5, "{refused:?}");
        assert!(refused[0].starts_with("suggestions[1]: missing field `metric`"));
        assert!(refused[1].contains("under /v1/"));
    }

    #[test]
    fn an_answer_is_bounded_and_one_without_suggestions_keeps_nothing() {
        let many: Vec<Value> = (0..15).map(|_| good()).collect();
        let (kept, refused) = advised(&json!({ "suggestions": many }));
        assert_eq!(kept.len(), MAX_ADVISED);
        assert_eq!(refused.len(), 1);
        assert_eq!(advised(&json!({ "content": "no idea" })).0.len(), 0);
    }
}
