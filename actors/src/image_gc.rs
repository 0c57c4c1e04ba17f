//! `ImageGc`: kubelet's image garbage collection, as a supervised child of
//! the node.
//!
//! Every period it measures the filesystem holding the image store. When its
//! usage reaches the high threshold, it removes images no container of a
//! pod on this node uses (running or exited, as kubelet counts them),
//! least recently used first, and none first seen less than the minimum age
//! ago, until usage is back at the low threshold. When the unused images
//! cannot free that much, it says so in an `ImageGCFailed` event on the
//! Node, worded as kubelet words it.
//!
//! "Used" is what the passes see: an image's last use is the last pass that
//! found a container using it, and its first sighting the first pass that
//! listed it (a restarted daemon starts both afresh, as kubelet does).

use crate::events::{EventKind, EventRecorder};
use crate::runtime::Runtime;
use crate::supervisor::TreeNode;
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// When images are collected (kubelet's `--image-gc-high-threshold`,
/// `--image-gc-low-threshold`, `--image-minimum-gc-age`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Usage (percent of the image filesystem) at which collection starts;
    /// 100 turns it off.
    pub high_percent: u8,
    /// Usage collection frees down to.
    pub low_percent: u8,
    /// Images first seen less than this long ago are kept.
    pub min_age: Duration,
    /// How often usage is looked at (kubelet: 5 minutes).
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

/// The image filesystem's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
}

impl ImageGcPolicy {
    /// How many bytes to free at `usage` (kubelet's arithmetic: usage is
    /// `100 - available*100/capacity` percent; at or above the high
    /// threshold, free down to the low one). `None` below the threshold.
    pub fn to_free(&self, usage: FsUsage) -> Option<u64> {
        if usage.capacity == 0 || self.high_percent >= 100 {
            return None;
        }
        let used_percent = 100u128.saturating_sub(u128::from(usage.available) * 100 / u128::from(usage.capacity));
        if used_percent < u128::from(self.high_percent) {
            return None;
        }
        let target = u128::from(usage.capacity) * u128::from(100 - self.low_percent.min(100)) / 100;
        let need = target.saturating_sub(u128::from(usage.available));
        (need > 0).then(|| u64::try_from(need).unwrap_or(u64::MAX))
    }
}

/// When an image was first listed and last seen in use.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    last_used: Instant,
}

/// What a pass found, gathered off the actor's thread.
struct Survey {
    usage: FsUsage,
    /// Every stored image's manifest digest.
    images: HashSet<String>,
    /// The digests containers use.
    in_use: HashSet<String>,
}

/// The image garbage collector.
pub struct ImageGc {
    rt: Arc<Runtime>,
    events: EventRecorder,
    node: TreeNode,
    seen: HashMap<String, Seen>,
    running: bool,
}

impl ImageGc {
    /// A collector of `rt`'s image store, registered in the tree as `node`.
    pub fn new(rt: Arc<Runtime>, events: EventRecorder, node: TreeNode) -> Self {
        Self {
            rt,
            events,
            node,
            seen: HashMap::new(),
            running: false,
        }
    }

    fn survey(rt: &Runtime) -> Result<Survey, String> {
        let stat = nix::sys::statvfs::statvfs(rt.images.root())
            .map_err(|e| format!("statvfs {}: {e}", rt.images.root().display()))?;
        let frsize = stat.fragment_size();
        let usage = FsUsage {
            capacity: stat.blocks().saturating_mul(frsize),
            available: stat.blocks_available().saturating_mul(frsize),
        };
        let images = rt
            .images
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|i| i.digest)
            .collect();
        let in_use = crate::runtime::image_users(&rt.paths)
            .into_iter()
            .map(|u| u.digest)
            .collect();
        Ok(Survey { usage, images, in_use })
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        crate::faults::point("image_gc.pass", "");
        let rt = self.rt.clone();
        ctx.spawn(
            async move { tokio::task::spawn_blocking(move || Self::survey(&rt)).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(Ok(survey)) => act.decide(survey, ctx),
                    Ok(Err(e)) => {
                        tracing::warn!("image garbage collection: {e}");
                        act.running = false;
                    }
                    Err(e) => {
                        tracing::warn!("image garbage collection: {e}");
                        act.running = false;
                    }
                }),
        );
    }

    /// Updates what was seen, and removes images if usage calls for it.
    fn decide(&mut self, survey: Survey, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.seen.retain(|digest, _| survey.images.contains(digest));
        for digest in &survey.images {
            let seen = self.seen.entry(digest.clone()).or_insert(Seen {
                first: now,
                last_used: now,
            });
            if survey.in_use.contains(digest) {
                seen.last_used = now;
            }
        }
        let policy = self.rt.config.image_gc.clone();
        let Some(to_free) = policy.to_free(survey.usage) else {
            self.running = false;
            return;
        };
        let mut candidates: Vec<(Instant, String)> = self
            .seen
            .iter()
            .filter(|(digest, seen)| {
                !survey.in_use.contains(*digest) && now.saturating_duration_since(seen.first) >= policy.min_age
            })
            .map(|(digest, seen)| (seen.last_used, digest.clone()))
            .collect();
        candidates.sort();
        let rt = self.rt.clone();
        let in_use = survey.in_use;
        let before = survey.usage.available;
        ctx.spawn(
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut freed = 0u64;
                    let mut removed = Vec::new();
                    for (_, digest) in candidates {
                        if freed >= to_free {
                            break;
                        }
                        if let Err(e) = rt.images.remove_keeping(&digest, &in_use) {
                            tracing::warn!("image garbage collection: removing {digest}: {e}");
                            continue;
                        }
                        removed.push(digest);
                        if let Ok(stat) = nix::sys::statvfs::statvfs(rt.images.root()) {
                            let available = stat.blocks_available().saturating_mul(stat.fragment_size());
                            freed = available.saturating_sub(before);
                        }
                    }
                    (freed, removed)
                })
                .await
            }
            .into_actor(self)
            .map(move |res, act, _| {
                act.running = false;
                let Ok((freed, removed)) = res else { return };
                for digest in &removed {
                    act.seen.remove(digest);
                }
                tracing::info!(freed, ?removed, to_free, "image garbage collection");
                if freed < to_free {
                    act.events.node_event(
                        EventKind::Warning,
                        "ImageGCFailed",
                        format!(
                            "Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, but only found {freed} bytes eligible to free."
                        ),
                    );
                }
            }),
        );
    }
}

impl Actor for ImageGc {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Watching");
        let period = self.rt.config.image_gc.period.max(Duration::from_secs(1));
        ctx.run_interval(period, |act, ctx| act.pass(ctx));
        self.pass(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_down_to_the_low_threshold_from_the_high_one() {
        let policy = ImageGcPolicy::default();
        let gib = 1u64 << 30;
        let at = |available: u64| FsUsage {
            capacity: 100 * gib,
            available,
        };
        assert_eq!(policy.to_free(at(16 * gib)), None, "84% used");
        assert_eq!(policy.to_free(at(15 * gib)), Some(5 * gib), "85%: down to 80%");
        assert_eq!(policy.to_free(at(0)), Some(20 * gib));
        let off = ImageGcPolicy {
            high_percent: 100,
            ..ImageGcPolicy::default()
        };
        assert_eq!(off.to_free(at(0)), None, "100 turns it off");
        assert_eq!(
            policy.to_free(FsUsage {
                capacity: 0,
                available: 0
            }),
            None
        );
        let huge = FsUsage {
            capacity: u64::MAX,
            available: 0,
        };
        assert_eq!(
            policy.to_free(huge),
            Some(u64::MAX / 100 * 20 + (u64::MAX % 100) * 20 / 100)
        );
    }
}
