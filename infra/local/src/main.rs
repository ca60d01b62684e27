use baton_local::cli::{self, Cli, Command};
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
    let result = match Cli::parse().command {
        Some(Command::Submit(options)) => cli::submit(options).await,
        Some(Command::Chat(options)) => baton_local::chat::chat(options).await,
        Some(Command::Run(options)) => cli::run(options).await,
        // No subcommand: `run` with its defaults (and the environment's PORT).
        None => match Cli::parse_from(["baton-local", "run"]).command {
            Some(Command::Run(options)) => cli::run(options).await,
            _ => unreachable!("`run` parses as run"),
        },
    };
    if let Err(error) = result {
        eprintln!("baton-local: {error}");
        std::process::exit(1);
    }
}
