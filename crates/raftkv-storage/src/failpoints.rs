//! Storage failpoints: named places where a test can make the disk fail at run time.
//!
//! | name        | where                                                   |
//! |-------------|---------------------------------------------------------|
//! | `log-flush` | the log sync thread, before it makes a batch durable    |
//! | `vote-save` | `save_vote`, before the vote is synced                  |
//! | `sm-apply`  | the state machine, before it applies a batch of entries |
//! | `sm-apply-long` | on the blocking pool, before a batch with an entry that may touch many keys is applied there (`pause` holds it, to show the member answers meanwhile) |
//! | `sm-write`  | before each single write of a state-machine batch (apply, compaction): `return(abort)` aborts the process there, as a crash in the middle of a batch |
//! | `log-write` | before each entry's insert of a log append: `return(abort)` aborts the process in the middle of a group of appends |
//!
//! Each is configured with the `fail` crate's actions (`return`, `panic`, `50%return`,
//! `sleep(100)`, `off`, ...); `return` makes the operation fail with an I/O error, which
//! openraft treats as fatal: the node stops acknowledging and must be restarted, and
//! whatever the failed flush covered was never reported durable. Only builds with the
//! `failpoints` feature have them; elsewhere `check` is an inlined `Ok(())`.

/// Every failpoint name, for validating a test's configuration.
pub const FAILPOINTS: &[&str] = &[
    "log-flush",
    "vote-save",
    "sm-apply",
    "sm-apply-long",
    "sm-write",
    "log-write",
];

#[cfg(feature = "failpoints")]
static FIRED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fail here if the test configured `name` to.
#[cfg(feature = "failpoints")]
pub(crate) fn check(name: &'static str) -> std::io::Result<()> {
    fail::fail_point!(name, |_| {
        FIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(failpoint = name, "injected storage fault");
        Err(std::io::Error::other(format!("injected storage fault at {name}")))
    });
    Ok(())
}

/// Without the `failpoints` feature: never fails.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn check(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}

/// Before each single write of a batch (`sm-write`: `apply/tree_writes.rs`; `log-write`: a log
/// append). With the `failpoints` feature, configured as `return(abort)` it aborts the
/// process (no unwinding, no flush: what sled wrote so far is what a restart finds), as
/// `N*off->return(abort)` after N writes; any other return fails the write. Unit tests
/// can stop a state-machine batch after a number of writes ([`stop_writes_after`]).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn check_write(name: &'static str) -> std::io::Result<()> {
    #[cfg(test)]
    if name == "sm-write" && !crash_test::take_write() {
        return Err(std::io::Error::other("test stopped the batch here"));
    }
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |arg: Option<String>| {
        if arg.as_deref() == Some("abort") {
            tracing::error!(failpoint = name, "aborting the process in the middle of a batch");
            std::process::abort();
        }
        FIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(std::io::Error::other(format!("injected storage fault at {name}")))
    });
    Ok(())
}

/// Unit tests: let `n` more state-machine writes on this thread through, then fail every
/// one (`None`: no limit).
#[cfg(test)]
pub(crate) fn stop_writes_after(n: Option<u64>) {
    crash_test::WRITES_LEFT.with(|left| left.set(n));
}

/// How many storage faults fired with an error so far (always 0 without the feature).
pub fn fired() -> u64 {
    #[cfg(feature = "failpoints")]
    return FIRED.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "failpoints"))]
    0
}

/// The unit tests' write countdown (see [`stop_writes_after`]).
#[cfg(test)]
mod crash_test {
    use std::cell::Cell;

    thread_local! {
        pub(super) static WRITES_LEFT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Whether one more write may go through (and count it).
    pub(super) fn take_write() -> bool {
        WRITES_LEFT.with(|left| match left.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                left.set(Some(n - 1));
                true
            }
        })
    }
}
