use std::process::ExitCode;

use clap::Parser;
use master::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    common::telemetry::init(&config.log);
    let shutdown = common::shutdown::on_signal();
    match master::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("master: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
