//! `chaos`: the full chaos run of issue 4 (see `e2e::chaos`), usually
//! through `deploy/local/chaos.sh`. Prints the summary table on stdout,
//! optionally writes it as JSON, and exits 1 if anything was lost,
//! repeated or left uncommitted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::chaos::{self, ChaosConfig, KillKind};

/// Kills a worker, the master and a Kafka broker (SIGKILL) at seeded
/// random moments while N records stream through, then checks that every
/// valid purchase was notified exactly once.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Records the producer writes.
    #[arg(long, env = "CHAOS_RECORDS", default_value_t = 200_000)]
    records: u64,
    /// Records per second, steady.
    #[arg(long, env = "CHAOS_RATE", default_value_t = 2_000)]
    rate: u32,
    /// Seed of the records, the kill moments and the kill targets.
    #[arg(long, env = "CHAOS_SEED", default_value_t = 42)]
    seed: u64,
    /// The kills, in order (each after the system recovered from the previous).
    #[arg(
        long,
        env = "CHAOS_KILLS",
        value_delimiter = ',',
        default_value = "worker,master,broker"
    )]
    kills: Vec<KillKind>,
    /// Also write the summary as JSON to this file.
    #[arg(long, env = "CHAOS_JSON")]
    json: Option<PathBuf>,
    /// The Kafka cluster (started by `deploy/local/kafka.sh`).
    #[arg(
        long,
        env = "CYBERDAY_TEST_BOOTSTRAP",
        default_value = e2e::DEFAULT_TEST_BOOTSTRAP
    )]
    bootstrap_servers: String,
    /// `KAFKA_PORT_BASE` of that cluster, for `kafka.sh kill N` / `start N`
    /// (default: the lowest bootstrap port).
    #[arg(long, env = "KAFKA_PORT_BASE")]
    kafka_port_base: Option<u16>,
    /// Longest wait, in seconds, for the partitions to move again after a
    /// kill (and for the commits to move at the end).
    #[arg(long, env = "CHAOS_RECOVERY_TIMEOUT", default_value_t = 60)]
    recovery_timeout: u64,
    /// Shortest time, in seconds, a killed broker stays down (longer than the
    /// transactions' 30 s timeout exercises the brokers aborting them).
    #[arg(long, env = "CHAOS_BROKER_DOWN", default_value_t = 5)]
    broker_down: u64,
    /// Prefix of the topic and group; the processes' logs go to
    /// `target/<profile>/e2e-logs/<name>/`.
    #[arg(long, default_value = "chaos")]
    name: String,
}

fn main() -> ExitCode {
    if let Err(e) = run_from_deps() {
        eprintln!("chaos: {e}");
        return ExitCode::from(2);
    }
    let args = Args::parse();
    // The harness reads the cluster's address from here (single-threaded still).
    std::env::set_var("CYBERDAY_TEST_BOOTSTRAP", &args.bootstrap_servers);

    let mut cfg = ChaosConfig::new(&args.name, args.records, args.rate, args.seed);
    cfg.kills = args.kills;
    cfg.kafka_port_base = args.kafka_port_base;
    cfg.recovery_timeout = Duration::from_secs(args.recovery_timeout);
    cfg.broker_down = Duration::from_secs(args.broker_down);
    let summary = chaos::run(&cfg);

    println!("{summary}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary.to_json()).expect("JSON");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("chaos: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if summary.failures().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The harness finds `master`, `worker` and `producer` in the directory
/// above the running executable's (a test runs from `target/<profile>/deps/`).
/// Cargo hard-links `target/<profile>/chaos` to `deps/chaos-<hash>`: when
/// started as the former, run the latter, so both work.
fn run_from_deps() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let dir = exe.parent().ok_or("own directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        return Ok(());
    }
    let me = std::fs::metadata(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    let deps = dir.join("deps");
    let twin = std::fs::read_dir(&deps)
        .map_err(|e| format!("{}: {e}", deps.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("chaos-"))
        .find(|e| {
            e.metadata()
                .is_ok_and(|m| m.ino() == me.ino() && m.dev() == me.dev())
        })
        .ok_or_else(|| {
            format!(
                "{} is not cargo's hard link of {}/chaos-<hash>; run the one in deps/ \
                 (the harness looks for the binaries one directory above it)",
                exe.display(),
                deps.display()
            )
        })?;
    let err = std::process::Command::new(twin.path())
        .args(std::env::args_os().skip(1))
        .exec();
    Err(format!("running {}: {err}", twin.path().display()))
}
