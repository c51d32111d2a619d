use std::process::ExitCode;

use clap::Parser;
use master::config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    let run = async {
        common::telemetry::init(&config.log);
        let shutdown = common::shutdown::on_signal();
        master::run(config, shutdown).await
    };
    match common::runtime::block_on(run) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("master: error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("master: error: starting the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}
