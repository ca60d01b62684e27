//! Retry policies: what a task, a workflow or an agent may ask for, how the layers combine,
//! and the delay before each next attempt.
//!
//! A policy is resolved field by field: the task's own value, else the workflow's
//! `defaults.retry`, else the agent's registration, else the built-in value (3 attempts,
//! exponential from 1 s, at most 60 s, full jitter). The delay after attempt `n` failed is
//! - exponential: `base · 2^(n-1)` (1 s, 2 s, 4 s… with the defaults),
//! - linear: `base · n` (5 s, 10 s, 15 s… with a 5 s base),
//! - fixed: `base`,
//!
//! capped at `max_ms`. Full jitter then draws the delay uniformly below that cap (AWS's "full
//! jitter"), so retries of many tasks failing at once do not arrive together. A `Retry-After`
//! longer than the delay wins.

use serde::{Deserialize, Serialize};

pub const MAX_ATTEMPTS_LIMIT: u32 = 10;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_BASE_MS: u64 = 1_000;
pub const DEFAULT_MAX_MS: u64 = 60_000;
/// The longest delay a policy may ask for, and the longest `Retry-After` honoured.
pub const MAX_DELAY_MS: u64 = 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Exponential,
    Linear,
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    Full,
    None,
}

/// A policy as a client writes it: every field optional, checked by [`RetryPolicyInput::validate`]
/// so that an error can name the field. Numbers are signed here so that a negative delay is
/// reported as such rather than as a parse error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyInput {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub max_attempts: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Backoff>))]
    pub backoff: Option<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86400000))]
    pub base_ms: Option<i64>,
    /// At least `base_ms`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86400000))]
    pub max_ms: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Jitter>))]
    pub jitter: Option<String>,
}

/// A validated policy layer: what one of task, workflow or agent says, field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

/// A bad value in a policy: `field` is relative to the policy (`max_attempts`, `backoff`…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, with its field placed under `prefix` (e.g. `retry`).
    pub fn under(self, prefix: &str) -> Self {
        PolicyError {
            field: format!("{prefix}.{}", self.field),
            message: self.message,
        }
    }
}

impl RetryPolicyInput {
    pub fn validate(&self) -> Result<RetryPolicySpec, PolicyError> {
        let max_attempts = self
            .max_attempts
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_ATTEMPTS_LIMIT).contains(n))
                    .ok_or_else(|| {
                        PolicyError::new(
                            "max_attempts",
                            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
                        )
                    })
            })
            .transpose()?;
        let delay = |field: &str, value: Option<i64>| -> Result<Option<u64>, PolicyError> {
            value
                .map(|ms| {
                    u64::try_from(ms)
                        .ok()
                        .filter(|ms| *ms <= MAX_DELAY_MS)
                        .ok_or_else(|| {
                            PolicyError::new(
                                field,
                                format!("must be between 0 and {MAX_DELAY_MS} ms, got {ms}"),
                            )
                        })
                })
                .transpose()
        };
        let base_ms = delay("base_ms", self.base_ms)?;
        let max_ms = delay("max_ms", self.max_ms)?;
        if let (Some(base), Some(max)) = (base_ms, max_ms) {
            if base > max {
                return Err(PolicyError::new(
                    "base_ms",
                    format!("({base}) must not be larger than max_ms ({max})"),
                ));
            }
        }
        let backoff = self
            .backoff
            .as_deref()
            .map(|kind| match kind {
                "exponential" => Ok(Backoff::Exponential),
                "linear" => Ok(Backoff::Linear),
                "fixed" => Ok(Backoff::Fixed),
                other => Err(PolicyError::new(
                    "backoff",
                    format!("must be exponential, linear or fixed, got `{other}`"),
                )),
            })
            .transpose()?;
        let jitter = self
            .jitter
            .as_deref()
            .map(|kind| match kind {
                "full" => Ok(Jitter::Full),
                "none" => Ok(Jitter::None),
                other => Err(PolicyError::new(
                    "jitter",
                    format!("must be full or none, got `{other}`"),
                )),
            })
            .transpose()?;
        Ok(RetryPolicySpec {
            max_attempts,
            backoff,
            base_ms,
            max_ms,
            jitter,
        })
    }
}

impl RetryPolicySpec {
    pub fn is_empty(&self) -> bool {
        *self == RetryPolicySpec::default()
    }

    /// This layer, with the fields it leaves open taken from `fallback`.
    pub fn or(&self, fallback: &RetryPolicySpec) -> RetryPolicySpec {
        RetryPolicySpec {
            max_attempts: self.max_attempts.or(fallback.max_attempts),
            backoff: self.backoff.or(fallback.backoff),
            base_ms: self.base_ms.or(fallback.base_ms),
            max_ms: self.max_ms.or(fallback.max_ms),
            jitter: self.jitter.or(fallback.jitter),
        }
    }
}

/// A complete policy: every field decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub base_ms: u64,
    pub max_ms: u64,
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::Exponential,
            base_ms: DEFAULT_BASE_MS,
            max_ms: DEFAULT_MAX_MS,
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// Resolves the layers, first one first (task over workflow over agent); the built-in
    /// values fill what none of them says.
    pub fn resolve(layers: &[Option<&RetryPolicySpec>]) -> RetryPolicy {
        let merged = layers
            .iter()
            .flatten()
            .fold(RetryPolicySpec::default(), |acc, layer| acc.or(layer));
        let builtin = RetryPolicy::default();
        RetryPolicy {
            max_attempts: merged.max_attempts.unwrap_or(builtin.max_attempts),
            backoff: merged.backoff.unwrap_or(builtin.backoff),
            base_ms: merged.base_ms.unwrap_or(builtin.base_ms),
            max_ms: merged.max_ms.unwrap_or(builtin.max_ms),
            jitter: merged.jitter.unwrap_or(builtin.jitter),
        }
    }

    /// Whether another attempt may follow attempt `failed_attempt` (1-based).
    pub fn allows_retry_after(&self, failed_attempt: u32) -> bool {
        failed_attempt < self.max_attempts
    }

    /// The capped delay after attempt `failed_attempt` failed, before jitter.
    pub fn backoff_ms(&self, failed_attempt: u32) -> u64 {
        let n = failed_attempt.max(1);
        let delay = match self.backoff {
            Backoff::Exponential => self
                .base_ms
                .saturating_mul(1u64.checked_shl(n - 1).unwrap_or(u64::MAX)),
            Backoff::Linear => self.base_ms.saturating_mul(u64::from(n)),
            Backoff::Fixed => self.base_ms,
        };
        delay.min(self.max_ms)
    }

    /// The delay before the next attempt. `jitter_fraction` is a uniform draw in [0, 1);
    /// `retry_after_ms` is what the agent asked for, honoured when it is longer.
    pub fn delay_ms(
        &self,
        failed_attempt: u32,
        retry_after_ms: Option<u64>,
        jitter_fraction: f64,
    ) -> u64 {
        let capped = self.backoff_ms(failed_attempt);
        let delay = match self.jitter {
            Jitter::Full => (capped as f64 * jitter_fraction.clamp(0.0, 1.0)) as u64,
            Jitter::None => capped,
        };
        delay.max(retry_after_ms.unwrap_or(0).min(MAX_DELAY_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, base_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff,
            base_ms,
            max_ms: 60_000,
            jitter: Jitter::None,
        }
    }

    #[test]
    fn exponential_and_linear_delays_follow_the_reference_shapes() {
        let exponential = policy(Backoff::Exponential, 1_000);
        let delays: Vec<u64> = (1..=4).map(|n| exponential.backoff_ms(n)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000]);
        let linear = policy(Backoff::Linear, 5_000);
        let delays: Vec<u64> = (1..=3).map(|n| linear.backoff_ms(n)).collect();
        assert_eq!(delays, [5_000, 10_000, 15_000]);
        assert_eq!(policy(Backoff::Fixed, 700).backoff_ms(9), 700);
    }

    #[test]
    fn delays_are_capped_and_never_overflow() {
        let p = policy(Backoff::Exponential, 1_000);
        assert_eq!(p.backoff_ms(7), 60_000);
        assert_eq!(p.backoff_ms(200), 60_000);
        let huge = RetryPolicy {
            base_ms: MAX_DELAY_MS,
            max_ms: MAX_DELAY_MS,
            ..p
        };
        assert_eq!(huge.backoff_ms(64), MAX_DELAY_MS);
    }

    #[test]
    fn full_jitter_draws_below_the_cap_and_retry_after_wins_when_longer() {
        let p = RetryPolicy {
            jitter: Jitter::Full,
            ..policy(Backoff::Exponential, 1_000)
        };
        assert_eq!(p.delay_ms(2, None, 0.5), 1_000);
        assert_eq!(p.delay_ms(2, None, 0.0), 0);
        assert!(p.delay_ms(2, None, 0.999) < 2_000);
        assert_eq!(p.delay_ms(2, Some(5_000), 0.5), 5_000);
        assert_eq!(
            p.delay_ms(2, Some(10), 0.5),
            1_000,
            "a shorter Retry-After is ignored"
        );
    }

    #[test]
    fn layers_resolve_field_by_field_with_built_in_defaults_last() {
        let task = RetryPolicySpec {
            max_attempts: Some(5),
            ..Default::default()
        };
        let workflow = RetryPolicySpec {
            max_attempts: Some(2),
            backoff: Some(Backoff::Linear),
            ..Default::default()
        };
        let agent = RetryPolicySpec {
            base_ms: Some(250),
            backoff: Some(Backoff::Fixed),
            ..Default::default()
        };
        let p = RetryPolicy::resolve(&[Some(&task), Some(&workflow), Some(&agent)]);
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.backoff, Backoff::Linear);
        assert_eq!(p.base_ms, 250);
        assert_eq!(p.max_ms, DEFAULT_MAX_MS);
        assert_eq!(p.jitter, Jitter::Full);
        assert_eq!(RetryPolicy::resolve(&[None]), RetryPolicy::default());
        assert!(p.allows_retry_after(4) && !p.allows_retry_after(5));
    }

    #[test]
    fn bad_values_are_named() {
        let check = |json: &str| {
            serde_json::from_str::<RetryPolicyInput>(json)
                .unwrap()
                .validate()
                .unwrap_err()
                .field
        };
        assert_eq!(check(r#"{"max_attempts": 0}"#), "max_attempts");
        assert_eq!(check(r#"{"max_attempts": 11}"#), "max_attempts");
        assert_eq!(check(r#"{"base_ms": -1}"#), "base_ms");
        assert_eq!(check(r#"{"max_ms": -5}"#), "max_ms");
        assert_eq!(check(r#"{"base_ms": 5000, "max_ms": 100}"#), "base_ms");
        assert_eq!(check(r#"{"backoff": "quadratic"}"#), "backoff");
        assert_eq!(check(r#"{"jitter": "some"}"#), "jitter");
        let err = serde_json::from_str::<RetryPolicyInput>(r#"{"max_attempts":0}"#)
            .unwrap()
            .validate()
            .unwrap_err()
            .under("retry");
        assert_eq!(
            err.to_string(),
            "retry.max_attempts must be between 1 and 10, got 0"
        );
        assert!(serde_json::from_str::<RetryPolicyInput>(r#"{"tries": 3}"#).is_err());
    }

    #[test]
    fn a_valid_input_becomes_a_typed_layer() {
        let spec = serde_json::from_str::<RetryPolicyInput>(
            r#"{"max_attempts": 3, "backoff": "linear", "base_ms": 0, "jitter": "none"}"#,
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(spec.max_attempts, Some(3));
        assert_eq!(spec.backoff, Some(Backoff::Linear));
        assert_eq!(spec.base_ms, Some(0));
        assert_eq!(spec.jitter, Some(Jitter::None));
        let stored = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            serde_json::from_str::<RetryPolicySpec>(&stored).unwrap(),
            spec
        );
    }
}
