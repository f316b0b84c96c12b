//! Remembers accepted signatures until their timestamps fall out of the
//! clock-skew window, so each signature is accepted once.
//!
//! Keyed by the first 16 bytes of the signature (a collision needs 2^64
//! signatures), sharded to keep lock hold times short. Expired entries are
//! purged as shards fill. A full cache refuses (fail closed) rather than
//! forgetting signatures that could still be replayed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::error::AuthError;

const SHARDS: usize = 16;

struct Shard {
    expiry_by_signature: HashMap<[u8; 16], u64>,
    inserts_since_purge: usize,
}

pub(crate) struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    capacity_per_shard: usize,
}

impl ReplayCache {
    /// A cache holding up to `capacity` live signatures.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity_per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        expiry_by_signature: HashMap::new(),
                        inserts_since_purge: 0,
                    })
                })
                .collect(),
            capacity_per_shard,
        }
    }

    /// Records `signature`, valid until `expires_at` (Unix seconds); refuses
    /// it if it was recorded before and has not expired.
    pub(crate) fn check_and_record(
        &self,
        signature: &[u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<(), AuthError> {
        let mut key = [0u8; 16];
        key.copy_from_slice(&signature[..16]);
        let shard = &self.shards[usize::from(signature[16]) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&expiry) = shard.expiry_by_signature.get(&key)
            && expiry >= now
        {
            return Err(AuthError::Replayed);
        }
        shard.inserts_since_purge += 1;
        let len = shard.expiry_by_signature.len();
        if len >= self.capacity_per_shard
            || shard.inserts_since_purge >= self.capacity_per_shard / 4 + 64
        {
            shard.expiry_by_signature.retain(|_, expiry| *expiry >= now);
            shard.inserts_since_purge = 0;
            if shard.expiry_by_signature.len() >= self.capacity_per_shard {
                return Err(AuthError::ReplayCacheFull);
            }
        }
        shard.expiry_by_signature.insert(key, expires_at);
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

    #[test]
    fn a_signature_is_accepted_once_until_it_expires() {
        let cache = ReplayCache::new(1000);
        cache.check_and_record(&sig(1), 100, 10).unwrap();
        assert_eq!(
            cache.check_and_record(&sig(1), 100, 50),
            Err(AuthError::Replayed)
        );
        cache.check_and_record(&sig(2), 100, 50).unwrap();
        // Past its expiry the old entry no longer blocks (the skew check would
        // refuse such a request anyway).
        cache.check_and_record(&sig(1), 300, 101).unwrap();
    }

    #[test]
    fn a_full_cache_refuses_instead_of_forgetting() {
        let cache = ReplayCache::new(SHARDS);
        // Every signature lands in the same shard, whose capacity is 1.
        let same_shard = |n: u8| {
            let mut s = [0u8; 32];
            s[0] = n;
            s
        };
        cache.check_and_record(&same_shard(1), 100, 0).unwrap();
        assert_eq!(
            cache.check_and_record(&same_shard(2), 100, 0),
            Err(AuthError::ReplayCacheFull)
        );
        // Once the first expires there is room again.
        cache.check_and_record(&same_shard(2), 300, 101).unwrap();
    }
}
