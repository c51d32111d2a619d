//! A second delivery process joins mid-stream: Kafka's group protocol
//! moves some partitions to it; the first lets the sends in flight on them
//! finish and commits before letting go, and the newcomer reads the ledger
//! before sending. Every purchase is e-mailed exactly once, and both
//! processes sent some.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{free_port, Proc, Scrape};
use support::*;

#[test]
fn a_second_process_joining_takes_partitions_nothing_lost_or_repeated() {
    let (p, expected) = filled_notifications("delivery-join", 5_000, 515);
    let want = expected.len() as u64;
    let mut mailpit = Mailpit::start(&p.dir, "mailpit", &[]);
    let smtp_url = mailpit.smtp_url();
    let group = delivery_group(&p);
    // Paced, so the join lands mid-stream with sends in flight.
    let extra = ["--max-in-flight", "16", "--max-per-second", "150"];
    let ports = [free_port(), free_port()];
    let mut first = Proc::spawn(
        "delivery-1",
        &p.dir,
        &delivery_bin(),
        &delivery_args(&p, &smtp_url, ports[0], &extra),
    );
    wait_for(
        "a third of the e-mails before the join",
        Duration::from_secs(120),
        &mut [&mut first, &mut mailpit.proc],
        || mailpit.api.total() >= want / 3,
    );
    let at_join = mailpit.api.total();
    let mut second = Proc::spawn(
        "delivery-2",
        &p.dir,
        &delivery_bin(),
        &delivery_args(&p, &smtp_url, ports[1], &extra),
    );
    wait_for(
        "every purchase e-mailed and the group committed to the end",
        Duration::from_secs(300),
        &mut [&mut first, &mut second, &mut mailpit.proc],
        || {
            mailpit.api.total() >= want
                && committed_to_end(&p.cluster, &p.notifications_topic, &group)
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent = |port: u16| -> f64 {
        Scrape::get(port)
            .family("cyberday_delivery_sent_total")
            .values()
            .sum()
    };
    let (by_first, by_second) = (sent(ports[0]), sent(ports[1]));
    for d in [&mut first, &mut second] {
        assert!(
            d.terminate(Duration::from_secs(30)),
            "{} did not exit cleanly:\n{}",
            d.name,
            d.stderr_text()
        );
    }
    let revoked = first.stderr_text().contains("partitions revoked");
    assert!(revoked, "the first process gave partitions up");

    let mut by_folio: BTreeMap<String, usize> = BTreeMap::new();
    for m in mailpit.api.messages() {
        *by_folio.entry(m.folio_header.unwrap()).or_default() += 1;
    }
    let missing = expected
        .keys()
        .filter(|f| !by_folio.contains_key(*f))
        .count();
    let repeated: Vec<_> = by_folio.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "delivery-join: {} purchases; the second process joined at {at_join} e-mails; sent {by_first} by the first, {by_second} by the second; {missing} missing, {} repeated",
        expected.len(),
        repeated.len()
    );
    assert_eq!(missing, 0);
    assert!(repeated.is_empty(), "repeated: {repeated:?}");
    assert_eq!(by_folio.len(), expected.len());
    assert!(by_second > 0.0, "the newcomer took partitions and sent");
    assert_eq!(by_first + by_second, want as f64);
}
