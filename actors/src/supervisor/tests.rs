//! Supervision tested directly, as actix's `test_supervisor.rs` does: count
//! starts and restarts of a worker that panics on demand.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Counts {
    starts: AtomicU32,
    drops: AtomicU32,
}

struct Worker {
    counts: Arc<Counts>,
}

impl Actor for Worker {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.counts.starts.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.counts.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Worker {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("boom");
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Finish;

impl Handler<Finish> for Worker {
    type Result = ();
    fn handle(&mut self, _: Finish, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A one-child supervisor that records its verdicts.
struct Sup {
    spec: ChildSpec,
    counts: Arc<Counts>,
    kids: Children<u32, Worker>,
    verdicts: Arc<Mutex<Vec<Verdict>>>,
}

impl Sup {
    fn start_worker(&mut self, ctx: &mut Context<Self>) {
        let counts = self.counts.clone();
        self.kids
            .start(ctx.address(), 1, self.spec, None, move |_| Worker { counts });
    }
}

impl Actor for Sup {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_worker(ctx);
    }
}

impl Handler<ChildExited<u32>> for Sup {
    type Result = ();
    fn handle(&mut self, msg: ChildExited<u32>, ctx: &mut Context<Self>) {
        let v = self.kids.exited(&msg);
        if matches!(v, Verdict::Restart { .. }) {
            self.start_worker(ctx);
        }
        self.verdicts.lock().unwrap().push(v);
    }
}

#[derive(Message)]
#[rtype(result = "Option<Addr<Worker>>")]
struct GetWorker;

impl Handler<GetWorker> for Sup {
    type Result = Option<Addr<Worker>>;
    fn handle(&mut self, _: GetWorker, _: &mut Context<Self>) -> Self::Result {
        self.kids.get(&1).cloned()
    }
}

fn spec(restart: Restart, max_restarts: u32) -> ChildSpec {
    ChildSpec {
        restart,
        intensity: Intensity {
            max_restarts,
            period: Duration::from_secs(60),
        },
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn run_sup(spec: ChildSpec, script: impl FnOnce(Addr<Sup>, Arc<Counts>, Arc<Mutex<Vec<Verdict>>>) -> Pin + 'static) {
    actix::System::new().block_on(async move {
        let counts = Arc::new(Counts::default());
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let sup = Sup {
            spec,
            counts: counts.clone(),
            kids: Children::default(),
            verdicts: verdicts.clone(),
        }
        .start();
        settle().await;
        script(sup, counts, verdicts).await;
    });
}

type Pin = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

#[test]
fn a_panicking_child_is_restarted_and_counted() {
    run_sup(spec(Restart::Transient, 5), |sup, counts, verdicts| {
        Box::pin(async move {
            for _ in 0..3 {
                let w = sup.send(GetWorker).await.unwrap().unwrap();
                w.do_send(Boom);
                settle().await;
            }
            assert_eq!(
                counts.starts.load(Ordering::SeqCst),
                4,
                "first start plus three restarts"
            );
            let v = verdicts.lock().unwrap().clone();
            assert_eq!(
                v,
                [1, 2, 3].map(|n| Verdict::Restart { restarts: n }).to_vec(),
                "each crash restarted, the count growing"
            );
        })
    });
}

#[test]
fn more_crashes_than_the_intensity_give_up() {
    run_sup(spec(Restart::Permanent, 2), |sup, counts, verdicts| {
        Box::pin(async move {
            for _ in 0..3 {
                let w = sup.send(GetWorker).await.unwrap().unwrap();
                w.do_send(Boom);
                settle().await;
            }
            assert_eq!(counts.starts.load(Ordering::SeqCst), 3);
            assert_eq!(verdicts.lock().unwrap().last(), Some(&Verdict::GiveUp { crashes: 3 }));
            assert!(sup.send(GetWorker).await.unwrap().is_none(), "given up: no child left");
        })
    });
}

#[test]
fn a_transient_child_that_finishes_is_not_restarted() {
    run_sup(spec(Restart::Transient, 5), |sup, counts, verdicts| {
        Box::pin(async move {
            let w = sup.send(GetWorker).await.unwrap().unwrap();
            w.do_send(Finish);
            settle().await;
            assert_eq!(counts.starts.load(Ordering::SeqCst), 1);
            assert_eq!(verdicts.lock().unwrap().clone(), vec![Verdict::Done]);
        })
    });
}

#[test]
fn a_permanent_child_is_restarted_even_after_a_normal_end() {
    run_sup(spec(Restart::Permanent, 5), |sup, counts, _| {
        Box::pin(async move {
            let w = sup.send(GetWorker).await.unwrap().unwrap();
            w.do_send(Finish);
            settle().await;
            assert_eq!(counts.starts.load(Ordering::SeqCst), 2);
        })
    });
}

#[test]
fn children_end_with_their_supervisor() {
    run_sup(spec(Restart::Permanent, 5), |sup, counts, _| {
        Box::pin(async move {
            let w = sup.send(GetWorker).await.unwrap().unwrap();
            assert!(w.connected());
            // The supervisor crashes (its Children are dropped with it).
            struct Crash;
            impl Message for Crash {
                type Result = ();
            }
            impl Handler<Crash> for Sup {
                type Result = ();
                fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
                    panic!("supervisor bug");
                }
            }
            let (sup2, _link) = spawn_linked(
                None,
                move |_| Sup {
                    spec: spec(Restart::Permanent, 5),
                    counts: counts.clone(),
                    kids: Children::default(),
                    verdicts: Arc::default(),
                },
                |_| {},
            );
            settle().await;
            let w2 = sup2.send(GetWorker).await.unwrap().unwrap();
            sup2.do_send(Crash);
            settle().await;
            assert!(!w2.connected(), "the crashed supervisor's child is gone too");
            drop(sup);
            drop(w);
        })
    });
}

#[test]
fn restart_types_follow_erlang_and_restart_policies() {
    assert!(Restart::from_policy("Always").restarts(false));
    assert!(Restart::from_policy("OnFailure").restarts(true));
    assert!(!Restart::from_policy("OnFailure").restarts(false));
    assert!(!Restart::from_policy("Never").restarts(true));
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_with_time() {
    let mut w = RestartWindow::new(Intensity {
        max_restarts: 2,
        period: Duration::from_secs(10),
    });
    assert!(w.allow(Instant::now()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(w.allow(Instant::now()));
    assert!(!w.allow(Instant::now()), "a third within 10 s exceeds the intensity");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(w.allow(Instant::now()), "the first fell out of the window");
    assert_eq!(w.total, 3);
}
