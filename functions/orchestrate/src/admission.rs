//! Quotas at the door: what a tenant may submit, given what the operator allows it.
//!
//! - Running workflows: counted from the `running` index under the tenant's own key; a
//!   submission past the quota is refused (`429 quota_exceeded`).
//! - The task pace and backlog: one conditional write of the tenant's pacing cells per
//!   submission (see [`baton_types::quota`]). Tasks beyond the tenant's burst get their turn
//!   at its pace; a submission that would leave more than its backlog waiting is refused
//!   (`429 quota_exceeded`, `Retry-After` the seconds until it fits) and nothing is stored.
//! - The urgent share: urgent tasks beyond it run in the `high` band.

use baton_chain::store::{AdmissionStore, ConfigStore, PaceAdvance};
use baton_types::ids::TenantId;
use baton_types::quota::{urgent_turns, Admitted, Demand, PaceStep, Quotas};
use serde_json::json;

use crate::error::ApiError;
use crate::timing::timed;
use crate::Api;

/// How long a refused submission waits for a running workflow to finish, as a hint.
const RUNNING_RETRY_AFTER_S: u64 = 10;

/// The tenant's quotas in effect: the operator's over the deployment's defaults.
pub async fn quotas<S: ConfigStore, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
) -> Result<Quotas, ApiError> {
    let config = timed("store", api.config.config(&api.store, tenant)).await?;
    Ok(config.quotas.over(&api.settings.quotas))
}

/// A refusal for a quota, with the seconds after which trying again can succeed.
pub fn quota_exceeded(
    quota: &'static str,
    limit: impl Into<serde_json::Value>,
    message: String,
    retry_after_s: Option<u64>,
) -> ApiError {
    ApiError::QuotaExceeded {
        message,
        details: json!({ "quota": quota, "limit": limit.into() }),
        retry_after_s,
    }
}

/// Refuses a new workflow while the tenant has its quota of running ones.
pub async fn check_running<S: AdmissionStore, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    quotas: &Quotas,
) -> Result<(), ApiError> {
    let limit = quotas.running_workflows;
    let running = timed("store", api.store.running_count(tenant, limit)).await?;
    if running >= u64::from(limit) {
        return Err(quota_exceeded(
            "running_workflows",
            limit,
            format!("the tenant has {limit} running workflows, its quota; wait for one to end"),
            Some(RUNNING_RETRY_AFTER_S),
        ));
    }
    Ok(())
}

/// Admits `demand` at the tenant's pace: each task's turn, and how many urgent tasks stay
/// urgent (a submission that loses the urgent cell to a concurrent one keeps none: it errs
/// towards the share).
pub async fn admit_tasks<S: AdmissionStore, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    quotas: &Quotas,
    demand: Demand,
    now_ms: i64,
) -> Result<Admitted, ApiError> {
    // More tasks than the pace can ever hold at once would be refused for good: say so,
    // without a Retry-After that would send the client round in circles.
    let most = quotas.task_burst.saturating_add(quotas.task_backlog);
    if demand.tasks > most {
        return Err(quota_exceeded(
            "task_backlog",
            quotas.task_backlog,
            format!(
                "{} task(s) can never be admitted at once: the tenant's burst ({}) and backlog \
                 ({}) hold at most {most}; submit fewer tasks at a time",
                demand.tasks, quotas.task_burst, quotas.task_backlog
            ),
            None,
        ));
    }
    let step = PaceStep::new(quotas, demand.tasks, now_ms);
    let (base_us, old) = match timed("store", api.store.advance_pace(tenant, &step)).await? {
        PaceAdvance::Advanced { base_us, old } => (base_us, old),
        PaceAdvance::Refused { tat_us } => {
            let refused = step.refused(tat_us);
            let wait_s = (refused.retry_after_ms.max(0) as u64).div_ceil(1000).max(1);
            return Err(quota_exceeded(
                "task_backlog",
                quotas.task_backlog,
                format!(
                    "{} task(s) would leave more than the tenant's backlog of {} waiting at its \
                     pace of {} a second; retry after {wait_s} s",
                    demand.tasks, quotas.task_backlog, quotas.tasks_per_second
                ),
                Some(wait_s),
            ));
        }
    };
    let mut urgent_kept = 0;
    if let (Some(next), kept) =
        urgent_turns(old.urgent_tat_us, quotas, demand.urgent, step.now_us())
    {
        if timed(
            "store",
            api.store.save_urgent(tenant, old.urgent_tat_us, next),
        )
        .await?
        {
            urgent_kept = kept;
        }
    }
    Ok(Admitted {
        turns_ms: step.turns_ms(base_us),
        urgent_kept,
    })
}
