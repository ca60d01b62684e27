use baton_aws::prober::HttpHealthProber;
use baton_cleanup::{handle_tick, CleanupDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton_aws::telemetry::init_function().await?;
    baton_aws::emf::install("cleanup")?;
    let deps = CleanupDeps {
        store: clients.store(&settings),
        queue: clients.queues(&settings),
        prober: HttpHealthProber::new(&settings.endpoint_policy)?,
        settings,
    };
    run(service_fn(|event| {
        baton_aws::emf::flushed(handle_tick(&deps, event))
    }))
    .await
}
