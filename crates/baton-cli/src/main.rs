use baton_cli::ClientCommand;
use clap::{CommandFactory, Parser};

/// Baton's client: submit and follow workflows, inspect and control them, list agents, chat,
/// against a Baton API (the local stack's by default, or a deployed stack's `ApiUrl`).
#[derive(Debug, Parser)]
#[command(name = "baton", version)]
struct Cli {
    #[command(subcommand)]
    command: ClientCommand,
}

#[tokio::main]
async fn main() {
    if let Err(error) = baton_cli::execute(Cli::parse().command, Cli::command).await {
        eprintln!("baton: {error}");
        std::process::exit(1);
    }
}
