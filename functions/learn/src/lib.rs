//! learn: folds outcomes into the memory table, off the critical path.
//!
//! A batch is grouped by (tenant, agent), so each group updates the agent's records once, in
//! one transaction: the outcomes' history records, the stats record of each task type, and the
//! agent's circuit when it changed (a healthy agent's circuit is never rewritten). A
//! redelivered outcome changes nothing, and concurrent learners do not fight over the same
//! records message by message.

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::batch::decode_batch;
use baton_aws::dynamo::MAX_OUTCOMES_PER_WRITE;
use baton_chain::config::Settings;
use baton_chain::store::LearningStore;
use baton_types::clock::now_ms;
use baton_types::ids::{AgentName, TenantId};
use baton_types::messages::OutcomeMessage;
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
    let (outcomes, mut response) = decode_batch::<OutcomeMessage>(event.payload);
    let mut groups: BTreeMap<(TenantId, AgentName), Vec<(String, OutcomeMessage)>> =
        BTreeMap::new();
    for (message_id, outcome) in outcomes {
        let key = (outcome.task.tenant.clone(), outcome.agent.clone());
        groups.entry(key).or_default().push((message_id, outcome));
    }
    let expires_at_s = now_ms() / 1000 + deps.settings.retention.as_secs() as i64;
    let work = groups
        .into_iter()
        .flat_map(|(key, group)| {
            let chunks: Vec<Vec<(String, OutcomeMessage)>> = group
                .chunks(MAX_OUTCOMES_PER_WRITE)
                .map(<[_]>::to_vec)
                .collect();
            chunks.into_iter().map(move |chunk| (key.clone(), chunk))
        })
        .map(|((tenant, agent), chunk)| {
            let span = tracing::info_span!("learn", tenant = %tenant, agent = %agent);
            async move {
                let outcomes: Vec<OutcomeMessage> = chunk.iter().map(|(_, o)| o.clone()).collect();
                let learned = deps.store.record_outcomes(&outcomes, deps.settings.half_life_ms(), expires_at_s);
                // A panic in one group fails that group's messages alone.
                match baton_aws::batch::isolated(learned).await {
                    Ok(learned) => {
                        let new = learned.iter().filter(|l| **l).count();
                        tracing::info!(learned = new, duplicates = learned.len() - new, "outcomes learned");
                        Vec::new()
                    }
                    Err(error) => {
                        tracing::error!(%error, "outcomes not learned; SQS will deliver them again");
                        chunk.into_iter().map(|(id, _)| id).collect()
                    }
                }
            }
            .instrument(span)
        });
    for failed in futures::future::join_all(work).await.into_iter().flatten() {
        response.add_failure(failed);
    }
    Ok(response)
}
