//! How the proposer gathers the requests of its next entry: [`Batch`] (bounded in bytes),
//! [`gather_until`] (adds requests as they arrive, up to a target and a time limit), and
//! [`Returns`]: whether to hold the batch open for the callers of the entry that just
//! completed, and for how many.
//!
//! Why: with one proposal open, closed-loop callers split into two cohorts that take
//! turns (the module doc of [`crate::proposer`]); holding the batch until the last
//! entry's callers are back merges them into one entry, so each member syncs its log and
//! applies half as often for the same writes. The wait is bounded, and it is only worth
//! it while callers do come back: a wait that runs out (callers that think, read, or went
//! away) makes the proposer skip waiting for the next 1, 2, 4, ... up to
//! [`MAX_SKIPPED`] proposals, and one wait that is met resets that.

use std::time::Duration;

use tokio::sync::mpsc;

/// Most proposals made without waiting after waits that ran out.
pub(crate) const MAX_SKIPPED: u32 = 64;

/// A queued request's encoded size.
pub(crate) trait Weighed {
    fn bytes(&self) -> usize;
}

/// The requests of the next entry and their encoded bytes.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    items: Vec<T>,
    bytes: usize,
    max_bytes: usize,
}

impl<T: Weighed> Batch<T> {
    /// A batch of `first` (taken whatever its size) that takes more up to `max_bytes`.
    pub(crate) fn new(first: T, max_bytes: usize) -> Self {
        Self {
            bytes: first.bytes(),
            items: vec![first],
            max_bytes,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Adds `next`, or hands it back if it would take the batch over its byte limit.
    pub(crate) fn push(&mut self, next: T) -> Option<T> {
        if self.bytes.saturating_add(next.bytes()) > self.max_bytes {
            return Some(next);
        }
        self.bytes += next.bytes();
        self.items.push(next);
        None
    }

    pub(crate) fn into_items(self) -> Vec<T> {
        self.items
    }
}

/// How [`gather_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gathered {
    /// The batch holds the target.
    Met,
    /// The next request would take it over its byte limit (handed back in `carried`).
    Full,
    /// The time limit passed first.
    RanOut,
    /// Every sender is gone.
    Closed,
}

/// Adds arriving requests to `batch` until it holds `target` of them, the byte limit is
/// reached (the request that did not fit goes to `carried`), `limit` passes or the queue
/// closes.
pub(crate) async fn gather_until<T: Weighed>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Batch<T>,
    carried: &mut Option<T>,
    target: usize,
    limit: Duration,
) -> Gathered {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    while batch.len() < target {
        tokio::select! {
            biased;
            next = rx.recv() => match next {
                Some(next) => {
                    if let Some(over) = batch.push(next) {
                        *carried = Some(over);
                        return Gathered::Full;
                    }
                }
                None => return Gathered::Closed,
            },
            () = &mut deadline => return Gathered::RanOut,
        }
    }
    Gathered::Met
}

/// What the proposer learnt about callers coming back.
#[derive(Debug)]
pub(crate) struct Returns {
    /// The longest wait (`None`: never wait).
    limit: Option<Duration>,
    /// Requests carried by the entry proposed last.
    previous: usize,
    /// Proposals still to make without waiting.
    skip: u32,
    /// `skip` after the next wait that runs out.
    backoff: u32,
}

impl Returns {
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            previous: 0,
            skip: 0,
            backoff: 1,
        }
    }

    /// When a slot frees with `queued` requests waiting: the batch size to wait for (the
    /// callers of the entry proposed last, back, plus those queued) and for how long, or
    /// `None` to propose what is there. Counts one proposal against a backoff.
    pub(crate) fn wait_for(&mut self, queued: usize, max_requests: usize) -> Option<(usize, Duration)> {
        let limit = self.limit?;
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        let target = self.previous.saturating_add(queued).min(max_requests);
        (target > 1).then_some((target, limit))
    }

    /// How a wait ended: `met` unless the limit passed before the expected requests came.
    pub(crate) fn waited(&mut self, met: bool) {
        if met {
            self.backoff = 1;
        } else {
            self.skip = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_SKIPPED);
        }
    }

    /// An entry of `requests` requests was proposed.
    pub(crate) fn proposed(&mut self, requests: usize) {
        self.previous = requests;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const LIMIT: Duration = Duration::from_millis(2);

    /// A request of so many bytes.
    #[derive(Debug, PartialEq)]
    struct Req(usize);

    impl Weighed for Req {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn a_batch_takes_its_first_request_whatever_its_size_and_then_up_to_the_byte_limit() {
        let mut batch = Batch::new(Req(500), 100);
        assert_eq!(batch.push(Req(1)), Some(Req(1)));
        let mut batch2 = Batch::new(Req(60), 100);
        assert_eq!(batch2.push(Req(40)), None);
        assert_eq!(batch2.push(Req(1)), Some(Req(1)));
        assert_eq!(batch2.into_items(), [Req(60), Req(40)]);
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn gathering_ends_as_soon_as_the_target_is_there() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = Batch::new(Req(1), 1000);
        let mut carried = None;
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
                tx.send(Req(1)).await.map_err(|_| "closed")?;
            }
            Ok::<_, &str>(tx)
        });
        let started = Instant::now();
        let gathered = gather_until(&mut rx, &mut batch, &mut carried, 4, Duration::from_secs(30)).await;
        assert_eq!(gathered, Gathered::Met);
        assert_eq!(batch.len(), 4);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited for the limit"
        );
        assert!(carried.is_none());
        assert!(sender.await.is_ok_and(|r| r.is_ok()));
    }

    #[tokio::test]
    async fn gathering_runs_out_after_the_limit_with_what_came() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = Batch::new(Req(1), 1000);
        let mut carried = None;
        assert!(tx.send(Req(1)).await.is_ok());
        let started = Instant::now();
        let gathered = gather_until(&mut rx, &mut batch, &mut carried, 4, LIMIT).await;
        assert_eq!(gathered, Gathered::RanOut);
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() >= LIMIT);
        drop(tx);
    }

    #[tokio::test]
    async fn gathering_stops_at_the_byte_limit_and_carries_the_request_that_did_not_fit() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = Batch::new(Req(50), 100);
        let mut carried = None;
        for size in [40, 30, 5] {
            assert!(tx.send(Req(size)).await.is_ok());
        }
        let gathered = gather_until(&mut rx, &mut batch, &mut carried, 10, Duration::from_secs(30)).await;
        assert_eq!(gathered, Gathered::Full);
        assert_eq!(carried, Some(Req(30)));
        assert_eq!(batch.into_items(), [Req(50), Req(40)]);
    }

    #[tokio::test]
    async fn gathering_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = mpsc::channel::<Req>(16);
        drop(tx);
        let mut batch = Batch::new(Req(1), 100);
        let gathered = gather_until(&mut rx, &mut batch, &mut None, 2, Duration::from_secs(30)).await;
        assert_eq!(gathered, Gathered::Closed);
    }

    #[test]
    fn waits_for_the_last_entrys_callers_and_the_queue() {
        let mut returns = Returns::new(Some(LIMIT));
        assert_eq!(
            returns.wait_for(3, 1024),
            Some((3, LIMIT)),
            "nothing proposed yet: the queue"
        );
        returns.proposed(8);
        assert_eq!(returns.wait_for(8, 1024), Some((16, LIMIT)));
        assert_eq!(
            returns.wait_for(8, 10),
            Some((10, LIMIT)),
            "never beyond a full batch"
        );
    }

    #[test]
    fn a_lone_caller_never_waits() {
        let mut returns = Returns::new(Some(LIMIT));
        returns.proposed(1);
        assert_eq!(returns.wait_for(0, 1024), None);
    }

    #[test]
    fn off_never_waits() {
        let mut returns = Returns::new(None);
        returns.proposed(8);
        assert_eq!(returns.wait_for(8, 1024), None);
    }

    #[test]
    fn waits_that_run_out_back_off_exponentially_and_one_met_resets() {
        let mut returns = Returns::new(Some(LIMIT));
        returns.proposed(4);
        let skipped_after_miss = |returns: &mut Returns| {
            returns.waited(false);
            let mut skipped = 0;
            while returns.wait_for(4, 1024).is_none() {
                skipped += 1;
                assert!(skipped <= MAX_SKIPPED, "skips without end");
            }
            skipped
        };
        let skips: Vec<u32> = (0..8).map(|_| skipped_after_miss(&mut returns)).collect();
        assert_eq!(skips, [1, 2, 4, 8, 16, 32, 64, 64]);
        returns.waited(true);
        assert_eq!(
            skipped_after_miss(&mut returns),
            1,
            "a met wait resets the backoff"
        );
    }
}
