//! Routing: from a task's capability and the registry to a [`RouteDecision`].
//!
//! Candidates are the enabled agents with the capability. The `learned` strategy ranks them by
//! learned confidence (see [`super::learning`]); agents it cannot tell apart (no history yet)
//! are rotated by a hash of the task so that load spreads instead of piling on one agent.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::learning::AgentStats;

/// How many agents a decision keeps behind the primary.
pub const MAX_FALLBACKS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    Learned,
}

/// Which agent runs a task, and who stands behind it. Carried in the execute message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDecision {
    pub primary: String,
    pub fallbacks: Vec<String>,
    pub strategy: RoutingStrategy,
    pub confidence: f64,
    pub reasoning: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no enabled agent offers capability `{capability}`")]
pub struct NoCapableAgent {
    pub capability: String,
}

/// Picks the agents for a task needing `capability`. `stats` is keyed by agent name;
/// `spread_key` (the task's identity) breaks ties between agents with equal confidence.
pub fn route_task(
    capability: &str,
    agents: &[Agent],
    stats: &HashMap<String, AgentStats>,
    spread_key: &str,
) -> Result<RouteDecision, NoCapableAgent> {
    let mut candidates: Vec<&Agent> = agents
        .iter()
        .filter(|a| a.enabled && a.has_capability(capability))
        .collect();
    if candidates.is_empty() {
        return Err(NoCapableAgent {
            capability: capability.to_string(),
        });
    }
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let n = candidates.len();
    let offset = (fnv1a(spread_key) % n as u64) as usize;
    let confidence_of = |agent: &Agent| stats.get(&agent.name).cloned().unwrap_or_default();
    let mut ranked: Vec<(f64, usize, &Agent)> = candidates
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            (
                confidence_of(agent).confidence(),
                (i + n - offset) % n,
                *agent,
            )
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

    let (confidence, _, primary) = ranked[0];
    let fallbacks: Vec<String> = ranked[1..]
        .iter()
        .take(MAX_FALLBACKS)
        .map(|(_, _, a)| a.name.clone())
        .collect();
    let history = match stats.get(&primary.name) {
        Some(s) if s.count > 0 => format!("{} outcomes, {} succeeded", s.count, s.successes),
        _ => "no history yet".to_string(),
    };
    let reasoning = format!(
        "{n} enabled agent(s) offer `{capability}`; chose `{}` with confidence {confidence:.2} ({history}){}",
        primary.name,
        if fallbacks.is_empty() {
            String::new()
        } else {
            format!("; fallbacks: {}", fallbacks.join(", "))
        }
    );
    Ok(RouteDecision {
        primary: primary.name.clone(),
        fallbacks,
        strategy: RoutingStrategy::Learned,
        confidence,
        reasoning,
    })
}

/// A small stable hash (FNV-1a): the spread must not change between processes or releases.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard of a key among `shards`, stable across processes (used to spread index partitions).
pub fn stable_shard(key: &str, shards: u32) -> u32 {
    (fnv1a(key) % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::agent::AgentKind;

    fn agent(name: &str, capabilities: &[&str], enabled: bool) -> Agent {
        Agent {
            name: name.into(),
            kind: AgentKind::Http,
            endpoint: format!("http://127.0.0.1/{name}"),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            timeout_ms: 1000,
            enabled,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn only_enabled_agents_with_the_capability_are_candidates() {
        let agents = [
            agent("a", &["sum"], false),
            agent("b", &["translate"], true),
            agent("c", &["sum"], true),
        ];
        let d = route_task("sum", &agents, &HashMap::new(), "t1").unwrap();
        assert_eq!(d.primary, "c");
        assert!(d.fallbacks.is_empty());
        assert!((d.confidence - 0.7).abs() < 1e-12);
    }

    #[test]
    fn no_capable_agent_is_an_error_naming_the_capability() {
        let agents = [agent("a", &["sum"], false)];
        let err = route_task("sum", &agents, &HashMap::new(), "t").unwrap_err();
        assert_eq!(err.to_string(), "no enabled agent offers capability `sum`");
    }

    #[test]
    fn learned_confidence_picks_the_better_agent() {
        let agents = [agent("a", &["sum"], true), agent("b", &["sum"], true)];
        let mut stats = HashMap::new();
        let mut good = AgentStats::default();
        let mut bad = AgentStats::default();
        for i in 0..5 {
            good.record(true, 10, i);
            bad.record(false, 10, i);
        }
        stats.insert("a".to_string(), bad);
        stats.insert("b".to_string(), good);
        for key in ["t1", "t2", "t3", "t4"] {
            let d = route_task("sum", &agents, &stats, key).unwrap();
            assert_eq!(d.primary, "b");
            assert_eq!(d.fallbacks, vec!["a".to_string()]);
        }
    }

    #[test]
    fn agents_without_history_share_the_load() {
        let agents = [
            agent("a", &["sum"], true),
            agent("b", &["sum"], true),
            agent("c", &["sum"], true),
        ];
        let mut primaries = std::collections::HashSet::new();
        for i in 0..30 {
            let d = route_task("sum", &agents, &HashMap::new(), &format!("task-{i}")).unwrap();
            assert_eq!(d.fallbacks.len(), MAX_FALLBACKS);
            assert!(!d.fallbacks.contains(&d.primary));
            primaries.insert(d.primary);
        }
        assert_eq!(primaries.len(), 3);
    }
}
