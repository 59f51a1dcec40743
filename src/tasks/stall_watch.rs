//! Stall watch: says in the log when this member stopped running for a while, and which
//! kind of stop it was, so a timeout that follows (a client's keepalive giving up, an
//! election) can be traced to its cause.
//!
//! Two clocks: a task on the member's runtime stamps a heartbeat every [`TICK`]; a plain
//! thread wakes every [`TICK`] too, and compares. If the thread itself woke late, the
//! whole process was not scheduled (the machine stalled, or the process was stopped);
//! if only the heartbeat is old, the runtime's workers were blocked (a synchronous wait
//! on a worker thread, or a task that never yields). Either is logged once it ends,
//! with how long it lasted, when it lasted more than [`REPORT_AFTER`] (etcd warns of a
//! heartbeat sent late by more than its interval; a member stuck this long fails
//! clients' keepalives and followers' leases).
//!
//! The thread holds only a `Weak` of the heartbeat: it ends when the task does (at
//! shutdown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often both clocks tick.
const TICK: Duration = Duration::from_millis(100);
/// Stalls shorter than this are not worth a line.
const REPORT_AFTER: Duration = Duration::from_secs(1);

/// Start the stall watch of one member (a runtime task and a thread), until `shutdown`.
pub(crate) fn start(mut shutdown: watch::Receiver<bool>) {
    let origin = Instant::now();
    let heartbeat = Arc::new(AtomicU64::new(0));
    let weak = Arc::downgrade(&heartbeat);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => heartbeat.store(millis_since(origin), Ordering::Relaxed),
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
    let spawned = std::thread::Builder::new()
        .name("raftkv-stall-watch".into())
        .spawn(move || watch_thread(origin, weak, log_stall));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "stall watch not started");
    }
}

/// Which part stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The whole process was not scheduled.
    Process,
    /// The runtime's workers were blocked while the process ran.
    Runtime,
}

fn log_stall(stall: Stall, lasted: Duration) {
    match stall {
        Stall::Process => tracing::warn!(
            stalled = ?lasted,
            "the process was not scheduled for {lasted:?} (the machine stalled, or the process was stopped)"
        ),
        Stall::Runtime => tracing::warn!(
            stalled = ?lasted,
            "the runtime's workers were blocked for about {lasted:?} while the process ran (a synchronous wait or a task that does not yield)"
        ),
    }
}

fn millis_since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

fn watch_thread(origin: Instant, heartbeat: Weak<AtomicU64>, report: impl Fn(Stall, Duration)) {
    // A runtime stall in progress: since when (ms since origin).
    let mut runtime_stalled_since: Option<u64> = None;
    loop {
        let before = Instant::now();
        std::thread::sleep(TICK);
        let overslept = before.elapsed().saturating_sub(TICK);
        if overslept > REPORT_AFTER {
            report(Stall::Process, overslept);
        }
        let Some(heartbeat) = heartbeat.upgrade() else {
            return;
        };
        let now = millis_since(origin);
        let last = heartbeat.load(Ordering::Relaxed);
        drop(heartbeat);
        let behind = Duration::from_millis(now.saturating_sub(last));
        match runtime_stalled_since {
            None if behind > REPORT_AFTER && overslept < behind / 2 => runtime_stalled_since = Some(last),
            Some(since) if behind <= TICK * 3 => {
                report(Stall::Runtime, Duration::from_millis(now.saturating_sub(since)));
                runtime_stalled_since = None;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_that_stops_stamping_is_reported_once_it_resumes() {
        let origin = Instant::now();
        let heartbeat = Arc::new(AtomicU64::new(0));
        let reports = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = reports.clone();
        let weak = Arc::downgrade(&heartbeat);
        let watcher =
            std::thread::spawn(move || watch_thread(origin, weak, move |s, d| seen.lock().push((s, d))));
        let stamp_for = |how_long: Duration| {
            let until = Instant::now() + how_long;
            while Instant::now() < until {
                heartbeat.store(millis_since(origin), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        stamp_for(Duration::from_millis(300));
        // The "runtime" stops for 1.6 s, then runs again.
        std::thread::sleep(Duration::from_millis(1600));
        stamp_for(Duration::from_millis(600));
        drop(heartbeat);
        watcher.join().unwrap();
        let reports = reports.lock().clone();
        let total: Duration = reports.iter().map(|(_, d)| *d).sum();
        assert!(total >= Duration::from_millis(1200), "{reports:?}");
        // The watcher blames the runtime, unless the machine itself stalled meanwhile.
        if !reports.iter().any(|(s, _)| *s == Stall::Process) {
            assert!(
                reports
                    .iter()
                    .any(|(s, d)| *s == Stall::Runtime && *d >= Duration::from_millis(1200)),
                "{reports:?}"
            );
        }
    }
}
