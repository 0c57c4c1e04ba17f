//! Services, Endpoints, EndpointSlices and IPAddresses: Kubernetes'
//! defaults and validation, with its field paths and wording. Cluster IPs
//! and node ports are checked against the node's ranges and claimed when
//! the service is written (`service::alloc`), not here.

use super::{decode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::names;
use crate::selector::Selector;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IPAddress;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICIES: &[&str] = &["Cluster", "Local"];
/// Kubernetes' default ClientIP affinity timeout (3 hours) and its ceiling (a day).
const DEFAULT_AFFINITY_SECONDS: i64 = 10800;
const MAX_AFFINITY_SECONDS: i64 = 86400;

/// Kubernetes' `SetDefaults_Service`.
fn default_service(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if spec["type"].as_str().unwrap_or("").is_empty() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].as_str().unwrap_or("").is_empty() {
        spec["sessionAffinity"] = json!("None");
    }
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    // clusterIPs alone names the cluster IP too.
    if spec["clusterIP"].as_str().unwrap_or("").is_empty() {
        if let Some(first) = spec["clusterIPs"][0].as_str() {
            spec["clusterIP"] = json!(first);
        }
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].as_str().unwrap_or("").is_empty() {
                p["protocol"] = json!("TCP");
            }
            let unset = match &p["targetPort"] {
                Value::Null => true,
                Value::Number(n) => n.as_i64() == Some(0),
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if unset {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if ty != "ExternalName" && spec["internalTrafficPolicy"].as_str().unwrap_or("").is_empty() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        && spec["externalTrafficPolicy"].as_str().unwrap_or("").is_empty()
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if spec["sessionAffinity"] == "ClientIP" && spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").is_none()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": DEFAULT_AFFINITY_SECONDS}});
    }
    if ty == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"].is_null() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
}

/// Kubernetes' `ValidateService`, less what depends on the node's ranges.
fn check(obj: &Value, errs: &mut FieldErrors) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("");
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, TYPES));
    }
    let cluster_ip = spec["clusterIP"].as_str().unwrap_or("");
    let headless = cluster_ip == "None";
    if ty == "ExternalName" {
        if !cluster_ip.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        let external = spec["externalName"].as_str().unwrap_or("");
        let bare = external.strip_suffix('.').unwrap_or(external);
        if external.is_empty() {
            errs.push(FieldError::required("spec.externalName"));
        } else {
            for p in names::is_dns1123_subdomain(bare) {
                errs.push(FieldError::invalid("spec.externalName", external, p));
            }
        }
    } else {
        if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<Ipv4Addr>().is_err() {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
        if headless && ty != "ClusterIP" {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ip,
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        if let Some(ips) = spec["clusterIPs"].as_array() {
            if ips.len() > 1 {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    json!(ips),
                    "this node serves IPv4 only: at most one cluster IP",
                ));
            } else if ips
                .first()
                .and_then(Value::as_str)
                .is_some_and(|first| first != cluster_ip)
            {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    json!(ips),
                    "must match the clusterIP field",
                ));
            }
        }
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    let mut names_seen = HashSet::new();
    let mut pairs_seen = HashSet::new();
    let mut node_ports_seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(FieldError::required(format!("{path}.name")));
            }
        } else {
            for problem in names::is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, problem));
            }
            if !names_seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), name));
            }
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{path}.port"),
                port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = p["protocol"].as_str().unwrap_or("");
        if !PROTOCOLS.contains(&protocol) {
            errs.push(FieldError::not_supported(
                format!("{path}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
        if !pairs_seen.insert((port, protocol.to_string())) {
            errs.push(FieldError::duplicate(
                path.clone(),
                format!("{{port: {port}, protocol: {protocol}}}"),
            ));
        }
        match &p["targetPort"] {
            Value::Number(n) => {
                let n = n.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    errs.push(FieldError::invalid(
                        format!("{path}.targetPort"),
                        n,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            Value::String(s) => {
                for problem in names::is_valid_port_name(s) {
                    errs.push(FieldError::invalid(format!("{path}.targetPort"), s, problem));
                }
            }
            _ => {}
        }
        if let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                errs.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !(1..=65535).contains(&np) {
                errs.push(FieldError::invalid(
                    format!("{path}.nodePort"),
                    np,
                    "must be between 1 and 65535, inclusive",
                ));
            } else if !node_ports_seen.insert((np, protocol.to_string())) {
                errs.push(FieldError::duplicate(format!("{path}.nodePort"), np));
            }
        }
    }
    if let Some(sel) = spec["selector"].as_object() {
        for (k, v) in sel {
            for problem in names::is_qualified_name(k) {
                errs.push(FieldError::invalid("spec.selector", k, problem));
            }
            let v = v.as_str().unwrap_or("");
            for problem in names::is_valid_label_value(v) {
                errs.push(FieldError::invalid(format!("spec.selector[{k}]"), v, problem));
            }
        }
    }
    let affinity = spec["sessionAffinity"].as_str().unwrap_or("");
    match affinity {
        "None" => {
            if !spec["sessionAffinityConfig"].is_null() {
                errs.push(FieldError::forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        "ClientIP" => {
            let t = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if !(1..=MAX_AFFINITY_SECONDS).contains(&t) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
                ));
            }
            if ty == "ExternalName" {
                errs.push(FieldError::forbidden(
                    "spec.sessionAffinity",
                    "may not be set for ExternalName services",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }
    for field in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        if let Some(v) = spec[field].as_str() {
            if !POLICIES.contains(&v) {
                errs.push(FieldError::not_supported(format!("spec.{field}"), v, POLICIES));
            }
        }
    }
    if !spec["externalTrafficPolicy"].is_null() && !matches!(ty, "NodePort" | "LoadBalancer") {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            spec["externalTrafficPolicy"].as_str().unwrap_or(""),
            "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        ));
    }
}

/// Defaults and validates a new Service.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let svc: Service = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&svc.metadata, NameRule::Dns1035Label, true, &mut errs);
    errs.into_result()?;
    default_service(obj);
    let mut errs = FieldErrors::default();
    check(obj, &mut errs);
    errs.into_result()?;
    obj["status"] = json!({"loadBalancer": {}});
    Ok(())
}

/// Defaults and validates an updated Service. What the old one was given
/// and the new one leaves unset (its cluster IP, the node port of the same
/// port and protocol) is kept, as the API server's `patchAllocatedValues`
/// does, so an apply of the original manifest changes neither.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Service = decode(old)?;
    let n: Service = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&n.metadata, NameRule::Dns1035Label, true, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    errs.into_result()?;
    default_service(new);
    let (old_ty, new_ty) = (
        old["spec"]["type"].as_str().unwrap_or(""),
        new["spec"]["type"].as_str().unwrap_or("").to_string(),
    );
    if new_ty != "ExternalName" && old_ty != "ExternalName" {
        if new["spec"]["clusterIP"].as_str().unwrap_or("").is_empty() {
            new["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
            new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
        let (was, is) = (old["spec"]["clusterIP"].as_str(), new["spec"]["clusterIP"].as_str());
        if was.is_some() && was != is {
            let mut errs = FieldErrors::default();
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                is.unwrap_or(""),
                "may not change once set",
            ));
            return Err(errs);
        }
    }
    if matches!(new_ty.as_str(), "NodePort" | "LoadBalancer") {
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports.iter_mut().filter(|p| p["nodePort"].as_i64().unwrap_or(0) == 0) {
                if let Some(was) = old_ports
                    .iter()
                    .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"] && o["nodePort"].is_i64())
                {
                    p["nodePort"] = was["nodePort"].clone();
                }
            }
        }
    } else if matches!(old_ty, "NodePort" | "LoadBalancer") {
        // A service that stops being NodePort gives back the node ports and
        // the policy it was given (those the update leaves as they were).
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        for p in new["spec"]["ports"].as_array_mut().into_iter().flatten() {
            let given = old_ports
                .iter()
                .any(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"] && o["nodePort"] == p["nodePort"]);
            if given {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
        for f in ["externalTrafficPolicy", "allocateLoadBalancerNodePorts"] {
            if new["spec"][f] == old["spec"][f] {
                if let Some(m) = new["spec"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if new_ty == "ExternalName" && old_ty != "ExternalName" {
        for f in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if let Some(m) = new["spec"].as_object_mut() {
                m.remove(f);
            }
        }
    }
    let mut errs = FieldErrors::default();
    check(new, &mut errs);
    errs.into_result()
}

/// The selector of a service: `None` without one (its endpoints are written by hand).
pub fn service_selector(svc: &Value) -> Option<Selector> {
    let labels = svc["spec"]["selector"].as_object().filter(|m| !m.is_empty())?;
    let text = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",");
    Selector::parse(&text).ok()
}

fn check_ip(path: &str, ip: &str, errs: &mut FieldErrors) {
    if ip.parse::<Ipv4Addr>().is_err() && ip.parse::<std::net::Ipv6Addr>().is_err() {
        errs.push(FieldError::invalid(
            path,
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
}

fn check_endpoints(obj: &Value, errs: &mut FieldErrors) {
    for (i, subset) in obj["subsets"].as_array().into_iter().flatten().enumerate() {
        for field in ["addresses", "notReadyAddresses"] {
            for (j, a) in subset[field].as_array().into_iter().flatten().enumerate() {
                check_ip(
                    &format!("subsets[{i}].{field}[{j}].ip"),
                    a["ip"].as_str().unwrap_or(""),
                    errs,
                );
            }
        }
        for (j, p) in subset["ports"].as_array().into_iter().flatten().enumerate() {
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("subsets[{i}].ports[{j}].port"),
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

/// Defaults (`protocol: TCP`) and validates a new Endpoints.
pub fn admit_endpoints(obj: &mut Value) -> Result<(), FieldErrors> {
    let e: Endpoints = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&e.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    if let Some(subsets) = obj["subsets"].as_array_mut() {
        for p in subsets
            .iter_mut()
            .flat_map(|s| s["ports"].as_array_mut().into_iter().flatten())
        {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
        }
    }
    check_endpoints(obj, &mut errs);
    errs.into_result()
}

/// Validates an updated Endpoints.
pub fn update_endpoints(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Endpoints = decode(old)?;
    let n: Endpoints = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    errs.into_result()?;
    admit_endpoints(new)
}

const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];

fn check_slice(obj: &Value, errs: &mut FieldErrors) {
    let ty = obj["addressType"].as_str().unwrap_or("");
    if ty.is_empty() {
        errs.push(FieldError::required("addressType"));
    } else if !ADDRESS_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("addressType", ty, ADDRESS_TYPES));
    }
    let endpoints = obj["endpoints"].as_array().cloned().unwrap_or_default();
    if endpoints.len() > 1000 {
        errs.push(FieldError::invalid(
            "endpoints",
            endpoints.len(),
            "must have at most 1000 items",
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let addresses = e["addresses"].as_array().cloned().unwrap_or_default();
        if addresses.is_empty() {
            errs.push(FieldError::required(format!("endpoints[{i}].addresses")));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let path = format!("endpoints[{i}].addresses[{j}]");
            match ty {
                "IPv4" if a.parse::<Ipv4Addr>().is_err() => {
                    errs.push(FieldError::invalid(path, a, "must be a valid IPv4 address"))
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    errs.push(FieldError::invalid(path, a, "must be a valid IPv6 address"))
                }
                "FQDN" => {
                    for p in names::is_dns1123_subdomain(a) {
                        errs.push(FieldError::invalid(&path, a, p));
                    }
                }
                _ => {}
            }
        }
    }
    for (i, p) in obj["ports"].as_array().into_iter().flatten().enumerate() {
        if let Some(port) = p["port"].as_i64() {
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("ports[{i}].port"),
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

/// Validates a new EndpointSlice.
pub fn admit_slice(obj: &mut Value) -> Result<(), FieldErrors> {
    let s: EndpointSlice = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&s.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    check_slice(obj, &mut errs);
    errs.into_result()
}

/// Validates an updated EndpointSlice: its address type is immutable.
pub fn update_slice(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: EndpointSlice = decode(old)?;
    let n: EndpointSlice = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    if o.address_type != n.address_type {
        errs.push(FieldError::invalid(
            "addressType",
            &n.address_type,
            "field is immutable",
        ));
    }
    check_slice(new, &mut errs);
    errs.into_result()
}

/// Validates a new IPAddress: its name is the address, in canonical form, and it names its parent.
pub fn admit_ipaddress(obj: &mut Value) -> Result<(), FieldErrors> {
    let a: IPAddress = decode(obj)?;
    let mut errs = FieldErrors::default();
    let name = a.metadata.name.clone().unwrap_or_default();
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.to_string() == name => {}
        Ok(ip) => errs.push(FieldError::invalid(
            "metadata.name",
            &name,
            format!("must be in canonical form (\"{ip}\")"),
        )),
        Err(_) => errs.push(FieldError::invalid(
            "metadata.name",
            &name,
            "must be a valid IP address",
        )),
    }
    let parent = a.spec.as_ref().map(|s| &s.parent_ref);
    match parent {
        None => errs.push(FieldError::required("spec.parentRef")),
        Some(p) => {
            if p.resource.is_empty() {
                errs.push(FieldError::required("spec.parentRef.resource"));
            }
            if p.name.is_empty() {
                errs.push(FieldError::required("spec.parentRef.name"));
            }
        }
    }
    errs.into_result()
}

/// An IPAddress never changes: its parent is fixed for its life.
pub fn update_ipaddress(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    if old["spec"] != new["spec"] {
        let mut errs = FieldErrors::default();
        errs.push(FieldError::invalid(
            "spec.parentRef",
            new["spec"]["parentRef"].to_string(),
            "field is immutable",
        ));
        return Err(errs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn errors(mut v: Value) -> String {
        admit_create(&mut v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_kubernetes() {
        let mut v = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        admit_create(&mut v).unwrap();
        let s = &v["spec"];
        assert_eq!(s["type"], "ClusterIP");
        assert_eq!(s["sessionAffinity"], "None");
        assert_eq!(s["internalTrafficPolicy"], "Cluster");
        assert_eq!(s["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert!(s["externalTrafficPolicy"].is_null());
        let mut v = svc(
            json!({"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": "http"}]}),
        );
        admit_create(&mut v).unwrap();
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
        assert_eq!(v["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn mistakes_are_named_by_field() {
        assert!(errors(svc(json!({"ports": []}))).contains("spec.ports: Required value"));
        let two = json!({"ports": [{"port": 80}, {"port": 81}]});
        assert!(errors(svc(two)).contains("spec.ports[1].name: Required value"));
        let dup = json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 80}]});
        let e = errors(svc(dup));
        assert!(
            e.contains("spec.ports[1].name: Duplicate value: \"a\"") && e.contains("spec.ports[1]: Duplicate value"),
            "{e}"
        );
        let e = errors(svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})));
        assert!(
            e.contains("spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
            "{e}"
        );
        let e = errors(svc(json!({"type": "Bogus", "ports": [{"port": 80}]})));
        assert!(e.contains("spec.type: Unsupported value: \"Bogus\""), "{e}");
        let e = errors(svc(json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]})));
        assert!(e.contains("spec.clusterIPs[0]: Invalid value: \"10.0.0.300\""), "{e}");
        let e = errors(svc(json!({"ports": [{"port": 70000, "targetPort": "no_such"}]})));
        assert!(
            e.contains("spec.ports[0].port: Invalid value: \"70000\"") && e.contains("spec.ports[0].targetPort"),
            "{e}"
        );
        let e = errors(svc(json!({"type": "ExternalName"})));
        assert!(e.contains("spec.externalName: Required value"), "{e}");
        let e = errors(svc(json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})));
        assert!(
            e.contains("may only be set when `type` is 'NodePort' or 'LoadBalancer'"),
            "{e}"
        );
        let mut bad = svc(json!({"ports": [{"port": 80}]}));
        bad["metadata"]["name"] = json!("1web");
        assert!(errors(bad).contains("DNS-1035"));
        // Headless needs no ports; ExternalName needs no cluster IP.
        admit_create(&mut svc(json!({"clusterIP": "None", "selector": {"app": "db"}}))).unwrap();
        admit_create(&mut svc(
            json!({"type": "ExternalName", "externalName": "db.example.com."}),
        ))
        .unwrap();
    }

    #[test]
    fn updates_keep_what_was_allocated() {
        let mut old = svc(json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}));
        admit_create(&mut old).unwrap();
        old["spec"]["clusterIP"] = json!("10.96.0.9");
        old["spec"]["clusterIPs"] = json!(["10.96.0.9"]);
        old["spec"]["ports"][0]["nodePort"] = json!(30001);
        old["spec"]["ports"][1]["nodePort"] = json!(30002);
        // The original manifest again: nothing allocated is lost.
        let mut new = svc(json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}));
        admit_update(&old, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["ports"][1]["nodePort"], 30002);
        let mut moved = new.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.10");
        moved["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
        let e = admit_update(&old, &mut moved).unwrap_err().to_string();
        assert!(
            e.contains("spec.clusterIPs[0]") && e.contains("may not change once set"),
            "{e}"
        );
        let mut back = new.clone();
        back["spec"]["type"] = json!("ClusterIP");
        admit_update(&old, &mut back).unwrap();
        assert!(back["spec"]["ports"][0]["nodePort"].is_null());
        assert!(back["spec"]["externalTrafficPolicy"].is_null());
    }

    #[test]
    fn slices_and_addresses() {
        let mut s = json!({"metadata": {"name": "web-1", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.5"]}, {"addresses": ["nope"]}], "ports": [{"port": 80}]});
        let e = admit_slice(&mut s).unwrap_err().to_string();
        assert!(e.contains("endpoints[1].addresses[0]: Invalid value: \"nope\""), "{e}");
        let mut a =
            json!({"metadata": {"name": "10.96.0.01"}, "spec": {"parentRef": {"resource": "services", "name": "x"}}});
        assert!(admit_ipaddress(&mut a).is_err());
        let mut a =
            json!({"metadata": {"name": "10.96.0.1"}, "spec": {"parentRef": {"resource": "services", "name": "x"}}});
        admit_ipaddress(&mut a).unwrap();
    }
}
