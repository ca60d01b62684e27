use baton_aws::invoker::AgentInvokers;
use baton_execute_agent::{handle_batch, ExecuteDeps};
use baton_route::{InlineRouting, RouteDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton_aws::telemetry::init_function().await?;
    baton_aws::emf::install("execute-agent")?;
    // Released dependents are routed here: one queue hop per DAG level.
    let routing = RouteDeps::new(
        clients.store(&settings),
        clients.queues(&settings),
        settings.clone(),
    );
    let deps = ExecuteDeps::new(
        clients.store(&settings),
        InlineRouting::new(routing),
        AgentInvokers::new(&settings, &clients.config)?,
        settings,
    );
    run(service_fn(|event| {
        baton_aws::emf::flushed(handle_batch(&deps, event))
    }))
    .await
}
