//! How stored records are shown by the API.

use baton::clock::rfc3339;
use baton::domain::agent::Agent;
use baton::domain::circuit::Circuit;
use baton::domain::priority::{Band, Multipliers, Priority};
use baton::domain::resources::AgentLoad;
use baton::domain::routing::CapabilityDefaults;
use baton::domain::session::Session;
use baton::domain::task::AttemptRecord;
use baton::store::{TaskRecord, WorkflowView};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// An agent with its health, circuit (absent: closed, no recent failure) and the calls in
/// flight to it (absent: none counted).
pub fn agent(
    agent: &Agent,
    circuit: Option<&Circuit>,
    load: Option<&AgentLoad>,
    now_ms: i64,
) -> Value {
    let load = load.cloned().unwrap_or_default();
    let breaker = agent.breaker();
    let closed = Circuit::default();
    let circuit = circuit.unwrap_or(&closed);
    // The name, then the kind and the kind's own fields (an api_key is a reference, never a key).
    let mut view = serde_json::Map::from_iter([("name".to_string(), json!(agent.name))]);
    if let Ok(Value::Object(target)) = serde_json::to_value(&agent.target) {
        view.extend(target);
    }
    let rest = json!({
        "capabilities": agent.capabilities,
        "category": agent.category,
        "description": agent.description,
        "depends_on": agent.depends_on,
        "timeout_ms": agent.timeout_ms,
        "enabled": agent.enabled,
        "version": agent.version,
        "retry": agent.retry,
        "health_check": agent.health_check,
        "circuit_breaker": breaker,
        "weight": agent.weight(),
        "max_concurrency": agent.max_concurrency,
        "resources": agent.resources,
        "in_flight": load.in_flight,
        "resources_in_use": load.resources_in_use,
        "health": agent.health.as_ref().map(|h| json!({
            "status": h.status,
            "checked_at": rfc3339(h.checked_at_ms),
            "consecutive_failures": h.consecutive_failures,
            "detail": h.detail,
        })),
        "circuit": {
            "state": circuit.state(now_ms, &breaker),
            "failure_rate": circuit.failure_rate(),
            "consecutive_failures": circuit.consecutive_failures,
            "opened_at": circuit.opened_at_ms.filter(|_| circuit.open).map(rfc3339),
            "probe_out": circuit.probe.as_ref().is_some_and(|p| p.until_ms >= now_ms),
        },
        "created_at": rfc3339(agent.created_at_ms),
        "updated_at": rfc3339(agent.updated_at_ms),
    });
    if let Value::Object(rest) = rest {
        view.extend(rest);
    }
    Value::Object(view)
}

/// A capability's routing defaults (`defaults` absent: nothing configured).
pub fn capability(name: &str, defaults: Option<&CapabilityDefaults>) -> Value {
    let configured = defaults.cloned().unwrap_or_default();
    json!({
        "capability": name,
        "routing": configured.routing.unwrap_or_default(),
        "latency_target_ms": configured.latency_target_ms,
        "configured": defaults.is_some(),
    })
}

/// The priority levels, the tenant's multipliers over the defaults, and the bands.
pub fn priorities(own: &BTreeMap<String, f64>) -> Value {
    let levels: serde_json::Map<String, Value> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_string(), json!(p.level())))
        .collect();
    json!({
        "levels": levels,
        "multipliers": Multipliers::with(own).0,
        "default_multiplier": 1.0,
        "bands": {
            Band::Urgent.as_str(): { "from_score": Band::URGENT_FROM },
            Band::High.as_str(): { "from_score": Band::HIGH_FROM },
            Band::Standard.as_str(): { "from_score": 0.0 },
        },
    })
}

/// A session's state.
pub fn session(session: &Session) -> Value {
    json!({
        "session_id": session.id,
        "agents": session.agents,
        "metadata": session.metadata,
        "idle_timeout_s": session.idle_timeout_s,
        "created_at": rfc3339(session.created_at_ms),
        "last_active_at": rfc3339(session.last_active_at_ms),
        "expires_at": rfc3339(session.expires_at_ms()),
    })
}

pub fn workflow(view: &WorkflowView) -> Value {
    let w = &view.workflow;
    json!({
        "workflow_id": w.id,
        "name": w.name,
        "status": w.status,
        "created_at": rfc3339(w.created_at_ms),
        "updated_at": rfc3339(w.updated_at_ms),
        "finished_at": w.finished_at_ms.map(rfc3339),
        "deadline_at": w.deadline_at_ms.map(rfc3339),
        "failed_task": w.failed_task,
        "error": w.error,
        "task_count": w.task_count,
        "tasks": view.tasks.iter().map(task).collect::<Vec<_>>(),
    })
}

fn task(t: &TaskRecord) -> Value {
    json!({
        "id": t.id,
        "capability": t.capability,
        "type": t.profile.task_type,
        "routing": t.profile.routing,
        "priority": t.profile.priority.unwrap_or_default(),
        "band": t.profile.band,
        "resources": t.profile.resources,
        "deadline": t.profile.deadline_at_ms.map(rfc3339),
        "decision": t.decision.as_ref().map(|d| json!({
            "strategy": d.strategy,
            "confidence": d.confidence,
            "fallbacks": d.fallbacks,
            "reasoning": d.reasoning,
        })),
        "status": t.status,
        "depends_on": t.depends_on,
        "agent": t.agent,
        "attempt": t.attempt,
        "attempts": t.attempts.iter().map(attempt).collect::<Vec<_>>(),
        "lease_expirations": t.lease_expirations,
        "output": t.output,
        "error": t.failure,
        "started_at": t.started_at_ms.map(rfc3339),
        "finished_at": t.finished_at_ms.map(rfc3339),
    })
}

fn attempt(a: &AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt,
        "agent": a.agent,
        "outcome": a.outcome,
        "started_at": a.started_at_ms.map(rfc3339),
        "finished_at": rfc3339(a.finished_at_ms),
        "error": a.error,
        "claims": a.claims,
        "retry_delay_ms": a.retry_delay_ms,
        "next_attempt_at": a.retry_delay_ms.map(|d| rfc3339(a.finished_at_ms + d as i64)),
        "usage": a.usage,
    })
}
