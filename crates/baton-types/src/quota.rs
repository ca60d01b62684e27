//! What one tenant may use of a shared deployment, and how its tasks are admitted and paced.
//!
//! Quotas per tenant: agents, running workflows, a task rate, how many tasks dispatch at
//! once, how many admitted tasks may wait for their pace, and the share of the rate that may
//! run in the urgent band. The operator's template sets the defaults; the operator API sets
//! one tenant's own.
//!
//! **Admission and pacing** are one generic cell-rate algorithm (GCRA) per tenant, kept in a
//! single time value, `tat` (the theoretical arrival time: when every task admitted so far
//! will have had its turn at the tenant's rate). A submission of `n` tasks gives task `k` its
//! turn at `base + (k + 1)·I`, where `I` is the interval between tasks at the tenant's rate
//! and `base = max(tat, now − burst·I)`: an idle tenant has `burst` turns in hand. A task
//! whose turn is in the future reaches the queues (as a delayed message) only at its turn, so
//! a tenant's backlog sits in DynamoDB and SQS's delay, not in front of other tenants' work.
//! A submission that would leave more than `backlog` tasks waiting for their turn is refused
//! (`429 quota_exceeded`, `Retry-After` the time until it would fit), and nothing is stored.
//!
//! **The urgent share** is a second cell at `urgent_share` of the rate: urgent tasks beyond it
//! run in the `high` band instead. They are not refused or delayed for it.
//!
//! The cells live on one item. A submission changes `tat` with one atomic conditional update
//! (two when the first finds the tenant busy): it reads nothing first, so concurrent
//! submissions of one tenant never lose each other's tasks. Quotas add no write per task.

use serde::{Deserialize, Serialize};

pub const DEFAULT_AGENTS: u32 = 100;
pub const DEFAULT_RUNNING_WORKFLOWS: u32 = 100;
pub const DEFAULT_TASKS_PER_SECOND: f64 = 50.0;
pub const DEFAULT_TASK_BURST: u32 = 200;
pub const DEFAULT_TASK_BACKLOG: u32 = 20_000;
pub const DEFAULT_URGENT_SHARE: f64 = 0.2;
/// Bounds of what an operator may set: beyond them the numbers stop meaning anything.
pub const MAX_AGENTS: u32 = 1_000;
pub const MAX_RUNNING_WORKFLOWS: u32 = 100_000;
pub const MAX_TASKS_PER_SECOND: f64 = 100_000.0;
pub const MAX_TASK_BACKLOG: u32 = 10_000_000;

/// One tenant's quotas, in effect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quotas {
    /// Agents registered at once.
    pub agents: u32,
    /// Workflows submitted and not finished (paused ones count).
    pub running_workflows: u32,
    /// Tasks admitted per second, sustained: the tenant's pace.
    pub tasks_per_second: f64,
    /// Tasks that reach the queues at once before the pace applies.
    pub task_burst: u32,
    /// Admitted tasks that may wait for their pace; a submission beyond it gets 429.
    pub task_backlog: u32,
    /// The share of the pace that may run in the urgent band (0 to 1); urgent tasks beyond
    /// it run in `high`.
    pub urgent_share: f64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            agents: DEFAULT_AGENTS,
            running_workflows: DEFAULT_RUNNING_WORKFLOWS,
            tasks_per_second: DEFAULT_TASKS_PER_SECOND,
            task_burst: DEFAULT_TASK_BURST,
            task_backlog: DEFAULT_TASK_BACKLOG,
            urgent_share: DEFAULT_URGENT_SHARE,
        }
    }
}

/// What an operator set for one tenant: each field, when present, replaces the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub agents: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    pub running_workflows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 100000))]
    pub tasks_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000000))]
    pub task_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000000))]
    pub task_backlog: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub urgent_share: Option<f64>,
}

impl QuotaOverrides {
    /// The quotas in effect: these over `defaults`.
    pub fn over(&self, defaults: &Quotas) -> Quotas {
        Quotas {
            agents: self.agents.unwrap_or(defaults.agents),
            running_workflows: self.running_workflows.unwrap_or(defaults.running_workflows),
            tasks_per_second: self.tasks_per_second.unwrap_or(defaults.tasks_per_second),
            task_burst: self.task_burst.unwrap_or(defaults.task_burst),
            task_backlog: self.task_backlog.unwrap_or(defaults.task_backlog),
            urgent_share: self.urgent_share.unwrap_or(defaults.urgent_share),
        }
    }

    /// Refuses numbers out of bounds, naming the field: `(field, reason)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let count = |field: &'static str, value: Option<u32>, max: u32| match value {
            Some(v) if !(1..=max).contains(&v) => {
                Err((field, format!("must be between 1 and {max}, got {v}")))
            }
            _ => Ok(()),
        };
        count("agents", self.agents, MAX_AGENTS)?;
        count(
            "running_workflows",
            self.running_workflows,
            MAX_RUNNING_WORKFLOWS,
        )?;
        count("task_burst", self.task_burst, MAX_TASK_BACKLOG)?;
        count("task_backlog", self.task_backlog, MAX_TASK_BACKLOG)?;
        if let Some(rate) = self.tasks_per_second {
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_TASKS_PER_SECOND) {
                return Err((
                    "tasks_per_second",
                    format!("must be above 0 and at most {MAX_TASKS_PER_SECOND}, got {rate}"),
                ));
            }
        }
        if let Some(share) = self.urgent_share {
            if !(0.0..=1.0).contains(&share) {
                return Err((
                    "urgent_share",
                    format!("must be between 0 and 1, got {share}"),
                ));
            }
        }
        Ok(())
    }
}

/// The tenant's pacing cells as stored, in microseconds since the epoch; absent: idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaceState {
    pub tat_us: Option<i64>,
    pub urgent_tat_us: Option<i64>,
}

/// A submission's tasks as admission sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Every task of the submission.
    pub tasks: u32,
    /// How many of them scored into the urgent band.
    pub urgent: u32,
}

/// An admitted submission: each task's turn, and how many urgent tasks stay urgent.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// When task `k` of the submission (in dispatch order) may reach the queues, in
    /// milliseconds; at or before `now`: at once.
    pub turns_ms: Vec<i64>,
    /// How many of the urgent tasks stay urgent; the rest run in `high`.
    pub urgent_kept: u32,
}

/// A refused submission: when it would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_ms: i64,
}

fn interval_us(per_second: f64) -> i64 {
    // At least a microsecond, so that a huge rate still orders tasks.
    ((1_000_000.0 / per_second).round() as i64).max(1)
}

/// One submission's step on the tenant's `tat`, which the store applies atomically (no read
/// first, so concurrent submissions of one tenant never lose each other's tasks):
/// - from idle: if `tat ≤ floor` (or none), `tat = floor + by`;
/// - else extend: if `floor < tat ≤ limit`, `tat = tat + by`;
/// - else refused: `tat` is past `limit`, and the submission would leave more than the
///   backlog waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceStep {
    /// `now − burst·I`: an idle tenant has `burst` turns in hand, no more.
    pub floor_us: i64,
    /// `n·I`: the submission's tasks at the tenant's pace.
    pub by_us: i64,
    /// `now + backlog·I − n·I`: the highest `tat` this submission may start from.
    pub limit_us: i64,
    interval_us: i64,
    now_us: i64,
    tasks: u32,
}

impl PaceStep {
    pub fn new(quotas: &Quotas, tasks: u32, now_ms: i64) -> Self {
        let now_us = now_ms.saturating_mul(1_000);
        let interval = interval_us(quotas.tasks_per_second);
        let by_us = i64::from(tasks) * interval;
        PaceStep {
            floor_us: now_us - i64::from(quotas.task_burst) * interval,
            by_us,
            limit_us: now_us + i64::from(quotas.task_backlog) * interval - by_us,
            interval_us: interval,
            now_us,
            tasks,
        }
    }

    /// The tasks' turns, in milliseconds, when the step started from `base` (the floor, or
    /// the `tat` it extended).
    pub fn turns_ms(&self, base_us: i64) -> Vec<i64> {
        (1..=i64::from(self.tasks))
            .map(|k| (base_us + k * self.interval_us) / 1_000)
            .collect()
    }

    /// Why the step cannot apply to `tat`: when trying again can succeed.
    pub fn refused(&self, tat_us: i64) -> Refused {
        let over_us = (tat_us - self.limit_us).max(1);
        Refused {
            retry_after_ms: (over_us + 999) / 1_000,
        }
    }

    /// The step applied to the cell as it is (the store does the same atomically): the new
    /// `tat` and the base the turns count from.
    pub fn apply(&self, tat_us: Option<i64>) -> Result<(i64, i64), Refused> {
        let base = tat_us.map_or(self.floor_us, |tat| tat.max(self.floor_us));
        if base > self.limit_us {
            return Err(self.refused(base));
        }
        Ok((base + self.by_us, base))
    }

    /// Whether the step from idle can apply at all: a submission larger than the burst and
    /// the backlog together never fits.
    pub fn fits_from_idle(&self) -> bool {
        self.floor_us <= self.limit_us
    }

    pub fn now_us(&self) -> i64 {
        self.now_us
    }
}

/// Decides a submission of `demand` at `now_ms` under `quotas`, from the cells as they are:
/// the model of what admission does through the store's atomic steps.
pub fn admit(
    state: PaceState,
    quotas: &Quotas,
    demand: Demand,
    now_ms: i64,
) -> Result<(Admitted, PaceState), Refused> {
    let step = PaceStep::new(quotas, demand.tasks, now_ms);
    let (tat, base) = step.apply(state.tat_us)?;
    let (urgent_tat_us, urgent_kept) =
        urgent_turns(state.urgent_tat_us, quotas, demand.urgent, step.now_us());
    Ok((
        Admitted {
            turns_ms: step.turns_ms(base),
            urgent_kept,
        },
        PaceState {
            tat_us: Some(tat),
            urgent_tat_us: urgent_tat_us.or(state.urgent_tat_us),
        },
    ))
}

/// How many of `urgent` tasks fit the urgent share now, from the urgent cell as read, and the
/// cell after them (None: nothing to write).
pub fn urgent_turns(
    urgent_tat_us: Option<i64>,
    quotas: &Quotas,
    urgent: u32,
    now_us: i64,
) -> (Option<i64>, u32) {
    let rate = quotas.tasks_per_second * quotas.urgent_share;
    if urgent == 0 || rate <= 0.0 {
        return (None, 0);
    }
    let interval = interval_us(rate);
    // The urgent share of the burst, at least one task, may run urgent at once.
    let burst = ((f64::from(quotas.task_burst) * quotas.urgent_share).floor() as i64).max(1);
    let mut tat = urgent_tat_us
        .unwrap_or(i64::MIN)
        .max(now_us - burst * interval);
    let mut kept = 0;
    while kept < urgent && tat + interval <= now_us {
        tat += interval;
        kept += 1;
    }
    (Some(tat), kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(per_second: f64, burst: u32, backlog: u32) -> Quotas {
        Quotas {
            tasks_per_second: per_second,
            task_burst: burst,
            task_backlog: backlog,
            ..Quotas::default()
        }
    }

    fn demand(tasks: u32) -> Demand {
        Demand { tasks, urgent: 0 }
    }

    #[test]
    fn an_idle_tenant_dispatches_its_burst_at_once_and_paces_the_rest() {
        let q = quotas(10.0, 5, 1_000);
        let now = 1_000_000;
        let (admitted, state) = admit(PaceState::default(), &q, demand(8), now).unwrap();
        let at_once = admitted.turns_ms.iter().filter(|t| **t <= now).count();
        assert_eq!(at_once, 5);
        // The rest follow every 100 ms.
        assert_eq!(&admitted.turns_ms[5..], &[now + 100, now + 200, now + 300]);
        assert_eq!(state.tat_us, Some((now + 300) * 1_000));
    }

    #[test]
    fn a_busy_tenants_next_submission_queues_behind_its_own_backlog() {
        let q = quotas(10.0, 5, 1_000);
        let now = 1_000_000;
        let (_, first) = admit(PaceState::default(), &q, demand(105), now).unwrap();
        let (second, _) = admit(first, &q, demand(1), now).unwrap();
        // 100 tasks wait beyond the burst: the next one takes its turn after them.
        assert_eq!(second.turns_ms, [now + 10_100]);
        // Another tenant is untouched: its first task goes at once.
        let (other, _) = admit(PaceState::default(), &q, demand(1), now).unwrap();
        assert!(other.turns_ms[0] <= now);
    }

    #[test]
    fn beyond_the_backlog_a_submission_is_refused_with_when_it_would_fit() {
        let q = quotas(10.0, 5, 100);
        let now = 1_000_000;
        let (_, full) = admit(PaceState::default(), &q, demand(105), now).unwrap();
        let refused = admit(full, &q, demand(10), now).unwrap_err();
        assert_eq!(refused.retry_after_ms, 1_000);
        // A second later it fits exactly.
        assert!(admit(full, &q, demand(10), now + 1_000).is_ok());
        // One submission larger than burst and backlog together never fits.
        let huge = admit(PaceState::default(), &q, demand(106), now).unwrap_err();
        assert_eq!(huge.retry_after_ms, 100);
    }

    #[test]
    fn credit_does_not_pile_up_past_the_burst() {
        let q = quotas(10.0, 5, 1_000);
        let long_ago = PaceState {
            tat_us: Some(0),
            urgent_tat_us: None,
        };
        let (admitted, _) = admit(long_ago, &q, demand(6), 1_000_000).unwrap();
        assert_eq!(
            admitted
                .turns_ms
                .iter()
                .filter(|t| **t <= 1_000_000)
                .count(),
            5
        );
    }

    #[test]
    fn urgent_tasks_beyond_the_share_are_kept_out_of_the_urgent_band() {
        let q = Quotas {
            urgent_share: 0.2,
            ..quotas(10.0, 10, 1_000)
        };
        let now = 1_000_000;
        let urgent = |tasks, urgent| Demand { tasks, urgent };
        let (first, state) = admit(PaceState::default(), &q, urgent(5, 5), now).unwrap();
        assert_eq!(first.urgent_kept, 2, "20 % of a burst of 10");
        let (next, _) = admit(state, &q, urgent(1, 1), now).unwrap();
        assert_eq!(next.urgent_kept, 0);
        // Half a second later (urgent pace: 2 a second) one more may run urgent.
        let (later, _) = admit(state, &q, urgent(1, 1), now + 500).unwrap();
        assert_eq!(later.urgent_kept, 1);
        let none = Quotas {
            urgent_share: 0.0,
            ..q
        };
        let (never, _) = admit(PaceState::default(), &none, urgent(1, 1), now).unwrap();
        assert_eq!(never.urgent_kept, 0);
    }

    #[test]
    fn overrides_replace_defaults_field_by_field_and_are_bounded() {
        let overrides = QuotaOverrides {
            agents: Some(5),
            tasks_per_second: Some(2.5),
            ..QuotaOverrides::default()
        };
        let q = overrides.over(&Quotas::default());
        assert_eq!((q.agents, q.tasks_per_second), (5, 2.5));
        assert_eq!(q.running_workflows, DEFAULT_RUNNING_WORKFLOWS);
        for (bad, field) in [
            (
                QuotaOverrides {
                    agents: Some(0),
                    ..Default::default()
                },
                "agents",
            ),
            (
                QuotaOverrides {
                    tasks_per_second: Some(f64::NAN),
                    ..Default::default()
                },
                "tasks_per_second",
            ),
            (
                QuotaOverrides {
                    urgent_share: Some(1.5),
                    ..Default::default()
                },
                "urgent_share",
            ),
            (
                QuotaOverrides {
                    task_backlog: Some(0),
                    ..Default::default()
                },
                "task_backlog",
            ),
        ] {
            assert_eq!(bad.check().unwrap_err().0, field);
        }
    }
}
