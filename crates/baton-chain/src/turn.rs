//! What the chain does for a conversation turn's tasks, whoever ends them (execute-agent,
//! route, the scheduled repair):
//! - before an agent is called, its input gets the conversation's context and the agent's own
//!   instance state ([`call_input`]);
//! - when the answering task ends (or a sync helper fails, which skips it), the turn finishes:
//!   its answer, the conversation's new state and the agents' instances are written at once,
//!   and the session takes its next turn;
//! - when an async helper ends, its result is kept for the next turn.
//!
//! Each write is conditioned on what it changes (the turn still running, the result not kept
//! yet), so a redelivered message or a repeated follow-up changes nothing twice.

use baton_types::ids::TenantId;
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use baton_types::conversation::{AgentAnswer, ConversationState, TurnSummary, TurnTask};

use crate::store::{SessionStore, StoreError, TurnFinish, TurnStore, WorkflowStore};
use baton_types::records::{TaskRecord, WorkflowView};
use baton_types::roles::Role;
use baton_types::task::TaskStatus;
use baton_types::turn::{
    kept_answer, public_answer, state_fits, task_url, within_budget, AsyncResult, Kept, TurnRecord,
    TurnStatus, TurnTiming, RESULT_PREVIEW_BYTES,
};

/// What past turns keep of their text and answer, in characters: enough for context, and the
/// session's record stays far below DynamoDB's item limit.
const SUMMARY_CHARS: usize = 2_000;

/// The input an agent of a turn is called with: the turn's own input, the conversation's
/// context as it is now, and the agent's instance state in this session.
pub async fn call_input<S>(store: &S, record: &TaskRecord, agent: &str) -> Result<Value, StoreError>
where
    S: SessionStore + ?Sized,
{
    let Some(turn) = &record.profile.turn else {
        return Ok(record.input.clone());
    };
    let mut input = match &record.input {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let bundle = store.session_bundle(&record.tenant, &turn.session).await?;
    let (context, state) = match &bundle {
        Some(bundle) => {
            let session = &bundle.session;
            let conversation = &session.state;
            let context = json!({
                "recent_turns": conversation.recent,
                "checkpoints": conversation.checkpoints(),
                "task_stack": conversation.task_stack,
                "flags": conversation.flags,
                "async_agent_results": input.get("async_agent_results").cloned().unwrap_or_else(|| json!({})),
                "metadata": session.metadata,
            });
            let state = bundle
                .instances
                .iter()
                .find(|i| i.agent == agent)
                .map_or(Value::Null, |i| i.state.clone());
            (context, state)
        }
        None => (json!({}), Value::Null),
    };
    input.remove("async_agent_results");
    input.insert("context".into(), context);
    input.insert("state".into(), state);
    Ok(Value::Object(input))
}

/// The part of a task's follow-up that concerns its conversation, if it belongs to a turn.
pub async fn on_task_ended<S>(store: &S, record: &TaskRecord, now_ms: i64) -> Result<(), StoreError>
where
    S: WorkflowStore + SessionStore + TurnStore + ?Sized,
{
    let Some(turn) = &record.profile.turn else {
        return Ok(());
    };
    match (turn.role, record.status) {
        (Role::Async, TaskStatus::Succeeded | TaskStatus::Failed) => {
            keep_async_result(store, record, turn).await
        }
        (Role::Core | Role::Specialist, status) if status.is_terminal() => {
            finish_turn(store, &record.tenant, turn, now_ms).await
        }
        // A failed helper skips the primary: the turn ends here, failed.
        (Role::Sync, TaskStatus::Failed) => finish_turn(store, &record.tenant, turn, now_ms).await,
        _ => Ok(()),
    }
}

async fn keep_async_result<S>(
    store: &S,
    record: &TaskRecord,
    turn: &TurnTask,
) -> Result<(), StoreError>
where
    S: WorkflowStore + SessionStore + TurnStore + ?Sized,
{
    let agent = agent_of(record);
    let output = whole_output(store, record).await?;
    let result = match (&output, &record.failure) {
        (Some(output), _) => public_answer(output),
        (None, failure) => json!({ "error": failure }),
    };
    let state = output.as_ref().and_then(|o| o.get("state"));
    let finished_at_ms = record.finished_at_ms.unwrap_or_default();
    // Kept bounded: the task keeps it whole, and the preview says where.
    let url = task_url(&record.workflow_id, &record.id);
    let kept = AsyncResult {
        turn: turn.turn,
        agent: agent.to_string(),
        result: Kept::new(result, RESULT_PREVIEW_BYTES, Some(url)),
        finished_at_ms,
        workflow_id: Some(record.workflow_id.clone()),
    };
    store
        .record_async_result(
            &record.tenant,
            &turn.session,
            turn.generation.as_deref(),
            &kept,
            state,
            finished_at_ms,
        )
        .await
}

/// A task's output whole, read from the payload bucket when its item holds only a pointer.
async fn whole_output<S>(store: &S, record: &TaskRecord) -> Result<Option<Value>, StoreError>
where
    S: WorkflowStore + ?Sized,
{
    match (&record.output, &record.output_ref) {
        (None, Some(stored)) => Ok(Some(store.stored_payload(stored).await?)),
        (output, _) => Ok(output.clone()),
    }
}

/// The agent a turn's task names (its task id is the agent's name).
fn agent_of(record: &TaskRecord) -> &str {
    record.profile.agent.as_deref().unwrap_or(&record.id)
}

async fn finish_turn<S>(
    store: &S,
    tenant: &TenantId,
    task: &TurnTask,
    now_ms: i64,
) -> Result<(), StoreError>
where
    S: WorkflowStore + SessionStore + TurnStore + ?Sized,
{
    let Some(turn) = store.turn(tenant, &task.session, task.turn).await? else {
        return Ok(());
    };
    if turn.status != TurnStatus::Running {
        return Ok(());
    }
    let Some(session) = store.session(tenant, &task.session).await? else {
        return Ok(());
    };
    // A task of an earlier opening of the session's id finishes nothing of this one.
    let other_opening = task.generation.is_some() && task.generation != session.generation;
    if session.active_turn != Some(turn.turn) || other_opening {
        return Ok(());
    }
    let Some(mut view) = store.workflow(tenant, &turn.workflow_id).await? else {
        return Ok(());
    };
    // The answers are needed whole: the answer, the helpers' state and progress.
    for task in &mut view.tasks {
        if task.output.is_none() && task.output_ref.is_some() {
            task.output = whole_output(store, task).await?;
        }
    }
    let ended = conclude(&turn, &session.state, &view, now_ms);
    let finished = store
        .finish_turn(
            tenant,
            &TurnFinish {
                turn: &ended.turn,
                session: &session,
                after: &ended.state,
                instances: ended.instances,
                now_ms,
            },
        )
        .await?;
    if finished {
        tracing::info!(
            session = %task.session,
            turn = turn.turn,
            status = ended.turn.status.as_str(),
            "turn finished"
        );
    }
    Ok(())
}

/// A turn's end, worked out from its workflow.
struct EndedTurn {
    turn: TurnRecord,
    state: ConversationState,
    instances: Vec<(String, Option<Value>)>,
}

fn conclude(
    turn: &TurnRecord,
    before: &ConversationState,
    view: &WorkflowView,
    now_ms: i64,
) -> EndedTurn {
    let plan = &turn.plan;
    let answering = plan.answering().unwrap_or_default();
    let task = |agent: &str| view.tasks.iter().find(|t| agent_of(t) == agent);
    // Helpers' answers in the order they ended, then the primary's: later answers move the
    // conversation after earlier ones.
    let mut succeeded: Vec<&TaskRecord> = view
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded && t.output.is_some())
        .collect();
    succeeded.sort_by_key(|t| (agent_of(t) == answering, t.finished_at_ms));

    // The helpers' results as the turn keeps them: bounded (the agents that depended on
    // them got them whole; the workflow's tasks serve them whole).
    let mut results = Vec::new();
    let mut error = None;
    for step in &plan.sync {
        let Some(t) = task(&step.agent) else { continue };
        match t.status {
            TaskStatus::Succeeded => {
                if let Some(output) = &t.output {
                    results.push((step.agent.clone(), public_answer(output)));
                }
            }
            TaskStatus::Failed => {
                results.push((step.agent.clone(), json!({ "error": t.failure })));
                error.get_or_insert_with(|| failed_because(&step.agent, t));
            }
            _ => {}
        }
    }
    let (agents, results): (Vec<String>, Vec<Value>) = results.into_iter().unzip();
    let kept = results
        .into_iter()
        .zip(&agents)
        .map(|(result, agent)| {
            let url = Some(task_url(&turn.workflow_id, agent));
            (Kept::Whole(result), url)
        })
        .collect();
    let sync_agent_results: Map<String, Value> = agents
        .into_iter()
        .zip(within_budget(kept))
        .map(|(agent, result)| (agent, result.to_value()))
        .collect();
    let answer_task = task(answering);
    let answer = answer_task
        .filter(|t| t.status == TaskStatus::Succeeded)
        .and_then(|t| t.output.as_ref());
    if answer.is_none() {
        if let Some(t) = answer_task.filter(|t| t.status == TaskStatus::Failed) {
            error = Some(failed_because(answering, t));
        }
    }
    let (kept, response) = match answer {
        Some(output) => {
            let (kept, response) = kept_answer(output, task_url(&turn.workflow_id, answering));
            (Some(kept), response)
        }
        None => (None, None),
    };

    let mut state = before.clone();
    let answers: Vec<AgentAnswer<'_>> = succeeded
        .iter()
        .filter_map(|t| {
            Some(AgentAnswer {
                agent: agent_of(t),
                generates: plan.generators.iter().any(|g| g == agent_of(t)),
                output: t.output.as_ref()?,
            })
        })
        .collect();
    let checkpoint_progress = state.apply(&answers);
    state.remember(TurnSummary {
        turn: turn.turn,
        text: truncated(&turn.text),
        response: response.as_deref().map(truncated),
        agents: answers.iter().map(|a| a.agent.to_string()).collect(),
        human_reply: None,
    });

    let instances = succeeded
        .iter()
        .map(|t| {
            let state = t.output.as_ref().and_then(|o| o.get("state")).cloned();
            // Too large to keep: the agent's next call gets the state it had before.
            let state = state.filter(|state| {
                let fits = state_fits(state);
                if !fits {
                    tracing::warn!(agent = agent_of(t), "an agent's state too large to keep");
                }
                fits
            });
            (agent_of(t).to_string(), state)
        })
        .collect();
    let timing = timing(turn, view, now_ms);
    let status = if answer.is_some() {
        TurnStatus::Answered
    } else {
        TurnStatus::Failed
    };
    EndedTurn {
        turn: TurnRecord {
            status,
            response,
            answer: kept,
            sync_agent_results,
            error: if answer.is_some() {
                None
            } else {
                error.or_else(|| Some(json!({ "message": "the answering agent did not run" })))
            },
            checkpoint_progress,
            // The recent turns are the session's; the turn keeps what it answers with.
            state: Some(ConversationState {
                recent: Vec::new(),
                ..state.clone()
            }),
            timing,
            answered_at_ms: Some(now_ms),
            ..turn.clone()
        },
        state,
        instances,
    }
}

fn failed_because(agent: &str, task: &TaskRecord) -> Value {
    let (kind, message) = task
        .failure
        .as_ref()
        .map_or((json!(null), String::new()), |f| {
            (json!(f.kind), f.message.clone())
        });
    json!({ "agent": agent, "kind": kind, "message": message })
}

fn truncated(text: &str) -> String {
    text.chars().take(SUMMARY_CHARS).collect()
}

/// Each agent's time, the primary's, the whole turn's, and what was left for Baton: the turn
/// less the agent time along its longest dependency path.
fn timing(turn: &TurnRecord, view: &WorkflowView, now_ms: i64) -> TurnTiming {
    let mut agents = BTreeMap::new();
    for task in &view.tasks {
        // The call itself; an attempt recorded before calls were timed counts whole.
        let call = task.attempts.iter().rev().find_map(|a| {
            a.call_ms
                .or_else(|| Some((a.finished_at_ms - a.started_at_ms?).max(0) as u64))
        });
        if let Some(ms) = call {
            agents.insert(agent_of(task).to_string(), ms);
        }
    }
    let plan = &turn.plan;
    let mut path: BTreeMap<&str, u64> = BTreeMap::new();
    // Sync steps are listed with their dependencies; resolve them until stable (a few passes).
    for _ in 0..plan.sync.len().max(1) {
        for step in &plan.sync {
            let before = step
                .depends_on
                .iter()
                .filter_map(|d| path.get(d.as_str()))
                .max()
                .copied()
                .unwrap_or(0);
            let own = agents.get(&step.agent).copied().unwrap_or(0);
            path.insert(step.agent.as_str(), before + own);
        }
    }
    let answering = plan.answering().unwrap_or_default();
    let primary_ms = agents.get(answering).copied();
    let in_agents = path.values().max().copied().unwrap_or(0) + primary_ms.unwrap_or(0);
    let total_ms = (now_ms - turn.created_at_ms).max(0) as u64;
    TurnTiming {
        agents,
        primary_ms,
        total_ms: Some(total_ms),
        orchestration_ms: Some(total_ms.saturating_sub(in_agents)),
        ..turn.timing.clone()
    }
}
