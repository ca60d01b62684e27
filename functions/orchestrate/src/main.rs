use baton_aws::invoker::AgentInvokers;
use baton_orchestrate::{handle_request, Api, AsIs};
use baton_route::{InlineRouting, RouteDeps};
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton_aws::telemetry::init_function().await?;
    baton_aws::emf::install("orchestrate")?;
    let classifier = std::sync::Arc::new(AgentInvokers::new(&settings, &clients.config)?);
    let queue_stats = std::sync::Arc::new(clients.queue_stats(&settings));
    let vault = baton_aws::vault::SecretsManagerVault::new(&clients.config);
    let stream_key = baton_aws::streaming::stream_key(&vault, &settings.stream).await?;
    let vault = std::sync::Arc::new(vault);
    // Ready tasks are routed here: a workflow's first level is one queue hop too.
    let routing = RouteDeps::new(
        clients.store(&settings),
        clients.queues(&settings),
        settings.clone(),
    );
    let mut api = Api::new(
        clients.store(&settings),
        InlineRouting::new(routing),
        settings,
    )
    .with_classifier(classifier)
    .with_queue_stats(queue_stats)
    .with_vault(vault);
    if let Some(key) = stream_key {
        api = api.with_stream_key(key);
    }
    run(service_fn(|request| {
        baton_aws::emf::flushed(async { handle_request(&api, request).await.map(AsIs) })
    }))
    .await
}
