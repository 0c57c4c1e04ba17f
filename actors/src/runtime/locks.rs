//! Async mutexes by key (a pod, a container), created on demand and dropped
//! when nobody holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`. The guard may be moved into a blocking
    /// task, so work begun under it finishes under it even if the caller is dropped.
    pub(crate) async fn lock(&self, key: String) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 64 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

/// A bounded set of recent keys (the oldest are forgotten past
/// [`RECENT_KEYS`]).
///
/// Keys are kept as 64-bit hashes in two flat tables, not as strings: a
/// string per key, allocated as pods came and went, stayed scattered over
/// the heap and kept its pages resident long after everything around it
/// was freed. A collision would only make a new pod look removed; at 4,096
/// keys its odds are about 2^-52.
#[derive(Default)]
pub(crate) struct RecentSet {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

/// How many keys a [`RecentSet`] keeps. It records pods whose removal
/// began, against a start racing the removal (seconds apart); 65,536 kept
/// up to 10 MB of uids a long-running node never asked about again.
const RECENT_KEYS: usize = 4096;

fn key_hash(key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
}

impl RecentSet {
    pub(crate) fn insert(&mut self, key: &str) {
        let h = key_hash(key);
        if self.set.insert(h) {
            self.order.push_back(h);
            if self.order.len() > RECENT_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.set.contains(&key_hash(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_are_bounded_oldest_first() {
        let mut set = RecentSet::default();
        for i in 0..RECENT_KEYS + 10 {
            set.insert(&format!("k{i}"));
        }
        set.insert("k20");
        assert!(!set.contains("k0") && !set.contains("k9"));
        assert!(set.contains("k10") && set.contains(&format!("k{}", RECENT_KEYS + 9)));
        assert_eq!((set.set.len(), set.order.len()), (RECENT_KEYS, RECENT_KEYS));
    }

    #[tokio::test]
    async fn one_holder_per_key() {
        let locks = KeyedLocks::default();
        let g = locks.lock("a".into()).await;
        let other = locks.lock("b".into()).await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a".into())).await;
        assert!(waiting.is_err(), "a second holder of one key waits");
        drop(g);
        drop(other);
        let _again = locks.lock("a".into()).await;
    }
}
