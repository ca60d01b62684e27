//! Routing: from a task and the registry to a [`RouteDecision`].
//!
//! Candidates are the enabled agents with the capability that could hold the task's resource
//! needs. Of those, unhealthy agents, agents whose circuit is open and agents at their
//! concurrency or resource limits are skipped; an agent whose circuit is half-open may take
//! the task as its one probe. The task's strategy orders the rest (see `strategy`).
//!
//! A retry carries the agents its previous decision kept in reserve (`prefer`): the next
//! attempt goes to the first of them that can take it, and once they are used up the task
//! goes back to the best agent by routing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::circuit::{Circuit, CircuitState};
use super::health::HealthStatus;
use super::ids::AgentName;
use super::learning::AgentStats;
use super::outcome::FailureKind;
use super::resources::{AgentLoad, Resources};

mod strategy;

pub use strategy::{LearningSettings, RoutingStrategy};

/// How many agents a decision keeps behind the primary.
pub const MAX_FALLBACKS: usize = 2;

/// Which agent runs a task, and who stands behind it. Carried in the execute message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDecision {
    pub primary: AgentName,
    pub fallbacks: Vec<AgentName>,
    pub strategy: RoutingStrategy,
    pub confidence: f64,
    pub reasoning: String,
    /// The primary's circuit is half-open and this task is its one probe call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

/// A tenant's defaults for the tasks of one capability, set through the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityDefaults {
    /// The strategy of tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingStrategy>,
    /// The latency the learned strategy weighs agents against (see `strategy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_target_ms: Option<u64>,
}

/// Bounds of a configured latency target.
pub const MAX_LATENCY_TARGET_MS: u64 = 600_000;

/// No enabled agent can ever take the task: none has the capability, or none could hold its
/// resource needs even idle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NoCapableAgent {
    pub capability: String,
    pub message: String,
}

/// What routing knows of the candidates beyond the registry, keyed by agent name: learned
/// stats (absent: no history), circuits (absent: closed), calls in flight (absent: none
/// counted), and the round-robin counter when the strategy uses it.
#[derive(Debug, Clone, Default)]
pub struct RoutingView {
    pub stats: HashMap<String, AgentStats>,
    pub circuits: HashMap<String, Circuit>,
    pub load: HashMap<String, AgentLoad>,
    pub rotation: Option<u64>,
}

/// One task to route.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    pub capability: &'a str,
    pub strategy: RoutingStrategy,
    /// What one call of the task holds on its agent.
    pub needs: &'a Resources,
    /// Agents to try first, in order (a retry's remaining fallbacks).
    pub prefer: &'a [AgentName],
    /// Agents that must not be chosen (deleted or disabled since an earlier decision).
    pub avoid: &'a [AgentName],
    /// The task attempt's identity: seeds its random draws and spreads ties.
    pub spread_key: &'a str,
    pub now_ms: i64,
    pub learning: LearningSettings,
}

/// The outcome of routing one task.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutePlan {
    Routed(RouteDecision),
    /// Agents have the capability, but none can take a call now.
    Unavailable {
        kind: FailureKind,
        message: String,
        /// When a circuit may let a call through again, if one will.
        retry_at_ms: Option<i64>,
    },
    /// Every agent that could take the task is at its concurrency or resource limit: the task
    /// waits for a slot, without spending an attempt.
    Busy {
        message: String,
    },
}

enum Availability {
    Available,
    Probe,
    Unhealthy,
    Open { retry_at_ms: Option<i64> },
    Full,
}

fn availability(agent: &Agent, request: &RouteRequest<'_>, view: &RoutingView) -> Availability {
    if agent
        .health
        .as_ref()
        .is_some_and(|h| h.status == HealthStatus::Unhealthy)
    {
        return Availability::Unhealthy;
    }
    let load = view
        .load
        .get(agent.name.as_str())
        .cloned()
        .unwrap_or_default();
    if !agent.limits().fits(&load, request.needs) {
        return Availability::Full;
    }
    let Some(circuit) = view.circuits.get(agent.name.as_str()) else {
        return Availability::Available;
    };
    let settings = agent.breaker();
    let now_ms = request.now_ms;
    match circuit.state(now_ms, &settings) {
        CircuitState::Closed => Availability::Available,
        CircuitState::HalfOpen if circuit.probe_available(now_ms, &settings) => Availability::Probe,
        _ => Availability::Open {
            retry_at_ms: circuit.retry_at_ms(now_ms, &settings),
        },
    }
}

/// The enabled agents with the capability that could hold the task's needs, by name.
pub fn candidates<'a>(
    request: &RouteRequest<'_>,
    agents: &'a [Agent],
) -> Result<Vec<&'a Agent>, NoCapableAgent> {
    let capability = request.capability;
    let mut capable: Vec<&Agent> = agents
        .iter()
        .filter(|a| a.enabled && a.has_capability(capability))
        .filter(|a| !request.avoid.contains(&a.name))
        .collect();
    if capable.is_empty() {
        return Err(NoCapableAgent {
            capability: capability.to_string(),
            message: format!("no enabled agent offers capability `{capability}`"),
        });
    }
    let offering = capable.len();
    capable.retain(|a| a.limits().can_hold(request.needs));
    if capable.is_empty() {
        return Err(NoCapableAgent {
            capability: capability.to_string(),
            message: format!(
                "none of the {offering} agent(s) offering `{capability}` can hold the task's resources {}",
                serde_json::to_string(request.needs).unwrap_or_default()
            ),
        });
    }
    capable.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(capable)
}

/// Picks the agents for one task.
pub fn route_task(
    request: &RouteRequest<'_>,
    agents: &[Agent],
    view: &RoutingView,
) -> Result<RoutePlan, NoCapableAgent> {
    let capability = request.capability;
    let capable = candidates(request, agents)?;

    let mut available = Vec::new();
    let mut probes = Vec::new();
    let (mut open, mut unhealthy, mut full) = (Vec::new(), 0, 0);
    for agent in &capable {
        match availability(agent, request, view) {
            Availability::Available => available.push(*agent),
            Availability::Probe => probes.push(*agent),
            Availability::Unhealthy => unhealthy += 1,
            Availability::Open { retry_at_ms } => open.push(retry_at_ms),
            Availability::Full => full += 1,
        }
    }
    let skipped = describe_skipped(open.len() + probes.len(), unhealthy, full);
    let ranking = strategy::rank(&available, request, view);
    let confidence_of = |name: &str| {
        capable
            .iter()
            .find(|a| a.name == name)
            .map_or(AgentStats::default().confidence(0, 1), |a| {
                strategy::evidence_of(a, request, view).mean()
            })
    };
    let is_available = |name: &AgentName| available.iter().any(|a| &a.name == name);

    // A half-open agent gets its probe from a fresh task, or from any task when nothing else
    // can take it: a retry is not spent on a probe while another agent is available.
    if let Some(probe) = probes
        .get((fnv1a(request.spread_key) % probes.len().max(1) as u64) as usize)
        .filter(|_| request.prefer.is_empty() || available.is_empty())
    {
        let fallbacks: Vec<AgentName> = ranking
            .agents
            .iter()
            .take(MAX_FALLBACKS)
            .map(|a| a.name.clone())
            .collect();
        let reasoning = format!(
            "{} agent(s) offer `{capability}`{skipped}; `{}` is half-open after its cool-down and takes this task as its one probe call{}",
            capable.len(),
            probe.name,
            fallbacks_note(&fallbacks)
        );
        return Ok(RoutePlan::Routed(RouteDecision {
            primary: probe.name.clone(),
            fallbacks,
            strategy: request.strategy,
            confidence: confidence_of(&probe.name),
            reasoning,
            probe: true,
        }));
    }

    if available.is_empty() {
        if full > 0 {
            return Ok(RoutePlan::Busy {
                message: format!(
                    "every agent offering `{capability}` that can take a call is at its limit{skipped}"
                ),
            });
        }
        let retry_at_ms = open.iter().flatten().min().copied();
        let (kind, message) = if open.is_empty() {
            (
                FailureKind::NoHealthyAgent,
                format!(
                    "all {} agent(s) offering `{capability}` are unhealthy",
                    capable.len()
                ),
            )
        } else {
            (
                FailureKind::CircuitOpen,
                format!(
                    "no agent offering `{capability}` can take a call: {} circuit(s) open{}",
                    open.len(),
                    if unhealthy > 0 {
                        format!(", {unhealthy} unhealthy")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        return Ok(RoutePlan::Unavailable {
            kind,
            message,
            retry_at_ms,
        });
    }

    let preferred: Vec<&AgentName> = request.prefer.iter().filter(|p| is_available(p)).collect();
    let (primary, fallbacks, why) = match preferred.split_first() {
        Some((first, rest)) => (
            (*first).clone(),
            rest.iter().map(|s| (*s).clone()).collect::<Vec<_>>(),
            "the next agent the previous decision kept in reserve".to_string(),
        ),
        None => {
            let primary = ranking.agents[0].name.clone();
            let fallbacks = ranking.agents[1..]
                .iter()
                .take(MAX_FALLBACKS)
                .map(|a| a.name.clone())
                .collect();
            let why = if request.prefer.is_empty() {
                ranking.why
            } else {
                format!("the reserve agents being unavailable, {}", ranking.why)
            };
            (primary, fallbacks, why)
        }
    };
    let confidence = confidence_of(&primary);
    let reasoning = format!(
        "{} agent(s) offer `{capability}`{skipped}; chose `{primary}` with confidence {confidence:.2}: {why}{}",
        capable.len(),
        fallbacks_note(&fallbacks)
    );
    Ok(RoutePlan::Routed(RouteDecision {
        primary,
        fallbacks,
        strategy: request.strategy,
        confidence,
        reasoning,
        probe: false,
    }))
}

fn describe_skipped(open: usize, unhealthy: usize, full: usize) -> String {
    let parts: Vec<String> = [
        (open, "with an open circuit"),
        (unhealthy, "unhealthy"),
        (full, "at their limits"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({}, skipped)", parts.join(", "))
    }
}

fn fallbacks_note(fallbacks: &[AgentName]) -> String {
    if fallbacks.is_empty() {
        String::new()
    } else {
        format!("; fallbacks: {}", fallbacks.join(", "))
    }
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

    fn name(name: &str) -> AgentName {
        AgentName::parse(name).unwrap()
    }
    use crate::agent::AgentRegistration;
    use crate::health::AgentHealth;

    fn agent(name: &str, capabilities: &[&str], enabled: bool) -> Agent {
        let endpoint = format!("https://agents.example.com/{name}");
        let mut registration = AgentRegistration::http(name, &endpoint, capabilities);
        registration.timeout_ms = Some(1000);
        registration.enabled = enabled;
        registration.into_agent(0).expect("a valid agent")
    }

    const NO_NEEDS: &Resources = &Resources::new();

    fn request<'a>(
        prefer: &'a [AgentName],
        avoid: &'a [AgentName],
        key: &'a str,
    ) -> RouteRequest<'a> {
        RouteRequest {
            capability: "sum",
            strategy: RoutingStrategy::Learned,
            needs: NO_NEEDS,
            prefer,
            avoid,
            spread_key: key,
            now_ms: 100_000,
            learning: LearningSettings {
                half_life_ms: 600_000,
                latency_target_ms: None,
            },
        }
    }

    fn routed(plan: Result<RoutePlan, NoCapableAgent>) -> RouteDecision {
        match plan {
            Ok(RoutePlan::Routed(d)) => d,
            other => panic!("not routed: {other:?}"),
        }
    }

    fn open_circuit(opened_at_ms: i64) -> Circuit {
        Circuit {
            open: true,
            opened_at_ms: Some(opened_at_ms),
            ..Default::default()
        }
    }

    #[test]
    fn only_enabled_agents_with_the_capability_are_candidates() {
        let agents = [
            agent("a", &["sum"], false),
            agent("b", &["translate"], true),
            agent("c", &["sum"], true),
        ];
        let d = routed(route_task(
            &request(&[], &[], "t1"),
            &agents,
            &RoutingView::default(),
        ));
        assert_eq!(d.primary, "c");
        assert!(d.fallbacks.is_empty());
        assert!((d.confidence - 0.7).abs() < 1e-12);
        assert!(!d.probe);
    }

    #[test]
    fn no_capable_agent_is_an_error_naming_the_capability() {
        let agents = [agent("a", &["sum"], false), agent("b", &["sum"], true)];
        let avoid = [name("b")];
        let err =
            route_task(&request(&[], &avoid, "t"), &agents, &RoutingView::default()).unwrap_err();
        assert_eq!(err.to_string(), "no enabled agent offers capability `sum`");
    }

    #[test]
    fn learned_confidence_picks_the_better_agent() {
        let agents = [agent("a", &["sum"], true), agent("b", &["sum"], true)];
        let mut view = RoutingView::default();
        let mut good = AgentStats::default();
        let mut bad = AgentStats::default();
        for i in 0..20 {
            good.record(true, 10, i, 600_000);
            bad.record(false, 10, i, 600_000);
        }
        view.stats.insert("a".to_string(), bad);
        view.stats.insert("b".to_string(), good);
        for key in ["t1", "t2", "t3", "t4"] {
            let d = routed(route_task(&request(&[], &[], key), &agents, &view));
            assert_eq!(d.primary, "b");
            assert_eq!(d.fallbacks, vec![name("a")]);
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
            let key = format!("task-{i}");
            let d = routed(route_task(
                &request(&[], &[], &key),
                &agents,
                &RoutingView::default(),
            ));
            assert_eq!(d.fallbacks.len(), MAX_FALLBACKS);
            assert!(!d.fallbacks.contains(&d.primary));
            primaries.insert(d.primary);
        }
        assert_eq!(primaries.len(), 3);
    }

    #[test]
    fn a_retry_goes_to_the_reserve_agents_in_order_then_back_to_routing() {
        let agents = [
            agent("a", &["sum"], true),
            agent("b", &["sum"], true),
            agent("c", &["sum"], true),
        ];
        let view = RoutingView::default();
        let prefer = [name("c"), name("b")];
        let d = routed(route_task(&request(&prefer, &[], "t"), &agents, &view));
        assert_eq!(
            (d.primary.as_str(), d.fallbacks.as_slice()),
            ("c", &[name("b")][..])
        );
        assert!(d.reasoning.contains("reserve"), "{}", d.reasoning);
        // A disabled or deleted reserve agent is passed over.
        let prefer = [name("gone"), name("b")];
        let d = routed(route_task(&request(&prefer, &[], "t"), &agents, &view));
        assert_eq!(d.primary, "b");
        assert!(d.fallbacks.is_empty(), "the reserve is used up: {d:?}");
    }

    #[test]
    fn open_circuits_and_unhealthy_agents_are_skipped() {
        let mut agents = vec![
            agent("a", &["sum"], true),
            agent("b", &["sum"], true),
            agent("c", &["sum"], true),
        ];
        agents[2].health = Some(AgentHealth {
            status: HealthStatus::Unhealthy,
            checked_at_ms: 0,
            consecutive_failures: 2,
            detail: None,
        });
        let mut view = RoutingView::default();
        view.circuits.insert("a".into(), open_circuit(99_000));
        for key in ["1", "2", "3", "4", "5"] {
            let d = routed(route_task(&request(&[], &[], key), &agents, &view));
            assert_eq!(d.primary, "b");
            assert!(d.fallbacks.is_empty());
            assert!(d.reasoning.contains("open circuit"), "{}", d.reasoning);
        }
    }

    #[test]
    fn when_every_circuit_is_open_the_task_waits_for_the_first_cool_down() {
        let agents = [agent("a", &["sum"], true), agent("b", &["sum"], true)];
        let mut view = RoutingView::default();
        view.circuits.insert("a".into(), open_circuit(90_000));
        view.circuits.insert("b".into(), open_circuit(95_000));
        match route_task(&request(&[], &[], "t"), &agents, &view).unwrap() {
            RoutePlan::Unavailable {
                kind, retry_at_ms, ..
            } => {
                assert_eq!(kind, FailureKind::CircuitOpen);
                assert_eq!(retry_at_ms, Some(120_000));
            }
            other => panic!("{other:?}"),
        }
        let mut sick = agents.to_vec();
        for a in &mut sick {
            a.health = Some(AgentHealth {
                status: HealthStatus::Unhealthy,
                checked_at_ms: 0,
                consecutive_failures: 3,
                detail: None,
            });
        }
        match route_task(&request(&[], &[], "t"), &sick, &RoutingView::default()).unwrap() {
            RoutePlan::Unavailable { kind, .. } => assert_eq!(kind, FailureKind::NoHealthyAgent),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_half_open_agent_takes_a_fresh_task_as_its_probe_but_not_a_retry() {
        let agents = [agent("a", &["sum"], true), agent("b", &["sum"], true)];
        let mut view = RoutingView::default();
        view.circuits.insert("a".into(), open_circuit(0)); // cool-down long over
        let d = routed(route_task(&request(&[], &[], "t"), &agents, &view));
        assert!(d.probe);
        assert_eq!(d.primary, "a");
        assert_eq!(d.fallbacks, vec![name("b")]);
        let prefer = [name("b")];
        let d = routed(route_task(&request(&prefer, &[], "t"), &agents, &view));
        assert!(!d.probe);
        assert_eq!(d.primary, "b");
    }

    fn with_strategy<'a>(
        strategy: RoutingStrategy,
        needs: &'a Resources,
        key: &'a str,
    ) -> RouteRequest<'a> {
        RouteRequest {
            strategy,
            needs,
            ..request(&[], &[], key)
        }
    }

    #[test]
    fn least_loaded_takes_the_agent_with_the_fewest_calls_in_flight() {
        let agents = [
            agent("a", &["sum"], true),
            agent("b", &["sum"], true),
            agent("c", &["sum"], true),
        ];
        let mut view = RoutingView::default();
        for (name, in_flight) in [("a", 3), ("b", 1), ("c", 2)] {
            view.load.insert(
                name.to_string(),
                AgentLoad {
                    in_flight,
                    ..AgentLoad::default()
                },
            );
        }
        for key in ["1", "2", "3"] {
            let request = with_strategy(RoutingStrategy::LeastLoaded, NO_NEEDS, key);
            let d = routed(route_task(&request, &agents, &view));
            assert_eq!(
                (d.primary.as_str(), d.strategy),
                ("b", RoutingStrategy::LeastLoaded)
            );
            assert_eq!(d.fallbacks, vec![name("c"), name("a")]);
        }
    }

    #[test]
    fn random_and_weighted_draws_follow_the_task_and_the_weights() {
        let mut agents = vec![agent("a", &["sum"], true), agent("b", &["sum"], true)];
        agents[0].weight = Some(9.0);
        let view = RoutingView::default();
        let mut heavy = 0;
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let key = format!("task-{i}");
            let weighted = with_strategy(RoutingStrategy::Weighted, NO_NEEDS, &key);
            heavy += usize::from(routed(route_task(&weighted, &agents, &view)).primary == "a");
            let random = with_strategy(RoutingStrategy::Random, NO_NEEDS, &key);
            let first = routed(route_task(&random, &agents, &view));
            // The same task attempt draws the same way again.
            assert_eq!(first, routed(route_task(&random, &agents, &view)));
            seen.insert(first.primary);
        }
        assert!(
            (160..=195).contains(&heavy),
            "{heavy} of 200 to the weight-9 agent"
        );
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn agents_at_their_limits_or_unable_to_hold_the_needs_are_not_taken() {
        let mut agents = vec![agent("big", &["sum"], true), agent("small", &["sum"], true)];
        agents[0].resources = [("gpu".to_string(), 4)].into();
        agents[0].max_concurrency = Some(2);
        agents[1].resources = [("gpu".to_string(), 1)].into();
        let two_gpus: Resources = [("gpu".to_string(), 2)].into();
        let request = with_strategy(RoutingStrategy::Learned, &two_gpus, "t");
        let d = routed(route_task(&request, &agents, &RoutingView::default()));
        assert_eq!(d.primary, "big");
        assert!(d.fallbacks.is_empty(), "`small` can never hold two GPUs");

        let mut view = RoutingView::default();
        view.load.insert(
            "big".into(),
            AgentLoad {
                in_flight: 2,
                ..AgentLoad::default()
            },
        );
        match route_task(&request, &agents, &view).unwrap() {
            RoutePlan::Busy { message } => assert!(message.contains("limit"), "{message}"),
            other => panic!("{other:?}"),
        }
        let eight: Resources = [("gpu".to_string(), 8)].into();
        let err = route_task(
            &with_strategy(RoutingStrategy::Learned, &eight, "t"),
            &agents,
            &view,
        )
        .unwrap_err();
        assert!(err.to_string().contains("resources"), "{err}");
    }
}
