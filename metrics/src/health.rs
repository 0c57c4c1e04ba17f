//! What `/healthz` and `/readyz` answer: the daemon is ready once its store
//! is open, its actor tree is up (the node has listed its pods) and its
//! volume plugins are loaded and initialised.

use std::sync::atomic::{AtomicBool, Ordering};

/// A part of the daemon readiness waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Store,
    Tree,
    Plugins,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Store => "store",
            Component::Tree => "tree",
            Component::Plugins => "plugins",
        }
    }

    fn flag(self) -> &'static AtomicBool {
        match self {
            Component::Store => &STORE,
            Component::Tree => &TREE,
            Component::Plugins => &PLUGINS,
        }
    }
}

static STORE: AtomicBool = AtomicBool::new(false);
static TREE: AtomicBool = AtomicBool::new(false);
static PLUGINS: AtomicBool = AtomicBool::new(false);

/// Marks `c` up or down (a restarting node tree is down until it listed its pods again).
pub fn set(c: Component, up: bool) {
    c.flag().store(up, Ordering::Release);
}

/// `[+]store ok` / `[-]tree failed` lines, as the API server's `?verbose`
/// health checks print them, and whether every component is up.
pub fn readiness() -> (bool, String) {
    let mut text = String::new();
    let mut ready = true;
    for c in [Component::Store, Component::Tree, Component::Plugins] {
        let up = c.flag().load(Ordering::Acquire);
        ready &= up;
        text.push_str(&format!(
            "[{}]{} {}\n",
            if up { '+' } else { '-' },
            c.name(),
            if up { "ok" } else { "not ready" }
        ));
    }
    text.push_str(if ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (ready, text)
}
