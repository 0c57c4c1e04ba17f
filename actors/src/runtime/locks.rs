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

/// A bounded set of recent keys (the oldest are forgotten past 65536).
#[derive(Default)]
pub(crate) struct RecentSet {
    set: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl RecentSet {
    pub(crate) fn insert(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > 65_536 {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
