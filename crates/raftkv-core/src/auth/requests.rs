//! Which permissions a client request needs (etcd's `authApplierV3` and
//! `checkTxnAuth`), checked against an [`AuthState`].
//!
//! - Range: read on its range. Put: write on its key, read too with `prev_kv`, and
//!   write on every key already attached to its lease (whoever attaches a key to a lease
//!   must be able to revoke it). DeleteRange: write on its range, read too with
//!   `prev_kv`. Lease revoke: write on every attached key.
//! - Txn: read on every compare's range and each operation's own needs, in both
//!   branches. Unlike etcd 3.4, nested transactions are checked too (etcd 3.4 skips
//!   them, letting a user write through a nested txn what it may not write directly),
//!   and a put inside a txn needs what a put alone does (etcd 3.4 skips its `prev_kv`
//!   and lease rules).
//! - Auth changes: root ([`AuthState::check_admin`]). Compactions, lease grants and
//!   alarms need no permission, as in etcd.

use super::perms::Access;
use super::{AuthError, AuthState, Caller};
use crate::command::Command;
use crate::kv::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// The keys attached to a lease (for the lease rules above).
pub trait LeaseKeys {
    /// The keys attached to lease `id` (none if it does not exist).
    fn keys_of(&self, id: i64) -> Vec<Vec<u8>>;
}

impl AuthState {
    /// Check a command made by `caller` (a client request or an auth change).
    pub fn check_command(
        &self,
        caller: &Caller,
        command: &Command,
        leases: &dyn LeaseKeys,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        match command {
            Command::Put(put) => self.check_put(caller, put, leases),
            Command::DeleteRange(del) => self.check_delete(caller, del),
            Command::Txn(txn) => self.check_txn(caller, txn, leases),
            Command::LeaseRevoke { id } => self.check_lease_keys(caller, *id, leases),
            Command::Auth(auth) if auth.needs_admin() => self.check_admin(caller),
            _ => Ok(()),
        }
    }

    /// Check a read.
    pub fn check_range(&self, caller: &Caller, range: &RangeRequest) -> Result<(), AuthError> {
        self.check_access(caller, Access::Read, &range.key, &range.range_end)
    }

    fn check_put(&self, caller: &Caller, put: &PutRequest, leases: &dyn LeaseKeys) -> Result<(), AuthError> {
        self.check_access(caller, Access::Write, &put.key, &[])?;
        if put.lease != 0 {
            self.check_lease_keys(caller, put.lease, leases)?;
        }
        if put.prev_kv {
            self.check_access(caller, Access::Read, &put.key, &[])?;
        }
        Ok(())
    }

    fn check_delete(&self, caller: &Caller, del: &DeleteRangeRequest) -> Result<(), AuthError> {
        if del.prev_kv {
            self.check_access(caller, Access::Read, &del.key, &del.range_end)?;
        }
        self.check_access(caller, Access::Write, &del.key, &del.range_end)
    }

    fn check_lease_keys(&self, caller: &Caller, id: i64, leases: &dyn LeaseKeys) -> Result<(), AuthError> {
        for key in leases.keys_of(id) {
            self.check_access(caller, Access::Write, &key, &[])?;
        }
        Ok(())
    }

    /// Check a transaction (also a read-only one, served without the log).
    pub fn check_txn(
        &self,
        caller: &Caller,
        txn: &TxnRequest,
        leases: &dyn LeaseKeys,
    ) -> Result<(), AuthError> {
        for compare in &txn.compare {
            self.check_access(caller, Access::Read, &compare.key, &compare.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(range) => self.check_range(caller, range)?,
                RequestOp::Put(put) => self.check_put(caller, put, leases)?,
                RequestOp::DeleteRange(del) => self.check_delete(caller, del)?,
                RequestOp::Txn(inner) => self.check_txn(caller, inner, leases)?,
            }
        }
        Ok(())
    }
}

impl LeaseKeys for std::collections::BTreeMap<i64, Vec<Vec<u8>>> {
    fn keys_of(&self, id: i64) -> Vec<Vec<u8>> {
        self.get(&id).cloned().unwrap_or_default()
    }
}

/// The leases whose attached keys checking `command` needs (see [`LeaseKeys`]).
pub fn leases_named(command: &Command) -> std::collections::BTreeSet<i64> {
    fn txn(t: &TxnRequest, out: &mut std::collections::BTreeSet<i64>) {
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Put(put) if put.lease != 0 => {
                    out.insert(put.lease);
                }
                RequestOp::Txn(inner) => txn(inner, out),
                _ => {}
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    match command {
        Command::Put(put) if put.lease != 0 => {
            out.insert(put.lease);
        }
        Command::LeaseRevoke { id } => {
            out.insert(*id);
        }
        Command::Txn(t) => txn(t, &mut out),
        _ => {}
    }
    out
}

/// No lease has keys (for requests that name none, and for tests).
pub struct NoLeaseKeys;

impl LeaseKeys for NoLeaseKeys {
    fn keys_of(&self, _id: i64) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::{AuthCommand, PasswordHash, Permission, PermissionType};
    use crate::kv::Compare;

    fn state_with_reader() -> (AuthState, Caller) {
        let mut s = AuthState::new();
        let commands = [
            AuthCommand::UserAdd {
                name: "root".into(),
                password: PasswordHash::default(),
                no_password: false,
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthCommand::UserAdd {
                name: "u".into(),
                password: PasswordHash::default(),
                no_password: false,
            },
            AuthCommand::RoleAdd { name: "r".into() },
            AuthCommand::RoleGrantPermission {
                name: "r".into(),
                perm: Permission {
                    perm_type: PermissionType::ReadWrite,
                    key: b"a".to_vec(),
                    range_end: Vec::new(),
                },
            },
            AuthCommand::UserGrantRole {
                user: "u".into(),
                role: "r".into(),
            },
            AuthCommand::Enable,
        ];
        for (i, c) in commands.iter().enumerate() {
            s.apply(c, i as u64 + 1).unwrap();
        }
        let caller = Caller {
            user: "u".into(),
            auth_revision: s.revision,
        };
        (s, caller)
    }

    #[test]
    fn nested_txns_and_lease_keys_are_checked() {
        let (s, u) = state_with_reader();
        let put = |k: &str| RequestOp::Put(PutRequest::new(k, "v"));
        let flat = Command::Txn(TxnRequest {
            compare: vec![Compare::key(
                "a",
                crate::kv::CompareResult::Equal,
                crate::kv::CompareTarget::Version(1),
            )],
            success: vec![put("a")],
            failure: vec![],
        });
        assert_eq!(s.check_command(&u, &flat, &NoLeaseKeys), Ok(()));
        // etcd 3.4 would let this one through.
        let nested = Command::Txn(TxnRequest {
            success: vec![RequestOp::Txn(TxnRequest {
                failure: vec![put("b")],
                ..TxnRequest::default()
            })],
            ..TxnRequest::default()
        });
        assert_eq!(
            s.check_command(&u, &nested, &NoLeaseKeys),
            Err(AuthError::PermissionDenied)
        );
        // Attaching "a" to a lease that holds "b" would let the user delete "b" by revoking.
        let mut leased = PutRequest::new("a", "v");
        leased.lease = 7;
        let keys = std::collections::BTreeMap::from([(7, vec![b"b".to_vec()])]);
        assert_eq!(leases_named(&Command::Put(leased.clone())), [7].into());
        assert_eq!(
            s.check_command(&u, &Command::Put(leased), &keys),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check_command(&u, &Command::LeaseRevoke { id: 7 }, &keys),
            Err(AuthError::PermissionDenied)
        );
        let change = Command::Auth(AuthCommand::RoleAdd { name: "x".into() });
        assert_eq!(
            s.check_command(&u, &change, &NoLeaseKeys),
            Err(AuthError::PermissionDenied)
        );
        let root = Caller {
            user: "root".into(),
            auth_revision: s.revision,
        };
        assert_eq!(s.check_command(&root, &change, &NoLeaseKeys), Ok(()));
        assert_eq!(s.check_command(&root, &nested, &NoLeaseKeys), Ok(()));
    }
}
