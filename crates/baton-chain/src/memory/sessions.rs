//! Sessions and their turns in memory: `baton_aws::dynamo::sessions` and `turns`. A session's
//! items live in one partition, each marked with the opening (generation) that wrote it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::{MemoryStore, State};
use crate::store::*;
use baton_types::conversation::TurnSummary;
use baton_types::ids::{SessionId, TenantId};
use baton_types::recall::RunningSummary;
use baton_types::session::Session;
use baton_types::turn::{AgentInstance, AsyncResult, TurnRecord, TurnStatus};

/// A session's record and what the adapter keeps beside it.
#[derive(Debug, Clone)]
pub(super) struct StoredSession {
    pub session: Session,
    /// When the idle sweep finds it due.
    pub sweep_at_ms: i64,
    /// The request that started the running turn.
    pub turn_request: Option<String>,
}

impl StoredSession {
    fn active_since(&mut self, now_ms: i64) {
        self.session.last_active_at_ms = now_ms;
        self.sweep_at_ms = self.session.expires_at_ms();
    }
}

/// An item of a session's partition besides its record.
#[derive(Debug, Clone)]
pub(super) enum SessionEntry {
    Turn(Box<TurnRecord>),
    Instance(AgentInstance),
    Async(AsyncResult),
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub item: SessionEntry,
    /// The opening that wrote it (None: written before generations).
    pub generation: Option<String>,
}

/// One session's items: the record, and the rest by sort key.
#[derive(Debug, Clone, Default)]
pub(super) struct SessionPartition {
    pub record: Option<StoredSession>,
    pub items: BTreeMap<String, Entry>,
}

fn turn_sk(turn: u32) -> String {
    format!("TURN#{turn:010}")
}

fn instance_sk(agent: &str) -> String {
    format!("INSTANCE#{agent}")
}

fn async_sk(turn: u32, agent: &str) -> String {
    format!("ASYNC#{turn:010}#{agent}")
}

fn key(tenant: &TenantId, id: &SessionId) -> (TenantId, SessionId) {
    (tenant.clone(), id.clone())
}

/// Whether an item belongs to the opening `generation`; items of before generations belong
/// to any.
fn of_generation(entry: &Entry, generation: Option<&str>) -> bool {
    match (entry.generation.as_deref(), generation) {
        (Some(own), Some(current)) => own == current,
        _ => true,
    }
}

impl SessionPartition {
    /// An agent's instance after a call in `turn`: created on the first, with its state when
    /// it returned one.
    fn call_instance(
        &mut self,
        generation: Option<&str>,
        agent: &str,
        turn: u32,
        state: Option<&Value>,
        now_ms: i64,
    ) {
        let entry = self
            .items
            .entry(instance_sk(agent))
            .or_insert_with(|| Entry {
                item: SessionEntry::Instance(AgentInstance {
                    agent: agent.to_string(),
                    state: Value::Null,
                    calls: 0,
                    last_turn: turn,
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                }),
                generation: None,
            });
        if let Some(generation) = generation {
            entry.generation = Some(generation.to_string());
        }
        if let SessionEntry::Instance(instance) = &mut entry.item {
            instance.last_turn = turn;
            instance.calls += 1;
            instance.updated_at_ms = now_ms;
            if let Some(state) = state {
                instance.state = state.clone();
            }
        }
    }
}

impl State {
    fn session_partition(&self, tenant: &TenantId, id: &SessionId) -> Option<&SessionPartition> {
        self.sessions.get(&key(tenant, id))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, tenant: &TenantId, session: &Session) -> Result<(), StoreError> {
        self.run("create_session", |state| {
            let partition = state.sessions.entry(key(tenant, &session.id)).or_default();
            match &partition.record {
                // The same session (a retried put) is this write's own.
                Some(stored)
                    if (stored.session.created_at_ms, &stored.session.id)
                        != (session.created_at_ms, &session.id) =>
                {
                    Err(StoreError::AlreadyExists(format!(
                        "session `{}`",
                        session.id
                    )))
                }
                _ => {
                    partition.record = Some(StoredSession {
                        session: session.clone(),
                        sweep_at_ms: session.expires_at_ms(),
                        turn_request: None,
                    });
                    Ok(())
                }
            }
        })
    }

    async fn session(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        self.run("session", |state| {
            Ok(state
                .session_partition(tenant, id)
                .and_then(|p| p.record.as_ref())
                .map(|r| r.session.clone()))
        })
    }

    async fn session_contents(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<SessionContents>, StoreError> {
        self.run("session_contents", |state| {
            let Some(partition) = state.session_partition(tenant, id) else {
                return Ok(None);
            };
            if partition.record.is_none() && partition.items.is_empty() {
                return Ok(None);
            }
            let mut contents = SessionContents {
                has_record: partition.record.is_some(),
                generation: partition
                    .record
                    .as_ref()
                    .and_then(|r| r.session.generation.clone()),
                ..SessionContents::empty(id.clone())
            };
            for (sk, entry) in &partition.items {
                if let SessionEntry::Turn(turn) = &entry.item {
                    contents.workflows.push(turn.workflow_id.clone());
                    contents.workflows.extend(turn.async_workflow_id.clone());
                }
                contents.items.push(SessionItem {
                    sk: sk.clone(),
                    generation: entry.generation.clone(),
                });
            }
            Ok(Some(contents))
        })
    }

    async fn delete_session_contents(
        &self,
        tenant: &TenantId,
        contents: &SessionContents,
    ) -> Result<bool, StoreError> {
        self.run("delete_session_contents", |state| {
            for workflow in &contents.workflows {
                state.delete_workflow(tenant, workflow);
            }
            let Some(partition) = state.sessions.get_mut(&key(tenant, &contents.session_id)) else {
                return Ok(false);
            };
            let mut any = false;
            // Each item only while it is of the generation it was read in.
            for read in &contents.items {
                let same = partition
                    .items
                    .get(&read.sk)
                    .is_some_and(|e| e.generation == read.generation);
                if same {
                    partition.items.remove(&read.sk);
                    any = true;
                }
            }
            let record_same = partition
                .record
                .as_ref()
                .is_some_and(|r| r.session.generation == contents.generation);
            if contents.has_record && record_same {
                partition.record = None;
                any = true;
            }
            if partition.record.is_none() && partition.items.is_empty() {
                state.sessions.remove(&key(tenant, &contents.session_id));
            }
            Ok(any)
        })
    }

    async fn idle_sessions(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, SessionId)>, StoreError> {
        self.run("idle_sessions", |state| {
            let mut due: Vec<(i64, (TenantId, SessionId))> = state
                .sessions
                .iter()
                .filter_map(|(key, p)| {
                    let at = p.record.as_ref()?.sweep_at_ms;
                    (at < now_ms).then(|| (at, key.clone()))
                })
                .collect();
            due.sort();
            due.truncate(limit.max(0) as usize);
            let mut idle = Vec::new();
            for (_, key) in due {
                let Some(stored) = state.sessions.get_mut(&key).and_then(|p| p.record.as_mut())
                else {
                    continue;
                };
                // Running a turn: due again an idle time-out later.
                if stored.session.active_turn.is_some() {
                    let idle_ms = stored.session.idle_timeout_s as i64 * 1000;
                    stored.sweep_at_ms = now_ms + idle_ms.max(1_000);
                    continue;
                }
                idle.push(key);
            }
            Ok(idle)
        })
    }

    async fn session_bundle(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<SessionBundle>, StoreError> {
        self.run("session_bundle", |state| {
            let Some(partition) = state.session_partition(tenant, id) else {
                return Ok(None);
            };
            let Some(record) = &partition.record else {
                return Ok(None);
            };
            let generation = record.session.generation.as_deref();
            let mut bundle = SessionBundle {
                session: record.session.clone(),
                instances: Vec::new(),
                pending: Vec::new(),
            };
            for entry in partition
                .items
                .values()
                .filter(|e| of_generation(e, generation))
            {
                match &entry.item {
                    SessionEntry::Instance(instance) => bundle.instances.push(instance.clone()),
                    SessionEntry::Async(result) => bundle.pending.push(result.clone()),
                    SessionEntry::Turn(_) => {}
                }
            }
            Ok(Some(bundle))
        })
    }

    async fn resume_session(
        &self,
        tenant: &TenantId,
        id: &SessionId,
        reply: Option<&str>,
        now_ms: i64,
    ) -> Result<Resumed, StoreError> {
        self.run("resume_session", |state| {
            let Some(stored) = state
                .sessions
                .get_mut(&key(tenant, id))
                .and_then(|p| p.record.as_mut())
            else {
                return Ok(Resumed::Gone);
            };
            let session = &mut stored.session;
            if !session.state.flags.is_paused {
                return Ok(Resumed::NotPaused);
            }
            if let Some(reply) = reply {
                match session.state.recent.last_mut() {
                    Some(last) if last.human_reply.is_none() => {
                        last.human_reply = Some(reply.into())
                    }
                    _ => session.state.recent.push(TurnSummary {
                        turn: session.turns,
                        text: String::new(),
                        response: None,
                        agents: Vec::new(),
                        human_reply: Some(reply.into()),
                    }),
                }
            }
            session.state.flags.is_paused = false;
            session.state.flags.requires_human = false;
            stored.active_since(now_ms);
            Ok(Resumed::Resumed(Box::new(stored.session.clone())))
        })
    }
}

#[async_trait]
impl TurnStore for MemoryStore {
    async fn start_turn(
        &self,
        tenant: &TenantId,
        start: &TurnStart<'_>,
    ) -> Result<TurnStarted, StoreError> {
        self.run("start_turn", |state| {
            let session = start.session;
            let next = start.turn.turn;
            let Some(partition) = state.sessions.get_mut(&key(tenant, &session.id)) else {
                return Ok(TurnStarted::Gone);
            };
            let Some(stored) = partition.record.as_mut() else {
                return Ok(TurnStarted::Gone);
            };
            let current = &stored.session;
            let free = current.active_turn.is_none()
                && current.turns == session.turns
                && current.generation == session.generation
                && !partition.items.contains_key(&turn_sk(next));
            if !free {
                // Refused: by another turn, or by this very start, met by its retry.
                let ours = stored.turn_request.as_deref() == Some(start.request_id);
                return Ok(match current.active_turn {
                    Some(active) if ours && active == next => TurnStarted::Started,
                    Some(active_turn) => TurnStarted::Busy { active_turn },
                    None => TurnStarted::Stale,
                });
            }
            stored.session.turns = next;
            stored.session.active_turn = Some(next);
            stored.turn_request = Some(start.request_id.to_string());
            stored.active_since(start.now_ms);
            partition.items.insert(
                turn_sk(next),
                Entry {
                    item: SessionEntry::Turn(Box::new(start.turn.clone())),
                    generation: session.generation.clone(),
                },
            );
            for shown in start.shown {
                partition.items.remove(&async_sk(shown.turn, &shown.agent));
            }
            for workflow in start.workflows {
                state.put_workflow(workflow);
            }
            Ok(TurnStarted::Started)
        })
    }

    async fn turn(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        turn: u32,
    ) -> Result<Option<TurnRecord>, StoreError> {
        self.run("turn", |state| {
            let entry = state
                .session_partition(tenant, session_id)
                .and_then(|p| p.items.get(&turn_sk(turn)));
            Ok(match entry.map(|e| &e.item) {
                Some(SessionEntry::Turn(turn)) => Some(TurnRecord::clone(turn)),
                _ => None,
            })
        })
    }

    async fn finish_turn(
        &self,
        tenant: &TenantId,
        finish: &TurnFinish<'_>,
    ) -> Result<bool, StoreError> {
        self.run("finish_turn", |state| {
            let turn = finish.turn;
            let Some(partition) = state.sessions.get_mut(&key(tenant, &turn.session_id)) else {
                return Ok(false);
            };
            let running = matches!(
                partition.items.get(&turn_sk(turn.turn)).map(|e| &e.item),
                Some(SessionEntry::Turn(t)) if t.status == TurnStatus::Running
            );
            let holds_turn = partition.record.as_ref().is_some_and(|r| {
                r.session.active_turn == Some(turn.turn)
                    && r.session.generation == finish.session.generation
            });
            if !running || !holds_turn {
                return Ok(false);
            }
            if let Some(Entry {
                item: SessionEntry::Turn(stored),
                ..
            }) = partition.items.get_mut(&turn_sk(turn.turn))
            {
                stored.status = turn.status;
                stored.sync_agent_results = turn.sync_agent_results.clone();
                stored.checkpoint_progress = turn.checkpoint_progress.clone();
                stored.state = turn.state.clone();
                stored.timing = turn.timing.clone();
                stored.answer = turn.answer.clone();
                stored.error = turn.error.clone();
                stored.answered_at_ms = Some(finish.now_ms);
                if turn.response.is_some() {
                    stored.response = turn.response.clone();
                }
            }
            if let Some(record) = partition.record.as_mut() {
                // Only the conversation's parts the turn changed are written.
                let (before, after) = (&finish.session.state, finish.after);
                let conversation = &mut record.session.state;
                conversation.recent = after.recent.clone();
                if after.task_stack != before.task_stack {
                    conversation.task_stack = after.task_stack.clone();
                }
                if after.flags.requires_human != before.flags.requires_human {
                    conversation.flags.requires_human = after.flags.requires_human;
                }
                if after.flags.is_paused != before.flags.is_paused {
                    conversation.flags.is_paused = after.flags.is_paused;
                }
                record.session.active_turn = None;
                record.turn_request = None;
                record.active_since(finish.now_ms);
            }
            let generation = finish.session.generation.as_deref();
            for (agent, agent_state) in &finish.instances {
                partition.call_instance(
                    generation,
                    agent,
                    turn.turn,
                    agent_state.as_ref(),
                    finish.now_ms,
                );
            }
            Ok(true)
        })
    }

    async fn record_async_result(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        generation: Option<&str>,
        result: &AsyncResult,
        state: Option<&Value>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.run("record_async_result", |store| {
            let Some(partition) = store.sessions.get_mut(&key(tenant, session_id)) else {
                return Ok(());
            };
            let same_opening = partition.record.as_ref().is_some_and(|r| {
                generation.is_none() || r.session.generation.as_deref() == generation
            });
            let sk = async_sk(result.turn, &result.agent);
            // Refused: the session ended, or the result was kept before (a redelivery).
            if !same_opening || partition.items.contains_key(&sk) {
                return Ok(());
            }
            partition.items.insert(
                sk,
                Entry {
                    item: SessionEntry::Async(result.clone()),
                    generation: generation.map(str::to_string),
                },
            );
            partition.call_instance(generation, &result.agent, result.turn, state, now_ms);
            Ok(())
        })
    }

    async fn record_summary(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        generation: Option<&str>,
        summary: &RunningSummary,
    ) -> Result<(), StoreError> {
        self.run("record_summary", |store| {
            let Some(record) = store
                .sessions
                .get_mut(&key(tenant, session_id))
                .and_then(|p| p.record.as_mut())
                .filter(|r| generation.is_none() || r.session.generation.as_deref() == generation)
            else {
                return Ok(());
            };
            let state = &mut record.session.state;
            if state
                .summary
                .as_ref()
                .is_none_or(|kept| kept.through_turn < summary.through_turn)
            {
                state.summary = Some(summary.clone());
            }
            Ok(())
        })
    }
}
