//! The members in etcd's buckets (`etcdserver/api/membership/store.go`), for the
//! export: `members` holds one entry per member, key = its id in lowercase hex, value =
//! etcd's `Member` as JSON (`{"id":..,"peerURLs":[..],"isLearner":true,"name":..,
//! "clientURLs":[..]}`, empty fields left out as Go does); `cluster` holds
//! `clusterVersion`. etcd's own `snapshot restore` replaces the members with those of
//! its command line, so they matter to tools that read the file, not to a restore.

use std::collections::BTreeMap;

use raftkv_core::types::StoredMembership;

use super::auth::Pairs;

/// etcd's `membership.Member` as it marshals it.
#[derive(serde::Serialize)]
struct EtcdMember<'a> {
    id: u64,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<&'a str>,
    #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
    is_learner: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "clientURLs", skip_serializing_if = "<[_]>::is_empty")]
    client_urls: &'a [String],
}

/// The cluster version etcd 3.4 records.
pub(crate) const CLUSTER_VERSION: &[u8] = b"3.4.0";

/// The `members` bucket of `membership`, with the names and client URLs members
/// published (`published`: id -> (name, client URLs)).
pub(crate) fn to_bucket(
    membership: &StoredMembership,
    published: &BTreeMap<u64, (String, Vec<String>)>,
) -> crate::error::Result<Pairs> {
    let config = membership.membership();
    let learners: Vec<u64> = config.learner_ids().collect();
    let mut out = Vec::new();
    for (id, node) in config.nodes() {
        let (name, client_urls) = published
            .get(id)
            .map_or(("", &node.client_urls[..]), |(name, urls)| {
                (name.as_str(), &urls[..])
            });
        let member = EtcdMember {
            id: *id,
            peer_urls: vec![node.peer_url.as_str()],
            is_learner: learners.contains(id),
            name,
            client_urls,
        };
        let json =
            serde_json::to_vec(&member).map_err(|e| super::wire::corrupt(format!("member JSON: {e}")))?;
        out.push((format!("{id:x}").into_bytes(), json));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raftkv_core::MemberNode;

    #[test]
    fn members_are_written_as_etcd_marshals_them() {
        let nodes = BTreeMap::from([
            (
                0xabc,
                MemberNode {
                    peer_url: "http://127.0.0.1:2380".into(),
                    client_urls: Vec::new(),
                },
            ),
            (
                0x1f,
                MemberNode {
                    peer_url: "http://127.0.0.1:2381".into(),
                    client_urls: Vec::new(),
                },
            ),
        ]);
        let membership =
            openraft::Membership::new(vec![std::collections::BTreeSet::from([0xabc])], nodes).unwrap();
        let stored = StoredMembership::new(None, membership);
        let published = BTreeMap::from([(
            0xabc,
            ("m0".to_string(), vec!["http://127.0.0.1:2379".to_string()]),
        )]);
        let bucket = to_bucket(&stored, &published).unwrap();
        assert_eq!(
            bucket,
            vec![
                (
                    b"1f".to_vec(),
                    br#"{"id":31,"peerURLs":["http://127.0.0.1:2381"],"isLearner":true}"#.to_vec()
                ),
                (
                    b"abc".to_vec(),
                    br#"{"id":2748,"peerURLs":["http://127.0.0.1:2380"],"name":"m0","clientURLs":["http://127.0.0.1:2379"]}"#
                        .to_vec()
                ),
            ]
        );
    }
}
