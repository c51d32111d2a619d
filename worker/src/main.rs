use std::process::ExitCode;

use clap::Parser;
use worker::config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    common::runtime::run("worker", async {
        common::telemetry::init(&config.log);
        let shutdown = common::shutdown::on_signal();
        worker::run(config, shutdown).await
    })
}
