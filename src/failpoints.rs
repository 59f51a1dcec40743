//! Failpoints of the node itself (the storage layer has its own, in
//! `raftkv_storage::failpoints`); only builds with the `failpoints` feature have them.
//!
//! | name              | effect                                                        |
//! |-------------------|---------------------------------------------------------------|
//! | `read-index-skip` | linearizable reads skip the read index: a deliberately broken |
//! |                   | read path, so a test can prove the history checker catches    |
//! |                   | the stale reads it allows (`tests/t20_checker_catches_stale_reads.rs`) |

/// Every failpoint name of this module.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub const FAILPOINTS: &[&str] = &["read-index-skip"];

/// Whether a test switched linearizable reads to the broken path.
#[cfg(feature = "failpoints")]
pub(crate) fn skip_read_index() -> bool {
    fail::fail_point!("read-index-skip", |_| true);
    false
}

/// Without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn skip_read_index() -> bool {
    false
}
