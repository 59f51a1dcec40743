//! The peer protocol's version, checked on every exchange between members.
//!
//! Every peer request carries [`HEADER`] and every answer repeats it. A member refuses a
//! request that names another version (or none: builds on openraft 0.9 sent none) before
//! it reaches Raft, and treats an answer without this version as a failed call. So a
//! member of an incompatible build cannot vote, append or be counted in a quorum: a
//! mixed-version cluster is refused at the first exchange, with a message that says what
//! to do, instead of half working. The version changes only when the wire changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

/// The metadata key that carries the version.
pub const HEADER: &str = "raftkv-peer-protocol";

/// The version this build speaks. 1: builds on openraft 0.9 (they sent no header).
/// 2: openraft 0.10 (streamed appends, pre-vote, leadership transfer).
/// 3: followers forward writes over `ForwardStream`.
/// 4: the log carries alarm commands (`Command::Alarm`, `Response::Alarms`).
/// 5: the log carries auth commands and callers (`Command::Auth`, `Command::AsUser`,
/// `Response::Authenticated`).
pub const VERSION: u32 = 5;

/// What a peer's message says it speaks: 1 when it names no version (a build from
/// before the header), `None` when the value is not a number.
fn spoken(metadata: &MetadataMap) -> Option<u32> {
    match metadata.get(HEADER) {
        None => Some(1),
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse().ok()),
    }
}

/// The refusal's text, the same on both sides.
pub fn mismatch(theirs: Option<u32>) -> String {
    let theirs = theirs.map_or_else(|| "an unreadable version".to_string(), |v| format!("version {v}"));
    format!(
        "raftkv peer protocol mismatch: this member speaks version {VERSION}, the peer {theirs}; \
         members of one cluster must run builds with the same peer protocol (stop the cluster, \
         upgrade every member, start it again; the data dirs open unchanged)"
    )
}

/// Client side: stamp every outgoing peer request with this build's version.
#[derive(Clone, Copy, Debug, Default)]
pub struct StampRequests;

impl tonic::service::Interceptor for StampRequests {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(HEADER, MetadataValue::from(VERSION));
        Ok(request)
    }
}

/// Server side: refuse a request of another version before any handler runs.
pub fn refuse_other_versions(request: Request<()>) -> Result<Request<()>, Status> {
    match spoken(request.metadata()) {
        Some(VERSION) => Ok(request),
        theirs => {
            // An old member retries at heartbeat rate: one warning per interval is enough.
            if warning_due(&LAST_WARNING_SECS) {
                tracing::warn!(peer = ?request.remote_addr(), "{} (refusing its requests; warned at most every {WARN_EVERY_SECS} s)", mismatch(theirs));
            }
            Err(Status::failed_precondition(mismatch(theirs)))
        }
    }
}

/// Seconds between two warnings about refused peers.
const WARN_EVERY_SECS: u64 = 10;

/// When the last warning was logged (seconds since the epoch).
static LAST_WARNING_SECS: AtomicU64 = AtomicU64::new(0);

/// Whether a warning may be logged now (and, if so, take the turn).
fn warning_due(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = last.load(Ordering::Relaxed);
    now >= before.saturating_add(WARN_EVERY_SECS)
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Whether `status` is a peer's refusal of this build's version: the request was not
/// handled.
pub fn is_refusal(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.message().starts_with("raftkv peer protocol mismatch")
}

/// Server side: repeat the version on an answer.
pub fn stamp_answer<T>(mut response: Response<T>) -> Response<T> {
    response
        .metadata_mut()
        .insert(HEADER, MetadataValue::from(VERSION));
    response
}

/// Client side: an answer must name this build's version; the text to fail with if not.
pub fn check_answer(metadata: &MetadataMap) -> Result<(), String> {
    match spoken(metadata) {
        Some(VERSION) => Ok(()),
        theirs => Err(mismatch(theirs)),
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn request_with(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert(HEADER, value.parse().expect("ascii"));
        }
        request
    }

    #[test]
    fn a_stamped_request_passes_the_check() {
        let stamped = StampRequests.call(Request::new(())).expect("stamps");
        assert!(refuse_other_versions(stamped).is_ok());
    }

    #[test]
    fn a_request_of_another_or_no_version_is_refused_with_what_to_do() {
        for (header, names) in [
            (None, "version 1"),
            (Some("2"), "version 2"),
            (Some("two"), "an unreadable version"),
        ] {
            let status = refuse_other_versions(request_with(header)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            assert!(status.message().contains(names), "{}", status.message());
            assert!(
                status.message().contains("upgrade every member"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn warnings_about_refused_peers_are_spaced_out() {
        let last = AtomicU64::new(0);
        assert!(warning_due(&last));
        assert!(!warning_due(&last), "a second warning within the interval");
        last.store(1, Ordering::Relaxed);
        assert!(warning_due(&last), "long after the last one");
    }

    #[test]
    fn a_refusal_is_recognised_as_not_handled() {
        let status = refuse_other_versions(request_with(None)).expect_err("refused");
        assert!(is_refusal(&status));
        assert!(!is_refusal(&Status::failed_precondition("something else")));
    }

    #[test]
    fn answers_are_checked_the_same_way() {
        let answer = stamp_answer(Response::new(()));
        assert!(check_answer(answer.metadata()).is_ok());
        let unstamped = Response::new(());
        let error = check_answer(unstamped.metadata()).expect_err("refused");
        assert!(error.contains("version 1"), "{error}");
    }
}
