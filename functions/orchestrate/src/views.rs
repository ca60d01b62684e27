//! How stored records are shown by the API.

use baton::clock::rfc3339;
use baton::domain::agent::Agent;
use baton::domain::task::TaskStatus;
use baton::store::{TaskRecord, WorkflowView};
use serde_json::{json, Value};

pub fn agent(agent: &Agent) -> Value {
    json!({
        "name": agent.name,
        "kind": agent.kind,
        "endpoint": agent.endpoint,
        "capabilities": agent.capabilities,
        "timeout_ms": agent.timeout_ms,
        "enabled": agent.enabled,
        "created_at": rfc3339(agent.created_at_ms),
        "updated_at": rfc3339(agent.updated_at_ms),
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
        "failed_task": w.failed_task,
        "task_count": w.task_count,
        "tasks": view.tasks.iter().map(task).collect::<Vec<_>>(),
    })
}

fn task(t: &TaskRecord) -> Value {
    // The attempt number counts up front; an attempt that never started is not shown as made.
    let attempts = match t.status {
        TaskStatus::Running | TaskStatus::Succeeded | TaskStatus::Failed => t.attempt,
        _ => t.attempt.saturating_sub(1),
    };
    json!({
        "id": t.id,
        "capability": t.capability,
        "status": t.status,
        "depends_on": t.depends_on,
        "agent": t.agent,
        "attempts": attempts,
        "output": t.output,
        "error": t.failure,
        "started_at": t.started_at_ms.map(rfc3339),
        "finished_at": t.finished_at_ms.map(rfc3339),
    })
}
