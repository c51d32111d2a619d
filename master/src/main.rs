use std::process::ExitCode;

use clap::Parser;
use master::config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    common::runtime::run("master", async {
        common::telemetry::init(&config.log);
        let shutdown = common::shutdown::on_signal();
        master::run(config, shutdown).await
    })
}
