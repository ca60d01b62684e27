//! learn: folds each outcome into the memory table, off the critical path.
//!
//! Each outcome is written once per (task, attempt) together with the agent's updated stats,
//! in one transaction, so a redelivered outcome changes nothing.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton::batch::process_sqs_batch;
use baton::clock::now_ms;
use baton::config::Settings;
use baton::messages::OutcomeMessage;
use baton::store::{LearningStore, StoreError};
use lambda_runtime::{Error, LambdaEvent};
use tracing::Instrument;

pub struct LearnDeps<S> {
    pub store: S,
    pub settings: Settings,
}

pub async fn handle_batch<S: LearningStore>(
    deps: &LearnDeps<S>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(process_sqs_batch(event.payload, |outcome: OutcomeMessage| {
        learn(deps, outcome)
    })
    .await)
}

async fn learn<S: LearningStore>(
    deps: &LearnDeps<S>,
    outcome: OutcomeMessage,
) -> Result<(), StoreError> {
    let span = tracing::info_span!(
        "learn",
        tenant = %outcome.task.tenant,
        workflow = %outcome.task.workflow_id,
        task = %outcome.task.task_id,
        attempt = outcome.task.attempt,
        agent = %outcome.agent,
    );
    async {
        let expires_at_s = now_ms() / 1000 + deps.settings.retention.as_secs() as i64;
        if deps.store.record_outcome(&outcome, expires_at_s).await? {
            tracing::info!(
                success = outcome.success,
                latency_ms = outcome.latency_ms,
                "outcome learned"
            );
        } else {
            tracing::info!("outcome already learned; duplicate acknowledged");
        }
        Ok(())
    }
    .instrument(span)
    .await
}
