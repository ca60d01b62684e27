//! The memory table in memory: routing's shared state (`baton_aws::dynamo::slots`) and what
//! the learner keeps (`learning`, `stats`).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::*;
use baton_types::circuit::{Circuit, CircuitCall, Probe};
use baton_types::ids::{AgentName, TaskId, TenantId, WorkflowId};
use baton_types::learning::AgentStats;
use baton_types::messages::OutcomeMessage;
use baton_types::resources::{AgentLoad, Limits, Resources};
use baton_types::results::{PastResult, ResultQuery};
use baton_types::routing::RoutingView;
use baton_types::stats::LearnedStats;

/// (tenant, agent): the memory table's partition of one agent.
type AgentKey = (String, String);

/// One call's hold on an agent's slots.
#[derive(Debug, Clone)]
struct SlotHeld {
    until_ms: i64,
    needs: Resources,
}

#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Round-robin counters by (tenant, capability).
    turns: HashMap<(String, String), u64>,
    /// Calls in flight by agent, then holder. An agent has an entry once a slot was taken.
    slots: HashMap<AgentKey, HashMap<String, SlotHeld>>,
    /// Outcomes learned, by agent, then (workflow, task, attempt): the results remembered.
    history: HashMap<AgentKey, BTreeMap<(WorkflowId, TaskId, u32), PastResult>>,
    /// Stats by agent, then task type.
    stats: HashMap<AgentKey, BTreeMap<String, AgentStats>>,
    circuits: HashMap<AgentKey, Circuit>,
}

fn agent_key(tenant: &TenantId, agent: &str) -> AgentKey {
    (tenant.to_string(), agent.to_string())
}

impl Memory {
    /// Deletes an outcome's history record (a session's end deletes its workflows').
    pub(super) fn forget_outcome(
        &mut self,
        tenant: &TenantId,
        agent: &AgentName,
        workflow_id: &WorkflowId,
        task_id: &TaskId,
        attempt: u32,
    ) {
        if let Some(history) = self.history.get_mut(&agent_key(tenant, agent)) {
            history.remove(&(workflow_id.clone(), task_id.clone(), attempt));
        }
    }

    /// The holds on an agent that are live at `now_ms`, without the others.
    fn live_slots(
        &mut self,
        key: &AgentKey,
        now_ms: i64,
    ) -> Option<&mut HashMap<String, SlotHeld>> {
        let holds = self.slots.get_mut(key)?;
        holds.retain(|_, hold| hold.until_ms > now_ms);
        Some(holds)
    }
}

fn load_of(holds: &HashMap<String, SlotHeld>) -> AgentLoad {
    let mut load = AgentLoad {
        in_flight: holds.len() as u32,
        ..AgentLoad::default()
    };
    for hold in holds.values() {
        for (name, amount) in &hold.needs {
            *load.resources_in_use.entry(name.clone()).or_default() += amount;
        }
    }
    load
}

#[async_trait]
impl RoutingState for MemoryStore {
    async fn next_turn(&self, tenant: &TenantId, capability: &str) -> Result<u64, StoreError> {
        self.run("next_turn", |state| {
            let counter = state
                .learning
                .turns
                .entry((tenant.to_string(), capability.to_string()))
                .or_default();
            *counter += 1;
            // The counter starts at 1; turns start at 0.
            Ok(*counter - 1)
        })
    }

    async fn loads(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
        now_ms: i64,
    ) -> Result<HashMap<String, AgentLoad>, StoreError> {
        self.run("loads", |state| {
            Ok(agents
                .iter()
                .filter_map(|agent| {
                    let holds = state.learning.slots.get(&agent_key(tenant, agent))?;
                    let live = holds
                        .iter()
                        .filter(|(_, h)| h.until_ms > now_ms)
                        .map(|(k, h)| (k.clone(), h.clone()))
                        .collect();
                    Some((agent.to_string(), load_of(&live)))
                })
                .collect())
        })
    }

    async fn acquire_slot(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        limits: Limits<'_>,
        hold: SlotHold<'_>,
        now_ms: i64,
    ) -> Result<SlotGrant, StoreError> {
        self.run("acquire_slot", |state| {
            let key = agent_key(tenant, agent);
            state.learning.slots.entry(key.clone()).or_default();
            let Some(holds) = state.learning.live_slots(&key, now_ms) else {
                return Ok(SlotGrant::Full);
            };
            // Its own earlier write, whose response was lost.
            if holds.contains_key(hold.holder) {
                return Ok(SlotGrant::Held);
            }
            if !limits.fits(&load_of(holds), hold.needs) {
                return Ok(SlotGrant::Full);
            }
            holds.insert(
                hold.holder.to_string(),
                SlotHeld {
                    until_ms: hold.until_ms,
                    needs: hold.needs.clone(),
                },
            );
            Ok(SlotGrant::Held)
        })
    }

    async fn release_slot(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        holder: &str,
    ) -> Result<(), StoreError> {
        self.run("release_slot", |state| {
            if let Some(holds) = state.learning.slots.get_mut(&agent_key(tenant, agent)) {
                holds.remove(holder);
            }
            Ok(())
        })
    }
}

#[async_trait]
impl LearningStore for MemoryStore {
    async fn record_outcomes(
        &self,
        outcomes: &[OutcomeMessage],
        half_life_ms: i64,
        _expires_at_s: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.run("record_outcomes", |state| {
            let Some(first) = outcomes.first() else {
                return Ok(Vec::new());
            };
            if outcomes
                .iter()
                .any(|o| (&o.task.tenant, &o.agent) != (&first.task.tenant, &first.agent))
            {
                return Err(StoreError::Corrupt(
                    "record_outcomes takes the outcomes of one agent".into(),
                ));
            }
            let key = agent_key(&first.task.tenant, &first.agent);
            let memory = &mut state.learning;
            let history = memory.history.entry(key.clone()).or_default();
            // Each outcome counts once: a copy in the batch or one learned before does not.
            let mut learned = Vec::with_capacity(outcomes.len());
            for o in outcomes {
                let id = (
                    o.task.workflow_id.clone(),
                    o.task.task_id.clone(),
                    o.task.attempt,
                );
                let new = !history.contains_key(&id);
                if new {
                    history.insert(id, o.past_result());
                }
                learned.push(new);
            }
            let mut new: Vec<&OutcomeMessage> = outcomes
                .iter()
                .zip(&learned)
                .filter(|(_, new)| **new)
                .map(|(o, _)| o)
                .collect();
            // The circuit sees calls in the order they ended.
            new.sort_by_key(|o| o.finished_at_ms);
            let stats = memory.stats.entry(key.clone()).or_default();
            let mut circuit = memory.circuits.get(&key).cloned().unwrap_or_default();
            let mut circuit_changed = false;
            for o in new {
                let s = stats.entry(o.task_type.clone()).or_default();
                s.record(o.success, o.latency_ms, o.finished_at_ms, half_life_ms);
                if let Some(usage) = o.usage {
                    s.add_usage(usage);
                }
                if o.counts_for_circuit {
                    let call_key = o.task.idempotency_key();
                    let call = CircuitCall {
                        success: o.success,
                        key: &call_key,
                        at_ms: o.finished_at_ms,
                    };
                    circuit_changed |= circuit.record(call, &o.breaker.unwrap_or_default());
                }
            }
            // A healthy agent's circuit is never written.
            if circuit_changed {
                memory.circuits.insert(key, circuit);
            }
            Ok(learned)
        })
    }

    async fn past_results(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        query: &ResultQuery,
    ) -> Result<Vec<PastResult>, StoreError> {
        self.run("past_results", |state| {
            let mut found: Vec<PastResult> = state
                .learning
                .history
                .get(&agent_key(tenant, agent))
                .into_iter()
                .flat_map(|history| history.values())
                .filter(|r| query.matches(r))
                .cloned()
                .collect();
            found.sort_by_key(|r| std::cmp::Reverse(r.finished_at_ms));
            found.truncate(query.limit);
            Ok(found)
        })
    }

    async fn agent_stats(
        &self,
        tenant: &TenantId,
        task_type: &str,
        agents: &[AgentName],
    ) -> Result<HashMap<String, AgentStats>, StoreError> {
        self.run("agent_stats", |state| {
            Ok(agents
                .iter()
                .filter_map(|agent| {
                    let stats = state.learning.stats.get(&agent_key(tenant, agent))?;
                    Some((agent.to_string(), stats.get(task_type)?.clone()))
                })
                .collect())
        })
    }

    async fn routing_view(
        &self,
        tenant: &TenantId,
        task_type: Option<&str>,
        agents: &[AgentName],
    ) -> Result<RoutingView, StoreError> {
        self.run("routing_view", |state| {
            let mut view = RoutingView::default();
            for agent in agents {
                let key = agent_key(tenant, agent);
                let stats = task_type.and_then(|t| state.learning.stats.get(&key)?.get(t));
                if let Some(stats) = stats {
                    view.stats.insert(agent.to_string(), stats.clone());
                }
                if let Some(circuit) = state.learning.circuits.get(&key) {
                    view.circuits.insert(agent.to_string(), circuit.clone());
                }
            }
            Ok(view)
        })
    }

    async fn circuits(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
    ) -> Result<HashMap<String, Circuit>, StoreError> {
        self.run("circuits", |state| {
            Ok(agents
                .iter()
                .filter_map(|agent| {
                    let circuit = state.learning.circuits.get(&agent_key(tenant, agent))?;
                    Some((agent.to_string(), circuit.clone()))
                })
                .collect())
        })
    }

    async fn take_probe(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        probe: &Probe,
        opened_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run("take_probe", |state| {
            let Some(circuit) = state.learning.circuits.get_mut(&agent_key(tenant, agent)) else {
                return Ok(false);
            };
            let free = circuit.open
                && circuit.opened_at_ms == Some(opened_at_ms)
                && circuit.probe.as_ref().is_none_or(|p| p.until_ms < now_ms);
            if free {
                circuit.probe = Some(probe.clone());
                return Ok(true);
            }
            // This probe's own earlier write is still this probe.
            Ok(circuit.probe.as_ref().is_some_and(|p| p.key == probe.key))
        })
    }
}

#[async_trait]
impl StatsStore for MemoryStore {
    async fn learned_stats(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
    ) -> Result<Vec<LearnedStats>, StoreError> {
        self.run("learned_stats", |state| {
            let mut records = Vec::new();
            for agent in agents {
                let Some(stats) = state.learning.stats.get(&agent_key(tenant, agent)) else {
                    continue;
                };
                records.extend(stats.iter().map(|(task_type, stats)| LearnedStats {
                    agent: agent.to_string(),
                    task_type: task_type.clone(),
                    stats: stats.clone(),
                }));
            }
            Ok(records)
        })
    }

    async fn running_workflows(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.run("running_workflows", |state| {
            Ok(state.running_workflows(tenant))
        })
    }
}
