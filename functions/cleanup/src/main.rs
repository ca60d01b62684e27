use baton::prober::HttpHealthProber;
use baton_cleanup::{handle_tick, CleanupDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton::telemetry::init_function().await?;
    baton::metrics::install("cleanup")?;
    let deps = CleanupDeps {
        store: clients.store(&settings),
        queue: clients.queues(&settings),
        prober: HttpHealthProber::new(&settings.endpoint_policy)?,
        settings,
    };
    run(service_fn(|event| {
        baton::metrics::flushed(handle_tick(&deps, event))
    }))
    .await
}
