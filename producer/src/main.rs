use std::process::ExitCode;

use clap::Parser;
use producer::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    common::telemetry::init(&config.log);
    let shutdown = common::shutdown::on_signal();
    match producer::run(config, shutdown).await {
        Ok(summary) => {
            eprintln!("{summary}");
            if summary.all_delivered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("producer: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
