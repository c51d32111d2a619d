use std::process::ExitCode;

use clap::Parser;
use worker::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    common::telemetry::init(&config.log);
    let shutdown = common::shutdown::on_signal();
    match worker::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
