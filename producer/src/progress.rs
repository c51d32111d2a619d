//! Progress of a `--count` run on stderr: an `indicatif` bar redrawn in
//! place when stderr is a terminal, otherwise one plain line every few
//! seconds (logs and CI output stay readable). The final summary line is
//! printed by the caller, after [`report`] has returned and cleared its bar.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// How often the bar's position is updated on a terminal.
const BAR_EVERY: Duration = Duration::from_millis(200);
/// How often a plain line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// What the bar shows, e.g.
/// `[#######>......................]  24%  12000/50000  4000/s  eta 3s`.
const BAR_TEMPLATE: &str = "[{bar:30}] {percent:>3}%  {pos}/{len}  {rate}  eta {eta}";

/// Reports `sent()` out of `total` on stderr until `stop` is cancelled.
pub async fn report(total: u64, sent: impl Fn() -> u64, stop: CancellationToken) {
    if std::io::stderr().is_terminal() {
        bar(total, sent, stop).await
    } else {
        lines(total, sent, stop).await
    }
}

/// The bar, on a terminal.
async fn bar(total: u64, sent: impl Fn() -> u64, stop: CancellationToken) {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(bar_style());
    let mut tick = interval(BAR_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => bar.set_position(sent()),
        }
    }
    // Leave the line clean for the summary.
    bar.finish_and_clear();
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR_TEMPLATE)
        .expect("a valid progress template")
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                // Whole records per second; indicatif's own {per_sec} has 4 decimals.
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
        .progress_chars("#>.")
}

/// Plain lines, when stderr is a file or a pipe.
async fn lines(total: u64, sent: impl Fn() -> u64, stop: CancellationToken) {
    let mut tick = interval(LINE_EVERY);
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (now, done) = (Instant::now(), sent());
        // A moving average would be smoother; the last interval is honest.
        let rate = done.saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", line(done, total, rate));
        let _ = err.flush();
        last = (now, done);
    }
}

/// A tick every `every`, the first after one period.
fn interval(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// `producer: 12000/50000 sent (24%), 4000/s`
pub fn line(done: u64, total: u64, rate: f64) -> String {
    format!(
        "producer: {done}/{total} sent ({}%), {rate:.0}/s",
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
    fn the_bar_template_is_valid() {
        let bar = ProgressBar::with_draw_target(Some(50_000), ProgressDrawTarget::hidden());
        bar.set_style(bar_style());
        bar.set_position(12_000);
        assert_eq!(bar.position(), 12_000);
    }
}
