use std::process::ExitCode;

use clap::Parser;
use delivery::config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    common::runtime::run("delivery", async {
        common::telemetry::init(&config.log);
        let shutdown = common::shutdown::on_signal();
        delivery::run(config, shutdown).await
    })
}
