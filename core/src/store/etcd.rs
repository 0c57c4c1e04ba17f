//! The shared store: etcd v3, the engine Kubernetes keeps its state in, so
//! several nodes see one cluster.
//!
//! - Keys are `<prefix>/<resource>/<namespace>/<name>` (an empty namespace for
//!   cluster-scoped kinds), so a kind, and a kind in one namespace, are each
//!   one key range. Values are the objects' JSON without `resourceVersion`,
//!   which is etcd's mod revision of the key, set on every read.
//! - Writes are transactions that compare the key's revision: create only
//!   where nothing is, update and delete only over the revision just read.
//! - A call that fails because a member is down, has no leader or is changing
//!   leader is retried (on whichever member answers) for up to
//!   [`RETRY_FOR`]. A write whose answer was lost may have landed: its retry
//!   recognises its own value (or, for a delete, the key gone) and reports
//!   success instead of a conflict, so nothing is written twice.
//! - Watches ask for the previous value (a delete's last state), resume from
//!   the last revision they delivered after a lost connection, and end with
//!   [`StoreError::Expired`] when that revision has been compacted.
//! - [`EtcdStore::compact_every`] compacts the history older than one period, as the API server does every 5 minutes.

use super::{
    conflict, key_of, uid_conflict, EventType, Page, PageKey, Preconditions, Scope, Store, StoreError, StoreFuture,
    StoreResult, WatchEvent, WatchStream, MODIFIED,
};
use crate::object;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a call keeps retrying while the cluster has no leader or a member is gone.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long one request may take before it counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt at a single-key call may take before it is asked again:
/// longer than an election (1 s by default), shorter than a user's patience.
const ATTEMPT: Duration = Duration::from_millis(1500);
/// Keys per range request of a list.
const LIST_CHUNK: i64 = 500;
/// Largest response accepted (a page of large ConfigMaps).
const MAX_MESSAGE: usize = 256 << 20;

/// Where and how to reach etcd.
#[derive(Clone, Default, Debug)]
pub struct EtcdConfig {
    /// Client URLs or `host:port`s of the members.
    pub endpoints: Vec<String>,
    /// Every key starts with this (`/peapod` by default): several clusters, or tests, may share one etcd.
    pub prefix: String,
    /// TLS: the CA that signed the members' certificates, and this client's certificate and key (PEM).
    pub tls: Option<EtcdTls>,
}

/// TLS material for etcd, as PEM bytes.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificate(s) that signed the members' certificates.
    pub ca: Vec<u8>,
    /// This client's certificate and key, when the members ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &format!("{} bytes", self.ca.len()))
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl EtcdConfig {
    /// Reads `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`, as `--store` takes it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url}: an etcd store is written etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let port = h.rsplit_once(':').map(|(_, p)| p);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(format!("{url}: member {h:?} has no port (HOST:PORT)"));
            }
            endpoints.push(h.to_string());
        }
        if endpoints.is_empty() {
            return Err(format!("{url}: no etcd member named"));
        }
        Ok(Self {
            endpoints,
            prefix: if prefix.is_empty() { "/peapod".into() } else { prefix },
            tls: None,
        })
    }
}

/// The etcd-backed [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    /// For error messages: the members asked.
    origin: String,
    watchers: Arc<AtomicUsize>,
}

fn be(origin: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: origin.to_string(),
        message: message.to_string(),
    }
}

/// Whether `e` may go away by asking again: no leader, leader changed, a
/// member down or a request timed out. Whether a write landed is then unknown.
fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        // gRPC codes Cancelled (1), DeadlineExceeded (4), Aborted (10), Unavailable (14).
        E::GRpcStatus(s) => {
            matches!(s.code() as i32, 1 | 4 | 10 | 14)
                || s.message().contains("leader")
                || s.message().contains("timed out")
                || s.message().contains("transport")
        }
        _ => false,
    }
}

/// How a lost answer is told from a refusal: what the retry found.
enum Outcome<T> {
    Done(T),
    /// The state moved under us (a compare failed): read again and decide again.
    Again,
}

impl EtcdStore {
    /// Connects to the members of `config`. Fails if none answers within the retry period.
    pub async fn connect(config: EtcdConfig) -> StoreResult<Self> {
        let origin = format!("etcd://{}", config.endpoints.join(","));
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the others refuses instead of serving old data.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| be(&origin, format!("connecting: {e}")))?;
        let store = Self {
            client,
            prefix: config.prefix.trim_end_matches('/').to_string(),
            origin,
            watchers: Arc::new(AtomicUsize::new(0)),
        };
        // Fail now, with the reason, rather than at the first write.
        store.revision().await?;
        Ok(store)
    }

    fn key(&self, resource: &str, ns: &str, name: &str) -> String {
        format!("{}/{resource}/{ns}/{name}", self.prefix)
    }

    fn range(&self, resource: Option<&str>, ns: Option<&str>) -> String {
        match (resource, ns) {
            (Some(r), Some(n)) => format!("{}/{r}/{n}/", self.prefix),
            (Some(r), None) => format!("{}/{r}/", self.prefix),
            _ => format!("{}/", self.prefix),
        }
    }

    /// (resource, namespace, name) of a key of ours. A resource may hold a
    /// slash (`apps/deployments`); names and namespaces never do.
    fn split<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str, &'k str)> {
        split_key(&self.prefix, key)
    }

    fn be(&self, e: impl std::fmt::Display) -> StoreError {
        be(&self.origin, e)
    }

    /// Runs `f` until it succeeds, fails for good, or [`RETRY_FOR`] has passed.
    /// `f` learns whether an earlier attempt may have landed.
    async fn retrying<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnMut(Client, bool) -> Fut,
        Fut: Future<Output = Result<StoreResult<T>, etcd_client::Error>>,
    {
        self.retrying_within(ATTEMPT, f).await
    }

    /// [`Self::retrying`], each attempt given up after `attempt`.
    async fn retrying_within<T, F, Fut>(&self, attempt: Duration, mut f: F) -> StoreResult<T>
    where
        F: FnMut(Client, bool) -> Fut,
        Fut: Future<Output = Result<StoreResult<T>, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(50);
        let mut maybe_landed = false;
        loop {
            // A request that reached a member whose leader just died waits
            // for nothing: give it up sooner than the channel would.
            let answer = match tokio::time::timeout(attempt, f(self.client.clone(), maybe_landed)).await {
                Ok(a) => a.map_err(|e| (transient(&e), e.to_string())),
                Err(_) => Err((true, format!("no answer in {attempt:?}"))),
            };
            match answer {
                Ok(out) => return out,
                Err((true, e)) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!("etcd: {e}; asking again in {pause:?}");
                    maybe_landed = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err((_, e)) => return Err(self.be(e)),
            }
        }
    }

    /// The object at `key` and its mod revision.
    async fn read(&self, client: &mut Client, key: &str) -> Result<Option<(Value, i64, Vec<u8>)>, etcd_client::Error> {
        let resp = client.get(key, None).await?;
        Ok(match resp.kvs().first() {
            Some(kv) => Some((
                self.decode(kv.value(), kv.mod_revision())?,
                kv.mod_revision(),
                kv.value().to_vec(),
            )),
            None => None,
        })
    }

    fn decode(&self, bytes: &[u8], revision: i64) -> Result<Value, etcd_client::Error> {
        let mut v: Value = serde_json::from_slice(bytes)
            .map_err(|e| etcd_client::Error::InvalidArgs(format!("corrupt object in {}: {e}", self.origin)))?;
        object::set_meta(&mut v, "resourceVersion", revision.to_string());
        Ok(v)
    }

    /// Decodes a value read from etcd, as a store error.
    fn decode_kv(&self, kv: &etcd_client::KeyValue) -> StoreResult<Value> {
        self.decode(kv.value(), kv.mod_revision()).map_err(|e| self.be(e))
    }

    /// Compacts, every `period`, the history older than the revision seen one period before.
    /// Several nodes may run it; etcd refuses the ones already done.
    pub fn compact_every(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut previous: Option<u64> = None;
            loop {
                tokio::time::sleep(period).await;
                if let Some(rev) = previous {
                    if let Err(e) = store.compact(rev).await {
                        tracing::debug!("etcd compaction to {rev}: {e}");
                    }
                }
                previous = store.revision().await.ok();
            }
        })
    }

    /// Drops the history before `revision`: watches from older revisions get [`StoreError::Expired`].
    pub async fn compact(&self, revision: u64) -> StoreResult<()> {
        let rev = i64::try_from(revision).map_err(|e| self.be(e))?;
        let mut client = self.client.clone();
        client
            .compact(rev, Some(etcd_client::CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| self.be(e))?;
        Ok(())
    }
}

/// (resource, namespace, name) of `key` under `prefix`.
fn split_key<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, &'k str, &'k str)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let (rest, name) = rest.rsplit_once('/')?;
    let (resource, ns) = rest.rsplit_once('/')?;
    Some((resource, ns, name))
}

/// The object's bytes as stored: without resourceVersion, which is the key's revision.
fn encode(obj: &Value) -> StoreResult<Vec<u8>> {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The smallest key after every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> u64 {
    h.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, resource: &'a str, namespace: &'a str, name: &'a str) -> StoreFuture<'a, Value> {
        let key = self.key(resource, namespace, name);
        Box::pin(async move {
            self.retrying(|mut c, _| {
                let key = key.clone();
                async move {
                    Ok(match self.read(&mut c, &key).await? {
                        Some((v, _, _)) => Ok(v),
                        None => Err(StoreError::NotFound {
                            resource: resource.to_string(),
                            name: name.to_string(),
                        }),
                    })
                }
            })
            .await
        })
    }

    fn list<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> StoreFuture<'a, (Vec<Value>, u64)> {
        Box::pin(async move {
            let start = self.range(Some(resource), namespace);
            let end = range_end(&start);
            // Chunks read at the revision of the first, so the list is one snapshot.
            'whole: loop {
                let mut items = Vec::new();
                let mut from = start.as_bytes().to_vec();
                let mut at: Option<i64> = None;
                loop {
                    let (from2, end2) = (from.clone(), end.clone());
                    let resp = self
                        .retrying_within(REQUEST_TIMEOUT, |c, _| {
                            let (from, end) = (from2.clone(), end2.clone());
                            async move {
                                let mut opts = GetOptions::new().with_range(end).with_limit(LIST_CHUNK);
                                if let Some(rev) = at {
                                    opts = opts.with_revision(rev);
                                }
                                let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE);
                                match kv.get(from, Some(opts)).await {
                                    // A member down or no leader: asked again, as every call.
                                    Err(e) if transient(&e) => Err(e),
                                    other => Ok(Ok(other)),
                                }
                            }
                        })
                        .await?;
                    let resp = match resp {
                        Ok(r) => r,
                        // The snapshot was compacted under a long list: start again.
                        Err(e) if e.to_string().contains("compacted") => continue 'whole,
                        Err(e) => return Err(self.be(e)),
                    };
                    let rev = resp.header().map_or(0, |h| h.revision());
                    let at_rev = *at.get_or_insert(rev);
                    for kv in resp.kvs() {
                        items.push(self.decode_kv(kv)?);
                    }
                    match resp.kvs().last() {
                        Some(last) if resp.more() => {
                            from = last.key().to_vec();
                            from.push(0);
                        }
                        _ => return Ok((items, u64::try_from(at_rev).unwrap_or(0))),
                    }
                }
            }
        })
    }

    fn list_page<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<PageKey>,
        limit: usize,
    ) -> StoreFuture<'a, Page> {
        Box::pin(async move {
            let start = self.range(Some(resource), namespace);
            let end = range_end(&start);
            let from = match &after {
                Some((ns, name)) => {
                    let mut k = self.key(resource, ns, name).into_bytes();
                    k.push(0);
                    k
                }
                None => start.into_bytes(),
            };
            let limit = limit.max(1);
            let resp = self
                .retrying_within(REQUEST_TIMEOUT, |c, _| {
                    let (from, end) = (from.clone(), end.clone());
                    async move {
                        let opts = GetOptions::new()
                            .with_range(end)
                            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
                        let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE);
                        kv.get(from, Some(opts)).await.map(Ok)
                    }
                })
                .await?;
            let mut page = Page {
                revision: header_revision(resp.header()),
                ..Page::default()
            };
            let mut last = None;
            for kv in resp.kvs() {
                page.items.push(self.decode_kv(kv)?);
                last = Some(kv.key().to_vec());
            }
            if page.items.len() == limit {
                let key = last
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .unwrap_or_default();
                page.next = self.split(&key).map(|(_, ns, name)| (ns.to_string(), name.to_string()));
            }
            Ok(page)
        })
    }

    fn create<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        Box::pin(async move {
            let (ns, name) = key_of(resource, &object)?;
            let key = self.key(resource, &ns, &name);
            let bytes = encode(&object)?;
            self.retrying(|mut c, maybe_landed| {
                let (key, bytes, object, name) = (key.clone(), bytes.clone(), object.clone(), name.clone());
                async move {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.clone(), bytes.clone(), None)])
                        .or_else([TxnOp::get(key, None)]);
                    let resp = c.txn(txn).await?;
                    if resp.succeeded() {
                        let mut out = object;
                        object::set_meta(&mut out, "resourceVersion", header_revision(resp.header()).to_string());
                        return Ok(Ok(out));
                    }
                    // Taken: by our own earlier attempt whose answer was lost, or by someone else.
                    for op in resp.op_responses() {
                        if let TxnOpResponse::Get(g) = op {
                            if let Some(kv) = g.kvs().first() {
                                if maybe_landed && kv.value() == bytes.as_slice() {
                                    return Ok(self.decode_kv(kv));
                                }
                            }
                        }
                    }
                    Ok(Err(StoreError::AlreadyExists {
                        resource: resource.to_string(),
                        name,
                    }))
                }
            })
            .await
        })
    }

    fn update<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        Box::pin(async move {
            let (ns, name) = key_of(resource, &object)?;
            let key = self.key(resource, &ns, &name);
            let bytes = encode(&object)?;
            let want = object::resource_version(&object);
            let uid = object::uid(&object).to_string();
            let written = &object;
            loop {
                let outcome = self
                    .retrying(|mut c, maybe_landed| {
                        let (key, bytes, name, uid) = (key.clone(), bytes.clone(), name.clone(), uid.clone());
                        async move {
                            let Some((cur, rev, cur_bytes)) = self.read(&mut c, &key).await? else {
                                return Ok(Err(StoreError::NotFound {
                                    resource: resource.to_string(),
                                    name,
                                }));
                            };
                            if maybe_landed && cur_bytes == bytes {
                                return Ok(Ok(Outcome::Done(cur)));
                            }
                            if want != 0 && want != object::resource_version(&cur) {
                                return Ok(Err(conflict(resource, &name, MODIFIED)));
                            }
                            if !uid.is_empty() && uid != object::uid(&cur) {
                                return Ok(Err(uid_conflict(resource, &name, &uid, object::uid(&cur))));
                            }
                            let txn = Txn::new()
                                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                                .and_then([TxnOp::put(key, bytes, None)]);
                            let resp = c.txn(txn).await?;
                            if !resp.succeeded() {
                                return Ok(Ok(Outcome::Again));
                            }
                            let mut out = written.clone();
                            object::set_meta(&mut out, "resourceVersion", header_revision(resp.header()).to_string());
                            Ok(Ok(Outcome::Done(out)))
                        }
                    })
                    .await?;
                if let Outcome::Done(v) = outcome {
                    return Ok(v);
                }
            }
        })
    }

    fn delete<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        pre: Preconditions,
    ) -> StoreFuture<'a, Value> {
        Box::pin(async move {
            let key = self.key(resource, namespace, name);
            // The state a delete was sent for: what it removed if its answer was lost.
            let sent: std::sync::Mutex<Option<Value>> = std::sync::Mutex::new(None);
            let sent = &sent;
            loop {
                let outcome = self
                    .retrying(|mut c, maybe_landed| {
                        let key = key.clone();
                        let pre = pre.clone();
                        async move {
                            let Some((cur, rev, _)) = self.read(&mut c, &key).await? else {
                                let last = sent.lock().unwrap_or_else(|p| p.into_inner()).take();
                                if let (true, Some(last)) = (maybe_landed, last) {
                                    return Ok(Ok(Outcome::Done(last)));
                                }
                                return Ok(Err(StoreError::NotFound {
                                    resource: resource.to_string(),
                                    name: name.to_string(),
                                }));
                            };
                            if let Some(uid) = pre.uid.as_deref() {
                                if uid != object::uid(&cur) {
                                    return Ok(Err(uid_conflict(resource, name, uid, object::uid(&cur))));
                                }
                            }
                            if let Some(rv) = pre.resource_version {
                                if rv != object::resource_version(&cur) {
                                    return Ok(Err(conflict(resource, name, MODIFIED)));
                                }
                            }
                            *sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(cur.clone());
                            let txn = Txn::new()
                                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                                .and_then([TxnOp::delete(key, None)]);
                            let resp = c.txn(txn).await?;
                            Ok(Ok(if resp.succeeded() {
                                Outcome::Done(cur)
                            } else {
                                Outcome::Again
                            }))
                        }
                    })
                    .await?;
                match outcome {
                    Outcome::Done(v) => return Ok(v),
                    // Someone wrote between our read and our delete: read again.
                    Outcome::Again => *sent.lock().unwrap_or_else(|p| p.into_inner()) = None,
                }
            }
        })
    }

    fn watch(&self, scope: Scope, after: u64) -> StoreFuture<'_, WatchStream> {
        let store = self.clone();
        Box::pin(async move {
            let range = store.range(scope.resource.as_deref(), scope.namespace.as_deref());
            // A namespace across all kinds is not one key range: filter here.
            let ns_filter = if scope.resource.is_none() {
                scope.namespace.clone()
            } else {
                None
            };
            let mut feed = store.open_watch(&range, after).await?;
            let (tx, rx) = mpsc::channel(1024);
            store.watchers.fetch_add(1, Ordering::Relaxed);
            let counter = store.watchers.clone();
            tokio::spawn(async move {
                struct Count(Arc<AtomicUsize>);
                impl Drop for Count {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                let _count = Count(counter);
                let mut last = after;
                loop {
                    let msg = tokio::select! {
                        m = feed.message() => m,
                        _ = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.canceled() && resp.compact_revision() > 0 {
                                let err = StoreError::Expired {
                                    requested: last,
                                    oldest: u64::try_from(resp.compact_revision()).unwrap_or(0),
                                };
                                let _ = tx.send(Err(err)).await;
                                return;
                            }
                            if resp.canceled() {
                                // The member lost its leader: go on from another.
                                tracing::debug!("etcd watch cancelled ({}): resuming", resp.cancel_reason());
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                match store.open_watch(&range, last).await {
                                    Ok(f) => feed = f,
                                    Err(e) => {
                                        let _ = tx.send(Err(e)).await;
                                        return;
                                    }
                                }
                                continue;
                            }
                            for ev in resp.events() {
                                let Some(ev) = store.event(ev) else { continue };
                                if ev.revision <= last {
                                    continue;
                                }
                                if ns_filter.as_deref().is_some_and(|n| n != object::namespace(&ev.object)) {
                                    last = ev.revision;
                                    continue;
                                }
                                last = ev.revision;
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) | Err(_) => {
                            // The member went away: resume from the last revision delivered, on any member.
                            match store.open_watch(&range, last).await {
                                Ok(f) => feed = f,
                                Err(e) => {
                                    let _ = tx.send(Err(e)).await;
                                    return;
                                }
                            }
                        }
                    }
                }
            });
            Ok(rx)
        })
    }

    fn revision(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let key = format!("{}/", self.prefix);
            self.retrying(|mut c, _| {
                let key = key.clone();
                async move {
                    let resp = c.get(key, Some(GetOptions::new().with_count_only())).await?;
                    Ok(Ok(header_revision(resp.header())))
                }
            })
            .await
        })
    }

    fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

impl EtcdStore {
    /// A watch on `range` from the revision after `after`; Expired if that is compacted.
    async fn open_watch(&self, range: &str, after: u64) -> StoreResult<etcd_client::WatchStream> {
        let start = i64::try_from(after.saturating_add(1)).map_err(|e| self.be(e))?;
        let range = range.to_string();
        // etcd accepts a watch from a compacted revision and cancels it a
        // moment later; a read at that revision says so now, as SQLite does.
        let compacted = self
            .retrying(|mut c, _| {
                let range = range.clone();
                async move {
                    let opts = GetOptions::new().with_prefix().with_count_only().with_revision(start);
                    match c.get(range, Some(opts)).await {
                        Ok(_) => Ok(Ok(false)),
                        Err(e) if e.to_string().contains("compacted") => Ok(Ok(true)),
                        Err(e) if e.to_string().contains("future revision") => Ok(Ok(false)),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        let mut stream = self
            .retrying(|mut c, _| {
                let range = range.clone();
                async move {
                    let opts = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(start)
                        .with_prev_key();
                    c.watch(range, Some(opts)).await.map(Ok)
                }
            })
            .await?;
        // The first answer says whether the watch exists; a compacted one is
        // cancelled next, with the revision it was compacted to.
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, stream.message()).await;
            match msg {
                Ok(Ok(Some(resp))) if resp.canceled() && resp.compact_revision() > 0 => {
                    return Err(StoreError::Expired {
                        requested: after,
                        oldest: u64::try_from(resp.compact_revision()).unwrap_or(0),
                    })
                }
                Ok(Ok(Some(resp))) if resp.canceled() => {
                    return Err(self.be(format!("watch refused: {}", resp.cancel_reason())))
                }
                Ok(Ok(Some(_))) if compacted => continue,
                Ok(Ok(Some(_))) => return Ok(stream),
                Ok(Ok(None)) => return Err(self.be("the watch ended at once")),
                Ok(Err(e)) => return Err(self.be(e)),
                Err(_) if compacted => {
                    return Err(StoreError::Expired {
                        requested: after,
                        oldest: after.saturating_add(1),
                    })
                }
                Err(_) => return Err(self.be("no answer to a watch request")),
            }
        }
    }

    /// One etcd event as ours; None for a key that is not an object's.
    fn event(&self, ev: &etcd_client::Event) -> Option<WatchEvent> {
        let kv = ev.kv()?;
        let key = std::str::from_utf8(kv.key()).ok()?;
        let (resource, ns, name) = self.split(key)?;
        let revision = u64::try_from(kv.mod_revision()).ok()?;
        let (event_type, object) = match ev.event_type() {
            etcd_client::EventType::Put => {
                let t = if kv.create_revision() == kv.mod_revision() {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                (t, self.decode(kv.value(), kv.mod_revision()).ok()?)
            }
            etcd_client::EventType::Delete => {
                let last = ev
                    .prev_kv()
                    .and_then(|p| self.decode(p.value(), p.mod_revision()).ok())
                    .unwrap_or_else(|| serde_json::json!({"metadata": {"name": name, "namespace": ns}}));
                (EventType::Deleted, last)
            }
        };
        Some(WatchEvent {
            event_type,
            revision,
            resource: resource.to_string(),
            object,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_every_member_and_say_what_is_wrong() {
        let c = EtcdConfig::parse("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(c.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(c.prefix, "/peapod");
        assert_eq!(EtcdConfig::parse("etcd://h:1/team-a/").unwrap().prefix, "/team-a");
        let e = EtcdConfig::parse("etcd://h:1,h2").unwrap_err();
        assert!(e.contains("\"h2\" has no port"), "{e}");
        assert!(EtcdConfig::parse("http://h:1")
            .unwrap_err()
            .contains("etcd://HOST:PORT"));
        assert!(EtcdConfig::parse("etcd://").unwrap_err().contains("no etcd member"));
    }

    #[test]
    fn keys_split_back_into_resource_namespace_and_name() {
        for (r, ns, n) in [
            ("pods", "default", "a"),
            ("apps/deployments", "ns", "web"),
            ("nodes", "", "n1"),
        ] {
            assert_eq!(split_key("/p", &format!("/p/{r}/{ns}/{n}")), Some((r, ns, n)));
        }
        assert_eq!(split_key("/p", "/other/pods/a/b"), None);
    }

    #[test]
    fn range_ends_cover_exactly_the_prefix() {
        assert_eq!(range_end("/p/pods/"), b"/p/pods0".to_vec());
        assert!(b"/p/pods/zzz".as_slice() < range_end("/p/pods/").as_slice());
        assert!(b"/p/podsx".as_slice() >= range_end("/p/pods/").as_slice());
    }

    #[test]
    fn stored_bytes_carry_no_resource_version() {
        let v = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"}, "spec": {}});
        let b = encode(&v).unwrap();
        assert!(!String::from_utf8(b).unwrap().contains("resourceVersion"));
    }
}
