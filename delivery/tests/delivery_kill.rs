//! The delivery process SIGKILLed twice mid-stream and restarted each time:
//! no purchase goes without its e-mail, every re-sent e-mail carries the
//! Message-ID of the first (derived from the folio), and the re-sends are
//! at most what was in flight at the two kills (2 × `--max-in-flight`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{free_port, Proc};
use support::*;

/// `--max-in-flight` of the delivery processes: the re-send window per kill.
const MAX_IN_FLIGHT: usize = 16;

#[test]
fn two_sigkills_lose_nothing_and_resend_at_most_the_in_flight_window() {
    let (p, expected) = filled_notifications("delivery-kill", 5_000, 4242);
    let want = expected.len() as u64;

    let mut mailpit = Mailpit::start(&p.dir, "mailpit", &[]);
    let group = delivery_group(&p);
    let in_flight = MAX_IN_FLIGHT.to_string();
    // Paced, so each kill lands mid-stream with the window full.
    let extra = ["--max-in-flight", &in_flight, "--max-per-second", "200"];
    let smtp_url = mailpit.smtp_url();
    let start = |run: usize| {
        let args = delivery_args(&p, &smtp_url, free_port(), &extra);
        Proc::spawn(&format!("delivery-{run}"), &p.dir, &delivery_bin(), &args)
    };

    let mut delivery = start(1);
    let mut kills = Vec::new();
    for (run, share) in [(2, 3), (3, 3)] {
        // Kill when about another third has arrived since the last start.
        let target = mailpit.api.total() + want / share;
        wait_for(
            "e-mails to arrive before the kill",
            Duration::from_secs(240),
            &mut [&mut delivery, &mut mailpit.proc],
            || mailpit.api.total() >= target,
        );
        delivery.kill9();
        let at = mailpit.api.total();
        kills.push(at);
        println!(
            "delivery-kill: SIGKILL of delivery-{} with {at} e-mails in Mailpit",
            run - 1
        );
        delivery = start(run);
    }
    let started = Instant::now();
    finish_delivery(
        &mut mailpit,
        &mut delivery,
        (&p.cluster, &p.notifications_topic, &group),
        want,
        None,
    );
    println!(
        "delivery-kill: the last run finished {:.1} s after its start (a SIGKILLed member's \
         partitions wait for its session to expire)",
        started.elapsed().as_secs_f64()
    );

    let mails = mailpit.api.messages();
    let mut by_folio: BTreeMap<String, Vec<&Mail>> = BTreeMap::new();
    for m in &mails {
        let folio = m.folio_header.clone().expect("X-Cyberday-Folio");
        assert!(
            expected.contains_key(&folio),
            "an e-mail for {folio}, no purchase of the input"
        );
        by_folio.entry(folio).or_default().push(m);
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|f| !by_folio.contains_key(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "{} purchases without an e-mail, first {:?}",
        missing.len(),
        missing.first()
    );
    let mut duplicates = 0;
    for (folio, sent) in &by_folio {
        for m in sent {
            assert_eq!(
                m.message_id,
                format!("{folio}@notificaciones.cyberday"),
                "every send of {folio} has one id"
            );
        }
        duplicates += sent.len() - 1;
    }
    println!(
        "delivery-kill: {} purchases, {} e-mails, 0 missing, {duplicates} duplicates (each with its original's Message-ID), bound 2 kills x --max-in-flight {MAX_IN_FLIGHT} = {}",
        expected.len(),
        mails.len(),
        2 * MAX_IN_FLIGHT
    );
    assert!(
        duplicates <= 2 * MAX_IN_FLIGHT,
        "{duplicates} duplicates exceed the in-flight window of two kills"
    );
}
