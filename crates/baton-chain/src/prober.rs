//! The port through which the scheduled function probes agents' health.

use std::time::Duration;

use async_trait::async_trait;

use baton_types::health::ProbeResult;

/// How long a probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[async_trait]
pub trait HealthProber: Send + Sync {
    async fn probe(&self, url: &str) -> ProbeResult;
}
