use baton::invoker::AgentInvokers;
use baton_orchestrate::{handle_request, Api};
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton::telemetry::init_function().await?;
    let classifier = std::sync::Arc::new(AgentInvokers::new(
        &settings.endpoint_policy,
        &clients.config,
    )?);
    let api = Api::new(
        clients.store(&settings),
        clients.queues(&settings),
        settings,
    )
    .with_classifier(classifier);
    run(service_fn(|request| handle_request(&api, request))).await
}
