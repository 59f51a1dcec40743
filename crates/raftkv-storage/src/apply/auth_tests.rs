//! The auth store in the state machine: changes applied through entries, requests made
//! as a user checked against the store as applied so far (a revoke earlier in the same
//! batch already counts), tokens assigned by `Authenticate` entries, and the store kept
//! across a reopen and carried by a snapshot (tokens are not: they live in memory).

use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use raftkv_core::auth::{
    AuthCommand, AuthError, Caller, PasswordHash, Permission, PermissionType, TokenPrefix,
};
use raftkv_core::kv::PutRequest;
use raftkv_core::{Command, RequestError, Response};

use crate::apply::lease_tests::{entries, install_snapshot};
use crate::{Store, StoreOptions};

fn auth(c: AuthCommand) -> Command {
    Command::Auth(c)
}

fn user(name: &str) -> Command {
    auth(AuthCommand::UserAdd {
        name: name.into(),
        password: PasswordHash(b"$2a$04$not-a-real-hash".to_vec()),
        no_password: false,
    })
}

fn grant(user: &str, role: &str) -> Command {
    auth(AuthCommand::UserGrantRole {
        user: user.into(),
        role: role.into(),
    })
}

fn as_user(caller: &Caller, command: Command) -> Command {
    Command::AsUser {
        caller: caller.clone(),
        command: Box::new(command),
    }
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest::new(key, "v"))
}

fn denied(e: AuthError) -> Response {
    Response::Rejected(RequestError::Auth(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_applied_checked_kept_and_carried_in_snapshots() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut store = Store::open(a.path(), StoreOptions::default()).unwrap();
    let answers = store
        .state_machine
        .apply_committed(entries(
            1,
            vec![
                user("root"),
                grant("root", "root"),
                user("alice"),
                auth(AuthCommand::RoleAdd { name: "w".into() }),
                auth(AuthCommand::RoleGrantPermission {
                    name: "w".into(),
                    perm: Permission {
                        perm_type: PermissionType::Write,
                        key: b"a/".to_vec(),
                        range_end: b"a0".to_vec(),
                    },
                }),
                grant("alice", "w"),
                auth(AuthCommand::Enable),
                auth(AuthCommand::Authenticate {
                    name: "alice".into(),
                    token_prefix: TokenPrefix("tok".into()),
                    // The revision after the seven changes above (enabling bumps none).
                    checked_revision: 7,
                }),
            ],
        ))
        .await
        .unwrap();
    assert!(
        answers[..7].iter().all(|a| matches!(a, Response::Done { .. })),
        "{answers:?}"
    );
    assert!(matches!(&answers[7], Response::Authenticated { token, .. } if token == "tok.8"));
    assert_eq!(store.shared.tokens().user_of("tok.8").as_deref(), Some("alice"));
    let state = store.shared.auth_state();
    assert!(state.enabled);
    let alice = Caller {
        user: "alice".into(),
        auth_revision: state.revision,
    };

    // Checked entry by entry: the revoke in the middle refuses what follows it, and the
    // caller's older auth revision is refused from then on too.
    let answers = store
        .state_machine
        .apply_committed(entries(
            9,
            vec![
                as_user(&alice, put("a/1")),
                as_user(&alice, put("b")),
                as_user(&Caller::anonymous(), put("a/2")),
                as_user(&alice, auth(AuthCommand::RoleAdd { name: "x".into() })),
                as_user(
                    &alice,
                    auth(AuthCommand::UserRevokeRole {
                        name: "alice".into(),
                        role: "w".into(),
                    }),
                ),
                auth(AuthCommand::UserRevokeRole {
                    name: "alice".into(),
                    role: "w".into(),
                }),
                as_user(&alice, put("a/3")),
            ],
        ))
        .await
        .unwrap();
    assert!(matches!(answers[0], Response::Put(_)));
    assert_eq!(answers[1], denied(AuthError::PermissionDenied));
    assert_eq!(answers[2], denied(AuthError::UserEmpty));
    assert_eq!(answers[3], denied(AuthError::PermissionDenied), "not root");
    assert_eq!(answers[4], denied(AuthError::PermissionDenied), "not root");
    assert!(matches!(answers[5], Response::Done { .. }));
    assert_eq!(answers[6], denied(AuthError::AuthOldRevision));
    let state = store.shared.auth_state();
    drop(store);

    // Reopened: the store is back, the tokens are not.
    let mut store = Store::open(a.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.shared.auth_state(), state);
    assert_eq!(store.shared.tokens().user_of("tok.8"), None);

    // A snapshot carries the store.
    let snapshot = store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut follower = Store::open(b.path(), StoreOptions::default()).unwrap();
    assert!(!follower.shared.auth_state().enabled);
    install_snapshot(&mut follower, snapshot).await;
    assert_eq!(follower.shared.auth_state(), state);
    // Deleting the user drops its tokens on every member that applies it.
    let answers = follower
        .state_machine
        .apply_committed(entries(
            100,
            vec![
                auth(AuthCommand::Authenticate {
                    name: "alice".into(),
                    token_prefix: TokenPrefix("again".into()),
                    checked_revision: state.revision,
                }),
                auth(AuthCommand::UserDelete { name: "alice".into() }),
            ],
        ))
        .await
        .unwrap();
    assert!(matches!(&answers[0], Response::Authenticated { token, .. } if token == "again.100"));
    assert_eq!(follower.shared.tokens().user_of("again.100"), None);
}
