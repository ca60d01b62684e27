use baton_orchestrate::{handle_request, Api};
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (settings, clients) = baton::telemetry::init_function().await?;
    let api = Api::new(
        clients.store(&settings),
        clients.queues(&settings),
        settings,
    );
    run(service_fn(|request| handle_request(&api, request))).await
}
