//! Remembers accepted signatures until their timestamps fall out of the
//! clock-skew window, so each signature is accepted once (see
//! [`ReplayPolicy::Once`](crate::ReplayPolicy::Once)).
//!
//! Keyed by the first 16 bytes of the signature (a collision needs 2^64
//! signatures), sharded to keep lock hold times short, and counted per
//! principal: each principal has its own quota of live signatures, so a key
//! holder who fills its quota is refused (fail closed, rather than
//! forgetting signatures that could still be replayed) while every other
//! principal keeps being served. Expired entries are purged as quotas fill.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::AuthError;

const SHARDS: usize = 16;

/// One principal's live signatures in one shard.
#[derive(Default)]
struct Seen {
    expiry_by_signature: HashMap<[u8; 16], u64>,
    inserts_since_purge: usize,
}

/// Principals are few (one per keyring identity), so a map per shard is
/// small; its keys are bounded by the keyring, not by callers.
type Shard = HashMap<Arc<str>, Seen>;

pub(crate) struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    quota_per_shard: usize,
}

impl ReplayCache {
    /// A cache holding up to `per_principal` live signatures for each
    /// principal.
    pub(crate) fn new(per_principal: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            quota_per_shard: per_principal.div_ceil(SHARDS).max(1),
        }
    }

    /// Records `signature` of `principal`, valid until `expires_at` (Unix
    /// seconds); refuses it if it was recorded before and has not expired,
    /// or if `principal` already has its quota of live signatures.
    pub(crate) fn check_and_record(
        &self,
        principal: &str,
        signature: &[u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<(), AuthError> {
        let mut key = [0u8; 16];
        key.copy_from_slice(&signature[..16]);
        let shard = &self.shards[usize::from(signature[16]) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = match shard.get_mut(principal) {
            Some(seen) => seen,
            None => shard.entry(Arc::from(principal)).or_default(),
        };
        if let Some(&expiry) = seen.expiry_by_signature.get(&key)
            && expiry >= now
        {
            return Err(AuthError::Replayed);
        }
        seen.inserts_since_purge += 1;
        if seen.expiry_by_signature.len() >= self.quota_per_shard
            || seen.inserts_since_purge >= self.quota_per_shard / 4 + 64
        {
            seen.expiry_by_signature.retain(|_, expiry| *expiry >= now);
            seen.inserts_since_purge = 0;
            if seen.expiry_by_signature.len() >= self.quota_per_shard {
                return Err(AuthError::ReplayCacheFull(principal.to_owned()));
            }
        }
        seen.expiry_by_signature.insert(key, expires_at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: u8) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[0] = n;
        s[16] = n;
        s
    }

    /// Signatures that all land in the same shard.
    fn same_shard(n: u8) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[0] = n;
        s
    }

    #[test]
    fn a_signature_is_accepted_once_until_it_expires() {
        let cache = ReplayCache::new(1000);
        cache.check_and_record("orbit", &sig(1), 100, 10).unwrap();
        assert_eq!(
            cache.check_and_record("orbit", &sig(1), 100, 50),
            Err(AuthError::Replayed)
        );
        cache.check_and_record("orbit", &sig(2), 100, 50).unwrap();
        // Past its expiry the old entry no longer blocks (the skew check would
        // refuse such a request anyway).
        cache.check_and_record("orbit", &sig(1), 300, 101).unwrap();
    }

    #[test]
    fn a_full_quota_refuses_instead_of_forgetting() {
        // A quota of 1 per shard.
        let cache = ReplayCache::new(SHARDS);
        cache
            .check_and_record("orbit", &same_shard(1), 100, 0)
            .unwrap();
        assert_eq!(
            cache.check_and_record("orbit", &same_shard(2), 100, 0),
            Err(AuthError::ReplayCacheFull("orbit".into()))
        );
        // Once the first expires there is room again.
        cache
            .check_and_record("orbit", &same_shard(2), 300, 101)
            .unwrap();
    }

    #[test]
    fn one_principal_filling_its_quota_does_not_lock_out_another() {
        let cache = ReplayCache::new(SHARDS * 4);
        let mut refused = 0;
        for n in 0..=255 {
            if cache
                .check_and_record("flooder", &same_shard(n), 100, 0)
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 256 - 4, "the flooder gets its quota, no more");
        for n in 0..4 {
            cache
                .check_and_record("someone-else", &same_shard(n), 100, 0)
                .unwrap();
        }
        // The same signature bytes under another principal are its own.
        assert_eq!(
            cache.check_and_record("someone-else", &same_shard(0), 100, 0),
            Err(AuthError::Replayed)
        );
    }
}
