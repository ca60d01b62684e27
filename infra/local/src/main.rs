use baton_local::cli;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_target(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("submit") => cli::submit(&args[1..]).await,
        Some("run") => run(&args[1..]).await,
        _ => run(&args).await,
    };
    if let Err(error) = result {
        eprintln!("baton-local: {error}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    cli::run(cli::RunOptions::parse(args)?).await
}
