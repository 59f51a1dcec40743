//! What is recorded: each client operation ([`Op`]) with its invocation and completion
//! times on one monotonic clock, stamped by a [`Recorder`] (see the parent module).

use super::*;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put { key: Vec<u8>, value: Vec<u8> },
    Get { key: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl OpKind {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        OpKind::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        OpKind::Get { key: key.into() }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        OpKind::Delete { key: key.into() }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            OpKind::Put { key, .. } | OpKind::Get { key } | OpKind::Delete { key } => key,
        }
    }

    /// For a write, the register value it leaves (`Some(None)` for a delete).
    pub fn written(&self) -> Option<Option<&[u8]>> {
        match self {
            OpKind::Put { value, .. } => Some(Some(value)),
            OpKind::Delete { .. } => Some(None),
            OpKind::Get { .. } => None,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect once. A get carries what it read (`None`: absent); a write, `None`.
    Ok(Option<Vec<u8>>),
    /// Definitely did not take effect.
    Failed,
    /// May or may not have taken effect (timeout, lost connection, never completed).
    Unknown,
}

impl Outcome {
    /// A get that found `value`.
    pub fn found(value: impl Into<Vec<u8>>) -> Self {
        Outcome::Ok(Some(value.into()))
    }
}

/// One operation of a history; its position in the history is its name (`#12`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    /// Nanoseconds since the recorder started, stamped before the request was sent.
    pub invoke: u64,
    /// Stamped after the answer arrived; `None` if it never did.
    pub complete: Option<u64>,
    pub kind: OpKind,
    pub outcome: Outcome,
}

/// Records a history from many threads or tasks: `invoke` before sending a request,
/// `complete` with what came back. Share it in an `Arc`.
pub struct Recorder {
    start: Instant,
    /// A std mutex: held only to push or update one entry, never across `.await`, so it
    /// is safe and cheap to take from tokio tasks. Timestamps are taken under it, which
    /// only widens intervals (safe) and keeps `invoke` times in history order.
    ops: Mutex<Vec<Op>>,
}

/// An operation in flight. Dropping it without [`Recorder::complete`] leaves the
/// operation's outcome unknown, which is right for a cancelled or timed-out request.
#[must_use = "complete it, or drop it to leave the outcome unknown"]
pub struct Pending {
    index: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn invoke(&self, client: u64, kind: OpKind) -> Pending {
        let mut ops = self.lock();
        let invoke = self.now();
        ops.push(Op {
            client,
            invoke,
            complete: None,
            kind,
            outcome: Outcome::Unknown,
        });
        Pending { index: ops.len() - 1 }
    }

    pub fn complete(&self, pending: Pending, outcome: Outcome) {
        let mut ops = self.lock();
        let complete = self.now();
        if let Some(op) = ops.get_mut(pending.index) {
            op.complete = Some(complete);
            op.outcome = outcome;
        }
    }

    /// A copy of everything recorded so far; operations still in flight are unknown.
    pub fn history(&self) -> Vec<Op> {
        self.lock().clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(NEVER - 1)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        // A client thread that panicked mid-push left no torn state behind: a Vec push
        // or a field update either happened or did not.
        self.ops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
