//! The measurements, each a plain blocking function over real processes:
//! fill the topic, the bare-consumer ceiling, the pipeline's drain, latency
//! at a fixed producer rate, and failover after SIGKILL of a worker.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::pb::AssignmentState;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::Settings;
use crate::kafka::{self, CommittedReader, Offsets};
use crate::pipeline::{self, Binaries, Pipeline, ProducerReport, ProducerSpec, Setup};
use crate::procs::{self, Proc, Usage};
use crate::stats::{Percentiles, Split};

/// What every phase needs: the settings, the binaries, names and folders.
#[derive(Clone)]
pub struct Bench {
    pub settings: Settings,
    pub bins: Binaries,
    /// Prefix of every topic and group of this invocation, e.g. `bench-2025-…`.
    pub prefix: String,
    pub work_dir: PathBuf,
    pub notifications_topic: Option<String>,
    pub broker_pids: Vec<u32>,
    pub keep_notifications: bool,
    /// Leave each run's topics in the cluster (deleted after the run).
    pub keep_topics: bool,
}

/// The pre-filled topic the ceiling and the drain read.
#[derive(Debug, Clone, Serialize)]
pub struct Filled {
    pub topic: String,
    pub producer: ProducerReport,
    pub end_offsets: Offsets,
}

/// One drain of the pre-filled topic by master + 2 workers.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub group: String,
    /// Workers started → the group's committed offsets equal the end offsets.
    pub secs: f64,
    pub events_per_sec: f64,
    /// Workers started → `GetStats.records_processed` reached every record
    /// (before the last commit).
    pub processed_secs: Option<f64>,
    /// This run's drain rate over the ceiling measured just before it.
    pub ratio_to_ceiling: Option<f64>,
    pub notifications: u64,
    pub expected_notifications: u64,
    pub duplicates_suppressed: u64,
    pub master: Usage,
    pub workers: Vec<Usage>,
    pub broker_cpu_secs: Option<f64>,
    pub clean_exit: bool,
}

/// One run at a fixed producer rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    pub topic: String,
    /// 1, 2, …; 0 for the warm-up run.
    pub run: usize,
    /// Produce → notification line (the master's `latency_ms`), of the
    /// records of the measured window (after the ramp).
    pub latency: Percentiles,
    /// The same, of the ramp's records: the first `ramp_secs` at the rate.
    pub ramp_latency: Percentiles,
    /// Produce → received by a bare consumer tailing the same topic, of
    /// the measured window (`--kafka-tail` only).
    pub kafka_latency: Option<Percentiles>,
    pub producer: ProducerReport,
    /// The producer sent everything within 5% (+1 s for its connection and
    /// final flush) of the planned duration.
    pub kept_rate: bool,
    /// The committed offsets reached the end within 120 s of the producer's end.
    pub caught_up: bool,
    /// Producer finished → committed offsets at the end.
    pub catch_up_secs: Option<f64>,
    pub notifications: u64,
    pub expected_notifications: u64,
    pub master: Usage,
    pub workers: Vec<Usage>,
    pub broker_cpu_secs: Option<f64>,
    pub clean_exit: bool,
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
}

/// One run of Kafka alone at a fixed producer rate.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRun {
    pub topic: String,
    pub rate: u32,
    /// Produce → received by a bare consumer tailing the topic, of the
    /// records of the measured window (after the ramp).
    pub latency: Percentiles,
    /// The same, of the ramp's records.
    pub ramp_latency: Percentiles,
    pub kept_rate: bool,
    /// Records the tail consumer saw (ramp and measured window).
    pub received: u64,
    pub producer: ProducerReport,
    pub broker_cpu_secs: Option<f64>,
}

/// The failover series.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverRuns {
    /// SIGKILL → every partition of the killed worker assigned to the
    /// survivor under a new generation and past the offset it was assigned at.
    pub progress_secs: Vec<Option<f64>>,
    /// SIGKILL → those partitions assigned to the survivor (no progress yet).
    pub reassigned_secs: Vec<Option<f64>>,
    pub master: Usage,
    pub workers: Vec<Usage>,
    pub clean_exit: bool,
}

/// The notifications a latency run measures: those of records at or past
/// `from` (after the warm-up), split at `cut` (the ramp's end).
struct Window<'a> {
    from: &'a Offsets,
    cut: &'a Offsets,
    split: &'a mut Split,
}

/// What a [`Bench::load`] produces: `rate` events/s for the ramp and
/// `secs` more, in run `run` (0: the warm-up run).
#[derive(Clone, Copy)]
struct Schedule {
    rate: u32,
    run: usize,
    secs: f64,
}

/// Whose latency a [`Bench::load`] measures.
#[derive(Clone, Copy)]
enum Measured {
    /// The pipeline's notifications (master + 2 workers running).
    Pipeline,
    /// A bare consumer's, nothing else running.
    KafkaAlone,
}

/// What [`Bench::load`] leaves running or measured.
struct Load {
    producer: ProducerReport,
    tail: Option<Tail>,
    /// Where the measured window starts: the topic's end offsets once the
    /// producer had run at its rate for the ramp.
    cut: Offsets,
    /// The brokers' CPU seconds when the measured window started.
    cpu_before: Option<f64>,
}

impl Load {
    /// Stops the tail consumer if there is one: its latencies, and the
    /// brokers' CPU seconds since the measured window started.
    fn finish(self, bench: &Bench) -> Result<(Option<Split>, Option<f64>)> {
        let cpu = bench.broker_cpu().zip(self.cpu_before).map(|(a, b)| a - b);
        let h = self.tail.map(Tail::finish).transpose()?;
        Ok((h, cpu))
    }
}

/// The bare consumer tailing the measured topic.
struct Tail {
    handle: std::thread::JoinHandle<Result<Split>>,
    stop: Arc<AtomicBool>,
    cut: Arc<OnceLock<Offsets>>,
}

impl Tail {
    /// Stops the consumer: its latencies.
    fn finish(self) -> Result<Split> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(h) => h,
            Err(_) => bail!("the tail consumer panicked"),
        }
    }
}

impl Bench {
    fn setup(&self, topic: &str, group: &str, dir: &str) -> Setup {
        Setup {
            bootstrap: self.settings.bootstrap_servers.clone(),
            topic: topic.into(),
            group: group.into(),
            notifications_topic: self.notifications_topic.clone(),
            dir: self.work_dir.join(dir),
        }
    }

    fn broker_cpu(&self) -> Option<f64> {
        if self.broker_pids.is_empty() {
            return None;
        }
        self.broker_pids
            .iter()
            .map(|p| procs::cpu_secs(*p))
            .sum::<Option<f64>>()
    }

    /// Deletes a finished run's topic and its dead-letter topic, so every
    /// run meets the same cluster: each partition left behind is one more
    /// the followers fetch and the brokers track.
    pub fn done_with(&self, topic: &str) {
        if self.keep_topics {
            return;
        }
        if let Err(e) = kafka::delete_topics(&self.settings.bootstrap_servers, topic) {
            tracing::warn!(topic, error = %format!("{e:#}"), "could not delete a run's topics");
        }
    }

    /// Warms the cluster up, measuring nothing: 100,000 records filled and
    /// drained by the pipeline, then the pipeline at 10,000 events/s for
    /// `secs` (after the ramp). Returns a line for the report's notes.
    pub fn warm_cluster(&self, secs: f64) -> Result<String> {
        const RECORDS: u64 = 100_000;
        const RATE: u32 = 10_000;
        let small = Bench {
            settings: Settings {
                records: RECORDS,
                ..self.settings.clone()
            },
            prefix: format!("{}-warm", self.prefix),
            work_dir: self.work_dir.join("warm-up"),
            ..self.clone()
        };
        tracing::info!(
            records = RECORDS,
            rate = RATE,
            secs,
            "warming the cluster up (not measured)"
        );
        let filled = small.fill()?;
        let drained = small.drain(&filled, 0);
        small.done_with(&filled.topic);
        let drained = drained?;
        let run = small.latency(RATE, 0, secs)?;
        Ok(format!(
            "cluster warm-up before the measurements (not in any figure): {} records \
             drained at {:.0} ev/s; {} ev/s for {secs} s after a {} s ramp: p99 {} ms",
            RECORDS, drained.events_per_sec, RATE, self.settings.ramp_secs, run.latency.p99_ms
        ))
    }

    /// Writes `records` records into a fresh topic, as fast as the brokers take them.
    pub fn fill(&self) -> Result<Filled> {
        let s = &self.settings;
        let topic = format!("{}-data", self.prefix);
        kafka::create_topic(&s.bootstrap_servers, &topic, s.partitions)?;
        let dir = self.work_dir.join("fill");
        std::fs::create_dir_all(&dir)?;
        tracing::info!(topic, records = s.records, "filling the topic");
        let mut p = pipeline::spawn_producer(
            &self.bins,
            &s.bootstrap_servers,
            &dir,
            ProducerSpec {
                name: "producer",
                topic: &topic,
                rate: 0,
                count: Some(s.records),
                seed: s.seed,
            },
        )?;
        let producer = pipeline::finish_producer(&mut p, Duration::from_secs(1800))?;
        let end_offsets = kafka::end_offsets(&s.bootstrap_servers, &topic)?;
        let total: i64 = end_offsets.values().sum();
        if total as u64 != s.records {
            bail!("{topic} holds {total} records, expected {}", s.records);
        }
        tracing::info!(
            secs = producer.secs,
            rate = producer.events_per_sec as u64,
            "filled"
        );
        Ok(Filled {
            topic,
            producer,
            end_offsets,
        })
    }

    pub fn ceiling(&self, filled: &Filled, run: usize) -> Result<kafka::CeilingRun> {
        let group = format!("{}-ceiling-{run}", self.prefix);
        let r = kafka::ceiling(
            &self.settings.bootstrap_servers,
            &filled.topic,
            &filled.end_offsets,
            &group,
        )?;
        tracing::info!(
            run,
            rate = r.events_per_sec as u64,
            secs = r.secs,
            "ceiling"
        );
        Ok(r)
    }

    /// Master + 2 workers drain the pre-filled topic under a fresh group.
    pub fn drain(&self, filled: &Filled, run: usize) -> Result<DrainRun> {
        let s = &self.settings;
        let group = format!("{}-drain-{run}", self.prefix);
        let setup = self.setup(&filled.topic, &group, &format!("drain-{run}"));
        let cpu_before = self.broker_cpu();
        let mut p = Pipeline::start(&self.bins, setup)?;
        let committed = CommittedReader::new(
            &s.bootstrap_servers,
            &filled.topic,
            &group,
            &filled.end_offsets,
        )?;
        let timeout = Duration::from_secs(300.max(s.records / 500));
        let started = Instant::now();
        p.start_worker("w1")?;
        p.start_worker("w2")?;
        let mut processed_secs = None;
        loop {
            p.check_running()?;
            if processed_secs.is_none() && p.admin()?.stats()?.records_processed >= s.records {
                processed_secs = Some(started.elapsed().as_secs_f64());
            }
            if committed.reached(&filled.end_offsets)? {
                // Everything committed was processed; the stats read just
                // before can predate a commit that then covered the rest.
                processed_secs.get_or_insert_with(|| started.elapsed().as_secs_f64());
                break;
            }
            if started.elapsed() > timeout {
                bail!(
                    "drain {run}: committed offsets {:?} did not reach {:?} within {timeout:?}; logs in {}",
                    committed.read()?,
                    filled.end_offsets,
                    p.setup.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = started.elapsed().as_secs_f64();
        let stats = p.admin()?.stats()?;
        let (master, workers) = p.usage();
        let broker_cpu_secs = self.broker_cpu().zip(cpu_before).map(|(a, b)| a - b);
        let clean_exit = p.stop();
        let notifications = self.count_notifications(&p.master.stdout, None)?.0;
        tracing::info!(run, rate = (s.records as f64 / secs) as u64, secs, "drain");
        Ok(DrainRun {
            group,
            secs,
            events_per_sec: s.records as f64 / secs,
            processed_secs,
            ratio_to_ceiling: None,
            notifications,
            expected_notifications: filled.producer.purchases(),
            duplicates_suppressed: stats.duplicates_suppressed,
            master,
            workers,
            broker_cpu_secs,
            clean_exit,
        })
    }

    /// The producer at `rate` for the ramp and `secs` more into a fresh
    /// topic, with master + 2 workers already running. Run 0 is the
    /// warm-up run.
    pub fn latency(&self, rate: u32, run: usize, secs: f64) -> Result<LatencyRun> {
        let s = &self.settings;
        let topic = format!("{}-lat{rate}-{run}", self.prefix);
        kafka::create_topic(&s.bootstrap_servers, &topic, s.partitions)?;
        let group = format!("{topic}-group");
        let mut p = Pipeline::start(&self.bins, self.setup(&topic, &group, &topic))?;
        p.start_worker("w1")?;
        p.start_worker("w2")?;
        p.wait_assigned(2, Duration::from_secs(60))?;
        let warm = self.warm_up(&mut p, &topic, &group)?;
        let dir = p.setup.dir.clone();
        let schedule = Schedule { rate, run, secs };
        let load = self.load(&dir, &topic, schedule, &warm, Measured::Pipeline)?;
        let report = load.producer.clone();
        let produced_at = Instant::now();
        let end = kafka::end_offsets(&s.bootstrap_servers, &topic)?;
        let committed = CommittedReader::new(&s.bootstrap_servers, &topic, &group, &end)?;
        let mut catch_up_secs = None;
        while produced_at.elapsed() < Duration::from_secs(120) {
            p.check_running()?;
            if committed.reached(&end)? {
                catch_up_secs = Some(produced_at.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (master, workers) = p.usage();
        let cut = load.cut.clone();
        let (tailed, broker_cpu_secs) = load.finish(self)?;
        let kafka_latency = tailed.as_ref().map(|t| Percentiles::of(&t.measured));
        let clean_exit = p.stop();
        self.done_with(&topic);
        let mut split = Split::new();
        let (notifications, _) = self.count_notifications(
            &p.master.stdout,
            Some(Window {
                from: &warm,
                cut: &cut,
                split: &mut split,
            }),
        )?;
        let latency = Percentiles::of(&split.measured);
        let ramp_latency = Percentiles::of(&split.ramp);
        let kept_rate = self.kept_rate(&report, secs);
        tracing::info!(
            rate,
            achieved = report.events_per_sec as u64,
            p50 = latency.p50_ms,
            p99 = latency.p99_ms,
            max = latency.max_ms,
            ramp_p99 = ramp_latency.p99_ms,
            kafka_p50 = kafka_latency.as_ref().map(|k| k.p50_ms),
            kafka_p99 = kafka_latency.as_ref().map(|k| k.p99_ms),
            "latency"
        );
        Ok(LatencyRun {
            topic,
            run,
            latency,
            ramp_latency,
            kafka_latency,
            kept_rate,
            caught_up: catch_up_secs.is_some(),
            catch_up_secs,
            notifications,
            expected_notifications: report.purchases(),
            producer: report,
            master,
            workers,
            broker_cpu_secs,
            clean_exit,
            histogram: Some(split.measured),
        })
    }

    /// Kafka alone at `rate`: the producer and a bare consumer tailing the
    /// topic, no pipeline running. The floor the latency phase sits on,
    /// without the pipeline's processes competing for the cores.
    pub fn floor(&self, rate: u32, run: usize) -> Result<FloorRun> {
        let s = &self.settings;
        let topic = format!("{}-floor{rate}-{run}", self.prefix);
        kafka::create_topic(&s.bootstrap_servers, &topic, s.partitions)?;
        let dir = self.work_dir.join(&topic);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        // As in the latency phase, the measured records come after a
        // warm-up: not the first moments of a topic created just now.
        self.produce_warm_up(&dir, &topic)?;
        let start = kafka::end_offsets(&s.bootstrap_servers, &topic)?;
        let secs = s.phase_secs;
        let schedule = Schedule { rate, run, secs };
        let load = self.load(&dir, &topic, schedule, &start, Measured::KafkaAlone)?;
        let report = load.producer.clone();
        // The last records' way to the tail.
        std::thread::sleep(Duration::from_secs(2));
        let (tailed, broker_cpu_secs) = load.finish(self)?;
        let split = tailed.context("the Kafka-alone run has a tail consumer")?;
        self.done_with(&topic);
        let received = split.ramp.len() + split.measured.len();
        let latency = Percentiles::of(&split.measured);
        let ramp_latency = Percentiles::of(&split.ramp);
        tracing::info!(
            rate,
            p50 = latency.p50_ms,
            p99 = latency.p99_ms,
            max = latency.max_ms,
            ramp_p99 = ramp_latency.p99_ms,
            received,
            "floor"
        );
        Ok(FloorRun {
            topic,
            rate,
            latency,
            ramp_latency,
            kept_rate: self.kept_rate(&report, secs),
            received,
            producer: report,
            broker_cpu_secs,
        })
    }

    /// Kills worker `w2` `runs` times (restarting it in between) while the
    /// producer runs, timing how long until its partitions progress under `w1`.
    pub fn failover(&self) -> Result<FailoverRuns> {
        let s = &self.settings;
        let topic = format!("{}-failover", self.prefix);
        kafka::create_topic(&s.bootstrap_servers, &topic, s.partitions)?;
        let mut p = Pipeline::start(
            &self.bins,
            self.setup(&topic, &format!("{topic}-group"), "failover"),
        )?;
        p.start_worker("w1")?;
        p.start_worker("w2")?;
        p.wait_assigned(2, Duration::from_secs(60))?;
        let mut producer = pipeline::spawn_producer(
            &self.bins,
            &s.bootstrap_servers,
            &p.setup.dir,
            ProducerSpec {
                name: "producer",
                topic: &topic,
                rate: s.failover_rate,
                count: None,
                seed: s.seed,
            },
        )?;
        let mut progress_secs = vec![];
        let mut reassigned_secs = vec![];
        for run in 0..s.failover_runs {
            let victim = wait_steady(&mut p, "w2", Duration::from_secs(60))?;
            producer.check_running()?;
            let killed_at = Instant::now();
            p.worker("w2").context("worker w2")?.kill9();
            let (reassigned, progressed) =
                wait_taken_over(&mut p, &victim, "w1", killed_at, Duration::from_secs(30))?;
            let progress = progressed.map(|d| d.as_secs_f64());
            tracing::info!(
                run,
                partitions = ?victim.keys().collect::<Vec<_>>(),
                reassigned_secs = reassigned.map(|d| d.as_secs_f64()),
                progress_secs = progress,
                "failover"
            );
            progress_secs.push(progress);
            reassigned_secs.push(reassigned.map(|d| d.as_secs_f64()));
            p.start_worker("w2")?;
        }
        let (master, workers) = p.usage();
        producer.terminate(Duration::from_secs(70));
        let clean_exit = p.stop();
        if !self.keep_notifications {
            let _ = std::fs::remove_file(&p.master.stdout);
        }
        Ok(FailoverRuns {
            progress_secs,
            reassigned_secs,
            master,
            workers,
            clean_exit,
        })
    }

    /// 500 records at 500/s into `topic`, waiting until they are confirmed.
    fn produce_warm_up(&self, dir: &Path, topic: &str) -> Result<()> {
        let s = &self.settings;
        let mut producer = pipeline::spawn_producer(
            &self.bins,
            &s.bootstrap_servers,
            dir,
            ProducerSpec {
                name: "warm-up",
                topic,
                rate: 500,
                count: Some(500),
                seed: s.seed + 1,
            },
        )?;
        pipeline::finish_producer(&mut producer, Duration::from_secs(120))?;
        Ok(())
    }

    /// The measured load of a latency or Kafka-alone run: a bare consumer
    /// tailing `topic` from `start` (for the pipeline only with
    /// `--kafka-tail`), then the producer at `rate` for the ramp and the
    /// `secs` more, until it is done. The measured window starts at
    /// the topic's end offsets once the ramp is over: the first seconds of
    /// a run (a rate step from nothing, new clients) are reported apart.
    fn load(
        &self,
        dir: &Path,
        topic: &str,
        Schedule { rate, run, secs }: Schedule,
        start: &Offsets,
        measured: Measured,
    ) -> Result<Load> {
        let s = &self.settings;
        let (tail, what) = match measured {
            Measured::Pipeline => (s.kafka_tail, "latency phase"),
            Measured::KafkaAlone => (true, "kafka alone"),
        };
        let tail = if tail {
            let stop = Arc::new(AtomicBool::new(false));
            let cut = Arc::new(OnceLock::new());
            let handle = kafka::spawn_tail(
                &s.bootstrap_servers,
                topic,
                start,
                &format!("{topic}-tail"),
                stop.clone(),
                cut.clone(),
            )?;
            Some(Tail { handle, stop, cut })
        } else {
            None
        };
        let count = (f64::from(rate) * (s.ramp_secs + secs)).round() as u64;
        tracing::info!(rate, run, ramp_secs = s.ramp_secs, secs, count, "{what}");
        let mut producer = pipeline::spawn_producer(
            &self.bins,
            &s.bootstrap_servers,
            dir,
            ProducerSpec {
                name: "producer",
                topic,
                rate,
                count: Some(count),
                seed: s.seed + u64::from(rate) + run as u64,
            },
        )?;
        let spawned = Instant::now();
        let cut = match self.ramp_cut(topic, spawned, &mut producer) {
            Ok(cut) => cut,
            Err(e) => {
                producer.terminate(Duration::from_secs(10));
                if let Some(t) = tail {
                    let _ = t.finish();
                }
                return Err(e);
            }
        };
        if let Some(t) = &tail {
            let _ = t.cut.set(cut.clone());
        }
        let cpu_before = self.broker_cpu();
        let timeout = Duration::from_secs_f64((s.ramp_secs + secs) * 3.0 + 120.0);
        let producer = pipeline::finish_producer(&mut producer, timeout)?;
        Ok(Load {
            producer,
            tail,
            cut,
            cpu_before,
        })
    }

    /// Waits out the ramp (from the producer's start) and returns where the
    /// measured window starts: the topic's end offsets at that moment.
    fn ramp_cut(&self, topic: &str, spawned: Instant, producer: &mut Proc) -> Result<Offsets> {
        let ramp = Duration::from_secs_f64(self.settings.ramp_secs);
        while spawned.elapsed() < ramp {
            if let Some(status) = producer.exited() {
                bail!("the producer ended during the ramp ({status})");
            }
            std::thread::sleep((ramp - spawned.elapsed()).min(Duration::from_millis(100)));
        }
        kafka::end_offsets(&self.settings.bootstrap_servers, topic)
    }

    /// The producer sent everything within 5% (+1 s for its connection and
    /// final flush) of the planned ramp and `secs`.
    fn kept_rate(&self, report: &ProducerReport, secs: f64) -> bool {
        report.secs <= (self.settings.ramp_secs + secs) * 1.05 + 1.0
    }

    /// Warms the pipeline up before a latency run: 500 records at 500/s,
    /// until the group has committed them, so the first transactions and
    /// connections are not measured. Returns where the measured records start.
    fn warm_up(&self, p: &mut Pipeline, topic: &str, group: &str) -> Result<Offsets> {
        let s = &self.settings;
        self.produce_warm_up(&p.setup.dir, topic)?;
        let end = kafka::end_offsets(&s.bootstrap_servers, topic)?;
        let committed = CommittedReader::new(&s.bootstrap_servers, topic, group, &end)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !committed.reached(&end)? {
            p.check_running()?;
            if Instant::now() > deadline {
                bail!("the warm-up records were not committed within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(end)
    }

    /// Counts the master's JSON lines. With a window, only lines at or past
    /// its `from` offsets count, and their `latency_ms` is recorded, split
    /// at its cut. Removes the file unless asked to keep it. Returns (lines
    /// counted, lines that did not parse).
    fn count_notifications(
        &self,
        path: &Path,
        mut measure: Option<Window<'_>>,
    ) -> Result<(u64, u64)> {
        #[derive(serde::Deserialize)]
        struct Line {
            partition: i32,
            offset: i64,
            latency_ms: u64,
        }
        let file = File::open(path).with_context(|| path.display().to_string())?;
        let (mut lines, mut bad) = (0u64, 0u64);
        for line in BufReader::with_capacity(1 << 20, file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let Some(w) = measure.as_mut() else {
                lines += 1;
                continue;
            };
            match serde_json::from_str::<Line>(&line) {
                Ok(l) if l.offset >= w.from.get(&l.partition).copied().unwrap_or(0) => {
                    lines += 1;
                    w.split
                        .record(Some(w.cut), l.partition, l.offset, l.latency_ms);
                }
                Ok(_) => {}
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(bad, path = %path.display(), "lines without a latency_ms");
        }
        if !self.keep_notifications {
            let _ = std::fs::remove_file(path);
        }
        Ok((lines, bad))
    }
}

/// Waits until `worker` owns partitions that are assigned and advancing;
/// returns them with their generations.
fn wait_steady(p: &mut Pipeline, worker: &str, timeout: Duration) -> Result<BTreeMap<i32, u64>> {
    let deadline = Instant::now() + timeout;
    loop {
        p.check_running()?;
        p.wait_assigned(2, deadline.saturating_duration_since(Instant::now()))?;
        let before = p.admin()?.assignments()?;
        std::thread::sleep(Duration::from_millis(300));
        let after = p.admin()?.assignments()?;
        let mine: Vec<_> = after.iter().filter(|a| a.owner == worker).collect();
        let advancing = !mine.is_empty()
            && mine.iter().all(|a| {
                a.state == AssignmentState::Assigned as i32
                    && before.iter().any(|b| {
                        b.partition == a.partition
                            && b.generation == a.generation
                            && b.owner == a.owner
                            && a.next_offset > b.next_offset
                    })
            });
        if advancing {
            return Ok(mine.iter().map(|a| (a.partition, a.generation)).collect());
        }
        if Instant::now() > deadline {
            bail!("{worker}'s partitions were not advancing within {timeout:?}: {after:?}");
        }
    }
}

/// Polls the assignment every 10 ms after a kill. Returns (all `victim`
/// partitions assigned to `survivor` under a newer generation, and all of
/// them past the offset they had when first seen so); `None` on timeout.
fn wait_taken_over(
    p: &mut Pipeline,
    victim: &BTreeMap<i32, u64>,
    survivor: &str,
    started: Instant,
    timeout: Duration,
) -> Result<(Option<Duration>, Option<Duration>)> {
    let mut base: BTreeMap<i32, i64> = BTreeMap::new();
    let mut reassigned = None;
    while started.elapsed() < timeout {
        p.check_running()?;
        let now = p.admin()?.assignments()?;
        let mut progressed = 0;
        for (part, old_gen) in victim {
            let Some(a) = now.iter().find(|a| a.partition == *part) else {
                continue;
            };
            if a.owner == survivor
                && a.state == AssignmentState::Assigned as i32
                && a.generation > *old_gen
            {
                let at = *base.entry(*part).or_insert(a.next_offset);
                if a.next_offset > at {
                    progressed += 1;
                }
            }
        }
        if reassigned.is_none() && base.len() == victim.len() {
            reassigned = Some(started.elapsed());
        }
        if progressed == victim.len() {
            return Ok((reassigned, Some(started.elapsed())));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((reassigned, None))
}
