use baton_learn::{handle_batch, LearnDeps};
use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton_aws::telemetry::init_function().await?;
    baton_aws::emf::install("learn")?;
    let deps = LearnDeps {
        store: clients.store(&settings),
        settings,
    };
    run(service_fn(|event| {
        baton_aws::emf::flushed(handle_batch(&deps, event))
    }))
    .await
}
