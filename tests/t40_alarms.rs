//! Alarms as etcd 3.4 keeps them: replicated through the log, so every member agrees
//! which are active and caps writes alike. The same session, raising alarms through the
//! gRPC API (etcdctl only lists and disarms) and driving etcdctl, runs against a raftkv
//! cluster and an etcd cluster and must read the same, member ids aside: member id 0
//! kept as given, a second raise answered and ignored, NOSPACE refusing puts but not
//! deletes, CORRUPT refusing every write but not reads, `endpoint status` listing the
//! alarms on every member, `alarm disarm` answering what it disarmed. Then, raftkv
//! alone: the alarms outlive a restart of every member, a member over its quota raises
//! NOSPACE for itself, and a CORRUPT alarm holds lease expiry (no revoke proposed) until
//! it is disarmed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::support;
use support::channel;
use support::etcd::{etcdctl, etcdctl_available};
use support::process::ProcessCluster;

const NOSPACE: i32 = 1;
const CORRUPT: i32 = 2;
const ACTIVATE: i32 = 1;
const DEACTIVATE: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_replicated_and_answer_as_etcd_does() {
    if !etcdctl_available() {
        assert!(std::env::var("CI").is_err(), "etcdctl is required under CI=true");
        eprintln!("SKIPPED: etcdctl not installed");
        return;
    }
    let mut cluster = ProcessCluster::start(3, &[]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let urls = cluster.client_urls();
    let raftkv = session(&urls).await;
    eprintln!("raftkv: {raftkv:#?}");
    assert!(
        raftkv.contains(&"put under NOSPACE: false, Error: etcdserver: mvcc: database space exceeded".into()),
        "{raftkv:#?}"
    );

    // Raised, then every member restarted: still active, still capping.
    let first = member_id(&urls[0]).await;
    alarm(&urls[1], ACTIVATE, first, NOSPACE).await.unwrap();
    for id in 1..=3 {
        cluster.terminate(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let (ok, listed, _) = etcdctl(&urls[2], &["alarm", "list"]);
    assert!(ok);
    assert_eq!(listed, format!("memberID:{first} alarm:NOSPACE \n"));
    let (ok, _, refused) = etcdctl(&urls[0], &["put", "k", "v"]);
    assert!(!ok && refused.contains("database space exceeded"), "{refused}");
    let (ok, _, _) = etcdctl(&urls[0], &["alarm", "disarm"]);
    assert!(ok);
    assert!(etcdctl(&urls[0], &["put", "k", "v"]).0);
    drop(cluster);

    if support::etcd::available() {
        let etcd = support::etcd::EtcdCluster::start(3).await;
        let seen = session(&etcd.client_urls).await;
        assert_eq!(raftkv, seen, "etcd 3.4 answers otherwise");
    } else {
        assert!(std::env::var("CI").is_err(), "etcd is required under CI=true");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_its_quota_raises_nospace_for_itself_and_caps_the_cluster() {
    let cluster = ProcessCluster::start(3, &["--quota-backend-bytes", "1"]);
    cluster.agreed_leader(Duration::from_secs(30)).await;
    let urls = cluster.client_urls();
    let second = member_id(&urls[1]).await;
    let refused = put(&urls[1]).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded"
        )
    );
    // Raised before the refusal was answered, for the member that measured.
    let listed = alarm(&urls[0], 0, 0, 0).await.unwrap();
    assert_eq!(listed, vec![(second, NOSPACE)]);
    // Deletes go on everywhere; a put through another member is refused by the alarm.
    pb::kv_client::KvClient::new(channel(&urls[0]).await)
        .delete_range(pb::DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = put(&urls[0]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
}

/// Put `k` through the member at `url`.
async fn put(url: &str) -> Result<tonic::Response<pb::PutResponse>, tonic::Status> {
    pb::kv_client::KvClient::new(channel(url).await)
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
}

/// One pass against `urls` (three members), as observations with member ids replaced
/// by their position.
async fn session(urls: &[String]) -> Vec<String> {
    let ids = [member_id(&urls[0]).await, member_id(&urls[1]).await];
    let named = |text: &str| {
        text.replace(&format!("memberID:{}", ids[0]), "memberID:<first>")
            .replace(&format!("memberID:{}", ids[1]), "memberID:<second>")
    };
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(named).collect();
        lines.sort();
        lines.join(" | ")
    };
    // etcdctl's last line of stderr is its error (the lines before are client logs).
    let error = |stderr: &str| stderr.trim().lines().last().unwrap_or_default().to_string();
    let answer = |alarms: Result<Vec<(u64, i32)>, String>| match alarms {
        Ok(alarms) => {
            let mut shown: Vec<String> = alarms
                .iter()
                .map(|(member, alarm)| named(&format!("memberID:{member} alarm:{alarm}")))
                .collect();
            shown.sort();
            shown.join(" | ")
        }
        Err(e) => e,
    };
    let mut seen = Vec::new();
    let (ok, out, _) = etcdctl(&urls[0], &["alarm", "list"]);
    seen.push(format!("list, none: {ok}, {out:?}"));
    seen.push(format!(
        "raise NOSPACE for the first through the second: {}",
        answer(alarm(&urls[1], ACTIVATE, ids[0], NOSPACE).await)
    ));
    seen.push(format!(
        "raise it again: {}",
        answer(alarm(&urls[2], ACTIVATE, ids[0], NOSPACE).await)
    ));
    seen.push(format!(
        "raise NOSPACE for member 0: {}",
        answer(alarm(&urls[2], ACTIVATE, 0, NOSPACE).await)
    ));
    seen.push(format!(
        "list NOSPACE: {}",
        answer(alarm(&urls[0], 0, 0, NOSPACE).await)
    ));
    seen.push(format!(
        "list CORRUPT: {}",
        answer(alarm(&urls[0], 0, 0, CORRUPT).await)
    ));
    seen.push(format!(
        "disarm one not raised: {}",
        answer(alarm(&urls[0], DEACTIVATE, ids[1], NOSPACE).await)
    ));
    let (ok, out, _) = etcdctl(&urls[2], &["alarm", "list"]);
    seen.push(format!("list: {ok}, {}", sorted(&out)));
    let (ok, _, err) = etcdctl(&urls[0], &["put", "k", "v"]);
    seen.push(format!("put under NOSPACE: {ok}, {}", error(&err)));
    let (ok, _, _) = etcdctl(&urls[1], &["del", "k"]);
    seen.push(format!("delete under NOSPACE: {ok}"));
    for (i, url) in urls.iter().enumerate() {
        seen.push(format!(
            "status errors of member {i}: {}",
            status_errors(url, &named).await
        ));
    }
    let (ok, out, _) = etcdctl(&urls[1], &["alarm", "disarm"]);
    seen.push(format!("disarm: {ok}, {}", sorted(&out)));
    let (ok, out, _) = etcdctl(&urls[0], &["alarm", "list"]);
    seen.push(format!("list after disarm: {ok}, {out:?}"));
    let (ok, _, _) = etcdctl(&urls[0], &["put", "k", "v"]);
    seen.push(format!("put after disarm: {ok}"));
    seen.push(format!(
        "raise CORRUPT for the second: {}",
        answer(alarm(&urls[0], ACTIVATE, ids[1], CORRUPT).await)
    ));
    let (ok, _, err) = etcdctl(&urls[0], &["put", "k", "v2"]);
    seen.push(format!("put under CORRUPT: {ok}, {}", error(&err)));
    let (ok, _, err) = etcdctl(&urls[1], &["del", "k"]);
    seen.push(format!("delete under CORRUPT: {ok}, {}", error(&err)));
    let (ok, out, _) = etcdctl(&urls[2], &["get", "k", "--print-value-only"]);
    seen.push(format!("get under CORRUPT: {ok}, {out:?}"));
    let (ok, out, _) = etcdctl(&urls[2], &["alarm", "disarm"]);
    seen.push(format!("disarm: {ok}, {}", sorted(&out)));
    let (ok, _, _) = etcdctl(&urls[0], &["put", "k", "v3"]);
    seen.push(format!("put after disarm: {ok}"));
    seen
}

/// The member's `Status.errors`, once it lists an alarm (members apply in their own
/// time), within a deadline.
async fn status_errors(url: &str, named: &dyn Fn(&str) -> String) -> String {
    let mut m = MaintenanceClient::new(channel(url).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let errors = m.status(pb::StatusRequest {}).await.unwrap().into_inner().errors;
        if !errors.is_empty() || tokio::time::Instant::now() > deadline {
            let mut errors: Vec<String> = errors.iter().map(|e| named(e)).collect();
            errors.sort();
            return format!("{errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An Alarm call's answer as (member, type) pairs, or its refusal's code and text.
async fn alarm(url: &str, action: i32, member_id: u64, alarm: i32) -> Result<Vec<(u64, i32)>, String> {
    let mut m = MaintenanceClient::new(channel(url).await);
    match m
        .alarm(pb::AlarmRequest {
            action,
            member_id,
            alarm,
        })
        .await
    {
        Ok(r) => Ok(r
            .into_inner()
            .alarms
            .iter()
            .map(|a| (a.member_id, a.alarm))
            .collect()),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

async fn member_id(url: &str) -> u64 {
    let mut m = MaintenanceClient::new(channel(url).await);
    let status = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    status.header.unwrap().member_id
}

/// While a CORRUPT alarm is active every revoke would be refused when applied, so the
/// leader proposes none: an expired lease is not retried into the log tick after tick,
/// and its keys stay until the alarm is disarmed, then go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_alarm_holds_lease_expiry_until_disarmed() {
    use raftkv::{ALARM_CORRUPT, AlarmAction, AlarmRequest, Node, PutRequest};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder().id(1).data_dir(dir.path()).start().await.unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let lease = node.lease_grant(0, 3).await.unwrap();
    node.put_with(PutRequest {
        lease: lease.id,
        ..PutRequest::new("held", "v")
    })
    .await
    .unwrap();
    let corrupt = |action| AlarmRequest {
        action,
        member_id: 1,
        alarm: ALARM_CORRUPT,
    };
    node.alarm(corrupt(AlarmAction::Activate)).await.unwrap();
    let applied = node.metrics().applied;
    // Time must pass here: the lease expires (3 s) and the 200 ms lease ticks run ~10
    // times after it; what is checked is that none of them proposed a revoke.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let grew = node.metrics().applied - applied;
    assert!(
        grew <= 2,
        "{grew} entries while revokes are held (a checkpoint at most)"
    );
    assert!(node.get_serializable("held").await.unwrap().is_some());
    node.alarm(corrupt(AlarmAction::Deactivate)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.get_serializable("held").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was not revoked after the disarm"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}
