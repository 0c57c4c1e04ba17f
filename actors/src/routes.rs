//! `RouteSync`: the pod network across nodes, host-gw style (as flannel's
//! host-gw backend, or the routes kube-controller-manager programs in a
//! cloud). Every node publishes its pod range as its Node's `spec.podCIDR`;
//! this node routes each other node's range through that node's
//! `InternalIP`, so a pod reaches a pod on any node by its IP, without
//! encapsulation or NAT (the nodes share a link, as host-gw needs).
//!
//! Routes carry a protocol number of their own ([`ROUTE_PROTO`]), so those of
//! nodes that left are found and removed, and nobody else's are touched. A
//! node on this node's own address (several nodes on one host, as in the
//! tests) needs no route: its bridge is already here.

use crate::informer::{self, Informed, Mirror};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use peapod_core::kinds;
use peapod_core::store::Store;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The `proto` of the routes this actor owns (`ip route show proto 77`).
pub const ROUTE_PROTO: &str = "77";
/// How often the routes are compared with the Nodes without any change (a route removed by hand comes back).
const RESYNC: Duration = Duration::from_secs(30);

/// Routes this node wants: each other node's pod range, through its address.
pub fn wanted(nodes: &[Value], me: &str, my_ip: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in nodes {
        if peapod_core::object::name(n) == me {
            continue;
        }
        let Some(cidr) = n["spec"]["podCIDR"].as_str().filter(|c| !c.is_empty()) else {
            continue;
        };
        let ip = n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str());
        match ip {
            Some(ip) if ip != my_ip => {
                out.insert(cidr.to_string(), ip.to_string());
            }
            _ => {}
        }
    }
    out
}

/// The routes of ours in the kernel now: destination -> gateway.
async fn installed() -> Result<BTreeMap<String, String>, String> {
    let out = tokio::process::Command::new("ip")
        .args(["-j", "route", "show", "proto", ROUTE_PROTO])
        .output()
        .await
        .map_err(|e| format!("ip route show: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip route show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let routes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(routes
        .iter()
        .filter_map(|r| Some((r["dst"].as_str()?.to_string(), r["gateway"].as_str()?.to_string())))
        .collect())
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes the kernel's routes of ours exactly `want`.
pub async fn apply(want: &BTreeMap<String, String>) -> Vec<String> {
    let mut errors = Vec::new();
    let have = match installed().await {
        Ok(h) => h,
        Err(e) => return vec![e],
    };
    for (dst, via) in want {
        if have.get(dst) != Some(via) {
            if let Err(e) = ip(&["route", "replace", dst, "via", via, "proto", ROUTE_PROTO]).await {
                errors.push(e);
            }
        }
    }
    for dst in have.keys().filter(|d| !want.contains_key(*d)) {
        if let Err(e) = ip(&["route", "del", dst, "proto", ROUTE_PROTO]).await {
            errors.push(e);
        }
    }
    errors
}

/// The actor that keeps this node's routes to the other nodes' pod ranges.
pub struct RouteSync {
    store: Arc<dyn Store>,
    node: TreeNode,
    me: String,
    my_ip: String,
    nodes: Mirror,
    running: bool,
    again: bool,
}

impl RouteSync {
    /// Routes for node `me` (its address `my_ip`), registered in the tree as `node`.
    pub fn new(store: Arc<dyn Store>, me: String, my_ip: String, node: TreeNode) -> Self {
        Self {
            store,
            node,
            me,
            my_ip,
            nodes: Mirror::default(),
            running: false,
            again: false,
        }
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        if !self.nodes.synced() {
            return;
        }
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let want = wanted(&self.nodes.objects(), &self.me, &self.my_ip);
        self.node.set_state("Routing");
        ctx.spawn(
            async move { apply(&want).await }
                .into_actor(self)
                .map(|errors, act, ctx| {
                    for e in &errors {
                        tracing::warn!("pod network routes: {e}");
                    }
                    act.node.set_state(if errors.is_empty() { "Synced" } else { "Failing" });
                    act.running = false;
                    if std::mem::take(&mut act.again) {
                        act.sync(ctx);
                    }
                }),
        );
    }
}

impl Actor for RouteSync {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Watching");
        let nodes = informer::run(
            self.store.clone(),
            kinds::node().resource(),
            None,
            ctx.address().recipient(),
        );
        ctx.spawn(nodes.into_actor(self));
        ctx.run_interval(RESYNC, |act, ctx| act.sync(ctx));
    }
}

impl Handler<Informed> for RouteSync {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        self.nodes.apply(msg);
        self.sync(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: &str, ip: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": ip}]}})
    }

    #[test]
    fn every_other_nodes_range_goes_through_its_address() {
        let nodes = [
            node("a", "10.244.0.0/24", "10.0.0.1"),
            node("b", "10.244.1.0/24", "10.0.0.2"),
            node("c", "10.244.2.0/24", "10.0.0.3"),
            // Same host as a: its bridge is local already.
            node("d", "10.244.3.0/24", "10.0.0.1"),
            // No range yet.
            node("e", "", "10.0.0.5"),
        ];
        let want = wanted(&nodes, "a", "10.0.0.1");
        assert_eq!(
            want.into_iter().collect::<Vec<_>>(),
            [
                ("10.244.1.0/24".to_string(), "10.0.0.2".to_string()),
                ("10.244.2.0/24".to_string(), "10.0.0.3".to_string())
            ]
        );
    }
}
