//! Storage failpoints: named places where a test can make the disk fail at run time.
//!
//! | name        | where                                                   |
//! |-------------|---------------------------------------------------------|
//! | `log-flush` | the log sync thread, before it makes a batch durable    |
//! | `vote-save` | `save_vote`, before the vote is synced                  |
//! | `sm-apply`  | the state machine, before it applies a batch of entries |
//!
//! Each is configured with the `fail` crate's actions (`return`, `panic`, `50%return`,
//! `sleep(100)`, `off`, ...); `return` makes the operation fail with an I/O error, which
//! openraft treats as fatal: the node stops acknowledging and must be restarted, and
//! whatever the failed flush covered was never reported durable. Only builds with the
//! `failpoints` feature have them; elsewhere [`check`] is an inlined `Ok(())`.

/// Every failpoint name, for validating a test's configuration.
pub const FAILPOINTS: &[&str] = &["log-flush", "vote-save", "sm-apply"];

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

/// How many storage faults fired with an error so far (always 0 without the feature).
pub fn fired() -> u64 {
    #[cfg(feature = "failpoints")]
    return FIRED.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "failpoints"))]
    0
}
