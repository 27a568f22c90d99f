//! The `flotilla` binary: parse arguments, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use flotilla::cli::{Cli, LogFormat, Outcome, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube logs every non-2xx answer at ERROR; Flotilla reports them itself, with context.
    let directives = match std::env::var("FLOTILLA_LOG") {
        Ok(directives) if directives.contains("kube_client") => directives,
        Ok(directives) => format!("{directives},kube_client::client::builder=off"),
        Err(_) => "info,kube_client::client::builder=off".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli, &mut std::io::stdout().lock()).map_err(anyhow::Error::from) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
