//! The table of bad requests: what each row sends, where, and what it must get back.

use super::*;

pub(crate) fn refused(code: Code, message: &'static str) -> Expect {
    Expect::Status(code, message)
}

pub(crate) fn answer(what: &'static str, check: fn(&str) -> bool) -> Expect {
    Expect::Answer(what, check)
}

pub(crate) fn any_answer() -> Expect {
    answer("any OK answer", |_| true)
}

/// Which assertion a known bug suspends (all other checks of the row still run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The code is checked, the message text is not.
    Message,
    /// Nothing about the answer is checked.
    #[allow(dead_code)]
    Answer,
    /// The "no `recv-*.tmp` file left behind" check.
    TmpFiles,
}

#[derive(Clone, Copy)]
pub(crate) struct Bug {
    pub(crate) skip: Skip,
    pub(crate) note: &'static str,
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) at: At,
    pub(crate) req: Req,
    pub(crate) expect: Expect,
    pub(crate) bug: Option<Bug>,
    /// A request that legitimately writes: excluded from the "nothing changed" check.
    pub(crate) writes: bool,
}

#[derive(Default)]
pub(crate) struct Table(pub(crate) Vec<Case>);

/// The rows `Table::add` just pushed, to mark them.
pub(crate) struct Rows<'a>(pub(crate) &'a mut [Case]);

impl Table {
    pub(crate) fn add(&mut self, name: &'static str, ats: &[At], req: Req, expect: Expect) -> Rows<'_> {
        let start = self.0.len();
        for at in ats {
            self.0.push(Case {
                name,
                at: *at,
                req: req.clone(),
                expect: expect.clone(),
                bug: None,
                writes: false,
            });
        }
        Rows(&mut self.0[start..])
    }
}

impl Rows<'_> {
    // No row has a known bug today; kept for the next one found.
    #[allow(dead_code)]
    pub(crate) fn known_bug(self, skip: Skip, note: &'static str) {
        for case in self.0 {
            case.bug = Some(Bug { skip, note });
        }
    }

    pub(crate) fn writes(self) {
        for case in self.0 {
            case.writes = true;
        }
    }
}

/// Deterministic garbage (xorshift64).
pub(crate) struct Garbage(pub(crate) u64);

impl Garbage {
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }

    /// Bytes that are no valid protobuf message: a tag with field number 0, then ASCII.
    pub(crate) fn bad_protobuf(&mut self) -> Vec<u8> {
        let mut bytes = vec![0x07];
        bytes.extend(self.bytes(63).into_iter().map(|b| b & 0x7f));
        bytes
    }
}

pub(crate) fn put_with(key: &[u8], value: &[u8], edit: impl FnOnce(&mut pb::PutRequest)) -> Req {
    let mut put = pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    };
    edit(&mut put);
    Req::Put(put)
}

pub(crate) fn range(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn range_with(key: &[u8], edit: impl FnOnce(&mut pb::RangeRequest)) -> Req {
    let mut range = range(key);
    edit(&mut range);
    Req::Range(range)
}

pub(crate) fn txn_with(edit: impl FnOnce(&mut pb::TxnRequest)) -> Req {
    let mut txn = pb::TxnRequest::default();
    edit(&mut txn);
    Req::Txn(txn)
}

pub(crate) fn op(request: pb::request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

pub(crate) fn op_put(key: &[u8]) -> pb::RequestOp {
    op(pb::request_op::Request::RequestPut(pb::PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
}

pub(crate) fn op_range(range: pb::RangeRequest) -> pb::RequestOp {
    op(pb::request_op::Request::RequestRange(range))
}

pub(crate) fn compare(key: &[u8], result: i32, target: i32) -> pb::Compare {
    pb::Compare {
        result,
        target,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(pb::compare::TargetUnion::Version(1)),
    }
}

pub(crate) fn compact_at(revision: i64, physical: bool) -> Req {
    Req::Compact(pb::CompactionRequest { revision, physical })
}

pub(crate) fn member_add(peer_urls: &[&str]) -> Req {
    Req::MemberAdd(pb::MemberAddRequest {
        peer_ur_ls: peer_urls.iter().map(|u| u.to_string()).collect(),
        is_learner: true,
    })
}

pub(crate) fn forward(command: &Command) -> Req {
    Req::Forward(codec::encode(command).unwrap())
}

/// Revisions the table refers to (written before it).
pub(crate) struct Revisions {
    pub(crate) compacted: i64,
    pub(crate) future: i64,
}
