//! What `GET /v1/stats` says of routing and learning, summarised from the learned stats records
//! (one per agent and task type): how many calls each agent took and its share of them (seed
//! 002's service distribution), and per task type how many outcomes were learned, how many
//! succeeded and the tokens they used.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ids::AgentName;
use super::learning::AgentStats;

/// One learned stats record: an agent on a task type.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedStats {
    pub agent: String,
    pub task_type: String,
    pub stats: AgentStats,
}

/// How the calls the learner saw are spread over the agents.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutingSummary {
    /// Calls learned from, over every agent.
    pub calls: u64,
    /// Every registered agent (with none: 0 calls), then agents that took calls and are no
    /// longer registered; most calls first.
    pub service_distribution: Vec<AgentShare>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentShare {
    pub agent: String,
    pub registered: bool,
    pub calls: u64,
    /// Of all calls, 0 to 1 (0 when there were none).
    pub share: f64,
    pub successes: u64,
    /// None before the first call.
    pub success_rate: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    /// Task types it has taken calls for.
    pub task_types: usize,
}

/// What was learned, per task type and over all.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearningSummary {
    /// Task types with at least one learned outcome.
    pub task_types: usize,
    pub outcomes: u64,
    pub successes: u64,
    pub failures: u64,
    /// None before the first outcome.
    pub success_rate: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// By task type, in name order.
    pub by_task_type: Vec<TaskTypeLearning>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskTypeLearning {
    pub task_type: String,
    pub outcomes: u64,
    pub successes: u64,
    pub success_rate: Option<f64>,
    /// Agents with outcomes on it.
    pub agents: usize,
    pub mean_latency_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Sums of some stats records.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    count: u64,
    successes: u64,
    latency_ms: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Totals {
    fn add(&mut self, stats: &AgentStats) {
        self.count += stats.count;
        self.successes += stats.successes;
        self.latency_ms = self.latency_ms.saturating_add(stats.total_latency_ms);
        self.input_tokens = self.input_tokens.saturating_add(stats.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(stats.output_tokens);
    }

    fn rate(&self) -> Option<f64> {
        (self.count > 0).then(|| round(self.successes as f64 / self.count as f64))
    }

    fn mean_latency(&self) -> Option<f64> {
        (self.count > 0).then(|| round(self.latency_ms as f64 / self.count as f64))
    }
}

/// Four decimals: enough for a share or a rate, and stable to read.
fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// Calls per agent and each agent's share; `registered` are the registry's agent names.
pub fn routing_summary(registered: &[AgentName], records: &[LearnedStats]) -> RoutingSummary {
    let mut by_agent: BTreeMap<&str, (Totals, usize)> = registered
        .iter()
        .map(|name| (name.as_str(), (Totals::default(), 0)))
        .collect();
    for record in records.iter().filter(|r| r.stats.count > 0) {
        let (totals, types) = by_agent.entry(&record.agent).or_default();
        totals.add(&record.stats);
        *types += 1;
    }
    let calls: u64 = by_agent.values().map(|(t, _)| t.count).sum();
    let mut service_distribution: Vec<AgentShare> = by_agent
        .into_iter()
        .map(|(agent, (totals, task_types))| AgentShare {
            agent: agent.to_string(),
            registered: registered.iter().any(|r| r == agent),
            calls: totals.count,
            share: if calls == 0 {
                0.0
            } else {
                round(totals.count as f64 / calls as f64)
            },
            successes: totals.successes,
            success_rate: totals.rate(),
            mean_latency_ms: totals.mean_latency(),
            task_types,
        })
        .collect();
    service_distribution.sort_by(|a, b| {
        b.registered
            .cmp(&a.registered)
            .then(b.calls.cmp(&a.calls))
            .then_with(|| a.agent.cmp(&b.agent))
    });
    RoutingSummary {
        calls,
        service_distribution,
    }
}

/// Outcomes, success rates and tokens per task type and over all.
pub fn learning_summary(records: &[LearnedStats]) -> LearningSummary {
    let mut by_type: BTreeMap<&str, (Totals, usize)> = BTreeMap::new();
    for record in records.iter().filter(|r| r.stats.count > 0) {
        let (totals, agents) = by_type.entry(&record.task_type).or_default();
        totals.add(&record.stats);
        *agents += 1;
    }
    let mut all = Totals::default();
    let by_task_type: Vec<TaskTypeLearning> = by_type
        .into_iter()
        .map(|(task_type, (totals, agents))| {
            all.count += totals.count;
            all.successes += totals.successes;
            all.input_tokens = all.input_tokens.saturating_add(totals.input_tokens);
            all.output_tokens = all.output_tokens.saturating_add(totals.output_tokens);
            TaskTypeLearning {
                task_type: task_type.to_string(),
                outcomes: totals.count,
                successes: totals.successes,
                success_rate: totals.rate(),
                agents,
                mean_latency_ms: totals.mean_latency(),
                input_tokens: totals.input_tokens,
                output_tokens: totals.output_tokens,
            }
        })
        .collect();
    LearningSummary {
        task_types: by_task_type.len(),
        outcomes: all.count,
        successes: all.successes,
        failures: all.count - all.successes,
        success_rate: all.rate(),
        input_tokens: all.input_tokens,
        output_tokens: all.output_tokens,
        by_task_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::TokenUsage;

    const HOUR: i64 = 3_600_000;

    /// A record of `agent` on `task_type` with `outcomes` (success, latency) and `tokens` each.
    fn record(agent: &str, task_type: &str, outcomes: &[(bool, u64)], tokens: u64) -> LearnedStats {
        let mut stats = AgentStats::default();
        for (i, (success, latency)) in outcomes.iter().enumerate() {
            stats.record(*success, *latency, i as i64, HOUR);
            stats.add_usage(TokenUsage {
                input_tokens: tokens,
                output_tokens: tokens / 2,
            });
        }
        LearnedStats {
            agent: agent.into(),
            task_type: task_type.into(),
            stats,
        }
    }

    fn names(names: &[&str]) -> Vec<AgentName> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn each_agent_gets_its_calls_over_every_task_type_and_its_share_of_all_calls() {
        let records = [
            record("fast", "summarize", &[(true, 10), (true, 30)], 0),
            record("fast", "translate", &[(false, 100)], 0),
            record("slow", "summarize", &[(true, 200)], 0),
        ];
        let summary = routing_summary(&names(&["slow", "fast", "idle"]), &records);
        assert_eq!(summary.calls, 4);
        let agents: Vec<(&str, u64, f64)> = summary
            .service_distribution
            .iter()
            .map(|a| (a.agent.as_str(), a.calls, a.share))
            .collect();
        assert_eq!(
            agents,
            [("fast", 3, 0.75), ("slow", 1, 0.25), ("idle", 0, 0.0)]
        );
        let fast = &summary.service_distribution[0];
        assert_eq!((fast.successes, fast.task_types), (2, 2));
        assert_eq!(fast.success_rate, Some(0.6667));
        assert_eq!(fast.mean_latency_ms, Some(46.6667));
        let idle = &summary.service_distribution[2];
        assert_eq!((idle.success_rate, idle.mean_latency_ms), (None, None));
    }

    #[test]
    fn an_agent_no_longer_registered_keeps_its_calls_after_the_registered_ones() {
        let records = [
            record("gone", "work", &[(true, 5); 5], 0),
            record("here", "work", &[(true, 5)], 0),
        ];
        let summary = routing_summary(&names(&["here"]), &records);
        let order: Vec<(&str, bool)> = summary
            .service_distribution
            .iter()
            .map(|a| (a.agent.as_str(), a.registered))
            .collect();
        assert_eq!(order, [("here", true), ("gone", false)]);
        assert_eq!(summary.service_distribution[1].share, 0.8333);
    }

    #[test]
    fn nothing_learned_is_zero_calls_and_no_rates() {
        let summary = routing_summary(&names(&["a"]), &[]);
        assert_eq!(summary.calls, 0);
        assert_eq!(summary.service_distribution[0].share, 0.0);
        let learning = learning_summary(&[]);
        assert_eq!((learning.task_types, learning.outcomes), (0, 0));
        assert_eq!(learning.success_rate, None);
        assert!(learning.by_task_type.is_empty());
    }

    #[test]
    fn learning_sums_outcomes_successes_and_tokens_per_task_type_and_over_all() {
        let records = [
            record("a", "summarize", &[(true, 10), (false, 50)], 100),
            record("b", "summarize", &[(true, 30)], 10),
            record("a", "translate", &[(true, 20)], 0),
        ];
        let learning = learning_summary(&records);
        assert_eq!(learning.task_types, 2);
        assert_eq!(
            (learning.outcomes, learning.successes, learning.failures),
            (4, 3, 1)
        );
        assert_eq!(learning.success_rate, Some(0.75));
        assert_eq!((learning.input_tokens, learning.output_tokens), (210, 105));
        let summarize = &learning.by_task_type[0];
        assert_eq!(summarize.task_type, "summarize");
        assert_eq!((summarize.outcomes, summarize.agents), (3, 2));
        assert_eq!(summarize.success_rate, Some(0.6667));
        assert_eq!(summarize.mean_latency_ms, Some(30.0));
        assert_eq!(summarize.input_tokens, 210);
        let translate = &learning.by_task_type[1];
        assert_eq!((translate.outcomes, translate.success_rate), (1, Some(1.0)));
        assert_eq!(translate.input_tokens, 0);
    }
}
