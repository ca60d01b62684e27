//! What Baton learns from each outcome, per (agent, task type), and the confidence it derives.
//!
//! Confidence is the mean of a Beta posterior whose prior is worth [`PRIOR_WEIGHT`] outcomes at
//! [`PRIOR_CONFIDENCE`]: `(0.7 * 10 + successes) / (10 + count)`. With no history it is 0.7; each
//! success moves it towards 1 and each failure towards 0, by less as evidence accumulates.

use serde::{Deserialize, Serialize};

pub const PRIOR_CONFIDENCE: f64 = 0.7;
pub const PRIOR_WEIGHT: f64 = 10.0;
/// How many of the latest outcomes a stats record keeps verbatim.
pub const RECENT_OUTCOMES: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentOutcome {
    pub success: bool,
    pub latency_ms: u64,
    pub at_ms: i64,
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
}

impl AgentStats {
    pub fn record(&mut self, success: bool, latency_ms: u64, at_ms: i64) {
        self.count += 1;
        self.successes += u64::from(success);
        self.total_latency_ms = self.total_latency_ms.saturating_add(latency_ms);
        self.max_latency_ms = self.max_latency_ms.max(latency_ms);
        self.recent.insert(
            0,
            RecentOutcome {
                success,
                latency_ms,
                at_ms,
            },
        );
        self.recent.truncate(RECENT_OUTCOMES);
    }

    pub fn success_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.successes as f64 / self.count as f64)
    }

    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total_latency_ms as f64 / self.count as f64)
    }

    pub fn confidence(&self) -> f64 {
        (PRIOR_CONFIDENCE * PRIOR_WEIGHT + self.successes as f64)
            / (PRIOR_WEIGHT + self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_starts_at_the_prior() {
        assert!((AgentStats::default().confidence() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn confidence_rises_with_successes_and_falls_with_failures() {
        let mut good = AgentStats::default();
        let mut bad = AgentStats::default();
        for i in 0..10 {
            good.record(true, 100, i);
            bad.record(false, 100, i);
        }
        assert!((good.confidence() - 0.85).abs() < 1e-12);
        assert!((bad.confidence() - 0.35).abs() < 1e-12);
    }

    #[test]
    fn record_keeps_totals_and_a_bounded_newest_first_history() {
        let mut stats = AgentStats::default();
        for i in 0..(RECENT_OUTCOMES as i64 + 5) {
            stats.record(i % 2 == 0, i as u64 * 10, i);
        }
        assert_eq!(stats.count, RECENT_OUTCOMES as u64 + 5);
        assert_eq!(stats.successes, 13);
        assert_eq!(stats.max_latency_ms, (RECENT_OUTCOMES as u64 + 4) * 10);
        assert_eq!(stats.recent.len(), RECENT_OUTCOMES);
        assert_eq!(stats.recent[0].at_ms, RECENT_OUTCOMES as i64 + 4);
        assert_eq!(stats.mean_latency_ms(), Some(120.0));
    }
}
