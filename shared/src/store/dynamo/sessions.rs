//! Conversation sessions in the state table: one partition per session, so that ending one
//! deletes everything it created and nothing else.

use async_trait::async_trait;

use super::*;
use aws_sdk_dynamodb::types::DeleteRequest;

use crate::domain::conversation::{ConversationState, Flags, TurnSummary};
use crate::domain::session::{Session, MAX_IDLE_TIMEOUT_S};
use crate::domain::task::AttemptRecord;
use crate::domain::turn::{AgentInstance, AsyncResult};
use crate::store::keys::{
    ASYNC_PREFIX, INSTANCE_PREFIX, SESSION_SK, SESSION_SWEEP, SWEEP_AT, SWEEP_SHARD, TURN_PREFIX,
};

/// TTL removes a session's items this long after its idle time-out, should no sweep have.
const TTL_BACKSTOP_S: i64 = 86_400;
/// The TTL of a session's other items, from their last write: past the longest idle time-out,
/// since an active session's turns do not rewrite them.
pub(super) const SESSION_ITEM_TTL_S: i64 = MAX_IDLE_TIMEOUT_S as i64 + TTL_BACKSTOP_S;

/// The attributes of the conversation's parts, each written only when it changed.
pub(super) const TASK_STACK: &str = "task_stack";
pub(super) const RECENT: &str = "recent";
pub(super) const REQUIRES_HUMAN: &str = "requires_human";
pub(super) const IS_PAUSED: &str = "is_paused";

/// Where the session record's idle time-out puts it: the sweep's due time and the TTL.
pub(super) fn expiry_attrs(
    session: &Session,
    last_active_ms: i64,
) -> [(String, AttributeValue); 3] {
    let expires = last_active_ms + session.idle_timeout_s as i64 * 1000;
    [
        ("last_active_at".into(), n(last_active_ms)),
        (SWEEP_AT.into(), n(expires)),
        (EXPIRES_AT.into(), n(expires / 1000 + TTL_BACKSTOP_S)),
    ]
}

fn session_item(tenant: &str, session: &Session) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(keys::session_pk(tenant, &session.id))),
        (SK.into(), s(SESSION_SK)),
        ("session_id".into(), s(session.id.as_str())),
        ("agents".into(), string_list(&session.agents)),
        ("metadata".into(), json(&session.metadata)?),
        ("idle_timeout_s".into(), n(session.idle_timeout_s)),
        ("created_at".into(), n(session.created_at_ms)),
        ("turns".into(), n(session.turns)),
        (TASK_STACK.into(), json(&session.state.task_stack)?),
        (RECENT.into(), json(&session.state.recent)?),
        (
            REQUIRES_HUMAN.into(),
            AttributeValue::Bool(session.state.flags.requires_human),
        ),
        (
            IS_PAUSED.into(),
            AttributeValue::Bool(session.state.flags.is_paused),
        ),
        (SWEEP_SHARD.into(), s(SESSION_SWEEP)),
    ]);
    item.extend(expiry_attrs(session, session.last_active_at_ms));
    Ok(item)
}

pub(super) fn session_record(item: &Item) -> Result<Session, StoreError> {
    let a = Attrs(item);
    Ok(Session {
        id: a.s("session_id")?.into(),
        agents: a.list("agents"),
        metadata: a.json("metadata")?.unwrap_or_default(),
        idle_timeout_s: a.n("idle_timeout_s")?,
        created_at_ms: a.n("created_at")?,
        last_active_at_ms: a.n("last_active_at")?,
        turns: a.opt_n("turns")?.unwrap_or(0),
        active_turn: a.opt_n("active_turn")?,
        state: ConversationState {
            task_stack: a.json(TASK_STACK)?.unwrap_or_default(),
            recent: a.json(RECENT)?.unwrap_or_default(),
            flags: Flags {
                requires_human: a.bool(REQUIRES_HUMAN).unwrap_or(false),
                is_paused: a.bool(IS_PAUSED).unwrap_or(false),
            },
        },
    })
}

fn instance_record(item: &Item) -> Result<AgentInstance, StoreError> {
    let a = Attrs(item);
    Ok(AgentInstance {
        agent: a.s("agent")?.into(),
        state: a.json("state")?.unwrap_or(Value::Null),
        calls: a.opt_n("calls")?.unwrap_or(0),
        last_turn: a.opt_n("last_turn")?.unwrap_or(0),
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
    })
}

pub(super) fn async_result_record(item: &Item) -> Result<AsyncResult, StoreError> {
    let a = Attrs(item);
    Ok(AsyncResult {
        turn: a.n("turn")?,
        agent: a.s("agent")?.into(),
        result: a.json("result")?.unwrap_or(Value::Null),
        finished_at_ms: a.n("finished_at")?,
    })
}

/// The key of an item, for a delete.
fn delete_request(item: &Item) -> Result<WriteRequest, StoreError> {
    let key: Item = item
        .iter()
        .filter(|(k, _)| *k == PK || *k == SK)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map(|d| WriteRequest::builder().delete_request(d).build())
        .map_err(|e| StoreError::Dynamo(e.to_string()))
}

impl DynamoStore {
    /// Deletes a turn's workflow: its tasks, its record, and the outcome history its attempts
    /// left in the memory table (keyed by the workflow, so nothing names the session after).
    async fn delete_workflow(&self, tenant: &str, workflow_id: &str) -> Result<(), StoreError> {
        let items = self
            .partition(keys::workflow_pk(tenant, workflow_id))
            .await?;
        let mut outcomes = Vec::new();
        for item in &items {
            let a = Attrs(item);
            let Some(task_id) = a.opt_s(SK).and_then(|sk| sk.strip_prefix("TASK#")) else {
                continue;
            };
            for attempt in a.json_list::<AttemptRecord>("attempts")? {
                if let Some(agent) = &attempt.agent {
                    outcomes.push(HashMap::from([
                        (PK.into(), s(keys::memory_agent_pk(tenant, agent))),
                        (
                            SK.into(),
                            s(keys::outcome_sk(workflow_id, task_id, attempt.attempt)),
                        ),
                    ]));
                }
            }
        }
        let outcomes = outcomes
            .iter()
            .map(delete_request)
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.memory_table, outcomes).await?;
        // The record sorts after the tasks and goes last, as it came last.
        let items = items
            .iter()
            .map(delete_request)
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.state_table, items).await
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn create_session(&self, tenant: &str, session: &Session) -> Result<(), StoreError> {
        self.put_new(
            session_item(tenant, session)?,
            &["created_at", "session_id"],
            || format!("session `{}`", session.id),
        )
        .await
    }

    async fn session(&self, tenant: &str, id: &str) -> Result<Option<Session>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, id)))
            .key(SK, s(SESSION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item.as_ref().map(session_record).transpose()
    }

    async fn session_bundle(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<SessionBundle>, StoreError> {
        // `ASYNC#…` and `INSTANCE#…` sort before `SESSION`, the turns after: one query.
        let read = PartitionRead {
            consistent: true,
            sk_at_most: Some(SESSION_SK),
            ..PartitionRead::default()
        };
        let items = self
            .partition_read(keys::session_pk(tenant, id), read)
            .await?;
        let mut session = None;
        let mut instances = Vec::new();
        let mut pending = Vec::new();
        for item in &items {
            let sk = Attrs(item).opt_s(SK).unwrap_or_default();
            if sk == SESSION_SK {
                session = Some(session_record(item)?);
            } else if sk.starts_with(INSTANCE_PREFIX) {
                instances.push(instance_record(item)?);
            } else if sk.starts_with(ASYNC_PREFIX) {
                pending.push(async_result_record(item)?);
            }
        }
        Ok(session.map(|session| SessionBundle {
            session,
            instances,
            pending,
        }))
    }

    async fn end_session(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let items = self.partition(keys::session_pk(tenant, id)).await?;
        if items.is_empty() {
            return Ok(false);
        }
        // The turns' workflows first, then the partition with its record last: while any
        // item is left, the session is still found (and swept again) rather than leaving
        // orphans behind a missing record.
        for item in &items {
            let a = Attrs(item);
            if !a.opt_s(SK).is_some_and(|sk| sk.starts_with(TURN_PREFIX)) {
                continue;
            }
            for workflow in [a.opt_s("workflow_id"), a.opt_s("async_workflow_id")]
                .into_iter()
                .flatten()
            {
                self.delete_workflow(tenant, workflow).await?;
            }
        }
        let (record, rest): (Vec<Item>, Vec<Item>) = items
            .into_iter()
            .partition(|item| Attrs(item).opt_s(SK) == Some(SESSION_SK));
        let rest = rest
            .iter()
            .map(delete_request)
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.state_table, rest).await?;
        let record = record
            .iter()
            .map(delete_request)
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.state_table, record).await?;
        Ok(true)
    }

    async fn idle_sessions(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let due = self
            .due_in_sweeps(SESSION_SWEEP.to_string(), now_ms, limit)
            .await?;
        Ok(due
            .iter()
            .filter_map(|item| {
                let (tenant, id) = keys::parse_session_pk(Attrs(item).opt_s(PK)?)?;
                Some((tenant.to_string(), id.to_string()))
            })
            .collect())
    }

    async fn resume_session(
        &self,
        tenant: &str,
        id: &str,
        reply: Option<&str>,
        now_ms: i64,
    ) -> Result<Resumed, StoreError> {
        let Some(session) = self.session(tenant, id).await? else {
            return Ok(Resumed::Gone);
        };
        if !session.state.flags.is_paused {
            return Ok(Resumed::NotPaused);
        }
        let mut recent = session.state.recent.clone();
        if let Some(reply) = reply {
            match recent.last_mut() {
                Some(last) if last.human_reply.is_none() => last.human_reply = Some(reply.into()),
                _ => recent.push(TurnSummary {
                    turn: session.turns,
                    text: String::new(),
                    response: None,
                    agents: Vec::new(),
                    human_reply: Some(reply.into()),
                }),
            }
        }
        let mut update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, id)))
            .key(SK, s(SESSION_SK))
            .condition_expression("#paused = :true AND turns = :turns")
            .update_expression(
                "SET #paused = :false, #human = :false, #recent = :recent, \
                 last_active_at = :now, sweep_at = :sweep, expires_at = :ttl",
            )
            .expression_attribute_names("#paused", IS_PAUSED)
            .expression_attribute_names("#human", REQUIRES_HUMAN)
            .expression_attribute_names("#recent", RECENT)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":turns", n(session.turns))
            .expression_attribute_values(":recent", json(&recent)?);
        let [(_, now), (_, sweep), (_, ttl)] = expiry_attrs(&session, now_ms);
        update = update
            .expression_attribute_values(":now", now)
            .expression_attribute_values(":sweep", sweep)
            .expression_attribute_values(":ttl", ttl);
        match conditional_update(update, ReturnValue::AllNew).await? {
            Conditional::Applied(item) => Ok(Resumed::Resumed(Box::new(session_record(&item)?))),
            Conditional::Rejected(None) => Ok(Resumed::Gone),
            Conditional::Rejected(Some(_)) => Ok(Resumed::NotPaused),
        }
    }
}
