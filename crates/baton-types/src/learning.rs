//! What Baton learns from each outcome, per (agent, task type): counts for people to read, and
//! the time-decayed evidence routing samples from.
//!
//! **Evidence decays by time.** An outcome observed `age` ago weighs `2^(-age / half_life)`, so
//! a degraded agent's good past fades within a few half-lives whatever the traffic, and a
//! task type that is rarely used is not frozen on what it learned long ago. Decayed
//! successes `S` and failures `F` are kept as of the newest outcome and decayed further when
//! read.
//!
//! Evidence is also capped at [`MAX_EVIDENCE`] weighted outcomes: time decay alone would let a
//! busy task type pile up thousands, and then a change would take thousands of calls to show.
//!
//! **The posterior** of an agent's success probability is `Beta(α₀ + S, β₀ + F)` with the
//! prior worth [`PRIOR_WEIGHT`] outcomes at [`PRIOR_CONFIDENCE`] (`α₀ = 7, β₀ = 3`). Its mean is
//! the decision's confidence: 0.7 with no history, moving towards the observed rate as
//! evidence accumulates, and back towards 0.7 as evidence ages.
//!
//! **Token usage** is summed per (agent, task type) from the calls that report it.
//!
//! **Latency** is the decayed mean latency of successful calls, and the 20 newest outcomes
//! give the p50 the workflow plan uses.

use serde::{Deserialize, Serialize};

use super::outcome::TokenUsage;

pub const PRIOR_CONFIDENCE: f64 = 0.7;
pub const PRIOR_WEIGHT: f64 = 10.0;
/// The prior the learned strategy samples from: the same mean, worth only this many outcomes,
/// so that evidence tells agents apart from the first calls.
pub const SAMPLING_PRIOR_WEIGHT: f64 = 2.0;
/// How many of the latest outcomes a stats record keeps verbatim.
pub const RECENT_OUTCOMES: usize = 20;
/// Evidence weighs half as much this long after it was observed (see `LEARNING_HALF_LIFE_SECONDS`).
pub const DEFAULT_HALF_LIFE_MS: i64 = 600_000;
/// The most weighted outcomes a posterior holds. Beyond it, older evidence is scaled down as new
/// evidence comes in, so that a busy task type, whose evidence time alone would let grow to
/// thousands of outcomes, still notices a change within tens of calls.
/// The newest outcomes tested against the evidence for a change in the agent.
pub const CHANGE_WINDOW: usize = 10;
/// How unlikely the window must be under the evidence for the evidence to be set aside.
pub const CHANGE_SIGNIFICANCE: f64 = 0.001;
pub const MAX_EVIDENCE: f64 = 100.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentOutcome {
    pub success: bool,
    pub latency_ms: u64,
    pub at_ms: i64,
}

/// Outcomes weighted by their age, as of `as_of_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DecayedEvidence {
    pub successes: f64,
    pub failures: f64,
    /// Weighted sum of successful calls' latencies, and their summed weight.
    pub latency_total_ms: f64,
    pub latency_weight: f64,
    pub as_of_ms: i64,
}

/// `2^(-elapsed / half_life)`; no decay for a non-positive half-life or elapsed time.
pub fn decay_factor(elapsed_ms: i64, half_life_ms: i64) -> f64 {
    if elapsed_ms <= 0 || half_life_ms <= 0 {
        return 1.0;
    }
    (-(elapsed_ms as f64) / half_life_ms as f64).exp2()
}

impl DecayedEvidence {
    /// The evidence as it weighs at `now_ms` (never re-weighted upwards for an earlier time).
    pub fn at(&self, now_ms: i64, half_life_ms: i64) -> DecayedEvidence {
        let k = decay_factor(now_ms - self.as_of_ms, half_life_ms);
        DecayedEvidence {
            successes: self.successes * k,
            failures: self.failures * k,
            latency_total_ms: self.latency_total_ms * k,
            latency_weight: self.latency_weight * k,
            as_of_ms: self.as_of_ms.max(now_ms),
        }
    }

    /// Adds one outcome observed at `at_ms`. An outcome older than the evidence (reported
    /// late) is added with the weight its age gives it.
    pub fn add(&mut self, success: bool, latency_ms: u64, at_ms: i64, half_life_ms: i64) {
        let weight = decay_factor(self.as_of_ms - at_ms, half_life_ms);
        *self = self.at(at_ms, half_life_ms);
        if success {
            self.successes += weight;
            self.latency_total_ms += weight * latency_ms as f64;
            self.latency_weight += weight;
        } else {
            self.failures += weight;
        }
        let total = self.weight();
        if total > MAX_EVIDENCE {
            let k = MAX_EVIDENCE / total;
            self.successes *= k;
            self.failures *= k;
            self.latency_total_ms *= k;
            self.latency_weight *= k;
        }
    }

    /// Decayed outcomes in all.
    pub fn weight(&self) -> f64 {
        self.successes + self.failures
    }

    /// The parameters `(α, β)` of the posterior over a prior worth `prior_weight` outcomes at
    /// [`PRIOR_CONFIDENCE`].
    pub fn beta(&self, prior_weight: f64) -> (f64, f64) {
        let alpha0 = PRIOR_CONFIDENCE * prior_weight;
        (
            alpha0 + self.successes,
            prior_weight - alpha0 + self.failures,
        )
    }

    /// The posterior mean of the success probability under the reporting prior: the
    /// confidence.
    pub fn mean(&self) -> f64 {
        let (alpha, beta) = self.beta(PRIOR_WEIGHT);
        alpha / (alpha + beta)
    }

    /// The decayed mean latency of successful calls, once there is any.
    pub fn latency_ms(&self) -> Option<f64> {
        (self.latency_weight > 1e-9).then(|| self.latency_total_ms / self.latency_weight)
    }
}

/// Learned statistics of one agent on one task type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    pub count: u64,
    pub successes: u64,
    pub total_latency_ms: u64,
    pub max_latency_ms: u64,
    /// Newest first, at most [`RECENT_OUTCOMES`].
    pub recent: Vec<RecentOutcome>,
    #[serde(default)]
    pub decayed: DecayedEvidence,
    /// Tokens read and written by the calls that reported usage, in all.
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

impl AgentStats {
    pub fn record(&mut self, success: bool, latency_ms: u64, at_ms: i64, half_life_ms: i64) {
        self.count += 1;
        self.successes += u64::from(success);
        self.total_latency_ms = self.total_latency_ms.saturating_add(latency_ms);
        self.max_latency_ms = self.max_latency_ms.max(latency_ms);
        let position = self.recent.partition_point(|r| r.at_ms > at_ms);
        self.recent.insert(
            position,
            RecentOutcome {
                success,
                latency_ms,
                at_ms,
            },
        );
        self.recent.truncate(RECENT_OUTCOMES);
        self.decayed.add(success, latency_ms, at_ms, half_life_ms);
        if self.changed() {
            // The agent is no longer what its evidence says: keep only what it does now.
            let mut now = DecayedEvidence::default();
            for r in self.recent[..CHANGE_WINDOW].iter().rev() {
                now.add(r.success, r.latency_ms, r.at_ms, half_life_ms);
            }
            self.decayed = now;
        }
    }

    /// Whether the newest [`CHANGE_WINDOW`] outcomes are too unlikely under the evidence:
    /// fewer or more failures than a two-sided binomial test at [`CHANGE_SIGNIFICANCE`]
    /// allows, with the rest of the evidence worth at least as much as the window.
    fn changed(&self) -> bool {
        if self.recent.len() < CHANGE_WINDOW || self.decayed.weight() < 2.0 * CHANGE_WINDOW as f64 {
            return false;
        }
        let (alpha, beta) = self.decayed.beta(SAMPLING_PRIOR_WEIGHT);
        let failure_rate = beta / (alpha + beta);
        let failures = self.recent[..CHANGE_WINDOW]
            .iter()
            .filter(|r| !r.success)
            .count();
        let (at_least, at_most) = binomial_tails(CHANGE_WINDOW, failure_rate, failures);
        at_least < CHANGE_SIGNIFICANCE || at_most < CHANGE_SIGNIFICANCE
    }

    /// Adds one call's tokens to the totals.
    pub fn add_usage(&mut self, usage: TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(usage.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(usage.output_tokens);
    }

    pub fn success_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.successes as f64 / self.count as f64)
    }

    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total_latency_ms as f64 / self.count as f64)
    }

    /// The median latency of the newest successful calls.
    pub fn p50_latency_ms(&self) -> Option<u64> {
        let mut latencies: Vec<u64> = self
            .recent
            .iter()
            .filter(|r| r.success)
            .map(|r| r.latency_ms)
            .collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        Some(latencies[(latencies.len() - 1) / 2])
    }

    /// The posterior mean at `now_ms`: 0.7 with no (or only long-faded) history.
    pub fn confidence(&self, now_ms: i64, half_life_ms: i64) -> f64 {
        self.decayed.at(now_ms, half_life_ms).mean()
    }
}

/// A task's expected duration when nothing is learned for its type yet.
pub const DEFAULT_ESTIMATE_MS: u64 = 1_000;

/// The agent routing most favours on a task type (the highest confidence among those with a
/// latency to show) and its p50: what a plan expects a task of that type to take.
pub fn expected_latency(
    stats: &std::collections::HashMap<String, AgentStats>,
    now_ms: i64,
    half_life_ms: i64,
) -> Option<(&str, u64)> {
    stats
        .iter()
        .filter_map(|(agent, s)| {
            let p50 = s.p50_latency_ms()?;
            Some((s.confidence(now_ms, half_life_ms), agent.as_str(), p50))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, agent, p50)| (agent, p50))
}

/// `(P(X ≥ k), P(X ≤ k))` for `X ~ Binomial(n, p)`.
fn binomial_tails(n: usize, p: f64, k: usize) -> (f64, f64) {
    let mut pmf = Vec::with_capacity(n + 1);
    let mut choose = 1.0_f64;
    for i in 0..=n {
        if i > 0 {
            choose = choose * (n - i + 1) as f64 / i as f64;
        }
        pmf.push(choose * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32));
    }
    (pmf[k..].iter().sum(), pmf[..=k].iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn token_usage_is_summed_over_the_calls_that_report_it() {
        let mut stats = AgentStats::default();
        stats.add_usage(TokenUsage {
            input_tokens: 12,
            output_tokens: 30,
        });
        stats.add_usage(TokenUsage {
            input_tokens: 8,
            output_tokens: 5,
        });
        assert_eq!((stats.input_tokens, stats.output_tokens), (20, 35));
        let older: AgentStats =
            serde_json::from_value(serde_json::json!({"count": 1, "successes": 1,
                "total_latency_ms": 5, "max_latency_ms": 5, "recent": []}))
            .unwrap();
        assert_eq!((older.input_tokens, older.output_tokens), (0, 0));
    }

    #[test]
    fn confidence_starts_at_the_prior() {
        assert!((AgentStats::default().confidence(0, HOUR) - 0.7).abs() < 1e-12);
    }

    #[test]
    fn confidence_rises_with_successes_and_falls_with_failures() {
        let mut good = AgentStats::default();
        let mut bad = AgentStats::default();
        for i in 0..10 {
            good.record(true, 100, i, HOUR);
            bad.record(false, 100, i, HOUR);
        }
        assert!((good.confidence(10, HOUR) - 0.85).abs() < 1e-3);
        assert!((bad.confidence(10, HOUR) - 0.35).abs() < 1e-3);
    }

    #[test]
    fn evidence_halves_every_half_life_and_fades_back_to_the_prior() {
        let mut stats = AgentStats::default();
        for _ in 0..8 {
            stats.record(false, 10, 0, 1_000);
        }
        let fresh = stats.decayed.at(0, 1_000);
        let later = stats.decayed.at(1_000, 1_000);
        assert!((fresh.failures - 8.0).abs() < 1e-9);
        assert!((later.failures - 4.0).abs() < 1e-9);
        assert!(stats.confidence(0, 1_000) < stats.confidence(1_000, 1_000));
        assert!((stats.confidence(60_000, 1_000) - PRIOR_CONFIDENCE).abs() < 1e-6);
        // Counts for people to read do not decay.
        assert_eq!(stats.count, 8);
    }

    #[test]
    fn evidence_is_capped_so_that_a_busy_type_still_notices_a_change() {
        let mut evidence = DecayedEvidence::default();
        for _ in 0..1_000 {
            evidence.add(true, 10, 0, HOUR);
        }
        assert!((evidence.weight() - MAX_EVIDENCE).abs() < 1e-6);
        for _ in 0..40 {
            evidence.add(false, 10, 0, HOUR);
        }
        assert!(evidence.mean() < 0.75, "{}", evidence.mean());
    }

    #[test]
    fn a_late_outcome_counts_with_the_weight_of_its_age() {
        let mut evidence = DecayedEvidence::default();
        evidence.add(true, 100, 2_000, 1_000);
        evidence.add(false, 0, 1_000, 1_000); // reported after a newer one
        assert_eq!(evidence.as_of_ms, 2_000);
        assert!((evidence.successes - 1.0).abs() < 1e-9);
        assert!((evidence.failures - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_plan_expects_the_favoured_agents_p50() {
        let mut good = AgentStats::default();
        let mut poor = AgentStats::default();
        for i in 0..5 {
            good.record(true, 200 + i as u64, i, HOUR);
            poor.record(i == 0, 50, i, HOUR);
        }
        let stats = std::collections::HashMap::from([
            ("good".to_string(), good),
            ("poor".to_string(), poor),
            ("new".to_string(), AgentStats::default()),
        ]);
        assert_eq!(expected_latency(&stats, 10, HOUR), Some(("good", 202)));
        assert_eq!(expected_latency(&Default::default(), 10, HOUR), None);
    }

    #[test]
    fn latency_is_the_decayed_mean_of_successful_calls() {
        let mut evidence = DecayedEvidence::default();
        assert_eq!(evidence.latency_ms(), None);
        evidence.add(true, 100, 0, 1_000);
        evidence.add(false, 5_000, 0, 1_000); // a time-out says nothing of the latency
        evidence.add(true, 300, 1_000, 1_000); // the first now weighs half as much
        let expected = (0.5 * 100.0 + 300.0) / 1.5;
        assert!((evidence.latency_ms().unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn record_keeps_totals_and_a_bounded_newest_first_history() {
        let mut stats = AgentStats::default();
        for i in 0..(RECENT_OUTCOMES as i64 + 5) {
            stats.record(i % 2 == 0, i as u64 * 10, i, HOUR);
        }
        assert_eq!(stats.count, RECENT_OUTCOMES as u64 + 5);
        assert_eq!(stats.successes, 13);
        assert_eq!(stats.max_latency_ms, (RECENT_OUTCOMES as u64 + 4) * 10);
        assert_eq!(stats.recent.len(), RECENT_OUTCOMES);
        assert_eq!(stats.recent[0].at_ms, RECENT_OUTCOMES as i64 + 4);
        assert_eq!(stats.mean_latency_ms(), Some(120.0));
        // The newest 20 are 5..=24; the successes among them are the even ones, 6..=24.
        assert_eq!(stats.p50_latency_ms(), Some(140));
    }
}
