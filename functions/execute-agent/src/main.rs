use baton::invoker::AgentInvokers;
use baton_execute_agent::{handle_batch, ExecuteDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton::telemetry::init_function().await?;
    baton::metrics::install("execute-agent")?;
    let deps = ExecuteDeps::new(
        clients.store(&settings),
        clients.queues(&settings),
        AgentInvokers::new(&settings, &clients.config)?,
        settings,
    );
    run(service_fn(|event| {
        baton::metrics::flushed(handle_batch(&deps, event))
    }))
    .await
}
