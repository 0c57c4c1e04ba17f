//! `image pull`'s progress: a bar per layer and one for the whole image
//! (indicatif), drawn on stdout only when stdout is a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peapod_actors::image::PullProgress;

/// The bars of one pull.
pub struct PullBars {
    multi: MultiProgress,
    total: ProgressBar,
    layers: Mutex<HashMap<String, ProgressBar>>,
}

impl std::fmt::Debug for PullBars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullBars").finish_non_exhaustive()
    }
}

/// `sha256:0123456789ab`, as Docker shortens layer digests.
fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl PullBars {
    /// Bars for `name` when stdout is a terminal; `None` otherwise (a pull
    /// in a script prints its result line only).
    pub fn for_terminal(name: &str) -> Option<Arc<PullBars>> {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}"));
        total.set_prefix("total");
        total.set_message(name.to_string());
        Some(Arc::new(PullBars {
            multi,
            total,
            layers: Mutex::new(HashMap::new()),
        }))
    }

    /// Ends the display, leaving the bars as they are.
    pub fn finish(&self) {
        self.total.finish();
    }

    fn layer(&self, digest: &str) -> Option<ProgressBar> {
        self.layers.lock().ok()?.get(digest).cloned()
    }
}

impl PullProgress for PullBars {
    fn layers(&self, fetch: &[(String, u64)], present: &[String]) {
        let Ok(mut layers) = self.layers.lock() else { return };
        for digest in present {
            let bar = self.multi.insert_before(&self.total, ProgressBar::new(0));
            bar.set_style(style("{prefix:>12} {msg}"));
            bar.set_prefix(short(digest));
            bar.finish_with_message("Already exists");
        }
        for (digest, size) in fetch {
            let bar = self.multi.insert_before(&self.total, ProgressBar::new(*size));
            bar.set_style(style("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}"));
            bar.set_prefix(short(digest));
            bar.set_message("Downloading");
            layers.insert(digest.clone(), bar);
        }
        self.total.set_length(fetch.iter().map(|(_, s)| s).sum());
    }

    fn fetched(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.layer(digest) {
            bar.inc(bytes);
        }
        self.total.inc(bytes);
    }

    fn stored(&self, digest: &str) {
        if let Some(bar) = self.layer(digest) {
            bar.finish_with_message("Pull complete");
        }
    }
}
