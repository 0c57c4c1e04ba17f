//! `ServiceProxy`: this node's kube-proxy, as a supervised child of the
//! node. It follows Services and EndpointSlices through informers and,
//! whenever they change (changes coalesce), programs the kernel with the
//! whole service data path as one `nft -f` transaction ([`nft`]). No
//! packet passes through the daemon: traffic keeps flowing while the
//! daemon is down, and a restarted proxy reprograms the same table in
//! place without breaking a connection. A sync that fails is tried again
//! with a back-off. Only what changed is applied, as kube-proxy's partial
//! syncs; every five minutes, and after a failure, the table is listed and
//! rewritten whole, healing what someone else changed.

pub mod nft;

use crate::informer::{self, Informed, Mirror};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use peapod_core::kinds;
use peapod_core::store::Store;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// How the proxy is set up.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The nftables table (family `ip`); empty: no proxy.
    pub table: String,
    /// The pod network (masquerade decisions).
    pub cluster_cidr: String,
    /// This node's name (Local traffic policies).
    pub node_name: String,
}

impl ProxyConfig {
    fn nft(&self) -> nft::Config {
        nft::Config {
            table: self.table.clone(),
            cluster_cidr: self.cluster_cidr.clone(),
            node_name: self.node_name.clone(),
        }
    }
}

/// How often the table is rewritten whole, whatever changed.
const FULL_SYNC_EVERY: Duration = Duration::from_secs(300);

/// The node's service proxy.
pub struct ServiceProxy {
    store: Arc<dyn Store>,
    config: ProxyConfig,
    node: TreeNode,
    services: Mirror,
    slices: Mirror,
    running: bool,
    again: bool,
    /// What the table holds as this proxy last applied it; `None` rewrites it whole.
    applied: Option<nft::Desired>,
    /// Syncs failed in a row (the back-off).
    failures: u32,
    /// The next sync rewrites the table whole (the periodic heal).
    rewrite: bool,
}

impl ServiceProxy {
    pub fn new(store: Arc<dyn Store>, config: ProxyConfig, node: TreeNode) -> Self {
        Self {
            store,
            config,
            node,
            services: Mirror::default(),
            slices: Mirror::default(),
            running: false,
            again: false,
            applied: None,
            failures: 0,
            rewrite: false,
        }
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        // Not before both kinds were listed: a half-known state would drop services.
        if !(self.services.synced() && self.slices.synced()) {
            return;
        }
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let services = self.services.objects();
        let slices = self.slices.objects();
        let cfg = self.config.nft();
        // The whole table is rewritten when asked for (a sync running then picks it up next).
        let previous = self.applied.take().filter(|_| !std::mem::take(&mut self.rewrite));
        let timer = peapod_metrics::Timer::start();
        let work = tokio::task::spawn_blocking(move || apply(&cfg, &services, &slices, previous.as_ref()));
        ctx.spawn(work.into_actor(self).map(move |res, act, ctx| {
            act.running = false;
            let res = res.map_err(|e| e.to_string()).and_then(|r| r);
            peapod_metrics::metrics().proxy_sync_duration.observe(timer.seconds());
            match res {
                Ok(now) => {
                    act.failures = 0;
                    act.applied = Some(now);
                    act.node.set_state("Synced");
                    if std::mem::take(&mut act.again) {
                        act.sync(ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!("service proxy: {e}");
                    act.node.set_state("Failing");
                    act.applied = None;
                    act.failures = act.failures.saturating_add(1);
                    let delay = Duration::from_millis(250u64.saturating_mul(1 << act.failures.min(7)));
                    ctx.run_later(delay, |act, ctx| act.sync(ctx));
                }
            }
        }));
    }
}

/// Programs the data path for `services` and their `slices`; returns what
/// the table now holds. With `previous` (what this proxy last applied, the
/// table untouched since), only the difference is applied; without, the
/// table is listed and rewritten whole. Public for the benchmark, which
/// programs a table of its own with it.
pub fn apply(
    cfg: &nft::Config,
    services: &[Value],
    slices: &[Value],
    previous: Option<&nft::Desired>,
) -> Result<nft::Desired, String> {
    let wanted = nft::desired(cfg, &nft::service_ports(cfg, services, slices));
    let script = match previous {
        Some(old) => nft::diff_script(cfg, old, &wanted),
        None => {
            let listed = Command::new("nft")
                .args(["-j", "list", "table", "ip", &cfg.table])
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("run nft: {e}"))?;
            let existing = if listed.status.success() {
                nft::Existing::parse(&String::from_utf8_lossy(&listed.stdout))
            } else {
                nft::Existing::default()
            };
            nft::full_script(cfg, &wanted, &existing)
        }
    };
    if !script.is_empty() {
        run_nft(&script)?;
    }
    if let Some(old) = previous {
        for args in nft::stale_udp_flows(old, &wanted) {
            delete_flows(&args);
        }
    }
    Ok(wanted)
}

/// `conntrack ARGS` (a deletion); that nothing matched is no failure.
fn delete_flows(args: &[String]) {
    match Command::new("conntrack").args(args).stdout(Stdio::null()).output() {
        Ok(out) if out.status.success() || out.status.code() == Some(1) => {}
        Ok(out) => tracing::warn!(
            "conntrack {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::warn!("conntrack {}: {e}", args.join(" ")),
    }
}

/// `nft -f -` with `script` as one transaction.
fn run_nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the service rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the proxy's table: `peapod daemon --cleanup`, as `kube-proxy --cleanup`.
pub fn cleanup(table: &str) -> Result<(), String> {
    let exists = Command::new("nft")
        .args(["list", "table", "ip", table])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("run nft: {e}"))?;
    if exists.success() {
        run_nft(&format!("delete table ip {table}\n"))?;
    }
    Ok(())
}

impl Actor for ServiceProxy {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Listing");
        for kind in [kinds::service(), kinds::endpointslice()] {
            let informer = informer::run(self.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
        // Now and then the table is rewritten whole, healing changes made behind our back.
        ctx.run_interval(FULL_SYNC_EVERY, |act, ctx| {
            act.rewrite = true;
            act.sync(ctx);
        });
    }
}

impl Handler<Informed> for ServiceProxy {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        if msg.resource() == kinds::service().resource() {
            self.services.apply(msg);
        } else {
            self.slices.apply(msg);
        }
        self.sync(ctx);
    }
}
