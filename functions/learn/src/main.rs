use baton_learn::{handle_batch, LearnDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton::telemetry::init_function().await?;
    baton::metrics::install("learn")?;
    let deps = LearnDeps {
        store: clients.store(&settings),
        settings,
    };
    run(service_fn(|event| {
        baton::metrics::flushed(handle_batch(&deps, event))
    }))
    .await
}
