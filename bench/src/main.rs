use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use bench::config::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    common::telemetry::init(&args.log);
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cyberday-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Measures, prints the table, writes the JSON; false if a phase failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    let results = bench::run(args)?;
    print!("{}", results.table());
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| bench::default_json_path(&results.date));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    Ok(results.errors.is_empty())
}
