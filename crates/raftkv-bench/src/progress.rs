//! The live progress line on stderr.
//!
//! On a terminal the line is redrawn in place once a second:
//! `[#####.....] 12s/30s  45,123 ops  3,760 ops/s  errors 0`, where the rate is that of
//! the last second. When stderr is not a terminal (a log file, CI) carriage returns
//! would only make noise, so the same line is printed as a line of its own every five
//! seconds instead. The line is built by [`render`], a pure function; [`Progress`]
//! only times and writes it.
//!
//! Why not indicatif: its draw targets hide the bar entirely when the terminal is not
//! user attended (its `ProgressDrawTarget::term` docs), and benchmark runs are mostly
//! logged to files and CI, where this module's periodic line is the point; the terminal
//! half is a carriage return and one `write!`, not worth a dependency of its own.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::report::thousands;
use crate::workload::LiveCounters;

/// Width of the bar between the brackets.
const BAR_WIDTH: usize = 10;
/// Redraw period on a terminal.
const TERMINAL_PERIOD: Duration = Duration::from_secs(1);
/// Line period otherwise.
const LOG_PERIOD: Duration = Duration::from_secs(5);

/// A running progress line; [`Progress::finish`] stops it.
#[derive(Debug)]
pub struct Progress {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts drawing the progress of a run bounded by `duration` and `total` that
    /// counts into `live`. Call it just before the measured phase starts.
    pub fn start(live: Arc<LiveCounters>, duration: Duration, total: Option<u64>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let period = if terminal { TERMINAL_PERIOD } else { LOG_PERIOD };
            let started = Instant::now();
            let mut ticks = tokio::time::interval_at(started + period, period);
            let (mut last_ops, mut last_tick) = (0, started);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    now = ticks.tick() => {
                        let (ops, errors) = live.snapshot();
                        let since = now.duration_since(last_tick).as_secs_f64();
                        let rate = if since > 0.0 { (ops - last_ops) as f64 / since } else { 0.0 };
                        (last_ops, last_tick) = (ops, now);
                        let line = render(now - started, duration, ops, total, rate, errors);
                        let mut stderr = std::io::stderr().lock();
                        // A progress line that cannot be written is not worth failing for.
                        let _ = if terminal {
                            write!(stderr, "\r{line}\x1b[K")
                        } else {
                            writeln!(stderr, "{line}")
                        };
                        let _ = stderr.flush();
                    }
                }
            }
            if terminal {
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[K");
                let _ = stderr.flush();
            }
        });
        Progress { stop, task }
    }

    /// Stops the line and clears it from the terminal.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The progress line: bar, time, operations, rate, errors.
///
/// The bar shows whichever bound is nearer: elapsed time of `duration`, or operations
/// of `total`.
pub fn render(
    elapsed: Duration,
    duration: Duration,
    ops: u64,
    total: Option<u64>,
    rate: f64,
    errors: u64,
) -> String {
    let by_time = elapsed.as_secs_f64() / duration.as_secs_f64().max(f64::MIN_POSITIVE);
    let by_ops = total.map_or(0.0, |total| ops as f64 / total.max(1) as f64);
    let done = by_time.max(by_ops).clamp(0.0, 1.0);
    let filled = ((done * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    format!(
        "[{}{}] {}s/{}s  {} ops  {} ops/s  errors {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        elapsed.as_secs(),
        duration.as_secs_f64().ceil() as u64,
        thousands(ops),
        thousands(rate.max(0.0).round() as u64),
        thousands(errors),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_the_documented_shape() {
        let line = render(
            Duration::from_secs(12),
            Duration::from_secs(30),
            45_123,
            None,
            3760.4,
            0,
        );
        assert_eq!(line, "[####......] 12s/30s  45,123 ops  3,760 ops/s  errors 0");
    }

    #[test]
    fn bar_follows_the_nearer_bound() {
        let line = render(
            Duration::from_secs(1),
            Duration::from_secs(30),
            900,
            Some(1000),
            900.0,
            2,
        );
        assert!(line.starts_with("[#########.] 1s/30s"), "{line}");
        let line = render(Duration::from_secs(40), Duration::from_secs(30), 1, None, 0.0, 0);
        assert!(line.starts_with("[##########] 40s/30s"), "{line}");
    }

    #[test]
    fn sub_second_durations_round_up() {
        let line = render(Duration::ZERO, Duration::from_millis(500), 0, None, 0.0, 0);
        assert!(line.starts_with("[..........] 0s/1s"), "{line}");
    }
}
