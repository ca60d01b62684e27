//! Outcome history, learned statistics and circuits, in the memory table.
//!
//! One agent's outcomes are learned in one transaction: a result item per outcome
//! (conditional on not existing, so each counts once), the stats record of each task type
//! and, when it changed, the agent's circuit (both under an optimistic lock on `version`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::*;
use baton_types::circuit::CircuitCall;
use baton_types::ids::{AgentName, TenantId};
use baton_types::learning::DecayedEvidence;
use baton_types::results::{PastResult, ResultQuery};

/// Stats records and the circuit are rewritten whole; `version` guards against lost updates.
const VERSION: &str = "version";

pub(super) fn stats_record(item: &Item) -> Result<(AgentStats, u64), StoreError> {
    let a = Attrs(item);
    let stats = AgentStats {
        count: a.n("count")?,
        successes: a.n("successes")?,
        total_latency_ms: a.n("total_latency_ms")?,
        max_latency_ms: a.n("max_latency_ms")?,
        recent: a.json("recent")?.unwrap_or_default(),
        decayed: DecayedEvidence {
            successes: a.opt_n("decayed_successes")?.unwrap_or(0.0),
            failures: a.opt_n("decayed_failures")?.unwrap_or(0.0),
            latency_total_ms: a.opt_n("decayed_latency_ms")?.unwrap_or(0.0),
            latency_weight: a.opt_n("decayed_latency_weight")?.unwrap_or(0.0),
            as_of_ms: a.opt_n("decayed_at")?.unwrap_or(0),
        },
        input_tokens: a.opt_n("input_tokens")?.unwrap_or(0),
        output_tokens: a.opt_n("output_tokens")?.unwrap_or(0),
    };
    Ok((stats, a.n(VERSION)?))
}

fn circuit_record(item: &Item) -> Result<(Circuit, u64), StoreError> {
    let a = Attrs(item);
    let probe = match (a.opt_s("probe_key"), a.opt_n::<i64>("probe_until")?) {
        (Some(key), Some(until_ms)) => Some(Probe {
            key: key.to_string(),
            until_ms,
        }),
        _ => None,
    };
    let circuit = Circuit {
        open: a.bool("open").unwrap_or(false),
        consecutive_failures: a.opt_n("consecutive_failures")?.unwrap_or(0),
        window: a
            .opt_s("window")
            .unwrap_or_default()
            .chars()
            .map(|c| c == 'S')
            .collect(),
        opened_at_ms: a.opt_n("opened_at")?,
        probe,
    };
    Ok((circuit, a.opt_n(VERSION)?.unwrap_or(0)))
}

fn circuit_item(pk: &str, agent: &str, circuit: &Circuit, version: u64, now_ms: i64) -> Item {
    let window: String = circuit
        .window
        .iter()
        .map(|ok| if *ok { 'S' } else { 'F' })
        .collect();
    let mut item = HashMap::from([
        (PK.into(), s(pk)),
        (SK.into(), s(keys::CIRCUIT_SK)),
        ("agent".into(), s(agent)),
        ("open".into(), AttributeValue::Bool(circuit.open)),
        (
            "consecutive_failures".into(),
            n(circuit.consecutive_failures),
        ),
        ("window".into(), s(window)),
        (VERSION.into(), n(version)),
        ("updated_at".into(), n(now_ms)),
    ]);
    if let Some(opened_at) = circuit.opened_at_ms {
        item.insert("opened_at".into(), n(opened_at));
    }
    if let Some(probe) = &circuit.probe {
        item.insert("probe_key".into(), s(probe.key.as_str()));
        item.insert("probe_until".into(), n(probe.until_ms));
    }
    item
}

/// The result item of one outcome, written only if it does not exist yet: each counts once.
fn outcome_put(
    table: &str,
    pk: &str,
    outcome: &OutcomeMessage,
    expires_at_s: i64,
) -> Result<Put, StoreError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(super::results::result_item(
            pk,
            outcome,
            expires_at_s,
        )?))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|e| StoreError::Request(Box::new(e)))
}

/// A whole-record put under the optimistic lock: it applies only over `version`.
fn locked_put(table: &str, item: Item, version: u64) -> Result<Put, StoreError> {
    let put = Put::builder().table_name(table).set_item(Some(item));
    let put = if version == 0 {
        put.condition_expression("attribute_not_exists(pk)")
    } else {
        put.condition_expression("version = :version")
            .expression_attribute_values(":version", n(version))
    };
    put.build().map_err(|e| StoreError::Request(Box::new(e)))
}

impl DynamoStore {
    pub(super) fn memory_key(&self, pk: &str, sk: &str) -> Item {
        HashMap::from([(PK.into(), s(pk)), (SK.into(), s(sk))])
    }

    /// Each agent's item under `sk` in its memory partition, by agent name (absent: none), in
    /// one batch.
    pub(super) async fn agent_items(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
        sk: &str,
    ) -> Result<HashMap<String, Item>, StoreError> {
        let keys = agents
            .iter()
            .map(|agent| self.memory_key(&keys::memory_agent_pk(tenant, agent), sk))
            .collect();
        let mut items = self.memory_items(keys, false).await?;
        Ok(agents
            .iter()
            .filter_map(|agent| {
                let key = (keys::memory_agent_pk(tenant, agent), sk.to_string());
                Some((agent.to_string(), items.remove(&key)?))
            })
            .collect())
    }

    /// Items of the memory table by (pk, sk), keyed by (pk, sk).
    pub(super) async fn memory_items(
        &self,
        keys: Vec<Item>,
        consistent: bool,
    ) -> Result<HashMap<(String, String), Item>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let items = self
            .batch_get(&self.memory_table, keys, None, &[], consistent)
            .await?;
        let mut by_key = HashMap::with_capacity(items.len());
        for item in items {
            let a = Attrs(&item);
            let key = (a.s(PK)?.to_string(), a.s(SK)?.to_string());
            by_key.insert(key, item);
        }
        Ok(by_key)
    }
}

#[async_trait]
impl LearningStore for DynamoStore {
    async fn record_outcomes(
        &self,
        outcomes: &[OutcomeMessage],
        half_life_ms: i64,
        expires_at_s: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let Some(first) = outcomes.first() else {
            return Ok(Vec::new());
        };
        if outcomes.len() > MAX_OUTCOMES_PER_WRITE
            || outcomes
                .iter()
                .any(|o| (&o.task.tenant, &o.agent) != (&first.task.tenant, &first.agent))
        {
            return Err(StoreError::Corrupt(format!(
                "record_outcomes takes at most {MAX_OUTCOMES_PER_WRITE} outcomes of one agent"
            )));
        }
        let pk = keys::memory_agent_pk(&first.task.tenant, &first.agent);
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

        for retry in 0..=MAX_RETRIES {
            let mut pending: Vec<usize> = (0..outcomes.len())
                .filter(|i| learned[*i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            // The circuit sees calls in the order they ended.
            pending.sort_by_key(|&i| outcomes[i].finished_at_ms);
            let task_types: Vec<&str> = pending
                .iter()
                .map(|&i| outcomes[i].task_type.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut read_keys: Vec<Item> = task_types
                .iter()
                .map(|t| self.memory_key(&pk, &keys::stats_sk(t)))
                .collect();
            read_keys.push(self.memory_key(&pk, keys::CIRCUIT_SK));
            let current = self.memory_items(read_keys, true).await?;

            let mut stats: BTreeMap<&str, (AgentStats, u64)> = BTreeMap::new();
            for task_type in &task_types {
                let stored = current.get(&(pk.clone(), keys::stats_sk(task_type)));
                stats.insert(
                    task_type,
                    stored
                        .map(stats_record)
                        .transpose()?
                        .unwrap_or((AgentStats::default(), 0)),
                );
            }
            let (mut circuit, circuit_version) = current
                .get(&(pk.clone(), keys::CIRCUIT_SK.to_string()))
                .map(circuit_record)
                .transpose()?
                .unwrap_or_default();
            let was_open = circuit.open;
            let mut circuit_changed = false;
            for &i in &pending {
                let o = &outcomes[i];
                if let Some((s, _)) = stats.get_mut(o.task_type.as_str()) {
                    s.record(o.success, o.latency_ms, o.finished_at_ms, half_life_ms);
                    if let Some(usage) = o.usage {
                        s.add_usage(usage);
                    }
                }
                if o.counts_for_circuit {
                    let key = o.task.idempotency_key();
                    let call = CircuitCall {
                        success: o.success,
                        key: &key,
                        at_ms: o.finished_at_ms,
                    };
                    let settings = o.breaker.unwrap_or_default();
                    circuit_changed |= circuit.record(call, &settings);
                }
            }
            let updated_at = pending
                .iter()
                .map(|&i| outcomes[i].finished_at_ms)
                .max()
                .unwrap_or_default();

            let mut transaction = self.client.transact_write_items();
            for &i in &pending {
                transaction = transaction
                    .transact_items(TransactWriteItem::builder().put(history[i].clone()).build());
            }
            for (task_type, (stats, version)) in &stats {
                let item = HashMap::from([
                    (PK.into(), s(pk.as_str())),
                    (SK.into(), s(keys::stats_sk(task_type))),
                    ("agent".into(), s(first.agent.as_str())),
                    ("task_type".into(), s(*task_type)),
                    ("count".into(), n(stats.count)),
                    ("successes".into(), n(stats.successes)),
                    ("total_latency_ms".into(), n(stats.total_latency_ms)),
                    ("max_latency_ms".into(), n(stats.max_latency_ms)),
                    ("recent".into(), json(&stats.recent)?),
                    ("decayed_successes".into(), decimal(stats.decayed.successes)),
                    ("decayed_failures".into(), decimal(stats.decayed.failures)),
                    (
                        "decayed_latency_ms".into(),
                        decimal(stats.decayed.latency_total_ms),
                    ),
                    (
                        "decayed_latency_weight".into(),
                        decimal(stats.decayed.latency_weight),
                    ),
                    ("decayed_at".into(), n(stats.decayed.as_of_ms)),
                    ("input_tokens".into(), n(stats.input_tokens)),
                    ("output_tokens".into(), n(stats.output_tokens)),
                    (VERSION.into(), n(version + 1)),
                    ("updated_at".into(), n(updated_at)),
                ]);
                let put = locked_put(&self.memory_table, item, *version)?;
                transaction =
                    transaction.transact_items(TransactWriteItem::builder().put(put).build());
            }
            // A healthy agent's circuit does not change, and is not written.
            if circuit_changed {
                let item =
                    circuit_item(&pk, &first.agent, &circuit, circuit_version + 1, updated_at);
                let put = locked_put(&self.memory_table, item, circuit_version)?;
                transaction =
                    transaction.transact_items(TransactWriteItem::builder().put(put).build());
            }
            let err = match transaction.send().await {
                Ok(_) => {
                    if circuit.open != was_open {
                        baton_chain::metrics::circuit_changed(&first.agent, circuit.open);
                    }
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
            let lock_lost = (pending.len()..reasons.len()).any(failed);
            if duplicates.is_empty() && !lock_lost {
                return Err(dynamo_error(err));
            }
            if !lock_lost {
                continue; // only duplicates were in the way: write the rest at once
            }
            tokio::time::sleep(backoff(retry)).await;
        }
        learned
            .into_iter()
            .map(|l| {
                l.ok_or_else(|| {
                    StoreError::Busy("stats record kept changing under concurrent updates".into())
                })
            })
            .collect()
    }

    async fn past_results(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        query: &ResultQuery,
    ) -> Result<Vec<PastResult>, StoreError> {
        self.query_results(tenant, agent, query).await
    }

    async fn agent_stats(
        &self,
        tenant: &TenantId,
        task_type: &str,
        agents: &[AgentName],
    ) -> Result<HashMap<String, AgentStats>, StoreError> {
        let items = self
            .agent_items(tenant, agents, &keys::stats_sk(task_type))
            .await?;
        items
            .into_iter()
            .map(|(agent, item)| Ok((agent, stats_record(&item)?.0)))
            .collect()
    }

    async fn routing_view(
        &self,
        tenant: &TenantId,
        task_type: Option<&str>,
        agents: &[AgentName],
    ) -> Result<RoutingView, StoreError> {
        let stats_sk = task_type.map(keys::stats_sk);
        let keys = agents
            .iter()
            .flat_map(|agent| {
                let pk = keys::memory_agent_pk(tenant, agent);
                let stats = stats_sk.as_ref().map(|sk| self.memory_key(&pk, sk));
                std::iter::once(self.memory_key(&pk, keys::CIRCUIT_SK)).chain(stats)
            })
            .collect();
        let items = self.memory_items(keys, false).await?;
        let mut view = RoutingView::default();
        for agent in agents {
            let pk = keys::memory_agent_pk(tenant, agent);
            if let Some(sk) = &stats_sk {
                if let Some(item) = items.get(&(pk.clone(), sk.clone())) {
                    view.stats.insert(agent.to_string(), stats_record(item)?.0);
                }
            }
            if let Some(item) = items.get(&(pk, keys::CIRCUIT_SK.to_string())) {
                view.circuits
                    .insert(agent.to_string(), circuit_record(item)?.0);
            }
        }
        Ok(view)
    }

    async fn circuits(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
    ) -> Result<HashMap<String, Circuit>, StoreError> {
        let items = self.agent_items(tenant, agents, keys::CIRCUIT_SK).await?;
        items
            .into_iter()
            .map(|(agent, item)| Ok((agent, circuit_record(&item)?.0)))
            .collect()
    }

    async fn take_probe(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        probe: &Probe,
        opened_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.memory_table)
            .set_key(Some(self.memory_key(
                &keys::memory_agent_pk(tenant, agent),
                keys::CIRCUIT_SK,
            )))
            .update_expression(
                "SET probe_key = :key, probe_until = :until, version = version + :one",
            )
            .condition_expression(
                "#open = :open AND opened_at = :opened \
                 AND (attribute_not_exists(probe_until) OR probe_until < :now)",
            )
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":key", s(probe.key.as_str()))
            .expression_attribute_values(":until", n(probe.until_ms))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":open", AttributeValue::Bool(true))
            .expression_attribute_values(":opened", n(opened_at_ms))
            .expression_attribute_values(":now", n(now_ms));
        Ok(match conditional_update(update, ReturnValue::None).await? {
            Conditional::Applied(_) => true,
            // This probe's own earlier write (response lost) is still this probe.
            Conditional::Rejected(item) => {
                item.is_some_and(|item| Attrs(&item).opt_s("probe_key") == Some(probe.key.as_str()))
            }
        })
    }
}
