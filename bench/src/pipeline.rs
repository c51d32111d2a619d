//! The system under test as separate OS processes: a master writing JSON
//! notifications to a file, workers, and the producer; plus the master's
//! Admin service, polled through the generated gRPC client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::pb::admin_client::AdminClient;
use common::pb::{
    AssignmentState, GetStatsRequest, GetStatsResponse, ListAssignmentsRequest, PartitionAssignment,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::procs::{Proc, Usage};

/// The product's binaries, and what this build of the master supports.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub master: PathBuf,
    pub worker: PathBuf,
    pub producer: PathBuf,
    /// Whether `master --help` offers `--notifications-topic`.
    pub notifications_flag: bool,
}

impl Binaries {
    pub fn find(dir: &Path) -> Result<Self> {
        let path = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if !p.exists() {
                bail!(
                    "{} is missing: build with `cargo build --release --bins` (bench/run.sh does)",
                    p.display()
                );
            }
            Ok(p)
        };
        let master = path("master")?;
        let help = Command::new(&master)
            .arg("--help")
            .output()
            .context("master --help")?;
        let notifications_flag =
            String::from_utf8_lossy(&help.stdout).contains("--notifications-topic");
        Ok(Self {
            master,
            worker: path("worker")?,
            producer: path("producer")?,
            notifications_flag,
        })
    }
}

/// Where one pipeline runs: its cluster, topic, group and log folder.
#[derive(Debug, Clone)]
pub struct Setup {
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    /// `--notifications-topic`, when the master supports it.
    pub notifications_topic: Option<String>,
    pub dir: PathBuf,
}

/// A master and its workers.
pub struct Pipeline {
    pub setup: Setup,
    bins: Binaries,
    pub master: Proc,
    pub workers: Vec<Proc>,
    /// Dropped before the master is stopped: the master's graceful shutdown
    /// waits for open connections (up to its drain timeout).
    admin: Option<Admin>,
    url: String,
}

impl Pipeline {
    /// Starts the master and waits until its Admin service answers.
    pub fn start(bins: &Binaries, setup: Setup) -> Result<Self> {
        std::fs::create_dir_all(&setup.dir)?;
        let port = free_port()?;
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--bootstrap-servers".into(),
            setup.bootstrap.clone(),
            "--topic".into(),
            setup.topic.clone(),
            "--group".into(),
            setup.group.clone(),
            "--notify-format".into(),
            "json".into(),
        ];
        if let Some(t) = &setup.notifications_topic {
            args.extend(["--notifications-topic".into(), t.clone()]);
        }
        let mut master = Proc::spawn("master", &setup.dir, &bins.master, &args)?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin = loop {
            master.check_running()?;
            if let Ok(mut admin) = Admin::connect(&url) {
                if admin.assignments().is_ok() {
                    break admin;
                }
            }
            if Instant::now() > deadline {
                bail!("the master did not answer on {url} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Self {
            setup,
            bins: bins.clone(),
            master,
            workers: vec![],
            admin: Some(admin),
            url,
        })
    }

    /// The master's Admin service.
    pub fn admin(&mut self) -> Result<&mut Admin> {
        match &mut self.admin {
            Some(a) => Ok(a),
            None => bail!("the pipeline is stopping"),
        }
    }

    pub fn start_worker(&mut self, id: &str) -> Result<()> {
        let args: Vec<String> = [
            "--master",
            &self.url,
            "--id",
            id,
            "--bootstrap-servers",
            &self.setup.bootstrap,
        ]
        .map(String::from)
        .to_vec();
        // A restarted worker keeps its name; its earlier logs stay beside.
        let runs = self
            .workers
            .iter()
            .filter(|w| w.name.starts_with(id))
            .count();
        let name = if runs == 0 {
            id.to_string()
        } else {
            format!("{id}.{runs}")
        };
        let mut w = Proc::spawn(&name, &self.setup.dir, &self.bins.worker, &args)?;
        w.name = id.into();
        self.workers.push(w);
        Ok(())
    }

    /// The live process of worker `id` (the last one started under that id).
    pub fn worker(&mut self, id: &str) -> Option<&mut Proc> {
        self.workers.iter_mut().rev().find(|w| w.name == id)
    }

    /// Fails if the master or a worker that should be running has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.master.check_running()
    }

    /// Waits until every partition is assigned and `owners` distinct workers own them.
    pub fn wait_assigned(&mut self, owners: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let a = self.admin()?.assignments()?;
            let mut who: Vec<&str> = a.iter().map(|a| a.owner.as_str()).collect();
            who.sort_unstable();
            who.dedup();
            if !a.is_empty()
                && a.iter()
                    .all(|a| a.state == AssignmentState::Assigned as i32)
                && who.len() == owners
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("partitions not assigned to {owners} workers within {timeout:?}: {a:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak RSS and CPU of the master and every live worker, read now.
    pub fn usage(&mut self) -> (Usage, Vec<Usage>) {
        let master = self.master.usage();
        let workers = self
            .workers
            .iter_mut()
            .filter_map(|w| w.exited().is_none().then(|| w.usage()))
            .collect();
        (master, workers)
    }

    /// SIGTERM the workers (they leave), then the master (final commit).
    /// Returns whether all exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.admin = None;
        let mut clean = true;
        for w in &mut self.workers {
            if w.exited().is_none() {
                clean &= w.terminate(Duration::from_secs(15));
            }
        }
        clean & self.master.terminate(Duration::from_secs(20))
    }
}

/// The master's Admin service, on a runtime of its own so the phases can
/// stay plain blocking code.
pub struct Admin {
    rt: tokio::runtime::Runtime,
    client: AdminClient<Channel>,
}

impl Admin {
    pub fn connect(url: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt
            .block_on(AdminClient::connect(url.to_string()))
            .with_context(|| format!("connecting to the master's Admin service at {url}"))?;
        Ok(Self { rt, client })
    }

    pub fn assignments(&mut self) -> Result<Vec<PartitionAssignment>> {
        let r = self
            .rt
            .block_on(self.client.list_assignments(ListAssignmentsRequest {}))
            .context("Admin/ListAssignments")?;
        Ok(r.into_inner().assignments)
    }

    pub fn stats(&mut self) -> Result<GetStatsResponse> {
        let r = self
            .rt
            .block_on(self.client.get_stats(GetStatsRequest {}))
            .context("Admin/GetStats")?;
        Ok(r.into_inner())
    }
}

/// What the producer reported on exit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProducerReport {
    pub sent: u64,
    pub secs: f64,
    /// `sent / secs`, from the producer's own summary line.
    pub events_per_sec: f64,
    pub no_purchase: u64,
    pub short: u64,
    pub long: u64,
    pub invalid: u64,
    pub failed: u64,
}

impl ProducerReport {
    /// Parses `producer: sent N records to T in Xs (Y/s), seed S: a
    /// no_purchase, b short, c long, d invalid; failed f`.
    pub fn parse(stderr: &str) -> Option<Self> {
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("producer: sent "))?;
        let word_before = |suffix: &str| -> Option<u64> {
            let i = line.find(suffix)?;
            line[..i].rsplit([' ', ':']).next()?.parse().ok()
        };
        let sent = line["producer: sent ".len()..]
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        let after_in = &line[line.find(" in ")? + 4..];
        let secs: f64 = after_in.split('s').next()?.parse().ok()?;
        Some(Self {
            sent,
            secs,
            events_per_sec: sent as f64 / secs.max(1e-3),
            no_purchase: word_before(" no_purchase")?,
            short: word_before(" short")?,
            long: word_before(" long")?,
            invalid: word_before(" invalid")?,
            failed: line.rsplit(' ').next()?.parse().ok()?,
        })
    }

    /// Notifications the records call for.
    pub fn purchases(&self) -> u64 {
        self.short + self.long
    }
}

/// One producer process to start.
pub struct ProducerSpec<'a> {
    /// Its output goes to `<dir>/<name>.stdout|.stderr`.
    pub name: &'a str,
    pub topic: &'a str,
    /// Events/s; 0 = as fast as the brokers take them.
    pub rate: u32,
    /// `None`: until stopped.
    pub count: Option<u64>,
    pub seed: u64,
}

/// Starts the producer (`acks=all`, idempotent: its defaults) in the background.
pub fn spawn_producer(
    bins: &Binaries,
    bootstrap: &str,
    dir: &Path,
    spec: ProducerSpec,
) -> Result<Proc> {
    let mut args: Vec<String> = [
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        spec.topic,
        "--rate",
        &spec.rate.to_string(),
        "--seed",
        &spec.seed.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(n) = spec.count {
        args.extend(["--count".into(), n.to_string()]);
    }
    Proc::spawn(spec.name, dir, &bins.producer, &args)
}

/// Waits for the producer to finish and returns its report.
pub fn finish_producer(p: &mut Proc, timeout: Duration) -> Result<ProducerReport> {
    let status = match p.wait_exit(timeout) {
        Some(s) => s,
        None => {
            p.terminate(Duration::from_secs(70));
            bail!("the producer did not finish within {timeout:?}");
        }
    };
    let stderr = std::fs::read_to_string(&p.stderr).unwrap_or_default();
    let report = ProducerReport::parse(&stderr).with_context(|| {
        format!(
            "no summary from the producer ({status}):\n{}",
            crate::procs::tail(&p.stderr, 10)
        )
    })?;
    if !status.success() || report.failed > 0 {
        bail!(
            "the producer failed ({status}, {} undelivered):\n{}",
            report.failed,
            crate::procs::tail(&p.stderr, 10)
        );
    }
    Ok(report)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_producer_summary() {
        let text = "2025 INFO producing\nproducer: sent 10000 records to DataTopic in 1.4s (7110/s), seed 42: 2999 no_purchase, 4913 short, 1973 long, 115 invalid; failed 0\n";
        let r = ProducerReport::parse(text).unwrap();
        assert_eq!(
            (r.sent, r.no_purchase, r.short, r.long, r.invalid, r.failed),
            (10000, 2999, 4913, 1973, 115, 0)
        );
        assert!((r.secs - 1.4).abs() < 1e-9);
        assert_eq!(r.purchases(), 6886);
        assert!(ProducerReport::parse("producer: error: no brokers").is_none());
    }
}
