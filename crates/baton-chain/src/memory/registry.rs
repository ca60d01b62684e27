//! The registry and tenants' settings in memory: `baton_aws::dynamo::agents` and `config`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{MemoryStore, State};
use crate::store::*;
use baton_types::agent::Agent;
use baton_types::health::{fair_by_tenant, AgentHealth, DUE_READ_FACTOR};
use baton_types::ids::{AgentName, TenantId};
use baton_types::quota::{PaceState, PaceStep, QuotaOverrides};
use baton_types::routing::CapabilityDefaults;

/// An agent's item and what the registry keeps beside it.
#[derive(Debug, Clone)]
pub(super) struct StoredAgent {
    pub agent: Agent,
    /// Raised whenever an agent that needs this one is stored enabled (None: never).
    pub guard: Option<u64>,
    /// The change that last wrote it, so that a retry recognises its own write.
    pub change_id: Option<String>,
    /// In the sweeps index, its health check due then (None: not probed).
    pub health_due_ms: Option<i64>,
}

impl StoredAgent {
    /// An agent written whole: a put replaces the guard and the change id too.
    fn written(agent: &Agent, change_id: Option<&str>) -> Self {
        let probed = agent.health_check.is_some() && agent.enabled;
        StoredAgent {
            agent: agent.clone(),
            guard: None,
            change_id: change_id.map(str::to_string),
            health_due_ms: probed.then_some(agent.updated_at_ms),
        }
    }
}

/// The state table's registry and configuration items.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Agents by tenant, then name.
    agents: BTreeMap<TenantId, BTreeMap<String, StoredAgent>>,
    agent_counts: HashMap<TenantId, u64>,
    configs: HashMap<TenantId, TenantConfig>,
    /// Counters by (tenant, counter).
    counters: HashMap<(String, String), u64>,
    paces: HashMap<TenantId, PaceState>,
}

/// Where the health sweep probes an agent, if it can.
fn probe_url(agent: &Agent) -> Option<String> {
    agent.health_check.as_ref()?.url(agent.endpoint()?)
}

impl Registry {
    fn tenant(&self, tenant: &TenantId) -> impl Iterator<Item = &StoredAgent> {
        self.agents.get(tenant).into_iter().flat_map(|a| a.values())
    }

    fn stored(&self, tenant: &TenantId, name: &str) -> Option<&StoredAgent> {
        self.agents.get(tenant)?.get(name)
    }

    /// Whether every premise of `change` holds.
    fn premises_hold(&self, tenant: &TenantId, change: &AgentChange<'_>) -> bool {
        let own = self.stored(tenant, change.name);
        let version = match change.expected_version {
            None => own.is_none(),
            Some(version) => own.is_some_and(|s| s.agent.version == version),
        };
        let guard = match change.expected_guard {
            Some(0) => own.is_none_or(|s| s.guard.is_none()),
            Some(guard) => own.is_some_and(|s| s.guard == Some(guard)),
            None => true,
        };
        let count = change.count.is_none_or(|count| {
            count.delta <= 0
                || self
                    .agent_counts
                    .get(tenant)
                    .is_none_or(|kept| *kept < u64::from(count.limit))
        });
        let needs = change.needs.iter().all(|need| {
            // A need that is the agent itself sees it as stored before the change.
            self.stored(tenant, need).is_some_and(|s| s.agent.enabled)
        });
        version && guard && count && needs
    }

    fn apply(&mut self, tenant: &TenantId, change: &AgentChange<'_>) {
        if let Some(count) = change.count {
            let kept = self
                .agent_counts
                .entry(tenant.clone())
                .or_insert(count.registered);
            *kept = kept.saturating_add_signed(count.delta);
        }
        let agents = self.agents.entry(tenant.clone()).or_default();
        match change.agent {
            Some(agent) => {
                agents.insert(
                    change.name.to_string(),
                    StoredAgent::written(agent, Some(change.change_id)),
                );
            }
            None => {
                agents.remove(change.name);
            }
        }
        for need in &change.needs {
            if let Some(needed) = agents.get_mut(*need) {
                needed.guard = Some(needed.guard.unwrap_or(0) + 1);
            }
        }
    }
}

#[async_trait]
impl AgentRegistry for MemoryStore {
    async fn replace_agent(&self, tenant: &TenantId, agent: &Agent) -> Result<(), StoreError> {
        self.run("replace_agent", |state| {
            state
                .registry
                .agents
                .entry(tenant.clone())
                .or_default()
                .insert(agent.name.to_string(), StoredAgent::written(agent, None));
            Ok(())
        })
    }

    async fn agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError> {
        self.run("agents", |state| {
            Ok(state
                .registry
                .tenant(tenant)
                .map(|s| s.agent.clone())
                .collect())
        })
    }

    async fn agent_list(&self, tenant: &TenantId) -> Result<AgentList, StoreError> {
        self.run("agent_list", |state| {
            let mut list = AgentList::default();
            for stored in state.registry.tenant(tenant) {
                if let Some(guard) = stored.guard {
                    list.guards.insert(stored.agent.name.to_string(), guard);
                }
                list.agents.push(stored.agent.clone());
            }
            Ok(list)
        })
    }

    async fn change_agent(
        &self,
        tenant: &TenantId,
        change: &AgentChange<'_>,
    ) -> Result<bool, StoreError> {
        self.run("change_agent", |state| {
            let registry = &mut state.registry;
            if registry.premises_hold(tenant, change) {
                registry.apply(tenant, change);
                return Ok(true);
            }
            // Refused: by a premise that moved, or by this same change applied before.
            let now = registry.stored(tenant, change.name);
            Ok(match (now, change.agent) {
                (Some(stored), Some(_)) => stored.change_id.as_deref() == Some(change.change_id),
                (None, None) => true,
                _ => false,
            })
        })
    }

    async fn agent(
        &self,
        tenant: &TenantId,
        name: &AgentName,
    ) -> Result<Option<Agent>, StoreError> {
        self.run("agent", |state| {
            Ok(state.registry.stored(tenant, name).map(|s| s.agent.clone()))
        })
    }

    async fn agent_count(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError> {
        self.run("agent_count", |state| {
            Ok(state.registry.agent_counts.get(tenant).copied())
        })
    }

    async fn due_health_checks(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, Agent)>, StoreError> {
        self.run("due_health_checks", |state| {
            let wanted = usize::try_from(limit).unwrap_or(0);
            let mut due: Vec<(i64, TenantId, String)> = state
                .registry
                .agents
                .iter()
                .flat_map(|(tenant, agents)| {
                    agents.values().filter_map(move |s| {
                        let at = s.health_due_ms.filter(|at| *at < now_ms)?;
                        Some((at, tenant.clone(), s.agent.name.to_string()))
                    })
                })
                .collect();
            due.sort();
            due.truncate(wanted.saturating_mul(DUE_READ_FACTOR).max(1));
            let fair = fair_by_tenant(due, |(_, tenant, _)| tenant.as_str(), wanted);
            let mut probed = Vec::new();
            for (_, tenant, name) in fair {
                let Some(stored) = state
                    .registry
                    .agents
                    .get_mut(&tenant)
                    .and_then(|a| a.get_mut(&name))
                else {
                    continue;
                };
                if stored.agent.enabled && probe_url(&stored.agent).is_some() {
                    probed.push((tenant, stored.agent.clone()));
                } else {
                    // Not probeable: out of the index until its next change.
                    stored.health_due_ms = None;
                }
            }
            Ok(probed)
        })
    }

    async fn record_health(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        health: &AgentHealth,
        next_check_ms: i64,
    ) -> Result<(), StoreError> {
        self.run("record_health", |state| {
            let stored = state
                .registry
                .agents
                .get_mut(tenant)
                .and_then(|a| a.get_mut(name.as_str()));
            // Removed, disabled or without its check since the probe started: nothing.
            if let Some(stored) =
                stored.filter(|s| s.agent.health_check.is_some() && s.health_due_ms.is_some())
            {
                stored.agent.health = Some(health.clone());
                stored.health_due_ms = Some(next_check_ms);
            }
            Ok(())
        })
    }
}

impl State {
    fn config_mut(&mut self, tenant: &TenantId) -> &mut TenantConfig {
        self.registry.configs.entry(tenant.clone()).or_default()
    }
}

#[async_trait]
impl ConfigStore for MemoryStore {
    async fn tenant_config(&self, tenant: &TenantId) -> Result<TenantConfig, StoreError> {
        self.run("tenant_config", |state| {
            Ok(state
                .registry
                .configs
                .get(tenant)
                .cloned()
                .unwrap_or_default())
        })
    }

    async fn put_capability_defaults(
        &self,
        tenant: &TenantId,
        capability: &str,
        defaults: &CapabilityDefaults,
    ) -> Result<(), StoreError> {
        self.run("put_capability_defaults", |state| {
            let config = state.config_mut(tenant);
            config
                .capabilities
                .insert(capability.to_string(), defaults.clone());
            Ok(())
        })
    }

    async fn put_multipliers(
        &self,
        tenant: &TenantId,
        multipliers: &BTreeMap<String, f64>,
    ) -> Result<(), StoreError> {
        self.run("put_multipliers", |state| {
            state.config_mut(tenant).multipliers = multipliers.clone();
            Ok(())
        })
    }

    async fn put_quotas(
        &self,
        tenant: &TenantId,
        quotas: &QuotaOverrides,
    ) -> Result<(), StoreError> {
        self.run("put_quotas", |state| {
            state.config_mut(tenant).quotas = *quotas;
            Ok(())
        })
    }
}

#[async_trait]
impl TenantCounters for MemoryStore {
    async fn take_place(
        &self,
        tenant: &TenantId,
        counter: &str,
        counted: u64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        self.run("take_place", |state| {
            let key = (tenant.to_string(), counter.to_string());
            let count = state.registry.counters.get(&key).copied();
            // Where no count is kept yet, `counted` starts it.
            if count.unwrap_or(counted) >= limit {
                return Ok(false);
            }
            state
                .registry
                .counters
                .insert(key, count.unwrap_or(counted) + 1);
            Ok(true)
        })
    }

    async fn give_place(&self, tenant: &TenantId, counter: &str) -> Result<(), StoreError> {
        self.run("give_place", |state| {
            let key = (tenant.to_string(), counter.to_string());
            if let Some(count) = state.registry.counters.get_mut(&key).filter(|c| **c > 0) {
                *count -= 1;
            }
            Ok(())
        })
    }
}

#[async_trait]
impl AdmissionStore for MemoryStore {
    async fn advance_pace(
        &self,
        tenant: &TenantId,
        step: &PaceStep,
    ) -> Result<PaceAdvance, StoreError> {
        self.run("advance_pace", |state| {
            let pace = state.registry.paces.entry(tenant.clone()).or_default();
            let old = *pace;
            // From idle: the cell at or below the floor.
            if step.fits_from_idle() && old.tat_us.is_none_or(|tat| tat <= step.floor_us) {
                pace.tat_us = Some(step.floor_us + step.by_us);
                return Ok(PaceAdvance::Advanced {
                    base_us: step.floor_us,
                    old,
                });
            }
            // Busy: extended within the backlog.
            match old.tat_us {
                Some(tat) if tat > step.floor_us && tat <= step.limit_us => {
                    pace.tat_us = Some(tat + step.by_us);
                    Ok(PaceAdvance::Advanced { base_us: tat, old })
                }
                tat => Ok(PaceAdvance::Refused {
                    tat_us: tat.unwrap_or(step.floor_us).max(step.floor_us),
                }),
            }
        })
    }

    async fn save_urgent(
        &self,
        tenant: &TenantId,
        read: Option<i64>,
        next: i64,
    ) -> Result<bool, StoreError> {
        self.run("save_urgent", |state| {
            let pace = state.registry.paces.entry(tenant.clone()).or_default();
            if pace.urgent_tat_us != read {
                return Ok(false);
            }
            pace.urgent_tat_us = Some(next);
            Ok(true)
        })
    }

    async fn running_count(&self, tenant: &TenantId, _limit: u32) -> Result<u64, StoreError> {
        self.run("running_count", |state| Ok(state.running_workflows(tenant)))
    }
}
