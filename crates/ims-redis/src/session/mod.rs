//! Refresh-token storage in Redis, keyed by the SHA-256 of the token.
//!
//! Only the hash ever reaches Redis, so a leaked keyspace does not leak usable tokens. A
//! token lives at `{prefix}session:refresh:{hash}` with the caller's JSON record and a time to
//! live equal to the token's lifetime. Rotation *takes* the token (read and delete in one
//! atomic script) and leaves a tombstone at `{prefix}session:rotated:{hash}` holding the
//! same record, so that a second presentation of a rotated token can be recognised as reuse
//! (OAuth 2.0 Security BCP, refresh token rotation) rather than as an unknown token.
//!
//! The store reports whether Redis answered, so callers can fall back to durable storage.
//!
//! # Example
//! ```no_run
//! # async fn demo(redis: ims_redis::RedisService) {
//! use std::time::Duration;
//! use ims_redis::session::{hash_token, RefreshTokenStore, Taken};
//!
//! let store = RefreshTokenStore::new(redis);
//! let hash = hash_token("opaque-token-from-the-client");
//! let record = serde_json::json!({"userId": "u1", "createdAt": "2026-01-01T00:00:00Z"});
//! if !store.put(&hash, &record, Duration::from_secs(604_800)).await {
//!     // Redis is down: keep the token somewhere durable instead.
//! }
//! match store.take::<serde_json::Value>(&hash, Duration::from_secs(604_800)).await {
//!     Taken::Found(record) => { /* valid: issue the next token */ let _ = record; }
//!     Taken::Missing => { /* unknown here: check the fallback store, then the tombstone */ }
//!     Taken::Unavailable => { /* Redis is down: check the fallback store */ }
//! }
//! # }
//! ```

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::RedisService;

/// Key namespace of live refresh tokens, after the service prefix.
pub const REFRESH_NAMESPACE: &str = "session:refresh:";
/// Key namespace of rotation tombstones, after the service prefix.
pub const ROTATED_NAMESPACE: &str = "session:rotated:";
/// Key namespace of the answers a rotated token may be given again within the reuse grace
/// period, after the service prefix.
pub const GRACE_NAMESPACE: &str = "session:grace:";

/// Lower-case hex SHA-256 of `token`: the only form in which a token is stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The outcome of [`RefreshTokenStore::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Taken<T> {
    /// The token was live; it is now deleted and tombstoned.
    Found(T),
    /// Redis answered: no live token with that hash.
    Missing,
    /// Redis could not be asked; the answer must come from elsewhere.
    Unavailable,
}

/// Refresh-token records in Redis, with atomic take-and-tombstone for rotation.
#[derive(Clone, Debug)]
pub struct RefreshTokenStore {
    redis: RedisService,
}

// GETDEL and the tombstone write must be one atomic step: two concurrent refreshes with the
// same token must see exactly one winner, and the loser must already find the tombstone.
const TAKE_SCRIPT: &str = r"
local record = redis.call('GETDEL', KEYS[1])
if record then
  redis.call('SET', KEYS[2], record, 'PX', ARGV[1])
end
return record
";

// Hashed once per process (for EVALSHA), not once per call.
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_SCRIPT));

impl RefreshTokenStore {
    /// The live token's key, after the service prefix. On a cluster the hash is the key's
    /// hash tag (`session:refresh:{<hash>}`), so it shares a slot with its tombstone and the
    /// rotation script may touch both; on a server it is contract §3's format.
    fn live_key(&self, token_hash: &str) -> String {
        format!("{REFRESH_NAMESPACE}{}", self.tagged(token_hash))
    }

    /// The rotation tombstone's key (see [`live_key`](Self::live_key)).
    fn tombstone_key(&self, token_hash: &str) -> String {
        format!("{ROTATED_NAMESPACE}{}", self.tagged(token_hash))
    }

    fn tagged(&self, token_hash: &str) -> String {
        if self.redis.connection().is_cluster() {
            format!("{{{token_hash}}}")
        } else {
            token_hash.to_string()
        }
    }

    /// A store writing through `redis` (and so under its key prefix).
    pub fn new(redis: RedisService) -> Self {
        Self { redis }
    }

    /// Whether Redis is currently answering.
    pub fn is_available(&self) -> bool {
        self.redis.is_connected()
    }

    /// Stores `record` for the token whose hash is `token_hash`, expiring after `ttl`.
    /// Returns `false` when Redis did not take it, so the caller can store it elsewhere.
    pub async fn put<T: Serialize>(&self, token_hash: &str, record: &T, ttl: Duration) -> bool {
        self.redis
            .set(&self.live_key(token_hash), record, Some(ttl))
            .await
    }

    /// Reads the record of a live token without consuming it. `None` when it is missing or
    /// Redis is down.
    pub async fn get<T: DeserializeOwned>(&self, token_hash: &str) -> Option<T> {
        self.redis.get(&self.live_key(token_hash)).await
    }

    /// Atomically deletes a live token and leaves a tombstone with its record for
    /// `tombstone_ttl`. Never retried: a second run would find the token gone.
    pub async fn take<T: DeserializeOwned>(
        &self,
        token_hash: &str,
        tombstone_ttl: Duration,
    ) -> Taken<T> {
        let live = self.redis.key(&self.live_key(token_hash));
        let tombstone = self.redis.key(&self.tombstone_key(token_hash));
        let ttl_ms = tombstone_ttl.as_millis().max(1) as u64;
        let reply = self
            .redis
            .connection()
            .run(|mut c| async move {
                TAKE.key(live)
                    .key(tombstone)
                    .arg(ttl_ms)
                    .invoke_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match reply {
            Ok(Some(text)) => match serde_json::from_str(&text) {
                Ok(record) => Taken::Found(record),
                Err(e) => {
                    tracing::warn!("refresh token record is not valid JSON: {e}");
                    Taken::Missing
                }
            },
            Ok(None) => Taken::Missing,
            Err(e) if e.is_unavailable() => Taken::Unavailable,
            Err(e) => {
                static THROTTLED: crate::error::Throttled = crate::error::Throttled::new();
                THROTTLED.warn(|skipped| {
                    tracing::warn!(
                        skipped,
                        "refresh token take failed: {e} (logged at most once a minute)"
                    );
                });
                Taken::Unavailable
            }
        }
    }

    /// The record of a token that was rotated away, if its tombstone is still there.
    pub async fn rotated<T: DeserializeOwned>(&self, token_hash: &str) -> Option<T> {
        self.redis.get(&self.tombstone_key(token_hash)).await
    }

    /// Remembers, for `grace`, the answer that rotating `token` produced, so that a second
    /// presentation of it within that time (a browser with two tabs) gets the same answer
    /// instead of counting as reuse. The answer holds the successor token, so it is sealed
    /// (ChaCha20-Poly1305) with a key derived from `token` itself, which is stored nowhere:
    /// only whoever presents `token` again can open it, and a leaked keyspace still holds no
    /// usable token.
    pub async fn remember_successor<T: Serialize>(
        &self,
        token: &str,
        answer: &T,
        grace: Duration,
    ) -> bool {
        let Some(sealed) = seal_answer(token, answer) else {
            return false;
        };
        self.remember_sealed(token, &sealed, grace).await
    }

    /// [`remember_successor`](Self::remember_successor) for an answer already sealed with
    /// [`seal_answer`] (a caller that also keeps it elsewhere seals it once).
    pub async fn remember_sealed(&self, token: &str, sealed: &str, grace: Duration) -> bool {
        self.redis
            .set(&self.grace_key(&hash_token(token)), &sealed, Some(grace))
            .await
    }

    /// The answer remembered for the rotated `token`, if its grace period is still running.
    pub async fn successor<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let sealed: String = self.redis.get(&self.grace_key(&hash_token(token))).await?;
        open_answer(token, &sealed)
    }

    /// Ends a rotated token's grace period early (its successor has been used).
    pub async fn forget_successor(&self, token_hash: &str) {
        self.redis.del(&[&self.grace_key(token_hash)]).await;
    }

    fn grace_key(&self, token_hash: &str) -> String {
        format!("{GRACE_NAMESPACE}{}", self.tagged(token_hash))
    }

    /// Deletes a live token (logout). Returns whether it existed.
    pub async fn remove(&self, token_hash: &str) -> bool {
        self.redis.del(&[&self.live_key(token_hash)]).await > 0
    }
}

/// `answer` sealed as [`RefreshTokenStore::remember_successor`] seals it (hex text), for a
/// caller that keeps it elsewhere as well (a durable store, for when Redis is away): only
/// [`open_answer`] with the same `token` reads it.
pub fn seal_answer<T: Serialize>(token: &str, answer: &T) -> Option<String> {
    seal(token, &serde_json::to_vec(answer).ok()?)
}

/// What [`seal_answer`] sealed for `token`; `None` for any other token or a damaged value.
pub fn open_answer<T: DeserializeOwned>(token: &str, sealed: &str) -> Option<T> {
    serde_json::from_slice(&open(token, sealed)?).ok()
}

/// The key that seals a rotated token's successor: a hash of the token under a label of its
/// own, so it is neither the token nor the hash that names its keys.
fn grace_cipher(token: &str) -> chacha20poly1305::ChaCha20Poly1305 {
    use chacha20poly1305::KeyInit;
    let key = Sha256::new()
        .chain_update(b"ims-redis session grace key\0")
        .chain_update(token.as_bytes())
        .finalize();
    chacha20poly1305::ChaCha20Poly1305::new(&key)
}

/// `plain` sealed for `token`: hex of a random nonce and the ciphertext.
fn seal(token: &str, plain: &[u8]) -> Option<String> {
    use chacha20poly1305::aead::Aead;
    let nonce: [u8; 12] = rand::random();
    let sealed = grace_cipher(token).encrypt(&nonce.into(), plain).ok()?;
    Some(hex::encode([&nonce[..], &sealed].concat()))
}

/// What [`seal`] sealed for `token`; `None` for any other token or a damaged value.
fn open(token: &str, sealed: &str) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::Aead;
    let bytes = hex::decode(sealed).ok()?;
    let (nonce, sealed) = bytes.split_at_checked(12)?;
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    grace_cipher(token).decrypt(&nonce.into(), sealed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_successor_is_sealed_for_the_token_that_was_rotated_only() {
        let sealed = seal("old-token", b"{\"refreshToken\":\"next-token\"}").expect("sealed");
        assert!(!sealed.contains(&hex::encode("next-token")));
        assert_eq!(
            open("old-token", &sealed).as_deref(),
            Some(&b"{\"refreshToken\":\"next-token\"}"[..])
        );
        assert_eq!(open("other-token", &sealed), None);
        assert_eq!(open(&hash_token("old-token"), &sealed), None);
        assert_eq!(open("old-token", "00"), None);
    }
}
