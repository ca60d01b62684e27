//! Conversation turns in their session's partition: each starts and finishes in one
//! transaction, so that a session never runs two turns and a turn's answer, the conversation's
//! state and the agents' instances change together.

use async_trait::async_trait;
use baton_types::ids::SessionId;
use baton_types::ids::TenantId;
use baton_types::recall::RunningSummary;

use super::sessions::{
    expiry_attrs, same_generation, session_record, GENERATION, IS_PAUSED, RECENT, REQUIRES_HUMAN,
    SESSION_ITEM_TTL_S, SUMMARY, SUMMARY_THROUGH, TASK_STACK,
};
use super::workflows::workflow_items;
use super::*;
use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Update};

use crate::dynamo::keys::SESSION_SK;
use baton_types::turn::{AsyncResult, Kept, TurnRecord, TurnStatus};

fn turn_item(
    tenant: &TenantId,
    turn: &TurnRecord,
    request_id: &str,
    generation: Option<&str>,
) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(keys::session_pk(tenant, &turn.session_id))),
        (SK.into(), s(keys::turn_sk(turn.turn))),
        ("session_id".into(), s(turn.session_id.as_str())),
        ("turn".into(), n(turn.turn)),
        ("text".into(), s(turn.text.as_str())),
        ("analysis".into(), json(&turn.analysis)?),
        ("plan".into(), json(&turn.plan)?),
        ("workflow_id".into(), s(turn.workflow_id.as_str())),
        ("status".into(), s(turn.status.as_str())),
        (
            "async_agent_results".into(),
            json(&turn.async_agent_results)?,
        ),
        ("timing".into(), json(&turn.timing)?),
        ("created_at".into(), n(turn.created_at_ms)),
        ("request".into(), s(request_id)),
        (
            EXPIRES_AT.into(),
            n(turn.created_at_ms / 1000 + SESSION_ITEM_TTL_S),
        ),
    ]);
    if let Some(channel) = &turn.channel {
        item.insert("channel".into(), s(channel.as_str()));
    }
    if let Some(services) = &turn.services {
        item.insert("services".into(), string_list(services));
    }
    if let Some(id) = &turn.async_workflow_id {
        item.insert("async_workflow_id".into(), s(id.as_str()));
    }
    if let Some(history) = &turn.history {
        item.insert("history".into(), json(history)?);
    }
    if let Some(generation) = generation {
        item.insert(GENERATION.into(), s(generation));
    }
    Ok(item)
}

/// The answering agent's answer as the turn item keeps it: without its `response`, which the
/// item holds once, as `response` (an answer may be as large as an agent's output).
fn stored_answer(turn: &TurnRecord) -> Option<Value> {
    let mut answer = turn.answer.clone()?;
    if let (Value::Object(map), Some(response)) = (&mut answer, &turn.response) {
        if map.get("response").and_then(Value::as_str) == Some(response.as_str()) {
            map.remove("response");
        }
    }
    Some(answer)
}

/// The answer as the turn shows it: its `response` put back.
fn shown_answer(answer: Option<Value>, response: Option<&str>) -> Option<Value> {
    let mut answer = answer?;
    if let (Value::Object(map), Some(response)) = (&mut answer, response) {
        map.entry("response")
            .or_insert_with(|| Value::from(response));
    }
    Some(answer)
}

fn turn_record(item: &Item) -> Result<TurnRecord, StoreError> {
    let a = Attrs(item);
    Ok(TurnRecord {
        session_id: stored_id(a.s("session_id")?)?,
        turn: a.n("turn")?,
        text: a.s("text")?.into(),
        channel: a.opt_s("channel").map(str::to_string),
        services: item.contains_key("services").then(|| a.list("services")),
        analysis: a
            .json("analysis")?
            .ok_or_else(|| StoreError::Corrupt("turn without its analysis".into()))?,
        plan: a
            .json("plan")?
            .ok_or_else(|| StoreError::Corrupt("turn without its plan".into()))?,
        history: a.json("history")?,
        workflow_id: stored_id(a.s("workflow_id")?)?,
        async_workflow_id: a.opt_s("async_workflow_id").map(stored_id).transpose()?,
        status: a.parsed("status")?,
        response: a.opt_s("response").map(str::to_string),
        answer: shown_answer(a.json("answer")?, a.opt_s("response")),
        sync_agent_results: a.json("sync_agent_results")?.unwrap_or_default(),
        async_agent_results: a.json("async_agent_results")?.unwrap_or_default(),
        error: a.json("error")?,
        checkpoint_progress: a.json("checkpoint_progress")?.unwrap_or_default(),
        state: a.json("state")?,
        timing: a.json("timing")?.unwrap_or_default(),
        created_at_ms: a.n("created_at")?,
        answered_at_ms: a.opt_n("answered_at")?,
    })
}

impl DynamoStore {
    /// The write of an instance after its agent answered: created on the first call, and
    /// marked with the session's generation.
    #[allow(clippy::too_many_arguments)]
    fn instance_update(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        generation: Option<&str>,
        agent: &str,
        turn: u32,
        state: Option<&Value>,
        now_ms: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut expression = String::from(
            "SET #agent = :agent, session_id = :session, last_turn = :turn, \
             calls = if_not_exists(calls, :zero) + :one, \
             created_at = if_not_exists(created_at, :now), updated_at = :now, expires_at = :ttl",
        );
        let mut update = Update::builder()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, session_id)))
            .key(SK, s(keys::instance_sk(agent)))
            .expression_attribute_names("#agent", "agent")
            .expression_attribute_values(":agent", s(agent))
            .expression_attribute_values(":session", s(session_id))
            .expression_attribute_values(":turn", n(turn))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":ttl", n(now_ms / 1000 + SESSION_ITEM_TTL_S));
        if let Some(state) = state {
            expression.push_str(", #state = :state");
            update = update
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":state", json(state)?);
        }
        if let Some(generation) = generation {
            expression.push_str(", #generation = :generation");
            update = update
                .expression_attribute_names("#generation", GENERATION)
                .expression_attribute_values(":generation", s(generation));
        }
        let update = built(update.update_expression(expression).build())?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[async_trait]
impl TurnStore for DynamoStore {
    async fn start_turn(
        &self,
        tenant: &TenantId,
        start: &TurnStart<'_>,
    ) -> Result<TurnStarted, StoreError> {
        let session = start.session;
        let next = start.turn.turn;
        // The opening read, still: a session opened again under its id since is not this one.
        let (same, generation) = same_generation(session.generation.as_deref());
        let mut lock = Update::builder()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, &session.id)))
            .key(SK, s(SESSION_SK))
            .condition_expression(format!(
                "attribute_exists(pk) AND attribute_not_exists(active_turn) AND turns = :expected \
                 AND {same}"
            ))
            .expression_attribute_names("#generation", GENERATION)
            .set_expression_attribute_values(
                generation.map(|g| HashMap::from([(":generation".to_string(), g)])),
            )
            .update_expression(
                "SET turns = :next, active_turn = :next, turn_request = :request, \
                 last_active_at = :now, sweep_at = :sweep, expires_at = :ttl",
            )
            .expression_attribute_values(":expected", n(session.turns))
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":request", s(start.request_id));
        let [(_, now), (_, sweep), (_, ttl)] = expiry_attrs(session, start.now_ms);
        lock = lock
            .expression_attribute_values(":now", now)
            .expression_attribute_values(":sweep", sweep)
            .expression_attribute_values(":ttl", ttl);
        let mut items = vec![TransactWriteItem::builder()
            .update(built(lock.build())?)
            .build()];
        items.push(txn_put(
            &self.state_table,
            turn_item(
                tenant,
                start.turn,
                start.request_id,
                session.generation.as_deref(),
            )?,
            Some("attribute_not_exists(pk)"),
        )?);
        for shown in start.shown {
            let delete = built(
                Delete::builder()
                    .table_name(&self.state_table)
                    .key(PK, s(keys::session_pk(tenant, &session.id)))
                    .key(SK, s(keys::async_result_sk(shown.turn, &shown.agent)))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        for workflow in start.workflows {
            let inputs = self.place_inputs(workflow).await?;
            let (tasks, record) = workflow_items(workflow, &inputs)?;
            for item in tasks.into_iter().chain([record]) {
                items.push(txn_put(&self.state_table, item, None)?);
            }
        }
        if self.transact(items).await? {
            return Ok(TurnStarted::Started);
        }
        // Refused: by another turn, by the session's end, or by this very write, whose
        // response was lost and which the SDK sent again.
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, &session.id)))
            .key(SK, s(SESSION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        let Some(item) = out.item else {
            return Ok(TurnStarted::Gone);
        };
        let current = session_record(&item)?;
        let ours = Attrs(&item).opt_s("turn_request") == Some(start.request_id);
        Ok(match current.active_turn {
            Some(active) if ours && active == next => TurnStarted::Started,
            Some(active_turn) => TurnStarted::Busy { active_turn },
            None => TurnStarted::Stale,
        })
    }

    async fn turn(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        turn: u32,
    ) -> Result<Option<TurnRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, session_id)))
            .key(SK, s(keys::turn_sk(turn)))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item.as_ref().map(turn_record).transpose()
    }

    async fn finish_turn(
        &self,
        tenant: &TenantId,
        finish: &TurnFinish<'_>,
    ) -> Result<bool, StoreError> {
        let turn = finish.turn;
        let pk = keys::session_pk(tenant, &turn.session_id);
        let mut answer = Update::builder()
            .table_name(&self.state_table)
            .key(PK, s(pk.as_str()))
            .key(SK, s(keys::turn_sk(turn.turn)))
            .condition_expression("#status = :running")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":running", s(TurnStatus::Running.as_str()))
            .expression_attribute_values(":status", s(turn.status.as_str()))
            .expression_attribute_values(":sync", json(&turn.sync_agent_results)?)
            .expression_attribute_values(":progress", json(&turn.checkpoint_progress)?)
            .expression_attribute_values(":state", json(&turn.state)?)
            .expression_attribute_values(":timing", json(&turn.timing)?)
            .expression_attribute_values(":answer", json(&stored_answer(turn))?)
            .expression_attribute_values(":error", json(&turn.error)?)
            .expression_attribute_values(":at", n(finish.now_ms));
        let mut expression = String::from(
            "SET #status = :status, sync_agent_results = :sync, checkpoint_progress = :progress, \
             #state = :state, timing = :timing, answer = :answer, #error = :error, \
             answered_at = :at",
        );
        if let Some(response) = &turn.response {
            expression.push_str(", #response = :response");
            answer = answer
                .expression_attribute_names("#response", "response")
                .expression_attribute_values(":response", s(response.as_str()));
        }
        let answer = built(answer.update_expression(expression).build())?;

        // Only the conversation's parts this turn changed are written
        // (dirty tracking): most turns leave the task stack and the flags alone.
        let (session, after) = (finish.session, finish.after);
        let before = &session.state;
        // The idle clock starts again at the answer, in the sweeps index too.
        let mut sets = vec![
            "#recent = :recent".to_string(),
            "last_active_at = :active".to_string(),
            "sweep_at = :sweep".to_string(),
            "expires_at = :ttl".to_string(),
        ];
        let [(_, active), (_, sweep), (_, ttl)] = expiry_attrs(session, finish.now_ms);
        let (same, generation) = same_generation(session.generation.as_deref());
        let mut unlock = Update::builder()
            .table_name(&self.state_table)
            .key(PK, s(pk.as_str()))
            .key(SK, s(SESSION_SK))
            .condition_expression(format!("active_turn = :turn AND {same}"))
            .expression_attribute_names("#generation", GENERATION)
            .set_expression_attribute_values(
                generation.map(|g| HashMap::from([(":generation".to_string(), g)])),
            )
            .expression_attribute_values(":turn", n(turn.turn))
            .expression_attribute_values(":active", active)
            .expression_attribute_values(":sweep", sweep)
            .expression_attribute_values(":ttl", ttl)
            .expression_attribute_names("#recent", RECENT)
            .expression_attribute_values(":recent", json(&after.recent)?);
        let changed = [
            (after.task_stack != before.task_stack)
                .then(|| json(&after.task_stack).map(|v| (TASK_STACK, v))),
            (after.flags.requires_human != before.flags.requires_human).then(|| {
                Ok((
                    REQUIRES_HUMAN,
                    AttributeValue::Bool(after.flags.requires_human),
                ))
            }),
            (after.flags.is_paused != before.flags.is_paused)
                .then(|| Ok((IS_PAUSED, AttributeValue::Bool(after.flags.is_paused)))),
        ];
        for (i, part) in changed.into_iter().flatten().enumerate() {
            let (name, value) = part?;
            sets.push(format!("#part{i} = :part{i}"));
            unlock = unlock
                .expression_attribute_names(format!("#part{i}"), name)
                .expression_attribute_values(format!(":part{i}"), value);
        }
        let unlock = built(
            unlock
                .update_expression(format!(
                    "SET {} REMOVE active_turn, turn_request",
                    sets.join(", ")
                ))
                .build(),
        )?;
        let mut items = vec![
            TransactWriteItem::builder().update(answer).build(),
            TransactWriteItem::builder().update(unlock).build(),
        ];
        for (agent, state) in &finish.instances {
            items.push(self.instance_update(
                tenant,
                &turn.session_id,
                session.generation.as_deref(),
                agent,
                turn.turn,
                state.as_ref(),
                finish.now_ms,
            )?);
        }
        self.transact(items).await
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
        let pk = keys::session_pk(tenant, session_id);
        let mut exists = ConditionCheck::builder()
            .table_name(&self.state_table)
            .key(PK, s(pk.as_str()))
            .key(SK, s(SESSION_SK))
            .condition_expression("attribute_exists(pk)");
        if let Some(generation) = generation {
            // The opening that started the turn: a new one under the same id is not it.
            exists = exists
                .condition_expression("attribute_exists(pk) AND #generation = :generation")
                .expression_attribute_names("#generation", GENERATION)
                .expression_attribute_values(":generation", s(generation));
        }
        let exists = built(exists.build())?;
        let mut item = HashMap::from([
            (PK.into(), s(pk.as_str())),
            (
                SK.into(),
                s(keys::async_result_sk(result.turn, &result.agent)),
            ),
            ("turn".into(), n(result.turn)),
            ("agent".into(), s(result.agent.as_str())),
            (
                "result".into(),
                match &result.result {
                    Kept::Whole(value) => json(value)?,
                    Kept::Cut(preview) => json(preview)?,
                },
            ),
            (
                "truncated".into(),
                AttributeValue::Bool(matches!(result.result, Kept::Cut(_))),
            ),
            ("finished_at".into(), n(result.finished_at_ms)),
            (EXPIRES_AT.into(), n(now_ms / 1000 + SESSION_ITEM_TTL_S)),
        ]);
        if let Some(generation) = generation {
            item.insert(GENERATION.into(), s(generation));
        }
        if let Some(workflow_id) = &result.workflow_id {
            item.insert("workflow_id".into(), s(workflow_id.as_str()));
        }
        let items = vec![
            TransactWriteItem::builder().condition_check(exists).build(),
            txn_put(&self.state_table, item, Some("attribute_not_exists(pk)"))?,
            self.instance_update(
                tenant,
                session_id,
                generation,
                &result.agent,
                result.turn,
                state,
                now_ms,
            )?,
        ];
        // Refused: the session has ended, or the result was kept before (a redelivery).
        self.transact(items).await.map(|_| ())
    }

    async fn record_summary(
        &self,
        tenant: &TenantId,
        session_id: &SessionId,
        generation: Option<&str>,
        summary: &RunningSummary,
    ) -> Result<(), StoreError> {
        let mut condition = String::from(
            "attribute_exists(pk) AND (attribute_not_exists(#through) OR #through < :through)",
        );
        let mut update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, session_id)))
            .key(SK, s(SESSION_SK))
            .update_expression("SET #summary = :summary, #through = :through")
            .expression_attribute_names("#summary", SUMMARY)
            .expression_attribute_names("#through", SUMMARY_THROUGH)
            .expression_attribute_values(":summary", json(summary)?)
            .expression_attribute_values(":through", n(summary.through_turn));
        if let Some(generation) = generation {
            condition.push_str(" AND #generation = :generation");
            update = update
                .expression_attribute_names("#generation", GENERATION)
                .expression_attribute_values(":generation", s(generation));
        }
        // Refused: the session has ended, or keeps this summary (a redelivery) or a later one.
        conditional_update(update.condition_expression(condition), ReturnValue::None)
            .await
            .map(|_| ())
    }
}
