//! [`AuthOverlay`]: the auth store as one `apply()` call sees it, published by the state
//! once the call's writes are in the tree.
//!
//! Apart from `apply/auth_table.rs` (which applies auth commands as part of the applier) so that
//! the applier and the state can both hold it without depending on each other.

use std::sync::Arc;

use raftkv_core::auth::{AuthEffect, AuthState};

/// The applier's view of the auth store: what was published, until this call changes it.
#[derive(Default)]
pub(crate) struct AuthOverlay {
    /// As published before this call.
    pub(crate) published: Arc<AuthState>,
    /// Changed by this call (`None`: unchanged).
    pub(crate) changed: Option<AuthState>,
    /// Token bookkeeping to do once this call's writes are in the tree.
    pub(crate) effects: Vec<AuthEffect>,
}

impl AuthOverlay {
    pub(crate) fn current(&self) -> &AuthState {
        self.changed.as_ref().unwrap_or(&self.published)
    }
}
