//! The EMF collector: the process's metrics recorder, written to stdout after each invocation
//! (the names, units and helpers are `baton_chain::metrics`).

use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;

use baton_chain::metrics::{CATALOGUE, FUNCTION, NAMESPACE};
use metrics_cloudwatch_embedded::Collector;

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("the metrics collector could not be installed: {0}")]
pub struct MetricsError(String);

/// Installs the EMF collector as the process's recorder, with `function` as the dimension
/// every metric carries. Once per process, at init.
pub fn install(function: &'static str) -> Result<(), MetricsError> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension(FUNCTION, function)
        .init()
        .map_err(|e| MetricsError(e.to_string()))?;
    for (name, unit, description) in CATALOGUE {
        // The collector keeps a unit by name, whatever the kind of metric.
        metrics::describe_counter!(name, unit, description);
    }
    COLLECTOR
        .set(collector)
        .map_err(|_| MetricsError("installed twice".into()))
}

/// Runs one invocation, then writes the metrics it recorded (the collector's flush after each
/// invocation, as its Lambda layer does).
pub async fn flushed<F: Future>(invocation: F) -> F::Output {
    let output = invocation.await;
    if let Err(error) = flush_into(std::io::stdout().lock()) {
        tracing::warn!(%error, "metrics not written");
    }
    output
}

/// Writes the metrics recorded since the last flush as EMF lines; nothing without a collector.
pub fn flush_into(writer: impl Write) -> std::io::Result<()> {
    match COLLECTOR.get() {
        Some(collector) => collector.flush(writer),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_chain::metrics::{agent_call, task_started};

    #[test]
    fn without_a_collector_metrics_cost_nothing_and_write_nothing() {
        task_started();
        agent_call("worker", 12, true);
        let mut out = Vec::new();
        flush_into(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
