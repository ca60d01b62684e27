use baton_local::cli::{self, Cli};
use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_target(false)
        .init();
    if let Err(error) = cli::execute(Cli::parse().into_command()).await {
        eprintln!("baton-local: {error}");
        std::process::exit(1);
    }
}
