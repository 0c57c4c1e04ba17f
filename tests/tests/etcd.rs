//! The etcd store against a real 3-member etcd cluster: the same suite the
//! SQLite store passes, compaction, and a leader killed under writes and a watch.

use peapod_core::object;
use peapod_core::store::{suite, EtcdConfig, EtcdStore, EtcdTls, EventType, Scope, Store, StoreError};
use peapod_tests::etcd::EtcdCluster;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn connect(cluster: &EtcdCluster, prefix: &str) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::parse(&cluster.url(prefix)).unwrap())
        .await
        .unwrap_or_else(|e| panic!("connect to etcd: {e}\n{}", cluster.logs()))
}

#[tokio::test]
async fn the_store_suite_passes_on_a_three_member_cluster() {
    let cluster = EtcdCluster::start();
    let n = AtomicUsize::new(0);
    suite::all(|| {
        // Each check gets a key prefix of its own, so its store starts empty.
        let prefix = format!("suite-{}", n.fetch_add(1, Ordering::Relaxed));
        let cluster = &cluster;
        async move { Arc::new(connect(cluster, &prefix).await) as Arc<dyn Store> }
    })
    .await;
    // Two prefixes on one etcd never see each other's objects.
    let a = connect(&cluster, "team-a").await;
    let b = connect(&cluster, "team-b").await;
    a.create("pods", json!({"metadata": {"name": "p", "namespace": "default"}}))
        .await
        .unwrap();
    assert!(matches!(
        b.get("pods", "default", "p").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(b.list("pods", None).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_expires_and_a_newer_one_does_not() {
    let cluster = EtcdCluster::start();
    let s = connect(&cluster, "compact").await;
    let base = s.revision().await.unwrap();
    for i in 0..5 {
        s.create(
            "pods",
            json!({"metadata": {"name": format!("p{i}"), "namespace": "default"}}),
        )
        .await
        .unwrap();
    }
    let now = s.revision().await.unwrap();
    s.compact(now).await.unwrap();
    match s.watch(Scope::default(), base).await {
        Err(StoreError::Expired { requested, oldest }) => assert_eq!((requested, oldest), (base, now)),
        Err(e) => panic!("expected Expired, got {e}"),
        Ok(_) => panic!("a watch from a compacted revision was accepted"),
    }
    // From the compaction point on, nothing is lost.
    let mut w = s.watch(Scope::default(), now).await.unwrap();
    let p = s
        .create("pods", json!({"metadata": {"name": "after", "namespace": "default"}}))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.revision, object::resource_version(&p));
    // A list still holds every object: compaction drops history, not state.
    assert_eq!(s.list("pods", None).await.unwrap().0.len(), 6);
}

#[tokio::test]
async fn periodic_compaction_drops_history_older_than_one_period() {
    let cluster = EtcdCluster::start();
    let s = connect(&cluster, "periodic").await;
    let base = s.revision().await.unwrap();
    for name in ["a", "b"] {
        s.create("pods", json!({"metadata": {"name": name, "namespace": "default"}}))
            .await
            .unwrap();
    }
    // Every 300 ms the history older than the revision seen one period before
    // goes: the one after `base` (the first create's) among it.
    let compactor = s.compact_every(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.watch(Scope::default(), base).await {
            Err(StoreError::Expired { requested, .. }) => {
                assert_eq!(requested, base);
                break;
            }
            Err(e) => panic!("watching from {base}: {e}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "revision {base} was never compacted");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    compactor.abort();
    // Compaction drops history, not objects.
    assert_eq!(s.list("pods", None).await.unwrap().0.len(), 2);
}

/// What the writer saw: acknowledged names, failures, and the longest wait
/// for one acknowledgement with when it started (from `t0`).
struct Written {
    acked: Vec<String>,
    failed: Vec<String>,
    longest: Duration,
    longest_at: Duration,
}

/// Creates `obj-<n>` one after another (and lists them every fifth) until told to stop.
async fn writer(s: EtcdStore, stop: Arc<AtomicUsize>, t0: Instant) -> Written {
    let mut w = Written {
        acked: Vec::new(),
        failed: Vec::new(),
        longest: Duration::ZERO,
        longest_at: Duration::ZERO,
    };
    let mut i = 0;
    while stop.load(Ordering::Relaxed) == 0 {
        let name = format!("obj-{i:05}");
        let obj = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{i}")}});
        let t = Instant::now();
        match s.create("configmaps", obj).await {
            Ok(_) => w.acked.push(name),
            Err(e) => w.failed.push(format!("{name}: {e}")),
        }
        // Reads ride out the leader change too (admission lists on every create).
        if i % 5 == 0 {
            if let Err(e) = s.list("configmaps", None).await {
                w.failed.push(format!("list after {i}: {e}"));
            }
        }
        if t.elapsed() > w.longest {
            w.longest = t.elapsed();
            w.longest_at = t - t0;
        }
        i += 1;
    }
    w
}

#[tokio::test]
async fn writes_resume_after_the_leader_is_killed_and_nothing_is_lost_or_doubled() {
    let cluster = EtcdCluster::start();
    let s = connect(&cluster, "failover").await;
    let base = s.revision().await.unwrap();
    let mut watch = s
        .watch(
            Scope {
                resource: Some("configmaps".into()),
                namespace: None,
            },
            base,
        )
        .await
        .unwrap();
    let stop = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let writing = tokio::spawn(writer(s.clone(), stop.clone(), t0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // etcdctl and kill block: off the runtime the writer runs on.
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    let leader = tokio::task::spawn_blocking(move || {
        let leader = c.leader().expect("the members name a leader");
        c.kill(leader);
        leader
    })
    .await
    .unwrap();
    let killed_at = t0.elapsed();
    // Writes go on through the leader change; the killed member comes back later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let c = cluster.clone();
    let new_leader = tokio::task::spawn_blocking(move || {
        let new_leader = c.leader();
        c.restart(leader);
        new_leader
    })
    .await
    .unwrap();
    let restarted_at = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(1, Ordering::Relaxed);
    let Written {
        acked,
        failed,
        longest,
        longest_at,
    } = writing.await.unwrap();
    eprintln!(
        "leader m{} killed at {killed_at:?}, restarted at {restarted_at:?}; new leader {:?}; {} writes acknowledged; \
         longest wait for one {longest:?}, from {longest_at:?}",
        leader + 1,
        new_leader.map(|l| format!("m{}", l + 1)),
        acked.len(),
    );
    assert!(
        failed.is_empty(),
        "writes failed for good: {failed:?}\n{}",
        cluster.logs()
    );
    assert_ne!(new_leader, Some(leader), "the killed member cannot lead");
    assert!(acked.len() > 20, "writes went on: {}", acked.len());
    // Every acknowledged object is there once, and nothing else.
    let (items, _) = s.list("configmaps", None).await.unwrap();
    let stored: Vec<String> = items.iter().map(|o| object::name(o).to_string()).collect();
    assert_eq!(stored, acked, "the store holds exactly the acknowledged writes");
    // The watch, across the leader change, saw each of them added once, in revision order.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last = base;
    while seen.len() < acked.len() {
        let ev = tokio::time::timeout(Duration::from_secs(20), watch.recv())
            .await
            .expect("the watch delivers every write")
            .expect("the watch is open")
            .expect("no watch error");
        assert!(ev.revision > last, "revisions only grow: {} after {last}", ev.revision);
        last = ev.revision;
        assert_eq!(ev.event_type, EventType::Added);
        *seen.entry(object::name(&ev.object).to_string()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "an event delivered twice: {seen:?}");
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        acked.iter().cloned().collect::<BTreeSet<_>>()
    );
}

/// TLS as the flags give it: the CA, and a client certificate when `client` names one (`client`, `stranger`).
fn tls_config(cluster: &EtcdCluster, prefix: &str, client: Option<&str>) -> EtcdConfig {
    let dir = cluster.tls.as_ref().expect("a TLS cluster");
    let mut config = EtcdConfig::parse(&cluster.url(prefix)).unwrap();
    config.tls = Some(EtcdTls {
        ca: std::fs::read(dir.join("ca.crt")).unwrap(),
        identity: client.map(|c| {
            (
                std::fs::read(dir.join(format!("{c}.crt"))).unwrap(),
                std::fs::read(dir.join(format!("{c}.key"))).unwrap(),
            )
        }),
    });
    config
}

/// A store call's outcome: a refused client must fail, not hang. (etcd
/// closes the connection of a client it refuses, which looks like a member
/// going away, so the store tries for its whole retry period first.)
async fn first_read(config: EtcdConfig) -> Result<(), String> {
    let attempt = async {
        let s = EtcdStore::connect(config).await.map_err(|e| e.to_string())?;
        s.list("pods", None).await.map(drop).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(45), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer in 45 s".into()))
}

#[test]
fn over_tls_the_store_and_a_daemon_need_a_certificate_of_the_cluster_ca() {
    let cluster = EtcdCluster::start_tls();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The same suite as on plain HTTP, with the client certificate.
        let n = AtomicUsize::new(0);
        suite::all(|| {
            let prefix = format!("tls-suite-{}", n.fetch_add(1, Ordering::Relaxed));
            let cluster = &cluster;
            async move {
                let s = EtcdStore::connect(tls_config(cluster, &prefix, Some("client")))
                    .await
                    .unwrap_or_else(|e| panic!("connect over TLS: {e}\n{}", cluster.logs()));
                Arc::new(s) as Arc<dyn Store>
            }
        })
        .await;
        // No client certificate, one of another CA, or no TLS at all: refused.
        let (none, stranger, plain) = tokio::join!(
            first_read(tls_config(&cluster, "x", None)),
            first_read(tls_config(&cluster, "x", Some("stranger"))),
            first_read(EtcdConfig::parse(&cluster.url("x")).unwrap()),
        );
        for (what, outcome) in [
            ("no client certificate", none),
            ("another CA's certificate", stranger),
            ("plain HTTP", plain),
        ] {
            assert!(outcome.is_err(), "{what} was let in");
        }
    });
    // A daemon given the flags registers its Node through TLS.
    let dir = cluster.tls.clone().unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    let url = cluster.url("tls-node");
    let node = peapod_tests::Node::start_with_args(
        &[
            "--store",
            &url,
            "--etcd-cafile",
            &path("ca.crt"),
            "--etcd-certfile",
            &path("client.crt"),
            "--etcd-keyfile",
            &path("client.key"),
            "--node-name",
            "tls-node",
            "--kubelet-port",
            "0",
        ],
        |_| {},
    );
    let nodes = node.ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/tls-node");
    assert!(
        !cluster.keys_with("tls-node/nodes/").is_empty(),
        "the Node is in etcd: {:?}",
        cluster.keys_with("tls-node")
    );
}
