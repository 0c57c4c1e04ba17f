//! `rollout status|history|undo|pause|resume|restart` and `set image`, as
//! kubectl does them: read the Deployment and its ReplicaSets (or the
//! StatefulSet and its ControllerRevisions), write the owner; the
//! controller does the rest.

use crate::client::Client;
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use peapod_core::kinds::{self, Kind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use crate::commands::{kind_slash_name as display, ns_of};
use peapod_actors::controllers::deployment::{revision, template_without_hash, zero_values_dropped, CHANGE_CAUSE};
use peapod_actors::controllers::history::revision_template;

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Wait for a rollout to finish (or report it has).
    Status {
        what: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Keep watching until it finishes (false: report once).
        #[arg(short = 'w', long = "watch", default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long (`30s`, `5m`); without it, wait for as long as it takes.
        #[arg(long)]
        timeout: Option<String>,
    },
    /// The revisions of a rollout, with their change-cause.
    History {
        what: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Show the pod template of this revision.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Roll back to the previous revision (or `--to-revision`).
    Undo {
        what: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Stop rolling out template changes.
    Pause {
        what: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Roll out template changes again.
    Resume {
        what: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Replace every pod (a new revision with a `restartedAt` annotation).
    Restart {
        what: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

#[derive(Args)]
pub struct SetImageArgs {
    /// `TYPE/NAME CONTAINER=IMAGE…` (or `TYPE NAME CONTAINER=IMAGE…`).
    what: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    select: crate::commands::Selection,
}

/// `TYPE/NAME` or `TYPE NAME`, and the words after.
fn target(words: &[String]) -> Result<(&'static Kind, String, Vec<String>)> {
    let first = words
        .first()
        .ok_or_else(|| anyhow!("error: required resource not specified"))?;
    let kind_of = |w: &str| kinds::by_name(w).ok_or_else(|| anyhow!("the server doesn't have a resource type \"{w}\""));
    if let Some((k, n)) = first.split_once('/') {
        return Ok((kind_of(k)?, n.to_string(), words[1..].to_vec()));
    }
    let name = words
        .get(1)
        .ok_or_else(|| anyhow!("error: a resource name is required"))?;
    Ok((kind_of(first)?, name.clone(), words[2..].to_vec()))
}

fn deployment_target(words: &[String]) -> Result<(&'static Kind, String)> {
    let (kind, name, _) = target(words)?;
    if kind.kind != "Deployment" {
        bail!(
            "error: {}.{} \"{name}\" pausing is not supported",
            kind.plural,
            kind.group
        );
    }
    Ok((kind, name))
}

/// A kind `rollout` works on: Deployments, StatefulSets, DaemonSets.
fn rollout_target(words: &[String]) -> Result<(&'static Kind, String)> {
    let (kind, name, _) = target(words)?;
    let ok = matches!(kind.kind, "Deployment" | "StatefulSet" | "DaemonSet");
    if !ok {
        bail!(
            "error: no rollout support for {}: only deployments, statefulsets and daemonsets",
            kind.plural
        );
    }
    Ok((kind, name))
}

/// kubectl's StatefulSet and DaemonSet status viewers.
pub fn set_rollout_state(o: &Value) -> Result<(String, bool)> {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let st = &o["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    if o["spec"]["updateStrategy"]["type"] != "RollingUpdate" {
        bail!("error: rollout status is only available for RollingUpdate strategy type");
    }
    if o["kind"] == "DaemonSet" {
        if n(&o["metadata"]["generation"]) > n(&st["observedGeneration"]) {
            return Ok(("Waiting for daemon set spec update to be observed...".into(), false));
        }
        let (updated, desired, available) = (
            n(&st["updatedNumberScheduled"]),
            n(&st["desiredNumberScheduled"]),
            n(&st["numberAvailable"]),
        );
        return Ok(if updated < desired {
            (format!("Waiting for daemon set \"{name}\" rollout to finish: {updated} out of {desired} new pods have been updated..."), false)
        } else if available < desired {
            (format!("Waiting for daemon set \"{name}\" rollout to finish: {available} of {desired} updated pods are available..."), false)
        } else {
            (format!("daemon set \"{name}\" successfully rolled out"), true)
        });
    }
    if n(&st["observedGeneration"]) == 0 || n(&o["metadata"]["generation"]) > n(&st["observedGeneration"]) {
        return Ok(("Waiting for statefulset spec update to be observed...".into(), false));
    }
    let want = n(&o["spec"]["replicas"]);
    if n(&st["readyReplicas"]) < want {
        return Ok((
            format!("Waiting for {} pods to be ready...", want - n(&st["readyReplicas"])),
            false,
        ));
    }
    let ru = &o["spec"]["updateStrategy"]["rollingUpdate"];
    if !ru.is_null() {
        let target = want - n(&ru["partition"]);
        if n(&st["updatedReplicas"]) < target {
            return Ok((
                format!(
                    "Waiting for partitioned roll out to finish: {} out of {target} new pods have been updated...",
                    n(&st["updatedReplicas"])
                ),
                false,
            ));
        }
        return Ok((
            format!(
                "partitioned roll out complete: {} new pods have been updated...",
                n(&st["updatedReplicas"])
            ),
            true,
        ));
    }
    let (cur, upd) = (
        st["currentRevision"].as_str().unwrap_or(""),
        st["updateRevision"].as_str().unwrap_or(""),
    );
    if cur != upd {
        return Ok((
            format!(
                "waiting for statefulset rolling update to complete {} pods at revision {upd}...",
                n(&st["updatedReplicas"])
            ),
            false,
        ));
    }
    Ok((
        format!(
            "statefulset rolling update complete {} pods at revision {cur}...",
            n(&st["currentReplicas"])
        ),
        true,
    ))
}

/// A StatefulSet's or DaemonSet's ControllerRevisions, oldest first.
fn revisions_of(c: &Client, owner: &Value, ns: &str) -> Result<Vec<Value>> {
    let uid = owner["metadata"]["uid"].as_str().unwrap_or("");
    let list = c.call("GET", &kinds::controllerrevision().collection_path(ns), None)?;
    let mut out: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["controller"] == true && o["uid"] == uid)
        })
        .cloned()
        .collect();
    out.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    Ok(out)
}

/// The history of a rollout as (revision, its template, its change-cause), oldest first.
fn history(c: &Client, kind: &Kind, owner: &Value, ns: &str) -> Result<Vec<(i64, Value, Option<String>)>> {
    let cause = |o: &Value| o["metadata"]["annotations"][CHANGE_CAUSE].as_str().map(str::to_string);
    if kind.kind != "Deployment" {
        return Ok(revisions_of(c, owner, ns)?
            .iter()
            .map(|r| (r["revision"].as_i64().unwrap_or(0), revision_template(r), cause(r)))
            .collect());
    }
    Ok(replicasets_of(c, owner, ns)?
        .iter()
        .filter(|rs| revision(rs) > 0)
        .map(|rs| (revision(rs), template_without_hash(rs), cause(rs)))
        .collect())
}

/// kubectl's deployment status viewer: the message, and whether the rollout is done.
pub fn rollout_state(d: &Value) -> Result<(String, bool)> {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let st = &d["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    if n(&d["metadata"]["generation"]) > n(&st["observedGeneration"]) {
        return Ok(("Waiting for deployment spec update to be observed...".into(), false));
    }
    let timed_out = st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if timed_out {
        bail!("error: deployment \"{name}\" exceeded its progress deadline");
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (updated, replicas, available) = (
        n(&st["updatedReplicas"]),
        n(&st["replicas"]),
        n(&st["availableReplicas"]),
    );
    Ok(if updated < want {
        (
            format!("Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated..."),
            false,
        )
    } else if replicas > updated {
        (
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
            false,
        )
    } else if available < updated {
        (
            format!("Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."),
            false,
        )
    } else {
        (format!("deployment \"{name}\" successfully rolled out"), true)
    })
}

/// The ReplicaSets the Deployment controls.
fn replicasets_of(c: &Client, d: &Value, ns: &str) -> Result<Vec<Value>> {
    let uid = d["metadata"]["uid"].as_str().unwrap_or("");
    let list = c.call("GET", &kinds::replicaset().collection_path(ns), None)?;
    let mut out: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["controller"] == true && r["uid"] == uid)
        })
        .cloned()
        .collect();
    out.sort_by_key(revision);
    Ok(out)
}

pub fn rollout(c: &Client, cmd: RolloutCommand) -> Result<()> {
    match cmd {
        RolloutCommand::Status {
            what,
            namespace,
            watch,
            timeout,
        } => {
            let (kind, name) = rollout_target(&what)?;
            let ns = ns_of(&namespace);
            let limit = timeout.as_deref().map(crate::commands::duration_seconds).transpose()?;
            let start = Instant::now();
            let mut last = String::new();
            loop {
                let d = c.call("GET", &kind.object_path(&ns, &name), None)?;
                let (message, done) = if kind.kind == "Deployment" {
                    rollout_state(&d)?
                } else {
                    set_rollout_state(&d)?
                };
                if message != last {
                    println!("{message}");
                    last = message;
                }
                if done || !watch {
                    return Ok(());
                }
                if limit.is_some_and(|l| start.elapsed() >= Duration::from_secs(l.max(0) as u64)) {
                    bail!("error: timed out waiting for the condition");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        RolloutCommand::History {
            what,
            namespace,
            revision: wanted,
        } => {
            let (kind, name) = rollout_target(&what)?;
            let ns = ns_of(&namespace);
            let d = c.call("GET", &kind.object_path(&ns, &name), None)?;
            let revs = history(c, kind, &d, &ns)?;
            if let Some(r) = wanted {
                let (_, template, _) = revs
                    .iter()
                    .find(|(n, _, _)| *n == r)
                    .ok_or_else(|| anyhow!("error: unable to find the specified revision"))?;
                println!("{} with revision #{r}", display(kind, &name));
                crate::commands::describe_template(template);
                return Ok(());
            }
            println!("{}", display(kind, &name));
            let mut rows = vec![vec!["REVISION".to_string(), "CHANGE-CAUSE".to_string()]];
            for (n, _, cause) in &revs {
                rows.push(vec![n.to_string(), cause.clone().unwrap_or_else(|| "<none>".into())]);
            }
            crate::output::table(&rows);
            Ok(())
        }
        RolloutCommand::Undo {
            what,
            namespace,
            to_revision,
        } => {
            let (kind, name) = rollout_target(&what)?;
            let ns = ns_of(&namespace);
            let path = kind.object_path(&ns, &name);
            let d = c.call("GET", &path, None)?;
            let revs = history(c, kind, &d, &ns)?;
            let current = revs.iter().map(|(n, _, _)| *n).max().unwrap_or(0);
            let target = if to_revision == 0 {
                revs.iter().filter(|(n, _, _)| *n < current).max_by_key(|(n, _, _)| *n)
            } else {
                revs.iter().find(|(n, _, _)| *n == to_revision)
            };
            let Some((rev, template, cause)) = target else {
                if to_revision == 0 {
                    bail!("error: no rollout history found for {} \"{name}\"", kind.singular);
                }
                bail!("error: unable to find specified revision {to_revision} in history");
            };
            if zero_values_dropped(template) == zero_values_dropped(&d["spec"]["template"]) {
                println!(
                    "{} skipped rollback (current template already matches revision {rev})",
                    display(kind, &name)
                );
                return Ok(());
            }
            c.modify(&path, |d| {
                d["spec"]["template"] = template.clone();
                // A Deployment's revision brings its change-cause back with it.
                match cause {
                    _ if kind.kind != "Deployment" => {}
                    Some(cause) => d["metadata"]["annotations"][CHANGE_CAUSE] = json!(cause),
                    None => {
                        if let Some(a) = d["metadata"]["annotations"].as_object_mut() {
                            a.remove(CHANGE_CAUSE);
                        }
                    }
                }
                Ok(())
            })?;
            println!("{} rolled back", display(kind, &name));
            Ok(())
        }
        RolloutCommand::Pause { what, namespace } => set_paused(c, &what, &namespace, true),
        RolloutCommand::Resume { what, namespace } => set_paused(c, &what, &namespace, false),
        RolloutCommand::Restart { what, namespace } => {
            let (kind, name) = rollout_target(&what)?;
            let path = kind.object_path(&ns_of(&namespace), &name);
            c.modify(&path, |d| {
                if d["spec"]["paused"] == true && kind.kind == "Deployment" {
                    bail!(
                        "error: deployments.apps \"{name}\" can't restart paused deployment (run rollout resume first)"
                    );
                }
                d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                    json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                Ok(())
            })?;
            println!("{} restarted", display(kind, &name));
            Ok(())
        }
    }
}

fn set_paused(c: &Client, what: &[String], namespace: &Option<String>, paused: bool) -> Result<()> {
    let (kind, name) = deployment_target(what)?;
    let path = kind.object_path(&ns_of(namespace), &name);
    let word = if paused { "paused" } else { "resumed" };
    c.modify(&path, |d| {
        if d["spec"]["paused"].as_bool().unwrap_or(false) == paused {
            bail!(
                "error: {} is not {}",
                display(kind, &name),
                if paused { "resumed" } else { "paused" }
            );
        }
        d["spec"]["paused"] = json!(paused);
        Ok(())
    })?;
    println!("{} {word}", display(kind, &name));
    Ok(())
}

/// `set image`: new images for named containers of a pod or a pod template.
pub fn set_image(c: &Client, a: SetImageArgs) -> Result<()> {
    let (targets, pairs) = crate::commands::select(c, &a.what, &a.select, &a.namespace, false)?;
    if pairs.is_empty() {
        bail!("error: at least one image update is required");
    }
    if targets.is_empty() {
        bail!("error: no objects passed to set image");
    }
    for (kind, ns, name) in targets {
        set_image_of(c, kind, &ns, &name, &pairs)?;
    }
    Ok(())
}

fn set_image_of(c: &Client, kind: &Kind, ns: &str, name: &str, pairs: &[String]) -> Result<()> {
    let path = kind.object_path(ns, name);
    let spec = if kind.kind == "Pod" {
        "/spec"
    } else {
        "/spec/template/spec"
    };
    c.modify(&path, |obj| {
        for pair in pairs {
            let (container, image) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("error: {pair} is not CONTAINER=IMAGE"))?;
            let mut found = false;
            for list in ["containers", "initContainers"] {
                let Some(cs) = obj.pointer_mut(&format!("{spec}/{list}")).and_then(Value::as_array_mut) else {
                    continue;
                };
                for c in cs.iter_mut() {
                    if container == "*" || c["name"] == container {
                        c["image"] = json!(image);
                        found = true;
                    }
                }
            }
            if !found {
                bail!("error: unable to find container named \"{container}\"");
            }
        }
        Ok(())
    })?;
    println!("{} image updated", display(kind, name));
    Ok(())
}
