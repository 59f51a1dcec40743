//! [`TokenTable`]: etcd's simple tokens on one member.
//!
//! A token is `<16 random letters>.<log index>`: the member that checked the password
//! picks the letters, and applying the `Authenticate` entry at that index assigns the
//! token on every member, so it is good on each one once that member has applied the
//! index (a member that has not yet waits for it, as etcd does). Tokens live in memory
//! only: a restart, disabling auth, deleting the user or changing its password drops
//! them, and each expires after the TTL passes without use (etcd's `--auth-token-ttl`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// etcd's default `--auth-token-ttl`: 300 s.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// The log index a token names, if it is shaped like a simple token.
pub fn parse_token_index(token: &str) -> Option<u64> {
    let (_, index) = token.split_once('.')?;
    if index.contains('.') {
        return None;
    }
    index.parse().ok()
}

struct Assigned {
    user: String,
    expires: Instant,
}

/// The tokens assigned on this member. Debug says how many, never which.
pub struct TokenTable {
    ttl: Mutex<Duration>,
    tokens: Mutex<HashMap<String, Assigned>>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.tokens.lock().len())
            .finish_non_exhaustive()
    }
}

/// A TTL no clock arithmetic overflows with (about 100 years).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Default for TokenTable {
    fn default() -> Self {
        Self {
            ttl: Mutex::new(DEFAULT_TOKEN_TTL),
            tokens: Mutex::default(),
        }
    }
}

impl TokenTable {
    /// How long a token lives without use (0 means etcd's default).
    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock() = if ttl.is_zero() {
            DEFAULT_TOKEN_TTL
        } else {
            ttl.min(MAX_TOKEN_TTL)
        };
    }

    /// Assign `token` to `user`; expired tokens are dropped on the way.
    pub fn assign(&self, user: &str, token: &str) {
        let now = Instant::now();
        let ttl = *self.ttl.lock();
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, t| t.expires > now);
        tokens.insert(
            token.to_owned(),
            Assigned {
                user: user.to_owned(),
                expires: now + ttl,
            },
        );
    }

    /// The user `token` names, renewing its TTL; `None` if unknown or expired.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let ttl = *self.ttl.lock();
        let mut tokens = self.tokens.lock();
        let assigned = tokens.get_mut(token)?;
        if assigned.expires <= now {
            tokens.remove(token);
            return None;
        }
        assigned.expires = now + ttl;
        Some(assigned.user.clone())
    }

    /// Drop every token of `user`.
    pub fn invalidate(&self, user: &str) {
        self.tokens.lock().retain(|_, t| t.user != user);
    }

    /// Drop every token.
    pub fn drop_all(&self) {
        self.tokens.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_without_use_and_are_dropped_with_their_user() {
        let table = TokenTable::default();
        table.set_ttl(Duration::from_millis(50));
        table.assign("alice", "abc.3");
        table.assign("bob", "def.4");
        assert_eq!(table.user_of("abc.3").as_deref(), Some("alice"));
        table.invalidate("alice");
        assert_eq!(table.user_of("abc.3"), None);
        assert_eq!(table.user_of("def.4").as_deref(), Some("bob"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(table.user_of("def.4"), None, "expired after the TTL without use");
        assert_eq!(parse_token_index("abc.12"), Some(12));
        assert_eq!(parse_token_index("abc"), None);
        assert_eq!(parse_token_index("a.b.1"), None);
    }
}
