//! The circuit breaker of one agent: closed → open → half-open → closed.
//!
//! - **Closed**: calls go through. The circuit opens after `failure_threshold` consecutive
//!   failures, or when at least `failure_rate` of the last `window` calls failed.
//! - **Open**: routing skips the agent for `cooldown_s`.
//! - **Half-open**: once the cool-down has passed, exactly one probe call goes through (routing
//!   hands it out with a conditional write on the stored circuit). Its success closes the
//!   circuit; its failure opens it again for another cool-down.
//!
//! Only calls that say something about the agent's health count: server errors, 408, 429,
//! time-outs, unreachable agents and invalid answers. A 4xx refusal of one task does not.
//!
//! The window of recent calls is kept only while it holds a failure: a clean window is stored
//! empty, so a healthy agent's successes never rewrite its circuit. When a failure arrives at a
//! clean window, the calls before it are taken as successes.

use serde::{Deserialize, Serialize};

use super::retry::PolicyError;

pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
pub const DEFAULT_WINDOW: u32 = 20;
pub const DEFAULT_COOLDOWN_S: u32 = 30;
const MAX_WINDOW: u32 = 100;
const MAX_COOLDOWN_S: u32 = 3_600;

/// When an agent's circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub failure_rate: f64,
    pub window: u32,
    pub cooldown_s: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            failure_rate: DEFAULT_FAILURE_RATE,
            window: DEFAULT_WINDOW,
            cooldown_s: DEFAULT_COOLDOWN_S,
        }
    }
}

impl BreakerSettings {
    pub fn cooldown_ms(&self) -> i64 {
        i64::from(self.cooldown_s) * 1000
    }
}

/// `circuit_breaker` in an agent's registration: any field may be left to its default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BreakerInput {
    pub failure_threshold: Option<i64>,
    pub failure_rate: Option<f64>,
    pub window: Option<i64>,
    pub cooldown_s: Option<i64>,
}

impl BreakerInput {
    pub fn validate(&self) -> Result<BreakerSettings, PolicyError> {
        let defaults = BreakerSettings::default();
        let count = |field: &str, value: Option<i64>, min: u32, max: u32, default: u32| {
            value.map_or(Ok(default), |v| {
                u32::try_from(v)
                    .ok()
                    .filter(|v| (min..=max).contains(v))
                    .ok_or_else(|| {
                        PolicyError::new(field, format!("must be between {min} and {max}, got {v}"))
                    })
            })
        };
        let failure_rate = match self.failure_rate {
            None => defaults.failure_rate,
            Some(r) if r > 0.0 && r <= 1.0 => r,
            Some(r) => {
                return Err(PolicyError::new(
                    "failure_rate",
                    format!("must be above 0 and at most 1, got {r}"),
                ))
            }
        };
        Ok(BreakerSettings {
            failure_threshold: count(
                "failure_threshold",
                self.failure_threshold,
                1,
                MAX_WINDOW,
                defaults.failure_threshold,
            )?,
            failure_rate,
            window: count("window", self.window, 1, MAX_WINDOW, defaults.window)?,
            cooldown_s: count(
                "cooldown_s",
                self.cooldown_s,
                1,
                MAX_COOLDOWN_S,
                defaults.cooldown_s,
            )?,
        })
    }
}

/// The state routing acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// The probe call handed out while half-open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The attempt's idempotency key.
    pub key: String,
    /// After this, the probe is taken as lost and another may be handed out.
    pub until_ms: i64,
}

/// One agent's circuit, as stored. A missing record is a closed circuit with a clean window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    pub open: bool,
    pub consecutive_failures: u32,
    /// Outcomes of the latest calls, oldest first (`true`: success); empty while clean.
    pub window: Vec<bool>,
    pub opened_at_ms: Option<i64>,
    pub probe: Option<Probe>,
}

/// One call's result, as the circuit counts it.
#[derive(Debug, Clone, Copy)]
pub struct CircuitCall<'a> {
    pub success: bool,
    /// The attempt's idempotency key, to recognise the probe.
    pub key: &'a str,
    pub at_ms: i64,
}

impl Circuit {
    pub fn state(&self, now_ms: i64, settings: &BreakerSettings) -> CircuitState {
        match self.opened_at_ms {
            Some(opened) if self.open && now_ms >= opened + settings.cooldown_ms() => {
                CircuitState::HalfOpen
            }
            _ if self.open => CircuitState::Open,
            _ => CircuitState::Closed,
        }
    }

    /// Failures among the latest calls (0 while the window is clean).
    pub fn failure_rate(&self) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        self.window.iter().filter(|ok| !**ok).count() as f64 / self.window.len() as f64
    }

    /// Whether a probe may be handed out now: half-open, and no live probe is out.
    pub fn probe_available(&self, now_ms: i64, settings: &BreakerSettings) -> bool {
        self.state(now_ms, settings) == CircuitState::HalfOpen
            && self.probe.as_ref().is_none_or(|p| p.until_ms < now_ms)
    }

    /// When routing may look at this agent again, if it cannot take calls now.
    pub fn retry_at_ms(&self, now_ms: i64, settings: &BreakerSettings) -> Option<i64> {
        match self.state(now_ms, settings) {
            CircuitState::Closed => None,
            CircuitState::Open => self.opened_at_ms.map(|at| at + settings.cooldown_ms()),
            // A probe is out: look again after another cool-down, or when it is taken as lost.
            CircuitState::HalfOpen => self
                .probe
                .as_ref()
                .filter(|p| p.until_ms >= now_ms)
                .map(|p| (p.until_ms + 1).min(now_ms + settings.cooldown_ms())),
        }
    }

    /// Folds one call in. Returns whether the stored circuit changed.
    pub fn record(&mut self, call: CircuitCall<'_>, settings: &BreakerSettings) -> bool {
        let before = self.clone();
        self.push_to_window(call.success, settings.window as usize);
        let is_probe = self.probe.as_ref().is_some_and(|p| p.key == call.key);
        if self.open {
            // Calls that started before the circuit opened do not decide anything; the probe does.
            if is_probe {
                if call.success {
                    *self = Circuit::default();
                } else {
                    self.opened_at_ms = Some(call.at_ms);
                    self.probe = None;
                    self.consecutive_failures += 1;
                }
            }
        } else if call.success {
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures += 1;
            let full = self.window.len() >= settings.window as usize;
            if self.consecutive_failures >= settings.failure_threshold
                || (full && self.failure_rate() >= settings.failure_rate)
            {
                self.open = true;
                self.opened_at_ms = Some(call.at_ms);
                self.probe = None;
            }
        }
        *self != before
    }

    fn push_to_window(&mut self, success: bool, size: usize) {
        if success && self.window.is_empty() {
            return;
        }
        if self.window.is_empty() {
            self.window = vec![true; size.saturating_sub(1)];
        }
        self.window.push(success);
        let excess = self.window.len().saturating_sub(size);
        self.window.drain(..excess);
        if self.window.iter().all(|ok| *ok) {
            self.window.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(success: bool, at_ms: i64) -> CircuitCall<'static> {
        CircuitCall {
            success,
            key: "other",
            at_ms,
        }
    }

    #[test]
    fn successes_on_a_clean_circuit_change_nothing() {
        let mut c = Circuit::default();
        let s = BreakerSettings::default();
        for i in 0..50 {
            assert!(!c.record(call(true, i), &s));
        }
        assert_eq!(c, Circuit::default());
    }

    #[test]
    fn consecutive_failures_open_the_circuit() {
        let mut c = Circuit::default();
        let s = BreakerSettings::default();
        for i in 0..4 {
            assert!(c.record(call(false, i), &s));
            assert_eq!(c.state(i, &s), CircuitState::Closed);
        }
        c.record(call(false, 100), &s);
        assert_eq!(c.state(100, &s), CircuitState::Open);
        assert_eq!(c.opened_at_ms, Some(100));
        assert_eq!(c.retry_at_ms(100, &s), Some(100 + 30_000));
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_the_circuit() {
        let mut c = Circuit::default();
        let s = BreakerSettings::default();
        // Alternating: never 5 in a row, but half of the last 20 calls fail.
        for i in 0..40 {
            c.record(call(i % 2 == 0, i), &s);
            if c.open {
                break;
            }
        }
        assert!(c.open);
        assert!(c.failure_rate() >= 0.5);
    }

    #[test]
    fn the_window_forgets_failures_and_is_stored_clean_again() {
        let mut c = Circuit::default();
        let s = BreakerSettings::default();
        c.record(call(false, 0), &s);
        assert_eq!(c.window.len(), 20);
        assert!((c.failure_rate() - 0.05).abs() < 1e-9);
        // The failure leaves the window after as many calls as the window holds.
        for i in 1..=20 {
            assert!(c.record(call(true, i), &s));
        }
        assert!(c.window.is_empty());
        assert_eq!(c.consecutive_failures, 0);
    }

    #[test]
    fn half_open_hands_out_one_probe_whose_result_decides() {
        let s = BreakerSettings {
            cooldown_s: 1,
            ..Default::default()
        };
        let mut c = Circuit {
            open: true,
            opened_at_ms: Some(0),
            ..Default::default()
        };
        assert!(!c.probe_available(500, &s));
        assert_eq!(c.state(1_000, &s), CircuitState::HalfOpen);
        assert!(c.probe_available(1_000, &s));
        c.probe = Some(Probe {
            key: "p".into(),
            until_ms: 5_000,
        });
        assert!(!c.probe_available(2_000, &s), "one probe at a time");
        assert!(c.probe_available(5_001, &s), "a lost probe is replaced");

        // A late success of some other call does not close it; the probe's failure reopens it.
        c.record(call(true, 2_000), &s);
        assert!(c.open);
        c.record(
            CircuitCall {
                success: false,
                key: "p",
                at_ms: 3_000,
            },
            &s,
        );
        assert_eq!(c.state(3_000, &s), CircuitState::Open);
        assert_eq!(c.opened_at_ms, Some(3_000));
        assert!(c.probe.is_none());

        c.probe = Some(Probe {
            key: "q".into(),
            until_ms: 9_000,
        });
        c.record(
            CircuitCall {
                success: true,
                key: "q",
                at_ms: 4_500,
            },
            &s,
        );
        assert_eq!(c, Circuit::default(), "the probe's success closes it");
    }

    #[test]
    fn breaker_settings_are_validated_by_field() {
        let parse = |json: &str| {
            serde_json::from_str::<BreakerInput>(json)
                .unwrap()
                .validate()
        };
        assert_eq!(parse("{}").unwrap(), BreakerSettings::default());
        assert_eq!(parse(r#"{"cooldown_s": 2}"#).unwrap().cooldown_s, 2);
        assert_eq!(
            parse(r#"{"failure_rate": 1.5}"#).unwrap_err().field,
            "failure_rate"
        );
        assert_eq!(parse(r#"{"window": 0}"#).unwrap_err().field, "window");
        assert_eq!(
            parse(r#"{"cooldown_s": -1}"#).unwrap_err().field,
            "cooldown_s"
        );
    }
}
