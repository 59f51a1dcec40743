//! Checks a client request before it is proposed, so that a bad request is refused with a
//! typed [`RequestError`] and never reaches the log. What can only be decided against the
//! state (a compacted revision, an unknown lease) is decided at apply time instead.

use std::collections::BTreeSet;

use crate::codec;
use crate::command::Command;
use crate::error::RequestError;
use crate::kv::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Request limits, configurable per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded request accepted.
    pub max_request_bytes: usize,
    /// Most operations in one transaction branch.
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// Check a write command from a client; returns its encoded size.
pub fn check_command(command: &Command, limits: &Limits) -> Result<usize, RequestError> {
    match command {
        Command::Put(put) => check_put(put)?,
        Command::DeleteRange(del) => check_delete(del)?,
        Command::Txn(txn) => check_txn(txn, limits.max_txn_ops, 1)?,
        Command::AsUser { command, .. } if !matches!(**command, Command::AsUser { .. }) => {
            check_command(command, limits)?;
        }
        other => {
            return Err(RequestError::Unsupported(format!(
                "{} is not a client request",
                command_name(other)
            )));
        }
    }
    let size = codec::encoded_len(command).map_err(|e| RequestError::Unsupported(e.to_string()))?;
    if size > limits.max_request_bytes {
        return Err(RequestError::RequestTooLarge {
            size,
            limit: limits.max_request_bytes,
        });
    }
    Ok(size)
}

/// Check a read.
pub fn check_range(range: &RangeRequest) -> Result<(), RequestError> {
    check_key_and_end(&range.key, &range.range_end)
}

fn check_put(put: &PutRequest) -> Result<(), RequestError> {
    if put.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if put.ignore_value && !put.value.is_empty() {
        return Err(RequestError::ValueProvided);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(RequestError::LeaseProvided);
    }
    Ok(())
}

fn check_delete(del: &DeleteRangeRequest) -> Result<(), RequestError> {
    check_key_and_end(&del.key, &del.range_end)
}

fn check_compare(cmp: &Compare) -> Result<(), RequestError> {
    check_key_and_end(&cmp.key, &cmp.range_end)
}

fn check_key_and_end(key: &[u8], range_end: &[u8]) -> Result<(), RequestError> {
    if key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    // Empty: one key. [0]: every key >= key. Otherwise it must lie after key.
    if !range_end.is_empty() && range_end != [0] && range_end <= key {
        return Err(RequestError::InvalidRangeEnd);
    }
    Ok(())
}

/// etcd's `checkTxnRequest`: a transaction spends as many operations of `budget` as its
/// largest list (compares, success, failure); what is left is the budget of each nested
/// transaction. So with `--max-txn-ops` 128, transactions nest at most 128 levels deep
/// (129 if the innermost is empty). [`crate::kv::MAX_TXN_NESTING`] bounds the depth
/// whatever the budget.
fn check_txn(txn: &TxnRequest, budget: usize, depth: usize) -> Result<(), RequestError> {
    if depth > crate::kv::MAX_TXN_NESTING {
        return Err(RequestError::TooManyTxnOps {
            ops: depth,
            limit: crate::kv::MAX_TXN_NESTING,
        });
    }
    let ops = txn.compare.len().max(txn.success.len()).max(txn.failure.len());
    if ops > budget {
        return Err(RequestError::TooManyTxnOps { ops, limit: budget });
    }
    for cmp in &txn.compare {
        check_compare(cmp)?;
    }
    for branch in [&txn.success, &txn.failure] {
        for op in branch.iter() {
            match op {
                RequestOp::Range(r) => check_range(r)?,
                RequestOp::Put(p) => check_put(p)?,
                RequestOp::DeleteRange(d) => check_delete(d)?,
                RequestOp::Txn(t) => check_txn(t, budget - ops, depth + 1)?,
            }
        }
    }
    // etcd refuses a branch that writes one key twice, or puts a key it also deletes.
    let (success_puts, success_dels) = branch_writes(&txn.success)?;
    check_puts_outside_deletes(&success_puts, &success_dels)?;
    let (failure_puts, failure_dels) = branch_writes(&txn.failure)?;
    check_puts_outside_deletes(&failure_puts, &failure_dels)?;
    Ok(())
}

type Interval = (Vec<u8>, Vec<u8>);

/// The keys a branch puts and the intervals it deletes, with nested transactions merged
/// in (both of their branches, as etcd does). Fails on a key put twice.
fn branch_writes(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>), RequestError> {
    let mut puts = BTreeSet::new();
    let mut dels = Vec::new();
    for op in ops {
        match op {
            RequestOp::Range(_) => {}
            RequestOp::Put(p) => {
                if !puts.insert(p.key.clone()) {
                    return Err(RequestError::DuplicateKey);
                }
            }
            RequestOp::DeleteRange(d) => dels.push((d.key.clone(), d.range_end.clone())),
            RequestOp::Txn(t) => {
                let (sp, sd) = branch_writes(&t.success)?;
                let (fp, fd) = branch_writes(&t.failure)?;
                // The same key in both nested branches is fine: only one runs.
                let nested: BTreeSet<Vec<u8>> = sp.into_iter().chain(fp).collect();
                for key in nested {
                    if !puts.insert(key) {
                        return Err(RequestError::DuplicateKey);
                    }
                }
                dels.extend(sd);
                dels.extend(fd);
            }
        }
    }
    Ok((puts, dels))
}

fn check_puts_outside_deletes(puts: &BTreeSet<Vec<u8>>, dels: &[Interval]) -> Result<(), RequestError> {
    for (start, end) in dels {
        let hit = if end.is_empty() {
            puts.contains(start)
        } else if end.as_slice() == [0] {
            puts.range(start.clone()..).next().is_some()
        } else {
            puts.range(start.clone()..end.clone()).next().is_some()
        };
        if hit {
            return Err(RequestError::DuplicateKey);
        }
    }
    Ok(())
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Put(_) => "Put",
        Command::DeleteRange(_) => "DeleteRange",
        Command::Txn(_) => "Txn",
        Command::Batch(_) => "Batch",
        Command::Compact(_) => "Compact",
        Command::LeaseGrant { .. } => "LeaseGrant",
        Command::LeaseRevoke { .. } => "LeaseRevoke",
        Command::LeaseCheckpoint { .. } => "LeaseCheckpoint",
        Command::PublishMember { .. } => "PublishMember",
        Command::Alarm(_) => "Alarm",
        Command::Auth(_) => "Auth",
        Command::AsUser { command, .. } => command_name(command),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kv::{CompareResult, CompareTarget};

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(k, "v"))
    }

    #[test]
    fn refuses_bad_requests_with_typed_errors() {
        let limits = Limits::default();
        let check = |c: Command| check_command(&c, &limits);
        assert_eq!(
            check(Command::Put(PutRequest::new("", "v"))),
            Err(RequestError::EmptyKey)
        );
        let big = Command::Put(PutRequest::new("k", vec![0u8; DEFAULT_MAX_REQUEST_BYTES]));
        assert!(matches!(check(big), Err(RequestError::RequestTooLarge { .. })));
        let backwards = DeleteRangeRequest {
            key: b"b".to_vec(),
            range_end: b"a".to_vec(),
            prev_kv: false,
        };
        assert_eq!(
            check(Command::DeleteRange(backwards)),
            Err(RequestError::InvalidRangeEnd)
        );
        assert_eq!(
            check_range(&RangeRequest::interval("b", "b")),
            Err(RequestError::InvalidRangeEnd)
        );
        assert_eq!(check_range(&RangeRequest::interval("b", vec![0])), Ok(()));
        let too_many = TxnRequest {
            success: (0..129).map(|i| put(&format!("k{i}"))).collect(),
            ..TxnRequest::default()
        };
        assert!(matches!(
            check(Command::Txn(too_many)),
            Err(RequestError::TooManyTxnOps { .. })
        ));
        let dup = TxnRequest {
            success: vec![put("a"), put("a")],
            ..TxnRequest::default()
        };
        assert_eq!(check(Command::Txn(dup)), Err(RequestError::DuplicateKey));
        let put_and_delete = TxnRequest {
            failure: vec![put("ab"), RequestOp::DeleteRange(DeleteRangeRequest::prefix("a"))],
            ..TxnRequest::default()
        };
        assert_eq!(
            check(Command::Txn(put_and_delete)),
            Err(RequestError::DuplicateKey)
        );
        let bad_compare = TxnRequest {
            compare: vec![Compare::key("", CompareResult::Equal, CompareTarget::Version(1))],
            ..TxnRequest::default()
        };
        assert_eq!(check(Command::Txn(bad_compare)), Err(RequestError::EmptyKey));
        assert!(matches!(
            check(Command::LeaseRevoke { id: 1 }),
            Err(RequestError::Unsupported(_))
        ));
        let many_compares = TxnRequest {
            compare: (0..129)
                .map(|i| Compare::key(format!("k{i}"), CompareResult::Equal, CompareTarget::Version(1)))
                .collect(),
            ..TxnRequest::default()
        };
        assert!(matches!(
            check(Command::Txn(many_compares)),
            Err(RequestError::TooManyTxnOps { .. })
        ));
        // Each level spends one operation of the 128: 128 levels with an operation each,
        // and an empty 129th, pass; one more level does not.
        let nest = |levels: usize| {
            let mut txn = TxnRequest::default();
            for _ in 1..levels {
                txn = TxnRequest {
                    success: vec![RequestOp::Txn(txn)],
                    ..TxnRequest::default()
                };
            }
            Command::Txn(txn)
        };
        assert!(check(nest(129)).is_ok());
        assert!(matches!(
            check(nest(130)),
            Err(RequestError::TooManyTxnOps { .. })
        ));
        let wide_then_deep = TxnRequest {
            compare: (0..100)
                .map(|i| Compare::key(format!("k{i}"), CompareResult::Equal, CompareTarget::Version(1)))
                .collect(),
            success: vec![RequestOp::Txn(TxnRequest {
                success: (0..29).map(|i| put(&format!("p{i}"))).collect(),
                ..TxnRequest::default()
            })],
            ..TxnRequest::default()
        };
        assert!(matches!(
            check(Command::Txn(wide_then_deep)),
            Err(RequestError::TooManyTxnOps { ops: 29, limit: 28 })
        ));
        let mut deep = TxnRequest::default();
        for _ in 0..crate::kv::MAX_TXN_NESTING {
            deep = TxnRequest {
                success: vec![RequestOp::Txn(deep)],
                ..TxnRequest::default()
            };
        }
        assert!(matches!(
            check(Command::Txn(deep)),
            Err(RequestError::TooManyTxnOps { .. })
        ));
    }

    #[test]
    fn accepts_good_requests() {
        let limits = Limits::default();
        let nested = TxnRequest {
            success: vec![
                put("a"),
                RequestOp::Txn(TxnRequest {
                    success: vec![put("b")],
                    failure: vec![put("b")],
                    ..TxnRequest::default()
                }),
            ],
            failure: vec![put("a")],
            ..TxnRequest::default()
        };
        assert!(check_command(&Command::Txn(nested), &limits).is_ok());
        assert!(check_command(&Command::Put(PutRequest::new("k", "v")), &limits).unwrap() > 2);
    }
}
