//! Benchmark (not part of the test suite): e-mails per second through a
//! real Mailpit, the delivery service against Mailpit's own ceiling measured
//! in the same run by a bare loop of the same SMTP client (lettre's pooled
//! transport, the same pool size and concurrency, no Kafka), then the
//! delivery latency (Kafka timestamp → Mailpit's 250) at a fixed rate.
//!
//! On a cluster of its own (a test cluster that has run the suite carries
//! hundreds of topics, and its brokers then spend most of the two cores on
//! replication), with release binaries built:
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! KAFKA_PORT_BASE=29092 deploy/local/kafka.sh up
//! CYBERDAY_TEST_BOOTSTRAP=127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094 \
//!   target/release/examples/throughput [RECORDS] [RATE]     # defaults 20000, 100
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::classify::Kind;
use delivery::email::Mailer;
use delivery::notice::Notice;
use e2e::{free_port, out_dir, Proc, Scrape};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use support::*;

/// The delivery's defaults (`--smtp-pool-size`, `--max-in-flight`), which
/// the bare loop copies.
const POOL: u32 = 8;
const IN_FLIGHT: usize = 128;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(20_000, |a| a.parse().expect("RECORDS"));
    let rate: u64 = args.next().map_or(100, |a| a.parse().expect("RATE"));
    let (p, expected) = filled_notifications("delivery-bench", records, 77);
    let want = expected.len() as u64;
    println!(
        "bench: {records} records, {want} purchases in {}",
        p.notifications_topic
    );

    // 1. The ceiling: a bare lettre loop into a fresh Mailpit.
    let mut mp = Mailpit::start(&p.dir, "mailpit-ceiling", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let notices: Vec<Notice> = expected
        .iter()
        .map(|(folio, (kind, purchase))| Notice {
            kind: *kind,
            folio: folio.clone(),
            nombre: purchase.nombre.clone(),
            email: purchase.email.clone(),
            productovisto: purchase.productovisto.clone(),
            taps: purchase.taps.unwrap_or(1.0),
        })
        .collect();
    let url = mp.smtp_url();
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The same observer as the delivery phase's: Mailpit's API asked for
        // its total every 250 ms, so both phases share its cost.
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = mp.api.total();
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        rt.block_on(async {
            let mailer = Mailer::new(
                &url,
                None,
                POOL,
                Duration::from_secs(10),
                "Cyberday <b@cyberday.example>",
            )
            .unwrap();
            let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut sends = tokio::task::JoinSet::new();
            for n in notices {
                let permit = permits.clone().acquire_owned().await.unwrap();
                let m = mailer.clone();
                sends.spawn(async move {
                    let message = m.message(&n).expect("a message");
                    m.send(message).await.expect("Mailpit takes it");
                    drop(permit);
                });
            }
            while sends.join_next().await.is_some() {}
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let ceiling = want as f64 / started.elapsed().as_secs_f64();
    assert_eq!(mp.api.total(), want);
    mp.proc.kill9();

    // 2. The delivery service draining the same notifications.
    let mut mp = Mailpit::start(&p.dir, "mailpit-delivery", &[]);
    let metrics_port = free_port();
    let started = Instant::now();
    let mut d = Proc::spawn(
        "delivery-drain",
        &p.dir,
        &delivery_bin(),
        &delivery_args(&p, &mp.smtp_url(), metrics_port, &[]),
    );
    // From the first e-mail: the group's join is not the sending rate.
    wait_for(
        "the first e-mail",
        Duration::from_secs(120),
        &mut [&mut d],
        || mp.api.total() > 0,
    );
    let first = Instant::now();
    wait_for(
        "every e-mail",
        Duration::from_secs(600),
        &mut [&mut d],
        || mp.api.total() >= want,
    );
    let drained = want as f64 / first.elapsed().as_secs_f64();
    println!(
        "bench: ceiling (bare lettre loop, pool {POOL}, {IN_FLIGHT} in flight) {ceiling:.0} e-mails/s; \
         delivery {drained:.0} e-mails/s = {:.2} of it (first e-mail {:.1} s after the start)",
        drained / ceiling,
        (first - started).as_secs_f64()
    );
    d.terminate(Duration::from_secs(30));
    mp.proc.kill9();

    // 3. Latency at a fixed rate: notifications written at RATE/s, as the
    // master would, while a delivery process runs.
    let topic = e2e::unique("delivery-bench-rate");
    p.cluster.create_topic(&topic, 6);
    let mut mp = Mailpit::start(&p.dir, "mailpit-rate", &[]);
    let metrics_port = free_port();
    let args = vec![
        "--bootstrap-servers".into(),
        p.cluster.bootstrap.clone(),
        "--notifications-topic".into(),
        topic.clone(),
        "--group".into(),
        format!("{topic}-delivery"),
        "--smtp-url".into(),
        mp.smtp_url(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    let dir = out_dir("delivery-bench-rate");
    let mut d = Proc::spawn("delivery-rate", &dir, &delivery_bin(), &args);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.cluster.bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    // Wait for the group's assignment with a first record.
    let send = |i: u64| {
        let folio = format!("BEN-{:04}", i % 10_000);
        let kind = if i % 3 == 0 { Kind::Long } else { Kind::Short };
        let value = format!(
            r#"{{"kind":"{}","folio":"{folio}","nombre":"Sofía","email":"sofia{i}@mail.com","productovisto":"Colchón","taps":12.5,"partition":0,"offset":{i},"worker":"bench","latency_ms":0}}"#,
            kind.as_str()
        );
        producer
            .send(BaseRecord::to(&topic).key(&folio).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.poll(Duration::ZERO);
    };
    send(0);
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_for(
        "the warm-up e-mail",
        Duration::from_secs(120),
        &mut [&mut d],
        || mp.api.total() >= 1,
    );
    let seconds = 30;
    let total = rate * seconds;
    let start = Instant::now();
    for i in 1..=total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send(i);
    }
    if let Err(e) = producer.flush(Duration::from_secs(60)) {
        panic!(
            "{} notifications not written after 60 s: {e}",
            producer.in_flight_count()
        );
    }
    wait_for(
        "the fixed-rate e-mails",
        Duration::from_secs(120),
        &mut [&mut d, &mut mp.proc],
        || mp.api.total() > total,
    );
    let scrape = Scrape::get(metrics_port);
    let (p50, p99) = (quantile(&scrape, 0.5), quantile(&scrape, 0.99));
    println!(
        "bench: at {rate} notifications/s for {seconds} s: delivery latency (Kafka timestamp -> 250 from Mailpit) p50 <= {p50} s, p99 <= {p99} s (histogram bucket bounds)"
    );
    d.terminate(Duration::from_secs(30));
}

/// The upper bound of the latency histogram's bucket holding quantile `q`.
fn quantile(s: &Scrape, q: f64) -> String {
    let buckets = s.family("cyberday_delivery_latency_seconds_bucket");
    let total = s.value("cyberday_delivery_latency_seconds_count");
    let mut bounds: Vec<(f64, f64, String)> = buckets
        .iter()
        .map(|(labels, count)| {
            let le = labels
                .trim_start_matches("le=\"")
                .trim_end_matches('"')
                .to_owned();
            (le.parse::<f64>().unwrap_or(f64::INFINITY), *count, le)
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    bounds
        .into_iter()
        .find(|(_, count, _)| *count >= q * total)
        .map_or("?".into(), |(_, _, le)| le)
}
