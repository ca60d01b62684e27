//! Outcome history and learned statistics, in the memory table.

use async_trait::async_trait;

use super::*;

fn stats_record(item: &Item) -> Result<(AgentStats, u64), StoreError> {
    let a = Attrs(item);
    let stats = AgentStats {
        count: a.n("count")?,
        successes: a.n("successes")?,
        total_latency_ms: a.n("total_latency_ms")?,
        max_latency_ms: a.n("max_latency_ms")?,
        recent: a.json("recent")?.unwrap_or_default(),
    };
    Ok((stats, a.n("version")?))
}

/// The history record of one outcome, written only if it does not exist yet.
fn outcome_put(
    table: &str,
    pk: &str,
    outcome: &OutcomeMessage,
    expires_at_s: i64,
) -> Result<Put, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(pk)),
        (
            SK.into(),
            s(keys::outcome_sk(
                &outcome.task.workflow_id,
                &outcome.task.task_id,
                outcome.task.attempt,
            )),
        ),
        ("task_type".into(), s(outcome.task_type.as_str())),
        ("success".into(), AttributeValue::Bool(outcome.success)),
        ("latency_ms".into(), n(outcome.latency_ms)),
        ("finished_at".into(), n(outcome.finished_at_ms)),
        (EXPIRES_AT.into(), n(expires_at_s)),
    ]);
    if let Some(failure) = outcome.failure {
        item.insert("failure".into(), json(&failure)?);
    }
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|e| StoreError::Dynamo(e.to_string()))
}

#[async_trait]
impl LearningStore for DynamoStore {
    async fn record_outcomes(
        &self,
        outcomes: &[OutcomeMessage],
        expires_at_s: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let Some(first) = outcomes.first() else {
            return Ok(Vec::new());
        };
        if outcomes.len() > MAX_OUTCOMES_PER_WRITE
            || outcomes.iter().any(|o| {
                (&o.task.tenant, &o.agent, &o.task_type)
                    != (&first.task.tenant, &first.agent, &first.task_type)
            })
        {
            return Err(StoreError::Corrupt(format!(
                "record_outcomes takes at most {MAX_OUTCOMES_PER_WRITE} outcomes of one agent and task type"
            )));
        }
        let pk = keys::memory_agent_pk(&first.task.tenant, &first.agent);
        let stats_sk = keys::stats_sk(&first.task_type);
        let mut history = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            history.push(outcome_put(&self.memory_table, &pk, outcome, expires_at_s)?);
        }
        // Some(true): learned now; Some(false): learned before; None: still to write.
        let mut learned: Vec<Option<bool>> = vec![None; outcomes.len()];
        // A batch may hold the same outcome twice, and a transaction may not write one item
        // twice: later copies count as already learned.
        for i in 0..outcomes.len() {
            if outcomes[..i].iter().any(|o| o.task == outcomes[i].task) {
                learned[i] = Some(false);
            }
        }

        // One transaction writes the new history records and the stats record under an
        // optimistic lock: the history records make each outcome count once, whatever SQS
        // redelivers, and the lock keeps concurrent learners from losing updates.
        for retry in 0..=MAX_RETRIES {
            let pending: Vec<usize> = (0..outcomes.len())
                .filter(|i| learned[*i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let current = self
                .client
                .get_item()
                .table_name(&self.memory_table)
                .key(PK, s(pk.as_str()))
                .key(SK, s(stats_sk.as_str()))
                .consistent_read(true)
                .send()
                .await
                .map_err(dynamo_error)?;
            let (mut stats, version) = match current.item.as_ref() {
                Some(item) => stats_record(item)?,
                None => (AgentStats::default(), 0),
            };
            for &i in &pending {
                let o = &outcomes[i];
                stats.record(o.success, o.latency_ms, o.finished_at_ms);
            }
            let updated_at = pending
                .iter()
                .map(|&i| outcomes[i].finished_at_ms)
                .max()
                .unwrap_or_default();
            let stats_item = HashMap::from([
                (PK.into(), s(pk.as_str())),
                (SK.into(), s(stats_sk.as_str())),
                ("agent".into(), s(first.agent.as_str())),
                ("task_type".into(), s(first.task_type.as_str())),
                ("count".into(), n(stats.count)),
                ("successes".into(), n(stats.successes)),
                ("total_latency_ms".into(), n(stats.total_latency_ms)),
                ("max_latency_ms".into(), n(stats.max_latency_ms)),
                ("recent".into(), json(&stats.recent)?),
                ("version".into(), n(version + 1)),
                ("updated_at".into(), n(updated_at)),
            ]);
            let stats_put = Put::builder()
                .table_name(&self.memory_table)
                .set_item(Some(stats_item))
                .condition_expression("attribute_not_exists(pk) OR version = :version")
                .expression_attribute_values(":version", n(version))
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            let mut transaction = self.client.transact_write_items();
            for &i in &pending {
                transaction = transaction
                    .transact_items(TransactWriteItem::builder().put(history[i].clone()).build());
            }
            let transaction =
                transaction.transact_items(TransactWriteItem::builder().put(stats_put).build());
            let err = match transaction.send().await {
                Ok(_) => {
                    for &i in &pending {
                        learned[i] = Some(true);
                    }
                    break;
                }
                Err(err) => err,
            };
            let reasons: Vec<Option<String>> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().map(str::to_string))
                    .collect(),
                _ => return Err(dynamo_error(err)),
            };
            let failed = |k: usize| {
                reasons.get(k).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed")
            };
            let duplicates: Vec<usize> = (0..pending.len()).filter(|&k| failed(k)).collect();
            for &k in &duplicates {
                learned[pending[k]] = Some(false);
            }
            if duplicates.is_empty() && !failed(pending.len()) {
                return Err(dynamo_error(err));
            }
            if !failed(pending.len()) {
                continue; // only duplicates were in the way: write the rest at once
            }
            tokio::time::sleep(backoff(retry)).await;
        }
        learned
            .into_iter()
            .map(|l| {
                l.ok_or_else(|| {
                    StoreError::Dynamo("stats record kept changing under concurrent updates".into())
                })
            })
            .collect()
    }

    async fn agent_stats(
        &self,
        tenant: &str,
        task_type: &str,
        agents: &[String],
    ) -> Result<HashMap<String, AgentStats>, StoreError> {
        if agents.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = agents
            .iter()
            .map(|agent| {
                HashMap::from([
                    (PK.into(), s(keys::memory_agent_pk(tenant, agent))),
                    (SK.into(), s(keys::stats_sk(task_type))),
                ])
            })
            .collect();
        let items = self
            .batch_get(&self.memory_table, keys, None, &[], false)
            .await?;
        let mut stats = HashMap::new();
        for item in &items {
            let agent = Attrs(item).s("agent")?.to_string();
            stats.insert(agent, stats_record(item)?.0);
        }
        Ok(stats)
    }
}
