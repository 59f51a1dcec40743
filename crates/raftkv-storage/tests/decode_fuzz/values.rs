//! Valid values of every decoded type, as proptest strategies.

use super::*;

pub(crate) fn small_bytes() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..6).boxed()
}

pub(crate) fn text() -> BoxedStrategy<String> {
    "[a-z0-9:/.-]{0,12}".boxed()
}

pub(crate) fn number() -> BoxedStrategy<i64> {
    prop_oneof![-2i64..300, any::<i64>()].boxed()
}

pub(crate) fn put_request() -> BoxedStrategy<PutRequest> {
    (small_bytes(), small_bytes(), number(), any::<[bool; 3]>())
        .prop_map(
            |(key, value, lease, [prev_kv, ignore_value, ignore_lease])| PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
        .boxed()
}

pub(crate) fn range_request() -> BoxedStrategy<RangeRequest> {
    let orders = prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ];
    let targets = prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::Create),
        Just(SortTarget::Mod),
        Just(SortTarget::Value),
    ];
    (
        (small_bytes(), small_bytes(), number(), number()),
        (orders, targets, any::<[bool; 3]>()),
        [number(), number(), number(), number()],
    )
        .prop_map(
            |((key, range_end, limit, revision), (sort_order, sort_target, flags), bounds)| {
                let [serializable, keys_only, count_only] = flags;
                let [
                    min_mod_revision,
                    max_mod_revision,
                    min_create_revision,
                    max_create_revision,
                ] = bounds;
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    serializable,
                    keys_only,
                    count_only,
                    min_mod_revision,
                    max_mod_revision,
                    min_create_revision,
                    max_create_revision,
                }
            },
        )
        .boxed()
}

pub(crate) fn delete_request() -> BoxedStrategy<DeleteRangeRequest> {
    (small_bytes(), small_bytes(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

pub(crate) fn compare() -> BoxedStrategy<Compare> {
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    let target = prop_oneof![
        number().prop_map(CompareTarget::Version),
        number().prop_map(CompareTarget::Create),
        number().prop_map(CompareTarget::Mod),
        small_bytes().prop_map(CompareTarget::Value),
        number().prop_map(CompareTarget::Lease),
    ];
    (result, target, small_bytes(), small_bytes())
        .prop_map(|(result, target, key, range_end)| Compare {
            result,
            target,
            key,
            range_end,
        })
        .boxed()
}

pub(crate) fn txn_request() -> BoxedStrategy<TxnRequest> {
    let simple = prop_oneof![
        range_request().prop_map(RequestOp::Range),
        put_request().prop_map(RequestOp::Put),
        delete_request().prop_map(RequestOp::DeleteRange),
    ];
    let leaf = (
        vec(compare(), 0..2),
        vec(simple.clone(), 0..3),
        vec(simple.clone(), 0..2),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        });
    leaf.prop_recursive(3, 12, 3, move |inner| {
        let op = prop_oneof![simple.clone(), inner.prop_map(RequestOp::Txn)];
        (vec(compare(), 0..2), vec(op.clone(), 0..3), vec(op, 0..2)).prop_map(
            |(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            },
        )
    })
    .boxed()
}

pub(crate) fn command() -> BoxedStrategy<Command> {
    let single = prop_oneof![
        put_request().prop_map(Command::Put),
        delete_request().prop_map(Command::DeleteRange),
        txn_request().prop_map(Command::Txn),
        (number(), any::<bool>())
            .prop_map(|(revision, physical)| Command::Compact(CompactionRequest { revision, physical })),
        (number(), number()).prop_map(|(id, ttl)| Command::LeaseGrant { id, ttl }),
        number().prop_map(|id| Command::LeaseRevoke { id }),
        vec((number(), number()), 0..3).prop_map(|remaining| Command::LeaseCheckpoint { remaining }),
        (any::<u64>(), text(), vec(text(), 0..3)).prop_map(|(id, name, client_urls)| {
            Command::PublishMember {
                id,
                name,
                client_urls,
            }
        }),
        (0i32..3, any::<u64>(), number()).prop_map(|(action, member_id, alarm)| {
            Command::Alarm(AlarmRequest {
                action: AlarmAction::from_wire(action).unwrap_or(AlarmAction::Get),
                member_id,
                alarm: alarm as i32,
            })
        }),
    ];
    prop_oneof![
        3 => single.clone(),
        1 => vec(single, 0..4).prop_map(Command::Batch),
    ]
    .boxed()
}

pub(crate) fn log_id() -> BoxedStrategy<LogId> {
    (0u64..300, 0u64..8, prop_oneof![0u64..300, any::<u64>()])
        .prop_map(|(term, node, index)| LogId::new(raftkv_core::types::leader_id(term, node), index))
        .boxed()
}

pub(crate) fn vote() -> BoxedStrategy<raftkv_core::types::Vote> {
    (0u64..300, 0u64..8, any::<bool>())
        .prop_map(|(term, node, committed)| {
            if committed {
                Vote::new_committed(term, node)
            } else {
                Vote::new(term, node)
            }
        })
        .boxed()
}

pub(crate) fn member_node() -> BoxedStrategy<MemberNode> {
    (text(), vec(text(), 0..3))
        .prop_map(|(peer_url, client_urls)| MemberNode {
            peer_url,
            client_urls,
        })
        .boxed()
}

pub(crate) fn membership() -> BoxedStrategy<Membership<NodeId, MemberNode>> {
    let voters = vec(proptest::collection::btree_set(1u64..6, 1..3), 1..3);
    (
        voters,
        proptest::collection::btree_map(1u64..8, member_node(), 0..4),
    )
        .prop_map(|(configs, mut nodes)| {
            // 0.10 refuses a membership whose voters have no node: give every voter one.
            for id in configs.iter().flatten() {
                nodes.entry(*id).or_insert_with(MemberNode::default);
            }
            Membership::new(configs, nodes).unwrap()
        })
        .boxed()
}

pub(crate) fn stored_membership() -> BoxedStrategy<StoredMembership> {
    (proptest::option::of(log_id()), membership())
        .prop_map(|(log_id, m)| StoredMembership::new(log_id, m))
        .boxed()
}

pub(crate) fn entry() -> BoxedStrategy<Entry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::Blank),
        4 => command().prop_map(EntryPayload::Normal),
        1 => membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload)
        .prop_map(|(log_id, payload)| Entry { log_id, payload })
        .boxed()
}

pub(crate) fn version_record() -> BoxedStrategy<VersionRecord> {
    prop_oneof![
        (number(), number(), number(), small_bytes(), any::<u32>()).prop_map(
            |(create_revision, version, lease, value, sub)| VersionRecord::Put {
                create_revision,
                version,
                lease,
                value,
                sub,
            }
        ),
        any::<u32>().prop_map(|sub| VersionRecord::Delete { sub }),
    ]
    .boxed()
}

/// What `KvReader::published_member` decodes: a member's name and client URLs.
pub(crate) type MemberRecord = (String, Vec<String>);

pub(crate) fn member_record() -> BoxedStrategy<MemberRecord> {
    (text(), vec(text(), 0..3)).boxed()
}

/// The first chunk of an `InstallSnapshot` stream: the sender's vote and the metadata.
pub(crate) type SnapshotHeaderMsg = (raftkv_core::types::Vote, raftkv_core::types::SnapshotMeta);

pub(crate) fn snapshot_header() -> BoxedStrategy<SnapshotHeaderMsg> {
    (vote(), proptest::option::of(log_id()), stored_membership())
        .prop_map(|(vote, last_log_id, last_membership)| {
            (
                vote,
                SnapshotMeta {
                    last_log_id,
                    last_membership,
                },
            )
        })
        .boxed()
}

pub(crate) fn append_entries() -> BoxedStrategy<AppendEntriesRequest<TypeConfig>> {
    (
        vote(),
        proptest::option::of(log_id()),
        vec(entry(), 0..3),
        proptest::option::of(log_id()),
    )
        .prop_map(
            |(vote, prev_log_id, entries, leader_commit)| AppendEntriesRequest {
                vote,
                prev_log_id,
                entries,
                leader_commit,
            },
        )
        .boxed()
}

pub(crate) fn vote_request() -> BoxedStrategy<VoteRequest<TypeConfig>> {
    (vote(), proptest::option::of(log_id()))
        .prop_map(|(vote, last)| VoteRequest::new(vote, last))
        .boxed()
}

pub(crate) fn membership_change() -> BoxedStrategy<MembershipChange> {
    let ids = || proptest::collection::btree_set(any::<u64>(), 0..3);
    prop_oneof![
        (any::<u64>(), text(), any::<bool>()).prop_map(|(id, peer_url, wait)| MembershipChange::AddLearner {
            id,
            peer_url,
            wait
        }),
        ids().prop_map(MembershipChange::Promote),
        ids().prop_map(MembershipChange::Remove),
        (any::<u64>(), text()).prop_map(|(id, peer_url)| MembershipChange::UpdatePeerUrl { id, peer_url }),
    ]
    .boxed()
}

pub(crate) fn request_error() -> BoxedStrategy<RequestError> {
    prop_oneof![
        Just(RequestError::EmptyKey),
        (any::<usize>(), any::<usize>())
            .prop_map(|(size, limit)| RequestError::RequestTooLarge { size, limit }),
        Just(RequestError::DuplicateKey),
        (number(), number())
            .prop_map(|(requested, compacted)| RequestError::Compacted { requested, compacted }),
        text().prop_map(RequestError::Unsupported),
        text().prop_map(RequestError::InvalidPeerUrl),
        Just(RequestError::NoSpace),
        Just(RequestError::Corrupt),
    ]
    .boxed()
}

pub(crate) fn core_error() -> BoxedStrategy<CoreError> {
    prop_oneof![
        request_error().prop_map(CoreError::Request),
        (proptest::option::of(any::<u64>()), vec(text(), 0..3)).prop_map(
            |(leader_id, leader_client_urls)| {
                CoreError::NotLeader {
                    leader_id,
                    leader_client_urls,
                }
            }
        ),
        text().prop_map(CoreError::Timeout),
        any::<u64>().prop_map(|lag| CoreError::TooManyRequests { lag }),
        Just(CoreError::NoSpace),
        Just(CoreError::Corrupt),
    ]
    .boxed()
}

pub(crate) fn key_value() -> BoxedStrategy<KeyValue> {
    (
        small_bytes(),
        number(),
        number(),
        number(),
        small_bytes(),
        number(),
    )
        .prop_map(
            |(key, create_revision, mod_revision, version, value, lease)| KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            },
        )
        .boxed()
}

pub(crate) fn response() -> BoxedStrategy<Response> {
    let header = (any::<u64>(), any::<u64>(), number(), any::<u64>()).prop_map(
        |(cluster_id, member_id, revision, raft_term)| ResponseHeader {
            cluster_id,
            member_id,
            revision,
            raft_term,
        },
    );
    let single = prop_oneof![
        Just(Response::Empty),
        (header, proptest::option::of(key_value()))
            .prop_map(|(header, prev_kv)| Response::Put(PutResponse { header, prev_kv })),
        number().prop_map(|revision| Response::Done { revision }),
        request_error().prop_map(Response::Rejected),
        vec((any::<u64>(), any::<i32>()), 0..3).prop_map(|alarms| {
            Response::Alarms(
                alarms
                    .into_iter()
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .collect(),
            )
        }),
    ];
    prop_oneof![3 => single.clone(), 1 => vec(single, 0..3).prop_map(Response::Batch)].boxed()
}

/// What a follower decodes from the leader's answer to a forwarded write.
pub(crate) type ForwardAnswer = Result<(Response, u64), CoreError>;
/// What a follower decodes from the leader's answer to a read-index request.
pub(crate) type ReadIndexAnswer = Result<Option<LogId>, CoreError>;

pub(crate) fn forward_answer() -> BoxedStrategy<ForwardAnswer> {
    prop_oneof![
        (response(), any::<u64>()).prop_map(ForwardAnswer::Ok),
        core_error().prop_map(ForwardAnswer::Err),
    ]
    .boxed()
}
