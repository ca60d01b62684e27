//! The strategies that order the agents able to take a task.
//!
//! `learned` (the default) is Thompson sampling: for each agent it draws a success probability
//! from the agent's time-decayed Beta posterior on the task type (see
//! [`crate::learning`]) and multiplies it by a latency factor:
//!
//! ```text
//! score = θ × T / (T + L),   θ ~ Beta(1.4 + 2S, 0.6 + 2F)
//! ```
//!
//! `S` and `F` are the decayed successes and failures, `L` the decayed mean latency of
//! successful calls (an agent with none yet gets factor 1, so it is tried), and `T` the task
//! type's latency target: the configured one, else four times the fastest candidate's latency
//! and at least one second. An agent whose posterior is wide (little or old evidence) draws
//! high now and then and so gets explored; one whose evidence is strong and good wins nearly
//! always. The draw is seeded by the task's attempt key, so a redelivered message routes the
//! same way on the same evidence.
//!
//! The others: `round_robin` walks the agents in name order from a counter shared by every
//! router (read and incremented per task, only by tasks that use it); `random` draws
//! uniformly; `weighted` draws in proportion to the agents' `weight`; `least_loaded` takes the
//! agent with the fewest calls in flight.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use super::{fnv1a, RouteRequest, RoutingView};
use crate::agent::Agent;
use crate::learning::{DecayedEvidence, SAMPLING_PRIOR_WEIGHT};

/// Each outcome counts this many times in the draw: a sharper posterior stops exploring a
/// clearly worse agent sooner. The rare early lock-in on a lesser agent this risks is undone by
/// decay and by the change test of [`crate::learning`].
pub const SAMPLING_SHARPNESS: f64 = 2.0;
/// The latency target's floor when none is configured: below it, latency barely matters.
pub const MIN_LATENCY_TARGET_MS: f64 = 1_000.0;
/// The default target is this many times the fastest candidate's latency.
pub const LATENCY_TARGET_FACTOR: f64 = 4.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    #[default]
    Learned,
    RoundRobin,
    Random,
    Weighted,
    LeastLoaded,
}

impl RoutingStrategy {
    pub const ALL: [RoutingStrategy; 5] = [
        RoutingStrategy::Learned,
        RoutingStrategy::RoundRobin,
        RoutingStrategy::Random,
        RoutingStrategy::Weighted,
        RoutingStrategy::LeastLoaded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RoutingStrategy::Learned => "learned",
            RoutingStrategy::RoundRobin => "round_robin",
            RoutingStrategy::Random => "random",
            RoutingStrategy::Weighted => "weighted",
            RoutingStrategy::LeastLoaded => "least_loaded",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The error text for a name that is not a strategy.
    pub fn unknown(name: &str) -> String {
        let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "unknown routing strategy `{name}`; known strategies are {}",
            known.join(", ")
        )
    }

    /// Whether routing must read and advance the shared rotation counter.
    pub const fn uses_rotation(self) -> bool {
        matches!(self, RoutingStrategy::RoundRobin)
    }

    /// Whether routing must read the agents' calls in flight, and calls be counted.
    pub const fn uses_load(self) -> bool {
        matches!(self, RoutingStrategy::LeastLoaded)
    }
}

/// How the learned strategy weighs evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningSettings {
    /// Evidence weighs half as much this long after it was observed.
    pub half_life_ms: i64,
    /// The task type's latency target; None: derived from the candidates.
    pub latency_target_ms: Option<u64>,
}

/// The candidates in the order the strategy prefers them, and why.
pub(super) struct Ranking<'a> {
    pub agents: Vec<&'a Agent>,
    pub why: String,
}

/// One agent's draw under the learned strategy.
#[derive(Debug, Clone, Copy)]
struct Draw<'a> {
    agent: &'a Agent,
    evidence: DecayedEvidence,
    sample: f64,
    latency_factor: f64,
    score: f64,
}

impl Draw<'_> {
    fn describe(&self) -> String {
        let latency = self
            .evidence
            .latency_ms()
            .map_or("no latency yet".to_string(), |l| {
                format!("latency {l:.0} ms")
            });
        format!(
            "`{}`: drew {:.3} × latency factor {:.3} = {:.3} (posterior mean {:.3} over {:.1} weighted outcomes, {latency})",
            self.agent.name,
            self.sample,
            self.latency_factor,
            self.score,
            self.evidence.mean(),
            self.evidence.weight(),
        )
    }
}

/// The random source of one task: the same task attempt draws the same numbers.
fn rng_for(request: &RouteRequest<'_>) -> SmallRng {
    SmallRng::seed_from_u64(fnv1a(request.spread_key))
}

/// The decayed evidence of `agent` at the request's time.
pub(super) fn evidence_of(
    agent: &Agent,
    request: &RouteRequest<'_>,
    view: &RoutingView,
) -> DecayedEvidence {
    view.stats
        .get(agent.name.as_str())
        .map(|s| s.decayed.at(request.now_ms, request.learning.half_life_ms))
        .unwrap_or_default()
}

/// Orders `available` (sorted by name) by the request's strategy.
pub(super) fn rank<'a>(
    available: &[&'a Agent],
    request: &RouteRequest<'_>,
    view: &RoutingView,
) -> Ranking<'a> {
    match request.strategy {
        RoutingStrategy::Learned => thompson(available, request, view),
        RoutingStrategy::RoundRobin => {
            let n = available.len().max(1) as u64;
            // Without the counter (it could not be read), the task's hash still rotates.
            let turn = view.rotation.unwrap_or_else(|| fnv1a(request.spread_key));
            let start = (turn % n) as usize;
            let mut agents = available.to_vec();
            agents.rotate_left(start);
            Ranking {
                agents,
                why: format!("round robin, turn {turn} of the shared rotation"),
            }
        }
        RoutingStrategy::Random => {
            let mut rng = rng_for(request);
            let mut agents = available.to_vec();
            // Fisher-Yates with the task's own random source.
            for i in (1..agents.len()).rev() {
                let j = rng.random_range(0..=i);
                agents.swap(i, j);
            }
            Ranking {
                agents,
                why: "drawn uniformly at random".into(),
            }
        }
        RoutingStrategy::Weighted => {
            let mut rng = rng_for(request);
            let mut pool: Vec<&Agent> = available.to_vec();
            let mut agents = Vec::with_capacity(pool.len());
            let total: f64 = pool.iter().map(|a| a.weight()).sum();
            while !pool.is_empty() {
                let remaining: f64 = pool.iter().map(|a| a.weight()).sum();
                let mut point = rng.random::<f64>() * remaining;
                let mut chosen = pool.len() - 1;
                for (i, agent) in pool.iter().enumerate() {
                    if point < agent.weight() {
                        chosen = i;
                        break;
                    }
                    point -= agent.weight();
                }
                agents.push(pool.remove(chosen));
            }
            let share = agents.first().map_or(0.0, |a| a.weight() / total);
            Ranking {
                agents,
                why: format!("drawn by weight (its share {:.0} %)", share * 100.0),
            }
        }
        RoutingStrategy::LeastLoaded => {
            let n = available.len().max(1);
            let offset = (fnv1a(request.spread_key) % n as u64) as usize;
            let in_flight = |a: &Agent| view.load.get(a.name.as_str()).map_or(0, |l| l.in_flight);
            let mut agents: Vec<(usize, &Agent)> = available
                .iter()
                .enumerate()
                .map(|(i, a)| ((i + n - offset) % n, *a))
                .collect();
            // Ties are rotated by the task's hash, so idle agents share the load.
            agents.sort_by_key(|(turn, a)| (in_flight(a), *turn));
            let agents: Vec<&Agent> = agents.into_iter().map(|(_, a)| a).collect();
            let why = agents.first().map_or(String::new(), |a| {
                format!("the fewest calls in flight ({})", in_flight(a))
            });
            Ranking { agents, why }
        }
    }
}

/// Thompson sampling with the latency factor; see the module's documentation.
fn thompson<'a>(
    available: &[&'a Agent],
    request: &RouteRequest<'_>,
    view: &RoutingView,
) -> Ranking<'a> {
    let mut rng = rng_for(request);
    let evidence: Vec<DecayedEvidence> = available
        .iter()
        .map(|a| evidence_of(a, request, view))
        .collect();
    let target = request.learning.latency_target_ms.map_or_else(
        || {
            let fastest = evidence
                .iter()
                .filter_map(DecayedEvidence::latency_ms)
                .fold(f64::INFINITY, f64::min);
            (LATENCY_TARGET_FACTOR * fastest).clamp(MIN_LATENCY_TARGET_MS, f64::MAX)
        },
        |t| t.max(1) as f64,
    );
    let mut draws: Vec<Draw<'a>> = available
        .iter()
        .zip(evidence)
        .map(|(agent, evidence)| {
            let sharpened = DecayedEvidence {
                successes: evidence.successes * SAMPLING_SHARPNESS,
                failures: evidence.failures * SAMPLING_SHARPNESS,
                ..evidence
            };
            let (alpha, beta) = sharpened.beta(SAMPLING_PRIOR_WEIGHT);
            // α and β are at least the prior's 1.4 and 0.6, so the distribution always exists.
            let sample = Beta::new(alpha, beta).map_or(evidence.mean(), |b| b.sample(&mut rng));
            let latency_factor = evidence.latency_ms().map_or(1.0, |l| target / (target + l));
            Draw {
                agent,
                evidence,
                sample,
                latency_factor,
                score: sample * latency_factor,
            }
        })
        .collect();
    draws.sort_by(|a, b| b.score.total_cmp(&a.score));
    let why = match draws.as_slice() {
        [] => String::new(),
        [only] => format!("Thompson sampling, the only candidate: {}", only.describe()),
        [first, second, ..] => format!(
            "Thompson sampling, draw × latency factor (target {target:.0} ms): {}; runner-up {}",
            first.describe(),
            second.describe()
        ),
    };
    Ranking {
        agents: draws.into_iter().map(|d| d.agent).collect(),
        why,
    }
}
