//! Pod networking through CNI plugins, executed by peapod itself with the
//! CNI 1.0.0 protocol (configuration on stdin, parameters in `CNI_*`
//! variables, the result on stdout, `prevResult` chaining through a list).
//!
//! The network configuration is picked as kubelet picks it: the first
//! `.conflist`/`.conf`/`.json` file of the configuration directory in name
//! order. peapod writes its own default (bridge + host-local + portmap) only
//! while no other configuration is there, so an operator's file always wins.
//!
//! Everything an attachment needs for its DEL (the list used, the
//! parameters, the result) is cached next to the pod's state before ADD
//! runs, so teardown works the same after a daemon crash and may be repeated.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How long one plugin invocation may take.
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The file peapod writes into the configuration directory.
pub const DEFAULT_CONFLIST: &str = "10-peapod.conflist";

/// Where CNI configuration and plugins live, and peapod's default network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Configuration directory (`--cni-conf-dir`).
    pub conf_dir: PathBuf,
    /// Plugin directories, searched in order (`--cni-bin-dir`, colon-separated).
    pub bin_dirs: Vec<PathBuf>,
    /// The default network's bridge.
    pub bridge: String,
    /// The default network's pod CIDR (IPv4).
    pub pod_cidr: String,
    /// host-local's lease directory for the default network.
    pub ipam_dir: PathBuf,
    /// The pod ranges of every node of the cluster (`--cluster-cidr`):
    /// traffic to them keeps the pod's address (no masquerade), as pods of a
    /// Kubernetes cluster see each other's.
    pub cluster_cidr: Option<String>,
}

/// A CNI call that failed; `message` names the plugin and what it said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CniError {
    /// What went wrong, with the plugin or file involved.
    pub message: String,
}

fn err(message: impl Into<String>) -> CniError {
    CniError {
        message: message.into(),
    }
}

/// A host port forwarded to the pod (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One pod's attachment: what ADD was called with and what it returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The network list, exactly as used for ADD (DEL must see the same).
    pub list: Value,
    /// Where the list came from.
    pub source: PathBuf,
    /// `CNI_CONTAINERID`: the pod uid.
    pub container_id: String,
    /// `CNI_NETNS`: the pod's pinned network namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// Host ports for portmap.
    pub port_mappings: Vec<PortMapping>,
    /// The final result of the list's ADD; `None` until ADD finished.
    pub result: Option<Value>,
}

impl Attachment {
    /// The pod IPs of the result, without prefix length, IPv4 first.
    pub fn ips(&self) -> Vec<String> {
        let mut ips: Vec<String> = self
            .result
            .as_ref()
            .and_then(|r| r["ips"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .collect();
        ips.sort_by_key(|ip| ip.contains(':'));
        ips
    }
}

/// The network plugins' driver.
#[derive(Debug, Clone)]
pub struct Cni {
    cfg: NetworkConfig,
}

/// The configuration in force and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedList {
    pub list: Value,
    pub source: PathBuf,
}

impl Cni {
    /// A driver for `cfg`.
    pub fn new(cfg: NetworkConfig) -> Self {
        Self { cfg }
    }

    /// peapod's default network list for the configured bridge and CIDR.
    pub fn default_list(&self) -> Result<Value, CniError> {
        let (net, prefix) = self
            .cfg
            .pod_cidr
            .split_once('/')
            .ok_or_else(|| err(format!("pod CIDR {:?}: expected a.b.c.d/len", self.cfg.pod_cidr)))?;
        let base: std::net::Ipv4Addr = net
            .parse()
            .map_err(|e| err(format!("pod CIDR {:?}: {e}", self.cfg.pod_cidr)))?;
        let len: u32 = prefix
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| err(format!("pod CIDR {:?}: prefix length must be 8..30", self.cfg.pod_cidr)))?;
        let mask = u32::MAX << (32 - len);
        let network = u32::from(base) & mask;
        let gateway = std::net::Ipv4Addr::from(network + 1);
        let subnet = format!("{}/{len}", std::net::Ipv4Addr::from(network));
        Ok(json!({
            "cniVersion": "1.0.0",
            "name": "peapod",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.cfg.bridge,
                    "isGateway": true,
                    // One node-level MASQUERADE rule for the CIDR (`ensure_masquerade`)
                    // instead of a chain per pod: per-pod iptables-nft calls
                    // serialise on the xtables lock and slow every pod start and stop.
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet, "gateway": gateway.to_string()}]],
                        // CHECK fails on routes without an explicit gateway.
                        "routes": [{"dst": "0.0.0.0/0", "gw": gateway.to_string()}],
                        "dataDir": self.cfg.ipam_dir.display().to_string(),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        }))
    }

    fn config_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.cfg.conf_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        files.sort();
        files
    }

    /// Writes peapod's default list unless an operator's configuration is present.
    pub fn ensure_default_config(&self) -> Result<(), CniError> {
        let ours = self.cfg.conf_dir.join(DEFAULT_CONFLIST);
        if self.config_files().iter().any(|f| *f != ours) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.cfg.conf_dir)
            .map_err(|e| err(format!("create {}: {e}", self.cfg.conf_dir.display())))?;
        let text = serde_json::to_string_pretty(&self.default_list()?).unwrap_or_default() + "\n";
        if std::fs::read_to_string(&ours).ok().as_deref() != Some(text.as_str()) {
            let tmp = ours.with_extension("tmp");
            std::fs::write(&tmp, &text).map_err(|e| err(format!("write {}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, &ours).map_err(|e| err(format!("write {}: {e}", ours.display())))?;
        }
        Ok(())
    }

    /// Masquerades traffic from the default network's pods to anything outside
    /// its CIDR with one rule (idempotent), while peapod's own list is in force;
    /// an operator's configuration does its own.
    pub fn ensure_masquerade(&self) -> Result<(), CniError> {
        let ours = self.cfg.conf_dir.join(DEFAULT_CONFLIST);
        if self.config_files().iter().any(|f| *f != ours) {
            return Ok(());
        }
        let subnet = self.default_list()?["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let rule = masquerade_rule(&subnet, self.unmasqueraded(&subnet), &self.cfg.bridge);
        // A rule of this bridge for another range or cluster CIDR (an earlier
        // start's, before an upgrade or a new range) would masquerade what
        // this one leaves alone.
        if let Ok(out) = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            for stale in stale_masquerade_rules(&String::from_utf8_lossy(&out.stdout), &self.cfg.bridge, &rule) {
                tracing::info!("removing an earlier masquerade rule: {}", stale.join(" "));
                let _ = Command::new("iptables")
                    .args(["-w", "-t", "nat", "-D", "POSTROUTING"])
                    .args(&stale)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let iptables = |op: &str| {
            Command::new("iptables")
                .args(["-w", "-t", "nat", op, "POSTROUTING"])
                .args(&rule)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
        };
        if iptables("-C").is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        let out = iptables("-A").map_err(|e| err(format!("run iptables: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "iptables -t nat -A POSTROUTING {}: {}",
                rule.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Where pods' traffic keeps their address: the cluster's pod ranges, or this node's.
    fn unmasqueraded<'a>(&'a self, subnet: &'a str) -> &'a str {
        self.cfg.cluster_cidr.as_deref().unwrap_or(subnet)
    }

    /// Removes the rule `ensure_masquerade` added (a node retiring its default network; the tests' teardown).
    pub fn remove_masquerade(&self) {
        let Ok(list) = self.default_list() else { return };
        let subnet = list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let _ = Command::new("iptables")
            .args(["-w", "-t", "nat", "-D", "POSTROUTING"])
            .args(masquerade_rule(&subnet, self.unmasqueraded(&subnet), &self.cfg.bridge))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The list in force: the first configuration file by name, skipping
    /// peapod's own default when an operator's file is present.
    pub fn load(&self) -> Result<LoadedList, CniError> {
        let ours = self.cfg.conf_dir.join(DEFAULT_CONFLIST);
        let files = self.config_files();
        let pick = files
            .iter()
            .find(|f| **f != ours)
            .or(files.first())
            .ok_or_else(|| err(format!("no CNI configuration in {}", self.cfg.conf_dir.display())))?;
        let text = std::fs::read_to_string(pick).map_err(|e| err(format!("read {}: {e}", pick.display())))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "{}:{}:{}: invalid JSON: {e}",
                pick.display(),
                e.line(),
                e.column()
            ))
        })?;
        let list = if pick.extension().is_some_and(|e| e == "conflist") {
            v
        } else {
            // A single plugin configuration is a list of one.
            json!({"cniVersion": v["cniVersion"], "name": v["name"], "plugins": [v]})
        };
        let plugins = list["plugins"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| err(format!("{}: plugins: Required value", pick.display())))?;
        for (i, p) in plugins.iter().enumerate() {
            if p["type"].as_str().is_none_or(str::is_empty) {
                return Err(err(format!("{}: plugins[{i}].type: Required value", pick.display())));
            }
        }
        if list["name"].as_str().is_none_or(str::is_empty) {
            return Err(err(format!("{}: name: Required value", pick.display())));
        }
        Ok(LoadedList {
            list,
            source: pick.clone(),
        })
    }

    fn find_plugin(&self, kind: &str) -> Result<PathBuf, CniError> {
        if kind.contains('/') {
            return Err(err(format!("plugin type {kind:?} must be a plain name")));
        }
        self.cfg
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err(format!(
                    "failed to find plugin {kind:?} in path {:?}",
                    self.cfg.bin_dirs
                ))
            })
    }

    /// Runs one plugin; returns its stdout as JSON (None when it printed nothing).
    fn exec(&self, command: &str, net: &Value, at: &Attachment, ifname: &str) -> Result<Option<Value>, CniError> {
        let kind = net["type"].as_str().unwrap_or_default();
        let bin = self.find_plugin(kind)?;
        let path = self
            .cfg
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let netns = if at.netns.exists() {
            at.netns.display().to_string()
        } else {
            String::new()
        };
        let mut child = Command::new(&bin)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &at.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", &at.args)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("run CNI plugin {}: {e}", bin.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(net.to_string().as_bytes());
        }
        // A plugin that never answers is killed, so a pod's teardown cannot hang on it.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(PLUGIN_TIMEOUT) {
            Ok(r) => r.map_err(|e| err(format!("run CNI plugin {}: {e}", bin.display())))?,
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(err(format!(
                    "plugin type={kind:?} ({command}) did not finish within {}s and was killed",
                    PLUGIN_TIMEOUT.as_secs()
                )));
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let detail = serde_json::from_str::<Value>(&stdout)
                .ok()
                .map(|v| {
                    let msg = v["msg"].as_str().unwrap_or_default().to_string();
                    match v["details"].as_str().filter(|d| !d.is_empty()) {
                        Some(d) => format!("{msg}: {d}"),
                        None => msg,
                    }
                })
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("{} {}", stdout.trim(), String::from_utf8_lossy(&out.stderr).trim()));
            return Err(err(format!(
                "plugin type={kind:?} name={:?} failed ({command}): {detail}",
                net["name"].as_str().unwrap_or_default()
            )));
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&stdout)
            .map(Some)
            .map_err(|e| err(format!("plugin type={kind:?} ({command}) printed invalid JSON: {e}")))
    }

    /// The configuration one plugin of the list receives.
    fn plugin_conf(list: &Value, plugin: &Value, prev: Option<&Value>, at: &Attachment) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let wants_ports = plugin["capabilities"]["portMappings"].as_bool() == Some(true);
        if wants_ports && !at.port_mappings.is_empty() {
            conf["runtimeConfig"] = json!({"portMappings": at.port_mappings});
        }
        conf
    }

    fn loopback(list: &Value) -> Value {
        json!({"cniVersion": list["cniVersion"].as_str().unwrap_or("1.0.0"), "name": "cni-loopback", "type": "loopback"})
    }

    /// ADD through the whole list (and the loopback plugin); fills `at.result`.
    pub fn add(&self, at: &mut Attachment) -> Result<(), CniError> {
        self.exec("ADD", &Self::loopback(&at.list), at, "lo")?;
        let mut prev: Option<Value> = None;
        for plugin in at.list["plugins"].as_array().cloned().unwrap_or_default() {
            let conf = Self::plugin_conf(&at.list, &plugin, prev.as_ref(), at);
            prev = self.exec("ADD", &conf, at, &at.ifname)?.or(prev);
        }
        at.result = Some(prev.unwrap_or(json!({"cniVersion": at.list["cniVersion"]})));
        Ok(())
    }

    /// DEL through the list in reverse; tolerates a namespace that is already gone.
    pub fn del(&self, at: &Attachment) -> Result<(), CniError> {
        let mut first_err = None;
        for plugin in at.list["plugins"].as_array().cloned().unwrap_or_default().iter().rev() {
            let conf = Self::plugin_conf(&at.list, plugin, at.result.as_ref(), at);
            if let Err(e) = self.exec("DEL", &conf, at, &at.ifname) {
                first_err.get_or_insert(e);
            }
        }
        if at.netns.exists() {
            let _ = self.exec("DEL", &Self::loopback(&at.list), at, "lo");
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK through the list (diagnostics).
    /// Lists that set `disableCheck`, or speak a CNI version before 0.4.0
    /// (which had no CHECK), are not checked, as libcni skips them.
    pub fn check(&self, at: &Attachment) -> Result<(), CniError> {
        if !Self::checkable(&at.list) {
            return Ok(());
        }
        for plugin in at.list["plugins"].as_array().cloned().unwrap_or_default() {
            let conf = Self::plugin_conf(&at.list, &plugin, at.result.as_ref(), at);
            self.exec("CHECK", &conf, at, &at.ifname)?;
        }
        Ok(())
    }
}

impl Cni {
    /// Whether libcni would CHECK this list.
    fn checkable(list: &Value) -> bool {
        let disabled = list["disableCheck"].as_bool() == Some(true) || list["disableCheck"] == "true";
        let version: Vec<u32> = list["cniVersion"]
            .as_str()
            .unwrap_or("1.0.0")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        let at_least_04 = version.first().copied().unwrap_or(0) >= 1 || version.get(1).copied().unwrap_or(0) >= 4;
        !disabled && at_least_04
    }
}

/// The node-level masquerade rule of the default network (after `-t nat -A
/// POSTROUTING`): from the pod `subnet` to anywhere but `keep` (the subnet,
/// or the cluster's pod ranges).
pub fn masquerade_rule(subnet: &str, keep: &str, bridge: &str) -> Vec<String> {
    [
        "-s",
        subnet,
        "!",
        "-d",
        keep,
        "-m",
        "comment",
        "--comment",
        &format!("peapod {bridge} masquerade"),
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The rules of `iptables -S POSTROUTING` (its text) that carry `bridge`'s
/// masquerade comment but are not `ours`, as arguments to `-D POSTROUTING`.
pub fn stale_masquerade_rules(listing: &str, bridge: &str, ours: &[String]) -> Vec<Vec<String>> {
    let comment = format!("peapod {bridge} masquerade");
    listing
        .lines()
        .filter_map(|line| {
            let words = split_rule(line);
            let rest = match words.as_slice() {
                [a, chain, rest @ ..] if a == "-A" && chain == "POSTROUTING" => rest.to_vec(),
                _ => return None,
            };
            (rest.contains(&comment) && rest != ours).then_some(rest)
        })
        .collect()
}

/// Splits a line of `iptables -S` into words, double quotes grouping.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Reads a cached attachment.
pub fn read_attachment(path: &Path) -> Option<Attachment> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a cached attachment atomically.
pub fn write_attachment(path: &Path, at: &Attachment) -> Result<(), CniError> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(at).unwrap_or_default();
    std::fs::write(&tmp, bytes).map_err(|e| err(format!("write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn earlier_masquerade_rules_of_the_bridge_are_found_and_no_others() {
        let ours = masquerade_rule("10.99.1.0/24", "10.99.0.0/16", "pp1");
        let listing = r#"-P POSTROUTING ACCEPT
-A POSTROUTING -s 10.99.1.0/24 ! -d 10.99.1.0/24 -m comment --comment "peapod pp1 masquerade" -j MASQUERADE
-A POSTROUTING -s 10.99.1.0/24 ! -d 10.99.0.0/16 -m comment --comment "peapod pp1 masquerade" -j MASQUERADE
-A POSTROUTING -s 10.99.2.0/24 ! -d 10.99.2.0/24 -m comment --comment "peapod pp2 masquerade" -j MASQUERADE
-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE
"#;
        let stale = stale_masquerade_rules(listing, "pp1", &ours);
        assert_eq!(stale, vec![masquerade_rule("10.99.1.0/24", "10.99.1.0/24", "pp1")]);
        assert!(stale_masquerade_rules(listing, "pp3", &ours).is_empty());
    }

    use super::*;

    fn cni(dir: &Path) -> Cni {
        Cni::new(NetworkConfig {
            conf_dir: dir.to_path_buf(),
            bin_dirs: vec!["/usr/lib/cni".into()],
            bridge: "pp9".into(),
            pod_cidr: "10.77.3.9/24".into(),
            ipam_dir: dir.join("ipam"),
            cluster_cidr: None,
        })
    }

    #[test]
    fn default_list_has_explicit_gateways() {
        let dir = tempfile::tempdir().unwrap();
        let l = cni(dir.path()).default_list().unwrap();
        let ipam = &l["plugins"][0]["ipam"];
        assert_eq!(ipam["ranges"][0][0]["subnet"], "10.77.3.0/24");
        assert_eq!(ipam["ranges"][0][0]["gateway"], "10.77.3.1");
        assert_eq!(ipam["routes"][0]["gw"], "10.77.3.1");
        assert_eq!(l["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn operator_config_wins_over_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = cni(dir.path());
        c.ensure_default_config().unwrap();
        assert_eq!(c.load().unwrap().source, dir.path().join(DEFAULT_CONFLIST));
        std::fs::write(
            dir.path().join("99-site.conf"),
            r#"{"cniVersion":"1.0.0","name":"site","type":"bridge"}"#,
        )
        .unwrap();
        let l = c.load().unwrap();
        assert_eq!(l.source, dir.path().join("99-site.conf"));
        assert_eq!(l.list["plugins"][0]["type"], "bridge");
        // The default is not rewritten while the operator's file is there.
        std::fs::remove_file(dir.path().join(DEFAULT_CONFLIST)).unwrap();
        c.ensure_default_config().unwrap();
        assert!(!dir.path().join(DEFAULT_CONFLIST).exists());
    }

    #[test]
    fn bad_config_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("05-bad.conflist"), "{\n \"name\": \"x\",\n oops\n}").unwrap();
        let e = cni(dir.path()).load().unwrap_err().message;
        assert!(e.contains("05-bad.conflist:3:"), "{e}");
        std::fs::write(
            dir.path().join("05-bad.conflist"),
            r#"{"name":"x","plugins":[{"a":1}]}"#,
        )
        .unwrap();
        let e = cni(dir.path()).load().unwrap_err().message;
        assert!(e.contains("plugins[0].type: Required value"), "{e}");
    }

    #[test]
    fn check_is_skipped_where_libcni_skips_it() {
        assert!(Cni::checkable(&json!({"cniVersion": "1.0.0"})));
        assert!(Cni::checkable(&json!({"cniVersion": "0.4.0"})));
        assert!(!Cni::checkable(&json!({"cniVersion": "0.3.1"})));
        assert!(!Cni::checkable(&json!({"cniVersion": "1.0.0", "disableCheck": true})));
    }

    #[test]
    fn runtime_config_only_for_capable_plugins() {
        let at = Attachment {
            list: json!({"cniVersion": "1.0.0", "name": "n"}),
            source: PathBuf::new(),
            container_id: "c".into(),
            netns: PathBuf::new(),
            ifname: "eth0".into(),
            args: String::new(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            result: None,
        };
        let prev = json!({"ips": [{"address": "10.0.0.2/24"}]});
        let pm = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let conf = Cni::plugin_conf(&at.list, &pm, Some(&prev), &at);
        assert_eq!(conf["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(conf["name"], "n");
        let br = json!({"type": "bridge"});
        assert!(Cni::plugin_conf(&at.list, &br, None, &at)
            .get("runtimeConfig")
            .is_none());
        let mut at = at;
        at.result = Some(json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.0.0.2/24"}]}));
        assert_eq!(at.ips(), ["10.0.0.2", "fd00::2"]);
    }
}
