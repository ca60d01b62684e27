//! route: picks the agent(s) for each ready task and hands the task to execute-agent.
//!
//! Routing writes nothing on the happy path, so a duplicate message only produces a duplicate
//! execute message, which execute-agent's claim absorbs. A task no enabled agent can take
//! fails here, through the same completion steps as any failed task.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton::batch::process_sqs_batch;
use baton::clock::now_ms;
use baton::completion::{fail_task, ChainError};
use baton::config::Settings;
use baton::domain::routing::route_task;
use baton::domain::task::{FailureKind, TaskFailure, TaskStatus};
use baton::messages::{ExecuteMessage, RouteMessage, FORMAT_VERSION};
use baton::queue::TaskQueue;
use baton::store::agent_cache::AgentCache;
use baton::store::{AgentRegistry, LearningStore, WorkflowStore};
use lambda_runtime::{Error, LambdaEvent};
use tracing::Instrument;

pub struct RouteDeps<S, Q> {
    pub store: S,
    pub queue: Q,
    pub settings: Settings,
    pub agents: AgentCache,
}

impl<S, Q> RouteDeps<S, Q> {
    pub fn new(store: S, queue: Q, settings: Settings) -> Self {
        RouteDeps {
            store,
            queue,
            settings,
            agents: AgentCache::default(),
        }
    }
}

pub async fn handle_batch<S, Q>(
    deps: &RouteDeps<S, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error>
where
    S: WorkflowStore + AgentRegistry + LearningStore,
    Q: TaskQueue,
{
    Ok(process_sqs_batch(event.payload, |message: RouteMessage| {
        route_message(deps, message)
    })
    .await)
}

async fn route_message<S, Q>(
    deps: &RouteDeps<S, Q>,
    message: RouteMessage,
) -> Result<(), ChainError>
where
    S: WorkflowStore + AgentRegistry + LearningStore,
    Q: TaskQueue,
{
    let task = &message.task;
    let span = task.span("route");
    async {
        let tenant = &task.tenant;
        let mut agents = deps.agents.agents(&deps.store, tenant).await?;
        if !agents.iter().any(|a| a.enabled && a.has_capability(&message.capability)) {
            // Do not fail a task on a cached view: an agent may have been registered just now.
            agents = deps.agents.refresh(&deps.store, tenant).await?;
        }
        let candidates: Vec<String> = agents
            .iter()
            .filter(|a| a.enabled && a.has_capability(&message.capability))
            .map(|a| a.name.clone())
            .collect();
        let stats = deps
            .store
            .agent_stats(tenant, &message.capability, &candidates)
            .await?;
        match route_task(&message.capability, &agents, &stats, &task.idempotency_key()) {
            Ok(route) => {
                tracing::info!(agent = %route.primary, confidence = route.confidence, "routed");
                deps.queue
                    .send_execute(&ExecuteMessage {
                        v: FORMAT_VERSION,
                        task: task.clone(),
                        capability: message.capability.clone(),
                        route,
                    })
                    .await?;
            }
            Err(no_agent) => {
                tracing::warn!(capability = %message.capability, "no capable agent; the task fails");
                let failure = TaskFailure::new(FailureKind::NoCapableAgent, no_agent.to_string());
                let failed = fail_task(
                    &deps.store,
                    &deps.queue,
                    &deps.settings,
                    task,
                    TaskStatus::Queued,
                    failure,
                    now_ms(),
                )
                .await?;
                if !failed {
                    tracing::info!("task moved on before it could be failed; acknowledged");
                }
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}
