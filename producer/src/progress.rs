//! Progress of a `--count` run on stderr: a bar redrawn in place when
//! stderr is a terminal, otherwise one plain line every few seconds (logs
//! and CI output stay readable). The final summary line is printed by the
//! caller, after [`report`] has returned and cleared its bar.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often the bar is redrawn on a terminal.
const BAR_EVERY: Duration = Duration::from_millis(200);
/// How often a plain line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 30;

/// Reports `sent()` out of `total` on stderr until `stop` is cancelled.
pub async fn report(total: u64, sent: impl Fn() -> u64, stop: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { BAR_EVERY } else { LINE_EVERY };
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (started, 0u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (now, done) = (Instant::now(), sent());
        let rate = done.saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{}", bar(done, total, rate, now - started))
        } else {
            // A moving average would be smoother; the last interval is honest.
            writeln!(err, "{}", line(done, total, rate))
        };
        let _ = err.flush();
        last = (now, done);
    }
    if tty {
        // Leave the line clean for the summary.
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// `producer: 12000/50000 sent (24%), 4000/s`
pub fn line(done: u64, total: u64, rate: f64) -> String {
    format!(
        "producer: {done}/{total} sent ({}%), {rate:.0}/s",
        percent(done, total)
    )
}

/// `[#######.......................]  24%  12000/50000  4000/s  eta 10s`
pub fn bar(done: u64, total: u64, rate: f64, elapsed: Duration) -> String {
    let filled = if total == 0 {
        BAR_WIDTH
    } else {
        ((done.min(total) as u128 * BAR_WIDTH as u128) / total as u128) as usize
    };
    let eta = if rate > 0.0 && done < total {
        format!("eta {:.0}s", (total - done) as f64 / rate)
    } else {
        format!("{:.0}s", elapsed.as_secs_f64())
    };
    format!(
        "[{}{}] {:>3}%  {done}/{total}  {rate:.0}/s  {eta}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        percent(done, total)
    )
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (done.min(total) as u128 * 100 / total as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line() {
        assert_eq!(
            line(12_000, 50_000, 4_000.4),
            "producer: 12000/50000 sent (24%), 4000/s"
        );
        assert!(
            !line(1, 2, 0.0).starts_with("producer: sent "),
            "never mistaken for the summary"
        );
    }

    #[test]
    fn the_bar() {
        assert_eq!(
            bar(12_000, 50_000, 4_000.0, Duration::from_secs(3)),
            "[#######.......................]  24%  12000/50000  4000/s  eta 10s"
        );
        assert_eq!(
            bar(10, 10, 0.0, Duration::from_secs(7)),
            "[##############################] 100%  10/10  0/s  7s"
        );
        assert!(bar(0, 0, 0.0, Duration::ZERO).contains("100%"));
    }
}
