//! Typed configuration, read once at start-up from the environment the template sets.

use std::time::Duration;

use baton_types::endpoint::{
    parse_http_hosts, parse_private_networks, EndpointPolicy, HTTP_HOSTS_VAR, PRIVATE_NETWORKS_VAR,
};
use baton_types::learning::DEFAULT_HALF_LIFE_MS;
use baton_types::priority::Band;
use baton_types::quota::Quotas;
use baton_types::tenancy::{
    ModelPolicy, Namespaces, TenancyPolicy, DEFAULT_FUNCTION_PREFIX, DEFAULT_MAX_TOKENS,
    DEFAULT_PARAMETER_PREFIX, DEFAULT_SECRET_PREFIX,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Names of the tables and queues, and the timing knobs, shared by all five functions.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_table: String,
    pub memory_table: String,
    /// Route and execute queues by priority band (see [`baton_types::priority::Band`]).
    pub route_queues: BandQueues,
    pub execute_queues: BandQueues,
    pub learn_queue_url: String,
    /// The dead-letter queues, which only the API's stats read (unset elsewhere).
    pub dead_letter_queues: DeadLetterQueues,
    /// How long finished workflows, tasks and outcome records are kept before TTL removes them.
    pub retention: Duration,
    /// How long a queued task may wait for an execute handler before cleanup sends it again.
    /// Each further dispatch of the same attempt waits twice as long.
    pub dispatch_timeout: Duration,
    /// How many times cleanup sends one attempt again before the task fails `not_dispatched`.
    pub max_dispatches: u32,
    /// How many times a task may be claimed by a handler that then dies, before it fails.
    pub max_lease_attempts: u32,
    /// Time a lease grants beyond the agent call's time-out, to record the result.
    pub lease_margin: Duration,
    /// How often the scheduled repair looks at each unfinished workflow.
    pub repair_after: Duration,
    /// Learned evidence weighs half as much this long after it was observed.
    pub learning_half_life: Duration,
    /// Which agent URLs and addresses may be called beyond https to public addresses.
    pub endpoint_policy: EndpointPolicy,
    /// Where the API finds a request's tenant (only orchestrate reads it).
    pub tenant_source: TenantSource,
    /// The namespaces tenants' secrets, parameters and functions live in, and the models
    /// they may ask.
    pub tenancy: TenancyPolicy,
    /// Every tenant's quotas unless the operator set its own.
    pub quotas: Quotas,
    /// The JWT scope (or Cognito group) that makes a caller the operator.
    pub operator_scope: String,
    /// The bucket of payloads too large for their items (None: every payload stays inline,
    /// as far as its item's size allows).
    pub payload_bucket: Option<String>,
    /// The streaming endpoint (the stream function's URL), and what its tokens are signed with.
    pub stream: StreamSettings,
}

/// The streaming endpoint: where it is, the secret its tokens' key is kept in, and the
/// browser origins it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSettings {
    /// Its base URL (orchestrate names it in the stream links it gives).
    pub url: Option<String>,
    /// The Secrets Manager secret (ARN) whose value signs and checks stream tokens.
    pub key_secret: Option<String>,
    /// Origins whose pages may read streams (CORS); empty: none.
    pub origins: Vec<String>,
    /// Streams one tenant may have open at once on the endpoint.
    pub per_tenant: u32,
}

/// One queue per priority band. A band without its own queue configured uses the standard one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandQueues {
    pub standard: String,
    pub high: String,
    pub urgent: String,
}

/// Each kind's dead-letter queue (a kind's bands share one), where configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQueues {
    pub route: Option<String>,
    pub execute: Option<String>,
    pub learn: Option<String>,
}

impl BandQueues {
    pub fn url(&self, band: Band) -> &str {
        match band {
            Band::Standard => &self.standard,
            Band::High => &self.high,
            Band::Urgent => &self.urgent,
        }
    }
}

impl Settings {
    pub fn half_life_ms(&self) -> i64 {
        self.learning_half_life.as_millis() as i64
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// These settings as the local stack runs them: agents on this machine's loopback may be
    /// called. No environment variable does this, so a deployed function never can.
    pub fn with_loopback(mut self) -> Self {
        self.endpoint_policy.allow_loopback = true;
        self
    }

    /// Reads settings through `lookup`, so the local stack can feed the template's values.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match lookup(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name,
                        reason: format!("expected a positive integer, got `{v}`"),
                    }),
            }
        };
        let band_queues = |standard: &'static str, high: &str, urgent: &str| {
            let standard = required(standard)?;
            let or_standard = |name: &str| {
                lookup(name)
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| standard.clone())
            };
            Ok::<_, ConfigError>(BandQueues {
                high: or_standard(high),
                urgent: or_standard(urgent),
                standard,
            })
        };
        let invalid = |name: &'static str| move |reason| ConfigError::Invalid { name, reason };
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoint_policy = EndpointPolicy {
            http_hosts: parse_http_hosts(&lookup(HTTP_HOSTS_VAR).unwrap_or_default())
                .map_err(invalid(HTTP_HOSTS_VAR))?,
            private_networks: parse_private_networks(
                &lookup(PRIVATE_NETWORKS_VAR).unwrap_or_default(),
            )
            .map_err(invalid(PRIVATE_NETWORKS_VAR))?,
            allow_loopback: false,
        };
        let text = |name: &str, default: &str| optional(name).unwrap_or_else(|| default.into());
        let defaults = Quotas::default();
        let rate = match optional("BATON_QUOTA_TASKS_PER_SECOND") {
            None => defaults.tasks_per_second,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "BATON_QUOTA_TASKS_PER_SECOND",
                    reason: format!("expected a positive number, got `{v}`"),
                })?,
        };
        let urgent_percent = match optional("BATON_QUOTA_URGENT_PERCENT") {
            None => defaults.urgent_share * 100.0,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "BATON_QUOTA_URGENT_PERCENT",
                    reason: format!("expected a percentage from 0 to 100, got `{v}`"),
                })?,
        };
        let capped = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
            Ok(number(name, u64::from(default))?.min(u64::from(u32::MAX)) as u32)
        };
        let quotas = Quotas {
            agents: capped("BATON_QUOTA_AGENTS", defaults.agents)?,
            running_workflows: capped("BATON_QUOTA_RUNNING_WORKFLOWS", defaults.running_workflows)?,
            tasks_per_second: rate,
            task_burst: capped("BATON_QUOTA_TASK_BURST", defaults.task_burst)?,
            task_backlog: capped("BATON_QUOTA_TASK_BACKLOG", defaults.task_backlog)?,
            urgent_share: urgent_percent / 100.0,
        };
        let tenancy = TenancyPolicy {
            namespaces: Namespaces {
                secret_prefix: text("BATON_SECRET_PREFIX", DEFAULT_SECRET_PREFIX),
                parameter_prefix: text("BATON_PARAMETER_PREFIX", DEFAULT_PARAMETER_PREFIX),
                function_prefix: text("BATON_FUNCTION_PREFIX", DEFAULT_FUNCTION_PREFIX),
            },
            models: ModelPolicy {
                allowed: optional("BATON_BEDROCK_MODELS")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
                max_tokens: capped("BATON_BEDROCK_MAX_TOKENS", DEFAULT_MAX_TOKENS)?,
            },
        };
        Ok(Settings {
            state_table: required("STATE_TABLE")?,
            memory_table: required("MEMORY_TABLE")?,
            route_queues: band_queues(
                "ROUTE_QUEUE_URL",
                "ROUTE_HIGH_QUEUE_URL",
                "ROUTE_URGENT_QUEUE_URL",
            )?,
            execute_queues: band_queues(
                "EXECUTE_QUEUE_URL",
                "EXECUTE_HIGH_QUEUE_URL",
                "EXECUTE_URGENT_QUEUE_URL",
            )?,
            learn_queue_url: required("LEARN_QUEUE_URL")?,
            dead_letter_queues: DeadLetterQueues {
                route: optional("ROUTE_DLQ_URL"),
                execute: optional("EXECUTE_DLQ_URL"),
                learn: optional("LEARN_DLQ_URL"),
            },
            // RETENTION_SECONDS, when set, takes the place of the days: the tests shorten
            // the retention with it to watch what expires and what is kept.
            retention: Duration::from_secs(match optional("RETENTION_SECONDS") {
                Some(_) => number("RETENTION_SECONDS", 0)?.max(1),
                None => number("RETENTION_DAYS", 7)? * 86_400,
            }),
            dispatch_timeout: Duration::from_secs(number("DISPATCH_TIMEOUT_SECONDS", 120)?),
            max_dispatches: number("MAX_DISPATCHES", 5)?.min(100) as u32,
            max_lease_attempts: number("MAX_LEASE_ATTEMPTS", 3)?.min(100) as u32,
            lease_margin: Duration::from_secs(number("LEASE_MARGIN_SECONDS", 30)?),
            repair_after: Duration::from_secs(number("REPAIR_AFTER_SECONDS", 60)?),
            learning_half_life: Duration::from_secs(number(
                "LEARNING_HALF_LIFE_SECONDS",
                DEFAULT_HALF_LIFE_MS as u64 / 1000,
            )?),
            endpoint_policy,
            tenant_source: TenantSource::from_lookup(&lookup)?,
            tenancy,
            quotas,
            operator_scope: text("BATON_OPERATOR_SCOPE", DEFAULT_OPERATOR_SCOPE),
            payload_bucket: optional("PAYLOAD_BUCKET"),
            stream: StreamSettings {
                url: optional("BATON_STREAM_URL").map(|u| u.trim_end_matches('/').to_string()),
                key_secret: optional("BATON_STREAM_KEY_SECRET"),
                origins: optional("BATON_STREAM_ORIGINS")
                    .map(|list| {
                        list.split(',')
                            .map(|o| o.trim().trim_end_matches('/').to_string())
                            .filter(|o| !o.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                per_tenant: number(
                    "BATON_STREAMS_PER_TENANT",
                    baton_types::stream_token::DEFAULT_STREAMS_PER_TENANT as u64,
                )?
                .min(10_000) as u32,
            },
        })
    }
}

/// Where a request's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// The named claim of the token API Gateway's JWT authorizer verified (`AuthMode=jwt`).
    Jwt { claim: String },
    /// The `X-Tenant-Id` header, which any client can set: only for the local stack and for
    /// deployments that opted out of authentication (`AuthMode=header`).
    Header,
}

pub const TENANT_SOURCE_VAR: &str = "BATON_TENANT_SOURCE";
/// The operator's scope when the template does not say.
pub const DEFAULT_OPERATOR_SCOPE: &str = "baton/operator";
pub const TENANT_CLAIM_VAR: &str = "BATON_TENANT_CLAIM";
/// The claim that names the tenant when the template does not say (Cognito: `custom:tenant_id`).
pub const DEFAULT_TENANT_CLAIM: &str = "tenant_id";
const MAX_CLAIM_NAME_CHARS: usize = 128;

impl TenantSource {
    /// Unset means `jwt`: a function deployed without the variable trusts no header.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match set(TENANT_SOURCE_VAR).as_deref() {
            None | Some("jwt") => {
                let claim = set(TENANT_CLAIM_VAR).unwrap_or_else(|| DEFAULT_TENANT_CLAIM.into());
                if claim.chars().count() > MAX_CLAIM_NAME_CHARS
                    || claim.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ConfigError::Invalid {
                        name: TENANT_CLAIM_VAR,
                        reason: format!(
                            "a claim name has 1 to {MAX_CLAIM_NAME_CHARS} characters and no spaces, got `{claim}`"
                        ),
                    });
                }
                Ok(TenantSource::Jwt { claim })
            }
            Some("header") => Ok(TenantSource::Header),
            Some(other) => Err(ConfigError::Invalid {
                name: TENANT_SOURCE_VAR,
                reason: format!("expected `jwt` or `header`, got `{other}`"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const ALL: [(&str, &str); 5] = [
        ("STATE_TABLE", "s"),
        ("MEMORY_TABLE", "m"),
        ("ROUTE_QUEUE_URL", "r"),
        ("EXECUTE_QUEUE_URL", "e"),
        ("LEARN_QUEUE_URL", "l"),
    ];

    #[test]
    fn missing_variable_is_named() {
        let err = Settings::from_lookup(lookup(&ALL[1..])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable STATE_TABLE is required but not set"
        );
    }

    #[test]
    fn defaults_apply_and_bad_numbers_are_rejected() {
        let s = Settings::from_lookup(lookup(&ALL)).unwrap();
        assert_eq!(s.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.max_lease_attempts, 3);
        assert_eq!(
            s.route_queues.url(Band::Urgent),
            "r",
            "no urgent queue: the standard one"
        );
        let mut banded = ALL.to_vec();
        banded.push(("EXECUTE_URGENT_QUEUE_URL", "eu"));
        let s = Settings::from_lookup(lookup(&banded)).unwrap();
        assert_eq!(s.execute_queues.url(Band::Urgent), "eu");
        assert_eq!(s.execute_queues.url(Band::High), "e");
        let mut bad = ALL.to_vec();
        bad.push(("RETENTION_DAYS", "soon"));
        assert!(matches!(
            Settings::from_lookup(lookup(&bad)),
            Err(ConfigError::Invalid {
                name: "RETENTION_DAYS",
                ..
            })
        ));
    }

    #[test]
    fn endpoint_policy_is_strict_by_default_and_bad_lists_are_named() {
        let s = Settings::from_lookup(lookup(&ALL)).unwrap();
        assert_eq!(s.endpoint_policy, EndpointPolicy::default());
        let mut local = ALL.to_vec();
        local.push((HTTP_HOSTS_VAR, "127.0.0.1,localhost,[::1]"));
        local.push((PRIVATE_NETWORKS_VAR, "127.0.0.0/8,::1/128"));
        let s = Settings::from_lookup(lookup(&local)).unwrap();
        assert_eq!(
            s.with_loopback().endpoint_policy,
            EndpointPolicy::loopback()
        );
        for (name, value) in [
            (HTTP_HOSTS_VAR, "http://x/"),
            (PRIVATE_NETWORKS_VAR, "10.0.0.0"),
        ] {
            let mut bad = ALL.to_vec();
            bad.push((name, value));
            match Settings::from_lookup(lookup(&bad)) {
                Err(ConfigError::Invalid { name: named, .. }) => assert_eq!(named, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn tenancy_and_quotas_come_from_the_template_with_defaults() {
        let s = Settings::from_lookup(lookup(&ALL)).unwrap();
        assert_eq!(s.tenancy, TenancyPolicy::default());
        assert_eq!(s.quotas, Quotas::default());
        assert!(!s.endpoint_policy.allow_loopback);
        let mut set = ALL.to_vec();
        set.extend([
            ("BATON_SECRET_PREFIX", "team/"),
            ("BATON_BEDROCK_MODELS", "m1, m2,"),
            ("BATON_BEDROCK_MAX_TOKENS", "512"),
            ("BATON_QUOTA_TASKS_PER_SECOND", "2.5"),
            ("BATON_QUOTA_URGENT_PERCENT", "0"),
            ("BATON_QUOTA_AGENTS", "7"),
        ]);
        let s = Settings::from_lookup(lookup(&set)).unwrap();
        assert_eq!(s.tenancy.namespaces.secret_root("acme"), "team/acme/");
        assert_eq!(s.tenancy.models.allowed, ["m1", "m2"]);
        assert_eq!(s.tenancy.models.max_tokens, 512);
        assert_eq!(
            (s.quotas.tasks_per_second, s.quotas.urgent_share),
            (2.5, 0.0)
        );
        assert_eq!(s.quotas.agents, 7);
        for (name, value) in [
            ("BATON_QUOTA_TASKS_PER_SECOND", "0"),
            ("BATON_QUOTA_URGENT_PERCENT", "101"),
            ("BATON_QUOTA_AGENTS", "-1"),
        ] {
            let mut bad = ALL.to_vec();
            bad.push((name, value));
            match Settings::from_lookup(lookup(&bad)) {
                Err(ConfigError::Invalid { name: named, .. }) => assert_eq!(named, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
        assert!(s.with_loopback().endpoint_policy.allow_loopback);
    }

    #[test]
    fn dead_letter_queues_are_optional() {
        let s = Settings::from_lookup(lookup(&ALL)).unwrap();
        assert_eq!(s.dead_letter_queues, DeadLetterQueues::default());
        let mut with = ALL.to_vec();
        with.push(("ROUTE_DLQ_URL", "rd"));
        with.push(("LEARN_DLQ_URL", " "));
        let s = Settings::from_lookup(lookup(&with)).unwrap();
        assert_eq!(s.dead_letter_queues.route.as_deref(), Some("rd"));
        assert_eq!(s.dead_letter_queues.learn, None);
    }

    #[test]
    fn tenants_come_from_the_token_unless_the_header_is_configured() {
        let s = Settings::from_lookup(lookup(&ALL)).unwrap();
        let claim = DEFAULT_TENANT_CLAIM.to_string();
        assert_eq!(s.tenant_source, TenantSource::Jwt { claim });
        let mut cognito = ALL.to_vec();
        cognito.push((TENANT_SOURCE_VAR, "jwt"));
        cognito.push((TENANT_CLAIM_VAR, "custom:tenant_id"));
        let s = Settings::from_lookup(lookup(&cognito)).unwrap();
        let claim = "custom:tenant_id".to_string();
        assert_eq!(s.tenant_source, TenantSource::Jwt { claim });
        let mut header = ALL.to_vec();
        header.push((TENANT_SOURCE_VAR, "header"));
        let s = Settings::from_lookup(lookup(&header)).unwrap();
        assert_eq!(s.tenant_source, TenantSource::Header);
        for (name, value) in [(TENANT_SOURCE_VAR, "none"), (TENANT_CLAIM_VAR, "tenant id")] {
            let mut bad = ALL.to_vec();
            bad.push((name, value));
            match Settings::from_lookup(lookup(&bad)) {
                Err(ConfigError::Invalid { name: named, .. }) => assert_eq!(named, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }
}
