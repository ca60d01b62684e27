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

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use baton_types::conversation::{AgentAnswer, ConversationState, TurnSummary, TurnTask};
use baton_types::ids::{AgentName, TenantId};
use baton_types::recall::{self, RunningSummary};
use baton_types::session::Session;

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
    let Some(turn) = record
        .profile
        .turn
        .as_ref()
        .filter(|t| t.summarizes_through.is_none())
    else {
        // The summarizer's input holds all it needs: the summary so far and the turns to fold.
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
            let recent: Vec<&TurnSummary> = recall::kept_turns(conversation).collect();
            let context = json!({
                "summary": conversation.summary,
                "recent_turns": recent,
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
    if let Some(through_turn) = turn.summarizes_through {
        return keep_summary(store, record, turn, through_turn).await;
    }
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
    let output = store.whole_output(record).await?;
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

/// Keeps the summary a summarizer answered, unless a summary of later turns is kept already. A
/// failed or empty answer keeps nothing: its turns wait for the next fold.
async fn keep_summary<S>(
    store: &S,
    record: &TaskRecord,
    turn: &TurnTask,
    through_turn: u32,
) -> Result<(), StoreError>
where
    S: WorkflowStore + TurnStore + ?Sized,
{
    if record.status != TaskStatus::Succeeded {
        return Ok(());
    }
    let Some(text) = store
        .whole_output(record)
        .await?
        .as_ref()
        .and_then(recall::summary_of)
    else {
        tracing::warn!(agent = agent_of(record), "a summarizer answered no summary");
        return Ok(());
    };
    let summary = RunningSummary {
        through_turn,
        text,
        agent: agent_of(record).to_string(),
    };
    store
        .record_summary(
            &record.tenant,
            &turn.session,
            turn.generation.as_deref(),
            &summary,
        )
        .await
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
            task.output = store.whole_output(task).await?;
        }
    }
    let ended = conclude(&turn, &session, &view, now_ms);
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

fn conclude(turn: &TurnRecord, session: &Session, view: &WorkflowView, now_ms: i64) -> EndedTurn {
    let before = &session.state;
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
    let (agents, results): (Vec<AgentName>, Vec<Value>) = results.into_iter().unzip();
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
        .map(|(agent, result)| (agent.into_string(), result.to_value()))
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
    recall::remember(
        &mut state,
        TurnSummary {
            turn: turn.turn,
            text: truncated(&turn.text),
            response: response.as_deref().map(truncated),
            agents: answers.iter().map(|a| a.agent.to_string()).collect(),
            human_reply: None,
        },
        session.history_turns,
        plan.summarizer.is_some(),
    );

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
            let own = agents.get(step.agent.as_str()).copied().unwrap_or(0);
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

/// What a turn's tasks change in their session, on the memory store: the tasks run through
/// the chain (claim, conclude, follow-up) as execute-agent runs them, and a redelivered
/// follow-up calls [`on_task_ended`] again with the task as stored.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::fixtures::{final_failure, id, settings, tenant, workflow, Harness};
    use crate::memory::{Fault, MemoryQueue, MemoryStore};
    use crate::store::{SessionBundle, TurnStart, TurnStarted};
    use baton_types::conversation::{
        checkpoint, Analysis, CheckpointInput, CheckpointStatus, ProgressChange, SyncStep, TurnPlan,
    };
    use baton_types::ids::SessionId;
    use baton_types::session::Session;
    use baton_types::task::TaskProfile;

    const SESSION: &str = "s1";
    const GENERATION: &str = "g1";
    /// The turn's waited-for workflow: a sync helper, then the core agent that answers.
    const WAITED: &str = "w1";
    /// The turn's async workflow: one background agent.
    const ASYNC: &str = "w2";
    const STARTED_MS: i64 = 100;

    fn session_id() -> SessionId {
        id(SESSION)
    }

    /// A turn's task profile: named agent `agent`, with `role` in turn 1 of the session.
    fn turn_profile(agent: &str, role: Role) -> TaskProfile {
        TaskProfile {
            agent: Some(agent.parse().unwrap()),
            turn: Some(TurnTask {
                session: session_id(),
                turn: 1,
                role,
                generation: Some(GENERATION.into()),
                summarizes_through: None,
            }),
            ..TaskProfile::default()
        }
    }

    /// A session (opened with two checkpoints, the first in progress) running turn 1:
    /// `helper` (sync) then `core` in [`WAITED`], `bg` (async) in [`ASYNC`].
    async fn turn_running() -> Harness {
        let harness = Harness {
            store: MemoryStore::new(),
            queue: MemoryQueue::new(),
            settings: settings(),
        };
        let checkpoints = ["draft", "review"]
            .iter()
            .enumerate()
            .map(|(i, d)| checkpoint("main", i, CheckpointInput::Description((*d).into())))
            .collect();
        let session = Session {
            id: session_id(),
            agents: vec!["helper".into(), "core".into(), "bg".into()],
            metadata: json!({}),
            idle_timeout_s: 3_600,
            created_at_ms: 0,
            last_active_at_ms: 0,
            turns: 0,
            active_turn: None,
            state: ConversationState::open("main", checkpoints),
            history_turns: recall::DEFAULT_HISTORY_TURNS,
            generation: Some(GENERATION.into()),
        };
        harness
            .store
            .create_session(&tenant(), &session)
            .await
            .expect("the session is stored");
        let mut waited = workflow(
            WAITED,
            &[("helper", &[]), ("core", &["helper"])],
            STARTED_MS,
        );
        for task in &mut waited.tasks {
            let role = if task.id.as_str() == "core" {
                Role::Core
            } else {
                Role::Sync
            };
            task.profile = turn_profile(task.id.as_str(), role);
        }
        let mut background = workflow(ASYNC, &[("bg", &[])], STARTED_MS);
        background.tasks[0].profile = turn_profile("bg", Role::Async);
        let turn = TurnRecord {
            session_id: session_id(),
            turn: 1,
            text: "hi there".into(),
            channel: None,
            services: None,
            analysis: Analysis::by_client(&"core".parse().unwrap()),
            plan: TurnPlan {
                specialist: None,
                core: Some("core".parse().unwrap()),
                sync: vec![SyncStep {
                    agent: "helper".parse().unwrap(),
                    depends_on: Vec::new(),
                }],
                background: vec!["bg".parse().unwrap()],
                generators: Vec::new(),
                summarizer: None,
                summarizes_through: None,
            },
            history: None,
            workflow_id: id(WAITED),
            async_workflow_id: Some(id(ASYNC)),
            status: TurnStatus::Running,
            response: None,
            answer: None,
            sync_agent_results: Map::new(),
            async_agent_results: Map::new(),
            error: None,
            checkpoint_progress: Vec::new(),
            state: None,
            timing: TurnTiming::default(),
            created_at_ms: STARTED_MS,
            answered_at_ms: None,
        };
        let started = harness
            .store
            .start_turn(
                &tenant(),
                &TurnStart {
                    session: &session,
                    turn: &turn,
                    workflows: &[waited, background],
                    shown: &[],
                    request_id: "r1",
                    now_ms: STARTED_MS,
                },
            )
            .await
            .expect("the memory store answers");
        assert_eq!(started, TurnStarted::Started);
        harness
    }

    async fn turn_one(harness: &Harness) -> TurnRecord {
        harness
            .store
            .turn(&tenant(), &session_id(), 1)
            .await
            .expect("the memory store answers")
            .expect("turn 1 exists")
    }

    async fn bundle(harness: &Harness) -> SessionBundle {
        harness
            .store
            .session_bundle(&tenant(), &session_id())
            .await
            .expect("the memory store answers")
            .expect("the session exists")
    }

    /// Each instance as (agent, state, calls, last turn), by agent.
    fn instances(bundle: &SessionBundle) -> Vec<(String, Value, u32, u32)> {
        let mut all: Vec<_> = bundle
            .instances
            .iter()
            .map(|i| (i.agent.clone(), i.state.clone(), i.calls, i.last_turn))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Runs the helper and then the core agent with these answers.
    async fn answer_turn(harness: &Harness) {
        let helper = json!({ "notes": "n", "state": { "k": 1 } });
        harness.run(WAITED, "helper", Ok(helper), 1_000).await;
        let core = json!({
            "response": "hello",
            "checkpoint_progress": { "main-1": "complete" },
            "state": { "mem": 2 },
        });
        harness.run(WAITED, "core", Ok(core), 2_000).await;
    }

    #[tokio::test]
    async fn the_answering_task_finishes_the_turn_with_its_answer_state_and_instances() {
        let harness = turn_running().await;
        let helper = json!({ "notes": "n", "state": { "k": 1 } });
        harness.run(WAITED, "helper", Ok(helper), 1_000).await;
        // A sync helper's success waits for the answer: nothing is written yet.
        assert_eq!(turn_one(&harness).await.status, TurnStatus::Running);
        assert_eq!(harness.store.calls("finish_turn"), 0);
        assert!(bundle(&harness).await.instances.is_empty());

        let core = json!({
            "response": "hello",
            "checkpoint_progress": { "main-1": "complete" },
            "state": { "mem": 2 },
        });
        harness.run(WAITED, "core", Ok(core), 2_000).await;

        let turn = turn_one(&harness).await;
        assert_eq!(turn.status, TurnStatus::Answered);
        assert_eq!(turn.response.as_deref(), Some("hello"));
        // The agent's private state stays out of the answer and the helper's result.
        assert_eq!(
            turn.answer,
            Some(json!({ "response": "hello", "checkpoint_progress": { "main-1": "complete" } }))
        );
        assert_eq!(
            Value::Object(turn.sync_agent_results.clone()),
            json!({ "helper": { "notes": "n" } })
        );
        assert_eq!(turn.error, None);
        assert_eq!(turn.answered_at_ms, Some(2_000));
        assert_eq!(turn.timing.total_ms, Some(2_000 - STARTED_MS as u64));
        let moved = |checkpoint: &str, from, to, by: Option<&str>| ProgressChange {
            task: "main".into(),
            checkpoint: checkpoint.into(),
            from,
            to,
            by: by.map(str::to_string),
        };
        assert_eq!(
            turn.checkpoint_progress,
            vec![
                moved(
                    "main-1",
                    CheckpointStatus::InProgress,
                    CheckpointStatus::Complete,
                    Some("core")
                ),
                moved(
                    "main-2",
                    CheckpointStatus::Pending,
                    CheckpointStatus::InProgress,
                    None
                ),
            ]
        );
        let kept = turn.state.expect("the turn keeps the conversation");
        assert!(kept.recent.is_empty(), "the recent turns are the session's");

        let bundle = bundle(&harness).await;
        let session = &bundle.session;
        assert_eq!(session.active_turn, None, "the next turn may start");
        assert_eq!(session.last_active_at_ms, 2_000);
        assert_eq!(session.state.task_stack, kept.task_stack);
        let statuses: Vec<_> = session
            .state
            .checkpoints()
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(
            statuses,
            [CheckpointStatus::Complete, CheckpointStatus::InProgress]
        );
        assert_eq!(
            session.state.recent,
            vec![TurnSummary {
                turn: 1,
                text: "hi there".into(),
                response: Some("hello".into()),
                agents: vec!["helper".into(), "core".into()],
                human_reply: None,
            }]
        );
        assert_eq!(
            instances(&bundle),
            vec![
                ("core".into(), json!({ "mem": 2 }), 1, 1),
                ("helper".into(), json!({ "k": 1 }), 1, 1),
            ]
        );
    }

    #[tokio::test]
    async fn the_same_end_processed_again_changes_nothing_more() {
        let harness = turn_running().await;
        answer_turn(&harness).await;
        let (turn, before) = (turn_one(&harness).await, bundle(&harness).await);
        let writes = harness.store.calls("finish_turn");

        // A redelivered follow-up of the answering task, and a late one of its helper.
        let core = harness.task(WAITED, "core").await;
        on_task_ended(&harness.store, &core, 9_000).await.unwrap();
        let helper = harness.task(WAITED, "helper").await;
        on_task_ended(&harness.store, &helper, 9_000).await.unwrap();

        assert_eq!(turn_one(&harness).await, turn);
        let after = bundle(&harness).await;
        assert_eq!(after.session, before.session);
        assert_eq!(instances(&after), instances(&before));
        assert_eq!(
            harness.store.calls("finish_turn"),
            writes,
            "a finished turn is not written again"
        );
    }

    #[tokio::test]
    async fn a_turn_whose_finish_lost_its_response_is_finished_once() {
        let harness = turn_running().await;
        let helper = json!({ "notes": "n", "state": { "k": 1 } });
        harness.run(WAITED, "helper", Ok(helper), 1_000).await;
        harness.store.inject("finish_turn", Fault::LoseResponse, 1);
        let token = "claim-core";
        let core = harness.claim(WAITED, "core", token, 2_000).await;
        let answer = json!({ "response": "hello", "state": { "mem": 2 } });
        let lost = harness.try_conclude(&core, token, Ok(answer), 2_000).await;
        assert!(lost.is_err(), "the lost response fails the step: {lost:?}");
        // The write was applied all the same.
        assert_eq!(turn_one(&harness).await.status, TurnStatus::Answered);
        let before = bundle(&harness).await;

        // SQS delivers again: the follow-up meets the finished turn and writes nothing.
        let core = harness.task(WAITED, "core").await;
        assert_eq!(core.status, TaskStatus::Succeeded);
        on_task_ended(&harness.store, &core, 3_000).await.unwrap();
        assert_eq!(harness.store.calls("finish_turn"), 1);
        let after = bundle(&harness).await;
        assert_eq!(after.session, before.session);
        assert_eq!(after.session.state.recent.len(), 1, "remembered once");
        assert_eq!(
            instances(&after),
            vec![
                ("core".into(), json!({ "mem": 2 }), 1, 1),
                ("helper".into(), json!({ "k": 1 }), 1, 1),
            ],
            "each call counted once"
        );
    }

    #[tokio::test]
    async fn a_failed_sync_helper_fails_the_turn_without_its_answer() {
        let harness = turn_running().await;
        harness
            .run(WAITED, "helper", Err(final_failure()), 1_000)
            .await;

        let turn = turn_one(&harness).await;
        assert_eq!(turn.status, TurnStatus::Failed);
        assert_eq!(turn.response, None);
        assert_eq!(turn.answer, None);
        let error = turn.error.expect("the turn says why it failed");
        assert_eq!(error["agent"], "helper");
        assert_eq!(error["kind"], json!(final_failure().kind));
        assert_eq!(error["message"], final_failure().message.as_str());
        assert_eq!(
            turn.sync_agent_results["helper"]["error"]["message"],
            final_failure().message.as_str()
        );
        let bundle = bundle(&harness).await;
        assert_eq!(bundle.session.active_turn, None);
        assert_eq!(bundle.session.state.recent[0].response, None);
        assert!(bundle.instances.is_empty(), "no agent answered");
    }

    #[tokio::test]
    async fn an_async_result_is_kept_bounded_once_with_its_agents_state() {
        let harness = turn_running().await;
        let large = json!({ "notes": "x".repeat(20_000), "state": { "seen": 1 } });
        harness
            .store
            .inject("record_async_result", Fault::LoseResponse, 1);
        let token = "claim-bg";
        let bg = harness.claim(ASYNC, "bg", token, 1_500).await;
        let lost = harness.try_conclude(&bg, token, Ok(large), 1_500).await;
        assert!(lost.is_err(), "the lost response fails the step: {lost:?}");
        // Redelivered, twice: the result is kept and the call counted once.
        let bg = harness.task(ASYNC, "bg").await;
        on_task_ended(&harness.store, &bg, 1_600).await.unwrap();
        on_task_ended(&harness.store, &bg, 1_700).await.unwrap();

        let bundle = bundle(&harness).await;
        assert_eq!(bundle.pending.len(), 1);
        let kept = &bundle.pending[0];
        assert_eq!((kept.turn, kept.agent.as_str()), (1, "bg"));
        assert_eq!(kept.workflow_id, Some(id(ASYNC)));
        assert_eq!(kept.finished_at_ms, 1_500);
        let shown = kept.result.to_value();
        assert_eq!(shown["truncated"], true);
        assert_eq!(shown["bytes"], 20_000 + r#"{"notes":""}"#.len());
        assert_eq!(shown["url"], "/v1/workflows/w2/tasks/bg");
        assert!(json!(shown["preview"]).to_string().len() <= RESULT_PREVIEW_BYTES);
        assert!(
            !shown["preview"].as_str().unwrap().contains("seen"),
            "the agent's state is not shown"
        );
        assert_eq!(
            instances(&bundle),
            vec![("bg".into(), json!({ "seen": 1 }), 1, 1)]
        );
        // Nobody waits for it: the turn still runs.
        assert_eq!(bundle.session.active_turn, Some(1));
        assert_eq!(turn_one(&harness).await.status, TurnStatus::Running);
    }

    #[tokio::test]
    async fn a_summarizers_answer_is_kept_once_and_never_replaces_a_later_summary() {
        let harness = turn_running().await;
        harness
            .run(ASYNC, "bg", Ok(json!({ "ok": true })), 1_000)
            .await;
        let bg = harness.task(ASYNC, "bg").await;
        let summarizer = |through: u32, output: Value| {
            let mut record = bg.clone();
            record.output = Some(output);
            record.profile.turn.as_mut().unwrap().summarizes_through = Some(through);
            record
        };
        harness
            .store
            .inject("record_summary", Fault::LoseResponse, 1);
        let first = summarizer(4, json!({ "content": "  turns one to four  " }));
        assert!(on_task_ended(&harness.store, &first, 1_100).await.is_err());
        on_task_ended(&harness.store, &first, 1_200).await.unwrap();
        let stale = summarizer(2, json!({ "content": "older" }));
        on_task_ended(&harness.store, &stale, 1_300).await.unwrap();
        let mut failed = summarizer(6, json!({ "content": "never" }));
        failed.status = TaskStatus::Failed;
        on_task_ended(&harness.store, &failed, 1_400).await.unwrap();

        let bundle = bundle(&harness).await;
        assert_eq!(
            bundle.session.state.summary,
            Some(RunningSummary {
                through_turn: 4,
                text: "turns one to four".into(),
                agent: "bg".into(),
            })
        );
        assert_eq!(
            bundle.pending.len(),
            1,
            "bg's own run only: a summary is not an async result"
        );
        // The summarizer's own call carries only its input; the others' carry the summary.
        assert_eq!(
            call_input(&harness.store, &first, "bg").await.unwrap(),
            first.input
        );
        let core = harness.task(WAITED, "core").await;
        let input = call_input(&harness.store, &core, "core").await.unwrap();
        assert_eq!(input["context"]["summary"]["through_turn"], 4);
    }

    #[tokio::test]
    async fn a_missing_session_or_turn_another_opening_or_no_turn_changes_nothing() {
        let harness = turn_running().await;
        let helper = json!({ "notes": "n" });
        harness.run(WAITED, "helper", Ok(helper), 1_000).await;
        let token = "claim-core";
        let core_ref = harness.claim(WAITED, "core", token, 2_000).await;
        // The core task ends without the follow-up (its first call fails), so each variant
        // below is the first to try to finish the turn.
        harness.store.inject("finish_turn", Fault::Fail, 1);
        let answer = json!({ "response": "hello" });
        assert!(harness
            .try_conclude(&core_ref, token, Ok(answer), 2_000)
            .await
            .is_err());
        assert_eq!(turn_one(&harness).await.status, TurnStatus::Running);
        let core = harness.task(WAITED, "core").await;
        let with_turn = |change: &dyn Fn(&mut TurnTask)| {
            let mut record = core.clone();
            change(record.profile.turn.as_mut().unwrap());
            record
        };
        let variants = [
            with_turn(&|t| t.session = id("gone")),
            with_turn(&|t| t.turn = 7),
            with_turn(&|t| t.generation = Some("an-earlier-opening".into())),
            TaskRecord {
                profile: TaskProfile::default(),
                ..core.clone()
            },
        ];
        let writes = harness.store.calls("finish_turn");
        for record in &variants {
            on_task_ended(&harness.store, record, 3_000).await.unwrap();
        }
        assert_eq!(harness.store.calls("finish_turn"), writes);
        assert_eq!(turn_one(&harness).await.status, TurnStatus::Running);
        assert_eq!(bundle(&harness).await.session.active_turn, Some(1));

        // The task as it is finishes the turn.
        on_task_ended(&harness.store, &core, 3_000).await.unwrap();
        assert_eq!(turn_one(&harness).await.status, TurnStatus::Answered);
    }
}
