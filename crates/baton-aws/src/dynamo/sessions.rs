//! Conversation sessions in the state table: one partition per session, so that ending one
//! deletes everything it created and nothing else.

use async_trait::async_trait;
use baton_types::ids::TenantId;
use baton_types::ids::{SessionId, WorkflowId};
use futures::StreamExt;

use super::*;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::DeleteRequest;

use crate::dynamo::keys::{
    ASYNC_PREFIX, INSTANCE_PREFIX, SESSION_SK, SESSION_SWEEP, SWEEP_AT, SWEEP_SHARD, TURN_PREFIX,
};
use baton_chain::store::{SessionContents, SessionItem};
use baton_types::conversation::{ConversationState, Flags, TurnSummary};
use baton_types::recall;
use baton_types::session::{Session, MAX_IDLE_TIMEOUT_S};
use baton_types::task::AttemptRecord;
use baton_types::turn::{AgentInstance, AsyncResult, Kept};

/// TTL removes a session's items this long after its idle time-out, should no sweep have.
const TTL_BACKSTOP_S: i64 = 86_400;
/// The TTL of a session's other items, from their last write: past the longest idle time-out,
/// since an active session's turns do not rewrite them.
pub(super) const SESSION_ITEM_TTL_S: i64 = MAX_IDLE_TIMEOUT_S as i64 + TTL_BACKSTOP_S;

/// The attributes of the conversation's parts, each written only when it changed.
pub(super) const TASK_STACK: &str = "task_stack";
pub(super) const RECENT: &str = "recent";
/// The running summary, and the turn it covers through: a number, so that a write is
/// conditioned on the summary only ever moving forward.
pub(super) const SUMMARY: &str = "summary";
pub(super) const SUMMARY_THROUGH: &str = "summary_through";
pub(super) const REQUIRES_HUMAN: &str = "requires_human";
pub(super) const IS_PAUSED: &str = "is_paused";
/// The session's generation, on its record and on every item it writes.
pub(super) const GENERATION: &str = "generation";

/// Items an end deletes at once: one conditional delete each (BatchWriteItem takes no
/// condition).
const DELETE_CONCURRENCY: usize = 8;

/// What an end reads of each item: its key, its generation and a turn's workflows.
const CONTENTS: Projection = Projection {
    expression: "#pk, #sk, #generation, #workflow, #async_workflow",
    names: &[
        ("#pk", PK),
        ("#sk", SK),
        ("#generation", GENERATION),
        ("#workflow", "workflow_id"),
        ("#async_workflow", "async_workflow_id"),
    ],
};

/// The condition that an item is still of `generation` (None: of none, written before
/// generations).
pub(super) fn same_generation(generation: Option<&str>) -> (&'static str, Option<AttributeValue>) {
    match generation {
        Some(g) => ("#generation = :generation", Some(s(g))),
        None => ("attribute_not_exists(#generation)", None),
    }
}

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

fn session_item(tenant: &TenantId, session: &Session) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(keys::session_pk(tenant, &session.id))),
        (SK.into(), s(SESSION_SK)),
        ("session_id".into(), s(session.id.as_str())),
        ("agents".into(), string_list(&session.agents)),
        ("metadata".into(), json(&session.metadata)?),
        ("idle_timeout_s".into(), n(session.idle_timeout_s)),
        ("created_at".into(), n(session.created_at_ms)),
        ("turns".into(), n(session.turns)),
        ("history_turns".into(), n(session.history_turns)),
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
    if let Some(generation) = &session.generation {
        item.insert(GENERATION.into(), s(generation.as_str()));
    }
    if let Some(summary) = &session.state.summary {
        item.insert(SUMMARY.into(), json(summary)?);
        item.insert(SUMMARY_THROUGH.into(), n(summary.through_turn));
    }
    item.extend(expiry_attrs(session, session.last_active_at_ms));
    Ok(item)
}

pub(super) fn session_record(item: &Item) -> Result<Session, StoreError> {
    let a = Attrs(item);
    Ok(Session {
        id: stored_id(a.s("session_id")?)?,
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
            summary: a.json(SUMMARY)?,
            flags: Flags {
                requires_human: a.bool(REQUIRES_HUMAN).unwrap_or(false),
                is_paused: a.bool(IS_PAUSED).unwrap_or(false),
            },
        },
        history_turns: a
            .opt_n("history_turns")?
            .unwrap_or(recall::DEFAULT_HISTORY_TURNS),
        generation: a.opt_s(GENERATION).map(str::to_string),
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
        result: if a.bool("truncated") == Some(true) {
            let preview = a
                .json("result")?
                .ok_or_else(|| StoreError::Corrupt("async result without its preview".into()))?;
            Kept::Cut(preview)
        } else {
            Kept::Whole(a.json("result")?.unwrap_or(Value::Null))
        },
        finished_at_ms: a.n("finished_at")?,
        workflow_id: a.opt_s("workflow_id").map(stored_id).transpose()?,
    })
}

/// Whether an item belongs to the opening `generation` of its session: an item of another
/// opening is one an end has yet to delete. Items stored before generations belong to any.
fn of_generation(item: &Item, generation: Option<&str>) -> bool {
    match (Attrs(item).opt_s(GENERATION), generation) {
        (Some(own), Some(current)) => own == current,
        _ => true,
    }
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
        .map_err(|e| StoreError::Request(Box::new(e)))
}

impl DynamoStore {
    /// Deletes a turn's workflow: its tasks, its record, the archive of a redriven one, and
    /// the outcome history their attempts left in the memory table (keyed by the workflow, so
    /// nothing names the session after).
    async fn delete_workflow(
        &self,
        tenant: &TenantId,
        workflow_id: &WorkflowId,
    ) -> Result<(), StoreError> {
        let mut items = self
            .partition(keys::workflow_pk(tenant, workflow_id))
            .await?;
        // The archive goes too, at once, rather than at its TTL; first, as the record that
        // says it exists goes last. Only a redriven workflow has one.
        let redriven = items.iter().any(|item| {
            let a = Attrs(item);
            a.opt_s(SK) == Some(keys::WORKFLOW_SK)
                && a.opt_n::<u32>(keys::DRIVE).ok().flatten() > Some(0)
        });
        if redriven {
            let archive = self
                .partition(keys::workflow_archive_pk(tenant, workflow_id))
                .await?;
            items.splice(0..0, archive);
        }
        let mut outcomes = Vec::new();
        for item in &items {
            let a = Attrs(item);
            let Some(task_sk) = a.opt_s(SK).and_then(|sk| sk.strip_prefix("TASK#")) else {
                continue;
            };
            // An archive item's sort key names its drive too; it names its task apart.
            let task_id = a.opt_s(keys::ARCHIVED_TASK).unwrap_or(task_sk);
            for attempt in a.json_list::<AttemptRecord>("attempts")? {
                if let Some(agent) = &attempt.agent {
                    outcomes.push(HashMap::from([
                        (PK.into(), s(keys::memory_agent_pk(tenant, agent))),
                        (
                            SK.into(),
                            s(keys::result_sk(
                                attempt.finished_at_ms,
                                workflow_id,
                                task_id,
                                attempt.attempt,
                            )),
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

    /// Deletes one item of a session if it is still of the generation it was read in. False
    /// if it was not (gone already, or written since by a new opening of the id).
    async fn delete_if_generation(
        &self,
        pk: &str,
        sk: &str,
        generation: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (condition, value) = same_generation(generation);
        let result = self
            .client
            .delete_item()
            .table_name(&self.state_table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .condition_expression(format!("attribute_exists(pk) AND {condition}"))
            .expression_attribute_names("#generation", GENERATION)
            .set_expression_attribute_values(
                value.map(|v| HashMap::from([(":generation".to_string(), v)])),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(err))
                if matches!(
                    err.err(),
                    DeleteItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(dynamo_error(e)),
        }
    }

    /// A session found due while a turn runs is due again at `later`, unless the turn ended
    /// since (its answer set the session's time).
    async fn postpone_busy_session(
        &self,
        pk: &str,
        now_ms: i64,
        later: i64,
    ) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(pk))
            .key(SK, s(SESSION_SK))
            .condition_expression("attribute_exists(active_turn) AND sweep_at < :now")
            .update_expression("SET sweep_at = :later")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":later", n(later));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn create_session(&self, tenant: &TenantId, session: &Session) -> Result<(), StoreError> {
        self.put_new(
            session_item(tenant, session)?,
            &["created_at", "session_id"],
            || format!("session `{}`", session.id),
        )
        .await
    }

    async fn session(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
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
        tenant: &TenantId,
        id: &SessionId,
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
        let Some(record) = items
            .iter()
            .find(|item| Attrs(item).opt_s(SK) == Some(SESSION_SK))
        else {
            return Ok(None);
        };
        let session = session_record(record)?;
        let generation = session.generation.as_deref();
        let mut instances = Vec::new();
        let mut pending = Vec::new();
        // Items of an earlier opening of the id, which its end has yet to delete, are not this
        // session's.
        for item in items.iter().filter(|i| of_generation(i, generation)) {
            let sk = Attrs(item).opt_s(SK).unwrap_or_default();
            if sk.starts_with(INSTANCE_PREFIX) {
                instances.push(instance_record(item)?);
            } else if sk.starts_with(ASYNC_PREFIX) {
                pending.push(async_result_record(item)?);
            }
        }
        let session = Some(session);
        Ok(session.map(|session| SessionBundle {
            session,
            instances,
            pending,
        }))
    }

    async fn session_contents(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<Option<SessionContents>, StoreError> {
        let read = PartitionRead {
            consistent: true,
            projection: Some(&CONTENTS),
            ..PartitionRead::default()
        };
        let items = self
            .partition_read(keys::session_pk(tenant, id), read)
            .await?;
        if items.is_empty() {
            return Ok(None);
        }
        let mut contents = SessionContents::empty(id.clone());
        for item in &items {
            let a = Attrs(item);
            let sk = a.opt_s(SK).unwrap_or_default();
            let generation = a.opt_s(GENERATION).map(str::to_string);
            if sk == SESSION_SK {
                contents.has_record = true;
                contents.generation = generation;
                continue;
            }
            if sk.starts_with(TURN_PREFIX) {
                for workflow in [a.opt_s("workflow_id"), a.opt_s("async_workflow_id")]
                    .into_iter()
                    .flatten()
                {
                    contents.workflows.push(stored_id(workflow)?);
                }
            }
            contents.items.push(SessionItem {
                sk: sk.to_string(),
                generation,
            });
        }
        Ok(Some(contents))
    }

    async fn delete_session_contents(
        &self,
        tenant: &TenantId,
        contents: &SessionContents,
    ) -> Result<bool, StoreError> {
        // The turns' workflows first (their ids are the read turns' own, never a later
        // opening's), then the partition with its record last: while any item is left, the
        // session is still found (and swept again) rather than leaving orphans behind a
        // missing record.
        for workflow in &contents.workflows {
            self.delete_workflow(tenant, workflow).await?;
        }
        let pk = keys::session_pk(tenant, &contents.session_id);
        let deletes: Vec<_> = contents
            .items
            .iter()
            .map(|item| {
                let (pk, sk, generation) = (pk.clone(), item.sk.clone(), item.generation.clone());
                async move {
                    self.delete_if_generation(&pk, &sk, generation.as_deref())
                        .await
                }
            })
            .collect();
        let deleted: Vec<Result<bool, StoreError>> = futures::stream::iter(deletes)
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        let mut any = false;
        for result in deleted {
            any |= result?;
        }
        if contents.has_record {
            any |= self
                .delete_if_generation(&pk, SESSION_SK, contents.generation.as_deref())
                .await?;
        }
        Ok(any)
    }

    async fn idle_sessions(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, SessionId)>, StoreError> {
        let due = self
            .due_in_sweeps(SESSION_SWEEP.to_string(), now_ms, limit)
            .await?;
        let keys: Vec<Item> = due
            .iter()
            .filter_map(|item| {
                Some(HashMap::from([
                    (PK.into(), item.get(PK)?.clone()),
                    (SK.into(), s(SESSION_SK)),
                ]))
            })
            .collect();
        // The index holds keys only: whether a turn runs is on the record.
        let records = self
            .batch_get(
                &self.state_table,
                keys,
                Some("#pk, active_turn, idle_timeout_s"),
                &[("#pk", PK)],
                true,
            )
            .await?;
        let mut busy = Vec::new();
        for record in &records {
            let a = Attrs(record);
            if a.opt_n::<u32>("active_turn")?.is_none() {
                continue;
            }
            let Some(pk) = a.opt_s(PK) else { continue };
            let idle_ms = a.opt_n::<i64>("idle_timeout_s")?.unwrap_or(0) * 1000;
            self.postpone_busy_session(pk, now_ms, now_ms + idle_ms.max(1_000))
                .await?;
            busy.push(pk.to_string());
        }
        Ok(due
            .iter()
            .filter_map(|item| {
                let pk = Attrs(item).opt_s(PK)?;
                if busy.iter().any(|b| b == pk) {
                    return None;
                }
                let (tenant, id) = keys::parse_session_pk(pk)?;
                Some((TenantId::parse(tenant).ok()?, id.parse().ok()?))
            })
            .collect())
    }

    async fn resume_session(
        &self,
        tenant: &TenantId,
        id: &SessionId,
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
