//! The auth store in the state tree (the `x` record, see [`crate::keys`]) and applying
//! [`Command::Auth`](raftkv_core::Command::Auth) and
//! [`Command::AsUser`](raftkv_core::Command::AsUser) (an extension of [`Applier`], see
//! `apply/applier.rs`).
//!
//! The whole [`AuthState`] is one record: auth changes are rare and the state small
//! (users and roles, not keys), and one record is undone as one by `apply/rollback.rs`. The
//! applier works on its own copy, so a change is seen by the requests after it in the
//! same `apply()` call; [`crate::state::StateShared`] publishes the copy once the call's
//! writes are in the tree, together with the token bookkeeping ([`AuthEffect`]) the
//! call's `Authenticate` entries and user changes asked for.

use std::collections::BTreeMap;

use raftkv_core::auth::{AuthCommand, AuthEffect, AuthError, AuthState, Caller, leases_named};
use raftkv_core::{Command, RequestError, codec};

use crate::apply::applier::Applier;
use crate::error::Error;
use crate::keys;

/// The auth store in `tree` (a fresh one, revision 1, if none was written yet).
pub(crate) fn read(tree: &sled::Tree) -> Result<AuthState, Error> {
    match tree.get(keys::AUTH_STATE)? {
        Some(bytes) => Ok(codec::decode(&bytes)?),
        None => Ok(AuthState::new()),
    }
}

impl Applier<'_> {
    /// Apply an auth change (whoever made it was authorized already, see
    /// [`Applier::authorize`]); the answer is the token for `Authenticate`.
    pub(crate) fn auth(
        &mut self,
        command: &AuthCommand,
        index: u64,
    ) -> Result<Result<Option<String>, RequestError>, Error> {
        let mut state = self.auth.current().clone();
        let effect = match state.apply(command, index) {
            Ok(effect) => effect,
            Err(e) => return Ok(Err(RequestError::Auth(e))),
        };
        let token = match &effect {
            AuthEffect::Assign { token, .. } => Some(token.clone()),
            _ => None,
        };
        if state != *self.auth.current() {
            self.batch.insert(keys::AUTH_STATE, codec::encode(&state)?);
            tracing::info!(
                change = command.name(),
                auth_revision = state.revision,
                "auth store changed"
            );
            self.auth.changed = Some(state);
        }
        if effect != AuthEffect::None {
            self.auth.effects.push(effect);
        }
        Ok(Ok(token))
    }

    /// Whether `caller` may make `command`, as of the auth store so far (auth disabled:
    /// anyone may).
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        command: &Command,
    ) -> Result<Result<(), AuthError>, Error> {
        let state = self.auth.current();
        if !state.enabled {
            return Ok(Ok(()));
        }
        let mut lease_keys = BTreeMap::new();
        for id in leases_named(command) {
            lease_keys.insert(id, self.attached_keys(id)?.into_iter().collect::<Vec<_>>());
        }
        Ok(state.check_command(caller, command, &lease_keys))
    }
}
