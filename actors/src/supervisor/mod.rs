//! The supervision tree, as Erlang/OTP's `supervisor` writes it, on actix.
//!
//! ```text
//! root (daemon)      restarts the node; gives up -> the daemon exits
//! └── NodeActor                       one_for_one over its children
//!     ├── NamespaceActor              permanent
//!     └── PodActor  ns/name           transient, one per pod bound to this node
//!         └── ContainerActor  name    transient, one per container (init, sidecar, app)
//!             │   └── (the container process: restartPolicy as its restart type,
//!             │        CrashLoopBackOff as the restart delay)
//!             └── ProbeActor  kind    transient, one per probe of the running start
//! ```
//!
//! Every child is declared with a [`ChildSpec`]: its restart type
//! ([`Restart`]) and its restart [`Intensity`]. A child actor runs as its own
//! task on an arbiter, wrapped so that a panic anywhere in it (a handler, a
//! future it spawned into its context) ends that actor only and reaches its
//! supervisor as [`Exit::Crashed`]. The supervisor rebuilds it from the store
//! and the runtime (never from the dead actor's memory). More than
//! `max_restarts` crashes within `period` escalate: the supervisor gives up on
//! the child, which for a pod means its containers are stopped and the pod is
//! marked (see `node.rs`), and for anything else means the supervisor fails
//! in turn.
//!
//! Children are linked to their supervisor: when a supervisor ends, for any
//! reason, its child actors are dropped with it (the containers they look
//! after keep running under their shims and are re-adopted by the rebuilt
//! actors). A child is never left running without the actor that started it.
//!
//! Time here is `tokio::time::Instant`, so tests can pause it.

pub mod tree;

use actix::dev::channel;
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::time::Instant;
pub use tree::{Tree, TreeNode};

/// When a child that ended is started again: Erlang's restart types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whether it ended normally or crashed.
    Permanent,
    /// Restarted only when it ended abnormally (a crash, a failure).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// A pod's `restartPolicy` as the restart type of its container processes:
    /// `Always` is permanent, `OnFailure` transient, `Never` temporary.
    pub fn from_policy(policy: &str) -> Self {
        match policy {
            "Always" => Restart::Permanent,
            "OnFailure" => Restart::Transient,
            _ => Restart::Temporary,
        }
    }

    /// Whether a child of this type that ended (`abnormal`: crashed or failed) starts again.
    pub fn restarts(self, abnormal: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        }
    }

    /// The Erlang name, for the tree view.
    pub fn label(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

/// Restart intensity: more than `max_restarts` restarts within `period`
/// and the supervisor gives up on the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// Five crashes in a minute: a bug that fires on every start gives up
    /// within a second or two, while a rare crash is restarted indefinitely.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            period: Duration::from_secs(60),
        }
    }
}

/// How a child is (re)started: its restart type and intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSpec {
    pub restart: Restart,
    pub intensity: Intensity,
}

/// How a child actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It stopped itself (its work is done).
    Normal,
    /// It panicked or gave up; the text says why.
    Crashed(String),
}

impl Exit {
    /// Whether the exit was abnormal.
    pub fn is_crash(&self) -> bool {
        matches!(self, Exit::Crashed(_))
    }
}

/// Counts a child's restarts within the intensity window.
#[derive(Debug, Clone)]
pub struct RestartWindow {
    intensity: Intensity,
    recent: VecDeque<Instant>,
    /// Every restart after a crash, over the child's whole life.
    pub total: u32,
}

impl RestartWindow {
    /// An empty window.
    pub fn new(intensity: Intensity) -> Self {
        Self {
            intensity,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a restart at `now`; false when it would exceed the intensity
    /// (the restart is then not made and not counted).
    pub fn allow(&mut self, now: Instant) -> bool {
        while let Some(t) = self.recent.front() {
            if now.saturating_duration_since(*t) >= self.intensity.period {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= self.intensity.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        self.total = self.total.saturating_add(1);
        true
    }
}

/// A child's end, delivered to its supervisor. `generation` tells an exit of
/// the current incarnation from a late one of an earlier.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChildExited<K: Send + 'static> {
    pub key: K,
    pub generation: u64,
    pub exit: Exit,
}

/// What a supervisor does about a child that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An exit of an incarnation already replaced or removed: nothing.
    Stale,
    /// Done for good (its restart type says so): forgotten.
    Done,
    /// Start it again (the window allowed it); `restarts` counts crash restarts so far.
    Restart { restarts: u32 },
    /// It crashed more often than the intensity allows: the supervisor gives up on it.
    GiveUp { crashes: u32 },
}

struct ChildRecord<A: Actor> {
    addr: Addr<A>,
    generation: u64,
    spec: ChildSpec,
    window: RestartWindow,
    /// Dropping this ends the child actor (the link).
    _link: tokio::sync::oneshot::Sender<()>,
}

/// The children of one supervisor, by key. Dropping it (the supervisor
/// ended) drops every child actor with it.
pub struct Children<K: Eq + Hash + Clone + Send + 'static, A: Actor> {
    kids: HashMap<K, ChildRecord<A>>,
    generation: u64,
}

impl<K: Eq + Hash + Clone + Send + 'static, A: Actor> Default for Children<K, A> {
    fn default() -> Self {
        Self {
            kids: HashMap::new(),
            generation: 0,
        }
    }
}

impl<K, A> Children<K, A>
where
    K: Eq + Hash + Clone + Send + std::fmt::Debug + 'static,
    A: Actor<Context = Context<A>>,
{
    /// Starts (or restarts) the child `key` on `arbiter` (the current one when
    /// `None`), built by `build` there; its end reaches `supervisor` as a
    /// [`ChildExited`]. A previous incarnation under the same key is dropped.
    /// `restarts` carries the crash count of a restarted child.
    pub fn start<P, F>(
        &mut self,
        supervisor: Addr<P>,
        key: K,
        spec: ChildSpec,
        arbiter: Option<&ArbiterHandle>,
        build: F,
    ) -> Addr<A>
    where
        P: Actor + Handler<ChildExited<K>>,
        P::Context: actix::dev::ToEnvelope<P, ChildExited<K>>,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        self.generation += 1;
        let generation = self.generation;
        let window = self
            .kids
            .remove(&key)
            .map(|old| old.window)
            .unwrap_or_else(|| RestartWindow::new(spec.intensity));
        let notify_key = key.clone();
        let (addr, link) = spawn_linked(arbiter, build, move |exit| {
            supervisor.do_send(ChildExited {
                key: notify_key,
                generation,
                exit,
            });
        });
        self.kids.insert(
            key,
            ChildRecord {
                addr: addr.clone(),
                generation,
                spec,
                window,
                _link: link,
            },
        );
        addr
    }

    /// Decides what to do about an exit; the caller acts on the verdict
    /// (restarting with [`Children::start`], or giving up).
    pub fn exited(&mut self, msg: &ChildExited<K>) -> Verdict {
        let Some(rec) = self.kids.get_mut(&msg.key) else {
            return Verdict::Stale;
        };
        if rec.generation != msg.generation {
            return Verdict::Stale;
        }
        if !rec.spec.restart.restarts(msg.exit.is_crash()) {
            self.kids.remove(&msg.key);
            return Verdict::Done;
        }
        let m = peapod_metrics::metrics();
        if rec.window.allow(Instant::now()) {
            if msg.exit.is_crash() {
                m.actor_restarts.with_label_values(&[actor_kind::<A>()]).inc();
            }
            Verdict::Restart {
                restarts: rec.window.total,
            }
        } else {
            m.supervisor_escalations.with_label_values(&[actor_kind::<A>()]).inc();
            let crashes = rec.window.total.saturating_add(1);
            self.kids.remove(&msg.key);
            Verdict::GiveUp { crashes }
        }
    }

    /// The child's address, if it runs.
    pub fn get(&self, key: &K) -> Option<&Addr<A>> {
        self.kids.get(key).map(|r| &r.addr)
    }

    /// How often the child was restarted after a crash.
    pub fn restarts(&self, key: &K) -> u32 {
        self.kids.get(key).map_or(0, |r| r.window.total)
    }

    /// Ends the child actor now: its task is dropped at its next turn, its
    /// `stopping`/`stopped` do not run, and its exit is not reported.
    pub fn remove(&mut self, key: &K) -> bool {
        self.kids.remove(key).is_some()
    }

    /// Ends every child actor.
    pub fn clear(&mut self) {
        self.kids.clear();
    }

    /// The keys of the running children.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.kids.keys()
    }

    /// Every child's address.
    pub fn addrs(&self) -> impl Iterator<Item = (&K, &Addr<A>)> {
        self.kids.iter().map(|(k, r)| (k, &r.addr))
    }

    /// Whether a child runs under `key`.
    pub fn contains(&self, key: &K) -> bool {
        self.kids.contains_key(key)
    }
}

/// The actor's type name without its path (`PodActor`), the `actor` label.
fn actor_kind<A>() -> &'static str {
    let full = std::any::type_name::<A>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Builds an actor on `arbiter` (the current one when `None`) as a task that
/// contains its panics: when the actor ends, `notify` gets how. The returned
/// sender is the link: dropping it drops the actor (and `notify` is not called).
pub fn spawn_linked<A, F>(
    arbiter: Option<&ArbiterHandle>,
    build: F,
    notify: impl FnOnce(Exit) + Send + 'static,
) -> (Addr<A>, tokio::sync::oneshot::Sender<()>)
where
    A: Actor<Context = Context<A>>,
    F: FnOnce(&mut Context<A>) -> A + Send + 'static,
{
    let (tx, rx) = channel::channel(16);
    let (link, unlinked) = tokio::sync::oneshot::channel::<()>();
    let run = move || {
        let mut ctx = Context::with_receiver(rx);
        let act = match std::panic::catch_unwind(AssertUnwindSafe(|| build(&mut ctx))) {
            Ok(a) => a,
            Err(p) => {
                notify(Exit::Crashed(panic_text(p.as_ref())));
                return;
            }
        };
        let fut = ctx.into_future(act);
        actix::spawn(async move {
            let exit = tokio::select! {
                biased;
                _ = unlinked => None,
                r = futures_catch_unwind(fut) => Some(match r {
                    Ok(()) => Exit::Normal,
                    Err(text) => Exit::Crashed(text),
                }),
            };
            if let Some(exit) = exit {
                notify(exit);
            }
        });
    };
    match arbiter {
        Some(a) => {
            a.spawn_fn(run);
        }
        None => run(),
    }
    (Addr::new(tx), link)
}

/// Polls `fut` to completion, turning a panic in any poll into `Err(text)`.
async fn futures_catch_unwind<F: std::future::Future<Output = ()>>(fut: F) -> Result<(), String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        move |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(panic_text(p.as_ref()))),
        },
    )
    .await
}

/// Ends the calling actor abnormally: a supervisor that gives up on a child
/// fails in turn, so its own supervisor sees a crash (OTP's escalation).
pub fn escalate(reason: String) -> ! {
    panic!("escalated: {reason}")
}

/// The message of a panic payload.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

#[cfg(test)]
mod tests;
