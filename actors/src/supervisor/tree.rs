//! The live tree as the API shows it: every supervised actor registers a
//! [`TreeNode`] when it starts and the entry goes with the actor (the node is
//! dropped with it, however it ended). Its supervisor records how often it
//! was restarted after a crash.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The registry of live actors; cheap to clone.
#[derive(Clone, Default)]
pub struct Tree {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    parent: Option<u64>,
    kind: &'static str,
    name: String,
    restart: &'static str,
    state: String,
    restarts: u32,
    since: String,
}

/// One actor in a snapshot of the tree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TreeView {
    /// `Node`, `NamespaceActor`, `PodActor`, `ContainerActor`, `ProbeActor`.
    pub kind: String,
    /// What it looks after (`default/web`, a container's or probe's name).
    pub name: String,
    /// Its restart type under its supervisor.
    pub restart: String,
    /// What it is doing.
    pub state: String,
    /// How often its supervisor restarted it after a crash.
    pub restarts: u32,
    /// When this incarnation started (RFC 3339).
    pub since: String,
    /// What it supervises.
    pub children: Vec<TreeView>,
}

impl Tree {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Entries are plain data: a panic elsewhere cannot leave them half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a top-level actor.
    pub fn root(&self, kind: &'static str, name: impl Into<String>, restart: &'static str, restarts: u32) -> TreeNode {
        self.add(None, kind, name.into(), restart, restarts)
    }

    fn add(
        &self,
        parent: Option<u64>,
        kind: &'static str,
        name: String,
        restart: &'static str,
        restarts: u32,
    ) -> TreeNode {
        let mut g = self.lock();
        g.next += 1;
        let id = g.next;
        g.entries.insert(
            id,
            Entry {
                parent,
                kind,
                name,
                restart,
                state: "Starting".into(),
                restarts,
                since: peapod_core::object::now_rfc3339(),
            },
        );
        TreeNode { tree: self.clone(), id }
    }

    /// The whole tree, roots first. An entry whose supervisor is gone would
    /// be an actor nobody supervises; it is listed at the top, kind prefixed
    /// with `orphaned:`, so it cannot hide.
    pub fn snapshot(&self) -> Vec<TreeView> {
        let g = self.lock();
        let mut children: BTreeMap<Option<u64>, Vec<u64>> = BTreeMap::new();
        for (id, e) in &g.entries {
            let parent = e.parent.filter(|p| g.entries.contains_key(p));
            children.entry(parent).or_default().push(*id);
        }
        fn view(g: &Inner, children: &BTreeMap<Option<u64>, Vec<u64>>, id: u64) -> TreeView {
            let e = &g.entries[&id];
            let orphaned = e.parent.is_some_and(|p| !g.entries.contains_key(&p));
            TreeView {
                kind: if orphaned {
                    format!("orphaned:{}", e.kind)
                } else {
                    e.kind.to_string()
                },
                name: e.name.clone(),
                restart: e.restart.to_string(),
                state: e.state.clone(),
                restarts: e.restarts,
                since: e.since.clone(),
                children: children
                    .get(&Some(id))
                    .into_iter()
                    .flatten()
                    .map(|c| view(g, children, *c))
                    .collect(),
            }
        }
        children
            .get(&None)
            .into_iter()
            .flatten()
            .map(|id| view(&g, &children, *id))
            .collect()
    }
}

/// One actor's entry; removed when dropped.
pub struct TreeNode {
    tree: Tree,
    id: u64,
}

impl TreeNode {
    /// Registers a child of this actor.
    pub fn child(&self, kind: &'static str, name: impl Into<String>, restart: &'static str, restarts: u32) -> TreeNode {
        self.tree.add(Some(self.id), kind, name.into(), restart, restarts)
    }

    /// Sets what the actor is doing.
    pub fn set_state(&self, state: impl Into<String>) {
        let state = state.into();
        if let Some(e) = self.tree.lock().entries.get_mut(&self.id) {
            if e.state != state {
                e.state = state;
            }
        }
    }

    /// The registry this node is in.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }
}

impl Drop for TreeNode {
    fn drop(&mut self) {
        self.tree.lock().entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_nest_and_leave_with_their_actor() {
        let tree = Tree::default();
        let root = tree.root("Node", "n1", "permanent", 0);
        let pod = root.child("PodActor", "default/web", "transient", 2);
        let c = pod.child("ContainerActor", "app", "transient", 0);
        c.set_state("Running");
        let snap = tree.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].children[0].name, "default/web");
        assert_eq!(snap[0].children[0].restarts, 2);
        assert_eq!(snap[0].children[0].children[0].state, "Running");
        drop(c);
        assert!(tree.snapshot()[0].children[0].children.is_empty());
    }

    #[test]
    fn an_entry_without_its_supervisor_shows_as_orphaned() {
        let tree = Tree::default();
        let root = tree.root("Node", "n1", "permanent", 0);
        let pod = root.child("PodActor", "default/web", "transient", 0);
        drop(root);
        let snap = tree.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].kind, "orphaned:PodActor");
        drop(pod);
        assert!(tree.snapshot().is_empty());
    }
}
