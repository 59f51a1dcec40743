//! Unit tests of the retry decisions and the backoff bounds.

use raftkv_core::RequestError;
use raftkv_core::kv::{PutRequest, RangeRequest};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn answered(error: &Error) -> Failure {
    classify_status(&raftkv_proto::status::to_status(error))
}

#[test]
fn txn_with_a_write_at_any_depth_is_a_write() {
    assert_eq!(txn_mutability(&TxnRequest::default()), Mutability::Read);
    let read = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::key("a"))],
        failure: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::Range(RangeRequest::key("b"))],
            ..TxnRequest::default()
        })],
        ..TxnRequest::default()
    };
    assert_eq!(txn_mutability(&read), Mutability::Read);
    let nested_write = TxnRequest {
        failure: vec![RequestOp::Txn(TxnRequest {
            failure: vec![RequestOp::Put(PutRequest::new("k", "v"))],
            ..TxnRequest::default()
        })],
        ..TxnRequest::default()
    };
    assert_eq!(txn_mutability(&nested_write), Mutability::Write);
}

#[test]
fn connect_failures_are_not_sent_and_local_transport_errors_are_lost() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let connect = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
    assert_eq!(connect.code(), Code::Unavailable);
    assert!(matches!(classify_status(&connect), Failure::NotSent(_)));

    let reset = Status::from_error(Box::new(std::io::Error::other("connection reset")));
    assert!(matches!(classify_status(&reset), Failure::Lost(_)));

    // The same text from a server (no local source) is the server's answer.
    let from_server = Status::unavailable("tcp connect error");
    assert!(matches!(classify_status(&from_server), Failure::Answered { .. }));
}

#[test]
fn request_errors_are_never_retried() {
    for m in [Mutability::Read, Mutability::Write] {
        let d = decide(m, answered(&Error::Request(RequestError::EmptyKey)));
        assert_eq!(
            d,
            Decision::Fail(ClientError::Server(Error::Request(RequestError::EmptyKey)))
        );
    }
}

#[test]
fn not_leader_is_followed_for_reads_and_writes() {
    let e = Error::NotLeader {
        leader_id: Some(2),
        leader_client_urls: vec!["http://10.0.0.2:2379".into()],
    };
    for m in [Mutability::Read, Mutability::Write] {
        match decide(m, answered(&e)) {
            Decision::FollowLeader { urls, .. } => assert_eq!(urls, ["http://10.0.0.2:2379"]),
            other => panic!("{other:?}"),
        }
    }
    let no_leader = Error::NotLeader {
        leader_id: None,
        leader_client_urls: vec![],
    };
    assert!(matches!(
        decide(Mutability::Write, answered(&no_leader)),
        Decision::FollowLeader { urls, .. } if urls.is_empty()
    ));
}

#[test]
fn reads_retry_transient_failures() {
    let transient = [
        Failure::NotSent("refused".into()),
        Failure::Lost("reset".into()),
        answered(&Error::Timeout("t".into())),
        answered(&Error::Shutdown("s".into())),
        classify_status(&Status::deadline_exceeded("context deadline exceeded")),
        classify_status(&Status::unavailable("etcdserver: leader changed")),
        // A tonic server's answer when the call's own deadline expires while it waits.
        classify_status(&Status::cancelled("Timeout expired")),
    ];
    for f in transient {
        assert!(
            matches!(decide(Mutability::Read, f.clone()), Decision::TryNext { .. }),
            "{f:?}"
        );
    }
    let internal = answered(&Error::Internal("bug".into()));
    assert!(matches!(
        decide(Mutability::Read, internal),
        Decision::Fail(ClientError::Server(Error::Internal(_)))
    ));
}

#[test]
fn writes_retry_only_on_proof_of_not_applied() {
    assert!(matches!(
        decide(Mutability::Write, Failure::NotSent("refused".into())),
        Decision::TryNext { .. }
    ));
    let too_many = classify_status(&Status::resource_exhausted(TOO_MANY_REQUESTS));
    assert!(matches!(
        decide(Mutability::Write, too_many),
        Decision::TryNext { .. }
    ));
    let ambiguous = [
        Failure::Lost("reset".into()),
        answered(&Error::Timeout("t".into())),
        answered(&Error::Shutdown("s".into())),
        answered(&Error::Unknown("u".into())),
        answered(&Error::Storage("disk".into())),
        classify_status(&Status::unknown("boom")),
        classify_status(&Status::deadline_exceeded("context deadline exceeded")),
        classify_status(&Status::cancelled("Timeout expired")),
    ];
    for f in ambiguous {
        assert!(
            matches!(
                decide(Mutability::Write, f.clone()),
                Decision::Fail(ClientError::OutcomeUnknown(_))
            ),
            "{f:?}"
        );
    }
}

#[test]
fn backoff_cap_doubles_and_saturates() {
    let (initial, max) = (20 * MS, 500 * MS);
    assert_eq!(backoff_cap(initial, max, 0), 20 * MS);
    assert_eq!(backoff_cap(initial, max, 1), 40 * MS);
    assert_eq!(backoff_cap(initial, max, 4), 320 * MS);
    assert_eq!(backoff_cap(initial, max, 5), max);
    assert_eq!(backoff_cap(initial, max, u32::MAX), max);
    assert_eq!(backoff_cap(Duration::MAX, max, 3), max);
}

#[test]
fn jitter_stays_within_zero_and_cap() {
    let cap = 320 * MS;
    assert_eq!(full_jitter(cap, 0), Duration::ZERO);
    assert_eq!(full_jitter(cap, u64::MAX), cap);
    assert!(full_jitter(Duration::MAX, u64::MAX) <= Duration::MAX);
    let half = full_jitter(cap, u64::MAX / 2);
    assert!(cap / 2 - half <= Duration::from_nanos(1), "{half:?}");
    let mut backoff = Backoff::with_seed(20 * MS, 500 * MS, 42);
    let mut seen_small = false;
    for retry in 0..200u32 {
        let delay = backoff.next_delay();
        assert!(
            delay <= backoff_cap(20 * MS, 500 * MS, retry),
            "{delay:?} at {retry}"
        );
        seen_small |= retry > 5 && delay < 250 * MS;
    }
    assert!(seen_small, "jitter should spread delays below the cap");
}

#[test]
fn waits_never_pass_the_deadline() {
    assert_eq!(wait_within_deadline(100 * MS, 500 * MS), Some(100 * MS));
    assert_eq!(
        wait_within_deadline(500 * MS, 200 * MS),
        Some(200 * MS - MIN_ATTEMPT_TIME)
    );
    assert_eq!(wait_within_deadline(MS, MIN_ATTEMPT_TIME), Some(Duration::ZERO));
    assert_eq!(wait_within_deadline(MS, MIN_ATTEMPT_TIME - MS), None);
    assert_eq!(wait_within_deadline(MS, Duration::ZERO), None);
    for remaining_ms in 0..100u32 {
        let remaining = remaining_ms * MS;
        if let Some(wait) = wait_within_deadline(Duration::from_secs(1), remaining) {
            assert!(wait + MIN_ATTEMPT_TIME <= remaining);
        }
    }
}

#[test]
fn admin_refusals_are_final_for_reads_and_writes() {
    let refusals = [
        Error::NoSpace,
        Error::Request(RequestError::MemberNotFound(0)),
        Error::Request(RequestError::MemberNotLearner),
        Error::Request(RequestError::LearnerNotReady),
        Error::Request(RequestError::PeerUrlExists),
    ];
    for e in refusals {
        for m in [Mutability::Read, Mutability::Write] {
            assert_eq!(
                decide(m, answered(&e)),
                Decision::Fail(ClientError::Server(e.clone())),
                "{m:?}"
            );
        }
    }
    // An Unimplemented call (an older server's MoveLeader, say) reads back as "not supported".
    let unimplemented = classify_status(&Status::unimplemented("raftkv: no leadership transfer"));
    assert!(matches!(
        decide(Mutability::Write, unimplemented),
        Decision::Fail(ClientError::Server(Error::Request(RequestError::Unsupported(_))))
    ));
}
