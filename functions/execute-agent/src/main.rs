use baton::invoker::AgentInvokers;
use baton_execute_agent::{handle_batch, ExecuteDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton::telemetry::init_function().await?;
    let deps = ExecuteDeps::new(
        clients.store(&settings),
        clients.queues(&settings),
        AgentInvokers::new(&settings.endpoint_policy, &clients.config)?,
        settings,
    );
    run(service_fn(|event| handle_batch(&deps, event))).await
}
