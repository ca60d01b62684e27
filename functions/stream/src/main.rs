use baton_aws::vault::SecretsManagerVault;
use baton_stream::{handle_request, StreamDeps};
use lambda_http::{run_with_streaming_response, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton_aws::telemetry::init_function().await?;
    let vault = SecretsManagerVault::new(&clients.config);
    let key = baton_aws::streaming::stream_key(&vault, &settings.stream)
        .await?
        .ok_or("BATON_STREAM_KEY_SECRET is not set: the stream function has no key")?;
    let deps = std::sync::Arc::new(StreamDeps {
        store: clients.store(&settings),
        settings,
        key,
    });
    run_with_streaming_response(service_fn(|request| handle_request(deps.clone(), request))).await
}
