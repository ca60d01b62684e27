//! Agent health checks: what an agent declares, and how probe results become a status.
//!
//! The scheduled function probes each enabled agent that declares a check, with a short
//! time-out and no payload. A 2xx answer within [`SLOW_PROBE_MS`] is healthy; a slow 2xx, or
//! one failed probe, is degraded; [`UNHEALTHY_AFTER`] failed probes in a row are unhealthy.
//! Routing skips unhealthy agents only, so one lost probe does not take an agent out.

use serde::{Deserialize, Serialize};

use super::retry::PolicyError;

pub const DEFAULT_INTERVAL_S: u32 = 60;
pub const MIN_INTERVAL_S: u32 = 1;
pub const MAX_INTERVAL_S: u32 = 86_400;
pub const SLOW_PROBE_MS: u64 = 1_000;
pub const UNHEALTHY_AFTER: u32 = 2;
const MAX_PATH_CHARS: usize = 512;

/// `health_check` in an agent's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheck {
    /// Path on the agent's own host, e.g. `/health`.
    pub path: String,
    pub interval_s: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthCheckInput {
    pub path: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub interval_s: Option<i64>,
}

impl HealthCheckInput {
    pub fn validate(&self) -> Result<HealthCheck, PolicyError> {
        let path = &self.path;
        let not_a_path = |why: &str| {
            Err(PolicyError::new(
                "path",
                format!("must be a path on the agent's host such as /health: {why}"),
            ))
        };
        if !path.starts_with('/') || path.starts_with("//") {
            return not_a_path("it must start with a single /");
        }
        if path.len() > MAX_PATH_CHARS {
            return not_a_path("it is too long");
        }
        if path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#' || c == '\\')
        {
            return not_a_path("it contains a space, a control character, # or \\");
        }
        let interval_s = match self.interval_s {
            None => DEFAULT_INTERVAL_S,
            Some(s) => u32::try_from(s)
                .ok()
                .filter(|s| (MIN_INTERVAL_S..=MAX_INTERVAL_S).contains(s))
                .ok_or_else(|| {
                    PolicyError::new(
                        "interval_s",
                        format!("must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S}, got {s}"),
                    )
                })?,
        };
        Ok(HealthCheck {
            path: path.clone(),
            interval_s,
        })
    }
}

impl HealthCheck {
    /// The probe's URL: the path on the endpoint's scheme, host and port.
    pub fn url(&self, endpoint: &str) -> Option<String> {
        let mut url = url::Url::parse(endpoint).ok()?;
        let (path, query) = match self.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.path.as_str(), None),
        };
        url.set_path(path);
        url.set_query(query);
        url.set_fragment(None);
        Some(url.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// What the last probes found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub status: HealthStatus,
    pub checked_at_ms: i64,
    pub consecutive_failures: u32,
    /// Why the last probe failed or was slow, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeResult {
    Answered { latency_ms: u64 },
    Failed { detail: String },
}

/// The health after a probe, given the health before it.
pub fn after_probe(previous: Option<&AgentHealth>, probe: ProbeResult, now_ms: i64) -> AgentHealth {
    match probe {
        ProbeResult::Answered { latency_ms } => {
            let slow = latency_ms >= SLOW_PROBE_MS;
            AgentHealth {
                status: if slow {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Healthy
                },
                checked_at_ms: now_ms,
                consecutive_failures: 0,
                detail: slow.then(|| format!("the probe took {latency_ms} ms")),
            }
        }
        ProbeResult::Failed { detail } => {
            let failures = previous.map_or(0, |h| h.consecutive_failures) + 1;
            AgentHealth {
                status: if failures >= UNHEALTHY_AFTER {
                    HealthStatus::Unhealthy
                } else {
                    HealthStatus::Degraded
                },
                checked_at_ms: now_ms,
                consecutive_failures: failures,
                detail: Some(detail),
            }
        }
    }
}

/// Due health checks looked at per sweep for each one probed: a sweep reads this many times
/// its probe limit from the `HEALTH` partition (oldest first, keys only) and shares its
/// probes among their tenants, so one tenant's backlog of due agents cannot take every probe
/// while another's agent waits behind it.
pub const DUE_READ_FACTOR: usize = 10;

/// Up to `limit` of `due` (oldest first), taken round-robin by tenant: one of each tenant's
/// (its oldest), tenants in the order of their oldest due check, then a second of each, and
/// so on. Each tenant's own checks keep their order.
pub fn fair_by_tenant<T>(due: Vec<T>, tenant_of: impl Fn(&T) -> &str, limit: usize) -> Vec<T> {
    let mut tenants: Vec<std::collections::VecDeque<T>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in due {
        let tenant = tenant_of(&item).to_string();
        let at = *index.entry(tenant).or_insert_with(|| {
            tenants.push(std::collections::VecDeque::new());
            tenants.len() - 1
        });
        tenants[at].push_back(item);
    }
    let mut taken = Vec::new();
    while taken.len() < limit {
        let before = taken.len();
        for queue in tenants.iter_mut() {
            if taken.len() == limit {
                break;
            }
            if let Some(item) = queue.pop_front() {
                taken.push(item);
            }
        }
        if taken.len() == before {
            break;
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_shared_round_robin_by_tenant_oldest_first() {
        let mut due: Vec<(&str, u32)> = (0..120).map(|i| ("busy", i)).collect();
        due.push(("quiet", 0));
        due.push(("busy", 120));
        due.push(("other", 0));
        let taken = fair_by_tenant(due.clone(), |d| d.0, 100);
        assert_eq!(taken.len(), 100);
        assert_eq!(taken[..3], [("busy", 0), ("quiet", 0), ("other", 0)]);
        let busy: Vec<u32> = taken
            .iter()
            .filter(|d| d.0 == "busy")
            .map(|d| d.1)
            .collect();
        assert_eq!(
            busy,
            (0..98).collect::<Vec<_>>(),
            "a tenant's own oldest first"
        );
        assert_eq!(fair_by_tenant(due.clone(), |d| d.0, 500).len(), due.len());
        assert!(fair_by_tenant(due, |d| d.0, 0).is_empty());
        assert!(fair_by_tenant(Vec::<(&str, u32)>::new(), |d| d.0, 5).is_empty());
    }

    fn input(path: &str, interval_s: Option<i64>) -> HealthCheckInput {
        HealthCheckInput {
            path: path.into(),
            interval_s,
        }
    }

    #[test]
    fn paths_must_be_paths_on_the_agents_host() {
        assert!(input("/health", None).validate().is_ok());
        assert!(input("/v1/health?deep=1", Some(30)).validate().is_ok());
        for bad in ["health", "//evil.example/x", "/a b", "http://x/health", ""] {
            assert_eq!(
                input(bad, None).validate().unwrap_err().field,
                "path",
                "{bad}"
            );
        }
        assert_eq!(
            input("/h", Some(0)).validate().unwrap_err().field,
            "interval_s"
        );
    }

    #[test]
    fn the_probe_url_keeps_the_endpoints_origin() {
        let check = input("/health?deep=1", None).validate().unwrap();
        assert_eq!(
            check
                .url("https://agents.example.com:8443/run/summarize")
                .as_deref(),
            Some("https://agents.example.com:8443/health?deep=1")
        );
    }

    #[test]
    fn one_failed_probe_degrades_and_two_make_unhealthy_until_an_answer() {
        let failed = || ProbeResult::Failed {
            detail: "connection refused".into(),
        };
        let first = after_probe(None, failed(), 1);
        assert_eq!(first.status, HealthStatus::Degraded);
        let second = after_probe(Some(&first), failed(), 2);
        assert_eq!(second.status, HealthStatus::Unhealthy);
        let back = after_probe(Some(&second), ProbeResult::Answered { latency_ms: 5 }, 3);
        assert_eq!(back.status, HealthStatus::Healthy);
        assert_eq!(back.consecutive_failures, 0);
        let slow = after_probe(None, ProbeResult::Answered { latency_ms: 1_500 }, 4);
        assert_eq!(slow.status, HealthStatus::Degraded);
    }
}
