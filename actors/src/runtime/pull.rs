//! A container's missing image, pulled when its start finds it missing (the
//! pull policy is applied there, in `resolve_image`): one pull per image
//! however many containers wait for it. Pulls run on the
//! blocking pool (the store's pull runs its own small runtime for the
//! network), never on an actor's thread.

use super::{blocking, Runtime, StartError};
use crate::image::{normalize_reference, ImageError};
use k8s_openapi::api::core::v1::Container;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How a container's image came to be in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReady {
    /// It was there already.
    Present,
    /// Pulled for this start (or by another start this one waited for).
    Pulled {
        /// The pull itself (zero for a start that waited for another's).
        took: Duration,
        /// From the moment this start asked, waiting for other pulls included.
        waited: Duration,
        /// The image's size in the store, in bytes.
        size: u64,
    },
}

impl Runtime {
    /// Pulls `c`'s image: one a start found missing (and its pull policy
    /// allows pulling), or, for `imagePullPolicy: Always`, before every
    /// start, asking the registry which manifest the name gives now and
    /// fetching it only if the store lacks it (kubelet's `Always`).
    /// `pulling` is called before waiting for the pull.
    pub async fn pull_image(
        self: &Arc<Self>,
        c: &Container,
        secrets: Vec<crate::image::PullSecret>,
        pulling: impl FnOnce() + Send,
    ) -> Result<ImageReady, StartError> {
        let name = c.image.clone().unwrap_or_default();
        let key = normalize_reference(&name).map_err(|e| StartError::new("InvalidImageName", e.to_string()))?;
        pulling();
        let asked = Instant::now();
        // One pull per image: the others wait here, then find it stored.
        let _one = self.locks.lock(format!("image/{key}")).await;
        let always = c.image_pull_policy.as_deref() == Some("Always");
        if !always && self.has_image(&name).await? {
            let size = self.image_size(&key).await;
            return Ok(ImageReady::Pulled {
                took: Duration::ZERO,
                waited: asked.elapsed(),
                size,
            });
        }
        let began = Instant::now();
        let timer = peapod_metrics::Timer::start();
        let me = self.clone();
        let wanted = name.clone();
        let res = blocking(move || {
            if always {
                me.images.pull_if_changed(&wanted, &secrets)
            } else {
                me.images.pull_with(&wanted, &secrets)
            }
        })
        .await
        .map_err(|e| StartError::new("ErrImagePull", e))
        .and_then(|r| r.map_err(|e| StartError::new("ErrImagePull", format!("Failed to pull image \"{name}\": {e}"))));
        super::record("pull_image", timer, &res);
        let pulled = res?;
        let took = began.elapsed();
        let size = self.image_size(&pulled.reference).await;
        Ok(ImageReady::Pulled {
            took,
            waited: asked.elapsed(),
            size,
        })
    }

    async fn has_image(self: &Arc<Self>, name: &str) -> Result<bool, StartError> {
        let me = self.clone();
        let wanted = name.to_string();
        match blocking(move || me.images.resolve(&wanted)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(ImageError::NotFound { .. })) => Ok(false),
            Ok(Err(e)) => Err(StartError::new("InvalidImageName", e.to_string())),
            Err(e) => Err(StartError::new("ErrImagePull", e)),
        }
    }

    /// What `image ls` shows as the image's size; 0 when it cannot tell.
    async fn image_size(self: &Arc<Self>, reference: &str) -> u64 {
        let me = self.clone();
        let wanted = reference.to_string();
        blocking(move || {
            me.images
                .list()
                .ok()
                .and_then(|l| l.into_iter().find(|i| i.reference == wanted))
                .map_or(0, |i| i.size)
        })
        .await
        .unwrap_or(0)
    }
}

/// A duration as Go prints one truncated to milliseconds (kubelet's event
/// text): `0s`, `512ms`, `1.234s`, `2s`, `1m2.5s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let secs = format!("{}.{:03}", rest / 1000, rest % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_kubelet_prints_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::from_micros(300)), "0s");
        assert_eq!(go_duration(ms(512)), "512ms");
        assert_eq!(go_duration(ms(1234)), "1.234s");
        assert_eq!(go_duration(ms(2000)), "2s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(62_500)), "1m2.5s");
        assert_eq!(go_duration(ms(60_000)), "1m0s");
        assert_eq!(go_duration(ms(3_600_000 + 1)), "1h0m0.001s");
    }
}
