//! The REST API, shaped like Kubernetes': one generic set of handlers driven by
//! the kind table. Handlers validate and write the store; they start nothing.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use peapod_actors::runtime::logfile::{LogReader, ReadOptions};
use peapod_actors::runtime::NodePaths;
use peapod_core::deletion;
use peapod_core::field::FieldErrors;
use peapod_core::fields::FieldSelector;
use peapod_core::kinds::{self, Kind, Subresource};
use peapod_core::object;
use peapod_core::printers;
use peapod_core::scale;
use peapod_core::selector::Selector;
use peapod_core::store::{Scope, Store, StoreError};
use peapod_core::writes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What the handlers share.
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where container logs are.
    pub paths: NodePaths,
    /// The loaded volume plugins.
    pub volumes: Arc<peapod_volumes::VolumeManager>,
    /// The live actor tree.
    pub tree: peapod_actors::supervisor::Tree,
    /// The container runtime, for exec.
    pub runtime: Arc<peapod_actors::runtime::Runtime>,
    /// Where Services' cluster IPs and node ports come from.
    pub allocator: peapod_core::service::alloc::Allocator,
    /// With a shared store: how pods on other nodes are reached.
    pub link: Option<Arc<crate::nodeproxy::NodeLink>>,
}

/// `GET /peapod/v1/tree`: the live supervision tree (read-only).
pub async fn tree(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"kind": "ActorTree", "items": state.tree.snapshot()}))
}

/// `GET /apis`: the named API groups of the kind table.
pub async fn api_groups() -> HttpResponse {
    let groups: Vec<Value> = kinds::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| api_group(g, &versions))
        .collect();
    HttpResponse::Ok().json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
        "preferredVersion": versions[0]})
}

/// `GET /apis/{group}`: one named group and its versions.
pub async fn api_group_versions(req: HttpRequest) -> HttpResponse {
    let group = req.match_info().get("group").unwrap_or("");
    match kinds::groups().into_iter().find(|(g, _)| !g.is_empty() && *g == group) {
        Some((g, versions)) => HttpResponse::Ok().json(api_group(g, &versions)),
        None => not_found(&req),
    }
}

/// `GET /peapod/v1/plugins`: the volume plugins this daemon loaded.
pub async fn plugins(state: Data) -> HttpResponse {
    let items: Vec<serde_json::Value> = state
        .volumes
        .registry()
        .all()
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "version": p.version,
                "abi": format!("{}.{}", p.abi_major, p.abi_minor),
                "capabilities": p.capability_names(),
                "path": p.path.display().to_string(),
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({"kind": "PluginList", "items": items}))
}

type Data = web::Data<ApiState>;

/// A Kubernetes `Status` failure response.
pub(crate) fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> HttpResponse {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        body["details"] = d;
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap_or_default()).json(body)
}

fn store_error(kind: &Kind, e: StoreError) -> HttpResponse {
    let plural = kind.plural;
    match e {
        StoreError::NotFound { name, .. } => status(
            404,
            "NotFound",
            format!("{plural} \"{name}\" not found"),
            Some(json!({"name": name, "kind": plural})),
        ),
        StoreError::AlreadyExists { name, .. } => status(
            409,
            "AlreadyExists",
            format!("{plural} \"{name}\" already exists"),
            Some(json!({"name": name, "kind": plural})),
        ),
        StoreError::Conflict { name, reason, .. } => status(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {plural} \"{name}\": {reason}"),
            None,
        ),
        StoreError::Expired { .. } => status(410, "Expired", e.to_string(), None),
        StoreError::Invalid(m) => status(400, "BadRequest", m, None),
        StoreError::Backend { .. } => status(500, "InternalError", e.to_string(), None),
    }
}

fn invalid(kind: &Kind, name: &str, errs: FieldErrors) -> HttpResponse {
    let causes: Vec<Value> = errs
        .0
        .iter()
        .map(|e| json!({"reason": e.reason(), "message": e.to_string(), "field": e.path}))
        .collect();
    status(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {errs}", kind.kind),
        Some(json!({"name": name, "kind": kind.plural, "causes": causes})),
    )
}

/// Where a request points, from its path segments.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(group: &str, version: &str, segs: &[&str]) -> Option<Target> {
    let k = |plural: &str| kinds::by_resource(group, version, plural);
    let s = |x: &&str| x.to_string();
    let (kind, namespace, rest) = match segs {
        ["namespaces", ns, plural, rest @ ..] if k(plural).is_some_and(|k| k.namespaced) => {
            (k(plural)?, Some(ns.to_string()), rest)
        }
        [plural, rest @ ..] => {
            let kind = k(plural)?;
            // A namespaced kind across all namespaces is a collection only.
            if kind.namespaced && !rest.is_empty() {
                return None;
            }
            (kind, None, rest)
        }
        _ => return None,
    };
    if rest.len() > 2 {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name: rest.first().map(s),
        sub: rest.get(1).map(s),
    })
}

/// The Kubernetes minor version `/version` claims. The served objects follow
/// the 1.34 schemas (k8s-openapi's `v1_34`); 1.33 is the newest kubectl the
/// Google Cloud SDK's `kubectl` dispatcher (which runs `kubectl.1.<minor>`
/// for the server's minor) ships, and within kubectl's one-minor skew.
pub const KUBERNETES_MINOR: &str = "33";

/// `GET /version`: version.Info, as kubectl version and the client's
/// version checks read it.
pub async fn version() -> HttpResponse {
    let git_version = format!("v1.{KUBERNETES_MINOR}.0+peapod.{}", env!("CARGO_PKG_VERSION"));
    HttpResponse::Ok().json(json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": git_version,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH }),
    }))
}

/// `GET /api`: the core group's versions.
pub async fn api_versions() -> HttpResponse {
    let versions = kinds::groups()
        .into_iter()
        .find(|(g, _)| g.is_empty())
        .map(|(_, v)| v)
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({"kind": "APIVersions", "versions": versions, "serverAddressByClientCIDRs": []}))
}

/// `GET /api/{version}` and `GET /apis/{group}/{version}`: the resources
/// of one group version, with their subresources, from the kind table.
pub async fn resource_list(req: HttpRequest) -> HttpResponse {
    let group = req.match_info().get("group").unwrap_or("");
    let version = req.match_info().get("version").unwrap_or("");
    let served = kinds::in_group_version(group, version);
    if served.is_empty() {
        return not_found(&req);
    }
    let mut resources = Vec::new();
    for k in served {
        let mut r = json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": kinds::VERBS, "shortNames": k.short_names});
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for sub in k.subresources {
            let (kind, verbs) = sub.discovery(k);
            let mut r = json!({"name": format!("{}/{}", k.plural, sub.name()), "singularName": "",
                "namespaced": k.namespaced, "kind": kind, "verbs": verbs});
            if let Some((g, v)) = sub.group_version() {
                r["group"] = json!(g);
                r["version"] = json!(v);
            }
            resources.push(r);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    HttpResponse::Ok().json(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": resources}),
    )
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    status(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({})", req.path()),
        None,
    )
}

/// The largest request body read (the API server's limit is 3 MiB too).
const MAX_BODY: usize = 3 << 20;

/// Every request under `/api/{version}/` and `/apis/{group}/{version}/`.
pub async fn resource(
    req: HttpRequest,
    payload: web::Payload,
    data: Data,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let group = req.match_info().get("group").unwrap_or("").to_string();
    let version = req.match_info().get("version").unwrap_or("").to_string();
    let path = req.match_info().get("tail").unwrap_or("").trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(t) = route(&group, &version, &segs) else {
        return not_found(&req);
    };
    let table = match wants_table(&req, &q) {
        Ok(t) => t,
        Err(message) => return status(400, "BadRequest", message, None),
    };
    let method = req.method().as_str().to_string();
    let sub = match t.sub.as_deref() {
        None => None,
        Some(name) => match t.kind.subresources.iter().find(|s| s.name() == name) {
            Some(s) => Some(*s),
            None => return not_found(&req),
        },
    };
    // A pod's stream on another node is that node's to serve.
    let stream = matches!(
        sub,
        Some(Subresource::Log | Subresource::Exec | Subresource::Attach | Subresource::PortForward)
    );
    if let (Some(link), Some(name), true) = (&data.link, &t.name, stream) {
        let from_node = actix_web::HttpMessage::extensions(&req)
            .get::<crate::nodeproxy::FromNode>()
            .is_some();
        let ns = t.namespace.as_deref().unwrap_or_default();
        match crate::nodeproxy::placement(&*data.store, link, ns, name, from_node).await {
            Ok(crate::nodeproxy::Placement::Here) => {}
            Ok(crate::nodeproxy::Placement::There(remote)) => {
                return crate::nodeproxy::forward(remote, link, req, payload).await
            }
            Err(answer) => return answer,
        }
    }
    let verb = match sub {
        Some(Subresource::Exec) => Some(crate::remote::Verb::Exec),
        Some(Subresource::Attach) => Some(crate::remote::Verb::Attach),
        _ => None,
    };
    if let (Some(name), Some(verb), "GET" | "POST") = (&t.name, verb, method.as_str()) {
        let (store, runtime, ns) = (
            data.store.clone(),
            data.runtime.clone(),
            t.namespace.clone().unwrap_or_default(),
        );
        return crate::remote::exec_or_attach(verb, req, payload, store, runtime, ns, name.clone()).await;
    }
    if let (Some(name), Some(Subresource::PortForward), "GET" | "POST") = (&t.name, sub, method.as_str()) {
        let ns = t.namespace.clone().unwrap_or_default();
        let (store, paths) = (data.store.clone(), data.paths.clone());
        return crate::remote::portforward::port_forward(req, payload, store, paths, ns, name.clone()).await;
    }
    let mut body = match payload.to_bytes_limited(MAX_BODY).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return status(400, "BadRequest", format!("reading the request body: {e}"), None),
        Err(_) => {
            return status(
                413,
                "RequestEntityTooLarge",
                format!("the request body is larger than {MAX_BODY} bytes"),
                None,
            )
        }
    };
    // kubectl's typed `create` commands send core objects as protobuf: read
    // them into the JSON everything below takes.
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with(peapod_core::protobuf::CONTENT_TYPE) {
        // Only creates: a replace must carry every field the object has, and
        // the table here reads only those kubectl's create commands set.
        let decoded = if method == "POST" {
            peapod_core::protobuf::decode(&body)
        } else {
            Err(format!("{method} takes JSON only"))
        };
        match decoded {
            Ok(obj) => body = web::Bytes::from(obj.to_string()),
            Err(e) => {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request is not readable as {content_type}: {e}"),
                    None,
                )
            }
        }
    }
    // An object written whole or patched: its unknown fields, as fieldValidation asks.
    let warnings = match (method.as_str(), &t.name, sub) {
        ("POST", None, _) | ("PUT" | "PATCH", Some(_), None) => match field_validation(&t, &req, &body, &q) {
            Ok(w) => w,
            Err(refused) => return *refused,
        },
        _ => Vec::new(),
    };
    let mut response = match (method.as_str(), &t.name, sub) {
        ("GET", None, _) => list(&data, &t, &q, table).await,
        ("POST", None, _) => create(&data, &t, &body).await,
        ("GET", Some(_), None | Some(Subresource::Status)) => get(&data, &t, table).await,
        ("GET", Some(_), Some(Subresource::Log)) => logs(&data, &t, &q).await,
        ("PUT", Some(_), None) => update(&data, &t, &body, false).await,
        ("PUT", Some(_), Some(Subresource::Status)) => update(&data, &t, &body, true).await,
        ("PATCH", Some(_), None) => patch(&data, &t, &req, &body, false).await,
        ("PATCH", Some(_), Some(Subresource::Status)) => patch(&data, &t, &req, &body, true).await,
        ("DELETE", Some(_), None) => delete(&data, &t, &q, &body).await,
        ("GET", Some(_), Some(Subresource::Scale)) => get_scale(&data, &t).await,
        ("PUT", Some(_), Some(Subresource::Scale)) => set_scale(&data, &t, &body, false).await,
        ("PATCH", Some(_), Some(Subresource::Scale)) => set_scale(&data, &t, &body, true).await,
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", req.path()),
            None,
        ),
    };
    if response.status().is_success() {
        for w in warnings {
            // As the API server warns: `299 - "unknown field \"spec.x\""`.
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&format!("299 - {w:?}")) {
                response.headers_mut().append(actix_web::http::header::WARNING, v);
            }
        }
    }
    response
}

/// `fieldValidation` on a write: the fields of the body its kind's schema
/// does not declare. `Strict` refuses them (as the API server's strict
/// decoding), `Warn` (the default) names each in a `Warning` header,
/// `Ignore` does neither. JSON patches are not looked into.
fn field_validation(
    t: &Target,
    req: &HttpRequest,
    body: &[u8],
    q: &HashMap<String, String>,
) -> Result<Vec<String>, Box<HttpResponse>> {
    let mode = q.get("fieldValidation").map(String::as_str).unwrap_or("Warn");
    match mode {
        "Ignore" => return Ok(Vec::new()),
        "Warn" | "Strict" => {}
        other => {
            return Err(Box::new(status(
                400,
                "BadRequest",
                format!("fieldValidation: Invalid value: {other:?}: must be one of Ignore, Warn or Strict"),
                None,
            )))
        }
    }
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let value: Option<Value> =
        if req.method() == actix_web::http::Method::PATCH && content_type.starts_with("application/json-patch") {
            None
        } else if content_type.starts_with("application/apply-patch") {
            std::str::from_utf8(body)
                .ok()
                .and_then(|t| serde_saphyr::from_str(t).ok())
        } else {
            serde_json::from_slice(body).ok()
        };
    let Some(value) = value else { return Ok(Vec::new()) };
    let kind = t.kind;
    let unknown: Vec<String> = peapod_core::openapi::unknown_fields(kind.group, kind.version, kind.kind, &value)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == "Strict" && !unknown.is_empty() {
        return Err(Box::new(status(
            400,
            "BadRequest",
            format!(
                "{k} in version \"{v}\" cannot be handled as a {k}: strict decoding error: {}",
                unknown.join(", "),
                k = kind.kind,
                v = kind.version
            ),
            None,
        )));
    }
    Ok(unknown)
}

/// Whether the client asked for a `Table` (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`,
/// kubectl's `get`), and what its rows carry.
fn wants_table(req: &HttpRequest, q: &HashMap<String, String>) -> Result<Option<printers::Include>, String> {
    let accept = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first acceptable type wins; a Table is one of them only with `as=Table`.
    let table = accept
        .split(',')
        .next()
        .is_some_and(|first| first.split(';').any(|p| p.trim().eq_ignore_ascii_case("as=Table")));
    if !table {
        return Ok(None);
    }
    printers::Include::parse(q.get("includeObject").map(String::as_str)).map(Some)
}

#[allow(clippy::result_large_err)] // the Err is the response itself
async fn ensure_namespace(data: &ApiState, t: &Target) -> Result<(), HttpResponse> {
    let Some(ns) = t.namespace.as_deref() else {
        return Ok(());
    };
    match data.store.get(&kinds::namespace().resource(), "", ns).await {
        Ok(n) if object::deletion_timestamp(&n).is_some() => Err(status(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                t.kind.plural
            ),
            None,
        )),
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => {
            Err(status(404, "NotFound", format!("namespaces \"{ns}\" not found"), None))
        }
        Err(e) => Err(store_error(kinds::namespace(), e)),
    }
}

#[allow(clippy::result_large_err)] // the Err is the response itself
fn parse_body(kind: &Kind, body: &[u8]) -> Result<Value, HttpResponse> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        status(
            400,
            "BadRequest",
            format!("the body of the request was in an unknown format: {e}"),
            None,
        )
    })?;
    if !v.is_object() {
        return Err(status(400, "BadRequest", "the body must be a JSON object".into(), None));
    }
    let (av, k) = (v["apiVersion"].as_str().unwrap_or(""), v["kind"].as_str().unwrap_or(""));
    if (!av.is_empty() && av != kind.api_version()) || (!k.is_empty() && k != kind.kind) {
        return Err(status(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({av}) and kind ({k}) do not match {} {}",
                kind.api_version(),
                kind.kind
            ),
            None,
        ));
    }
    Ok(v)
}

async fn list(
    data: &ApiState,
    t: &Target,
    q: &HashMap<String, String>,
    table: Option<printers::Include>,
) -> HttpResponse {
    let selector = match Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status(400, "BadRequest", format!("unable to parse requirement: {e}"), None),
    };
    let fields = match FieldSelector::parse(t.kind.kind, q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return status(400, "BadRequest", e, None),
    };
    let wanted = Selection {
        labels: selector,
        fields,
    };
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(data, t, q, wanted, table).await;
    }
    let limit = match q.get("limit").map(|l| l.parse::<i64>()) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n as usize),
        Some(Ok(_)) => None,
        Some(Err(_)) => return status(400, "BadRequest", "limit: must be an integer".into(), None),
    };
    let after = match q.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => match ContinueToken::decode(token) {
            Some(c) => Some(c),
            None => {
                return status(
                    400,
                    "BadRequest",
                    "continue key is not valid: the token was not made by this server".into(),
                    None,
                )
            }
        },
    };
    let (items, rev, next) = match (limit, after) {
        (None, None) => match data.store.list(&t.kind.resource(), t.namespace.as_deref()).await {
            Ok((items, rev)) => (items.into_iter().filter(|i| wanted.matches(i)).collect(), rev, None),
            Err(e) => return store_error(t.kind, e),
        },
        (limit, after) => match paged(data, t, &wanted, limit.unwrap_or(500), after).await {
            Ok(page) => page,
            Err(e) => return store_error(t.kind, e),
        },
    };
    let rv = rev.to_string();
    let mut body = match table {
        Some(include) => printers::table(t.kind.printer, &items, include, Some(&rv)),
        None => json!({"kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version(),
            "metadata": {"resourceVersion": rv}, "items": items}),
    };
    if let Some(next) = next {
        body["metadata"]["continue"] = json!(next.encode());
    }
    HttpResponse::Ok().json(body)
}

/// Where a paged list goes on (`continue`): the last key returned and the
/// revision of the first page, which every later page reports.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
    fn decode(token: &str) -> Option<Self> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// One page of a list (`limit`, `continue`): up to `limit` selected objects
/// after the token's key, in (namespace, name) order, and where to go on.
/// Pages are not one snapshot (objects written between pages may appear or
/// not), as the API server's inconsistent continuation; each reports the
/// first page's revision.
async fn paged(
    data: &ApiState,
    t: &Target,
    wanted: &Selection,
    limit: usize,
    after: Option<ContinueToken>,
) -> Result<(Vec<Value>, u64, Option<ContinueToken>), StoreError> {
    let resource = t.kind.resource();
    let mut rev = after.as_ref().map(|a| a.rv);
    let mut key = after.map(|a| (a.ns, a.name));
    let mut items = Vec::new();
    loop {
        let page = data
            .store
            // One more than asked: whether anything follows the limit-th is then known.
            .list_page(&resource, t.namespace.as_deref(), key.clone(), limit + 1)
            .await?;
        let rev = *rev.get_or_insert(page.revision);
        let count = page.items.len();
        for (i, item) in page.items.into_iter().enumerate() {
            key = Some((object::namespace(&item).to_string(), object::name(&item).to_string()));
            if wanted.matches(&item) {
                items.push(item);
            }
            if items.len() == limit {
                // The list's very last object ends it: no token for an empty page.
                if i + 1 == count && page.next.is_none() {
                    return Ok((items, rev, None));
                }
                let (ns, name) = key.clone().unwrap_or_default();
                return Ok((items, rev, Some(ContinueToken { rv: rev, ns, name })));
            }
        }
        if page.next.is_none() {
            return Ok((items, rev, None));
        }
        key = page.next;
    }
}

/// What a list or watch selects: labels and fields.
#[derive(Clone)]
struct Selection {
    labels: Selector,
    fields: FieldSelector,
}

impl Selection {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&object::labels(object)) && self.fields.matches(object)
    }
}

/// How often a watch that allows bookmarks gets one: the API server's
/// minute, or `PEAPOD_WATCH_BOOKMARK_SECONDS` (for tests).
fn bookmark_every() -> std::time::Duration {
    let secs = std::env::var("PEAPOD_WATCH_BOOKMARK_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// A watch. Without a resourceVersion, or with `0`, it begins with an
/// `ADDED` event for every object it selects (the API server's "get state
/// and start"; `kubectl get NAME -w` drops that first event); with `N`,
/// it sends only what changed after N.
async fn watch(
    data: &ApiState,
    t: &Target,
    q: &HashMap<String, String>,
    wanted: Selection,
    table: Option<printers::Include>,
) -> HttpResponse {
    let name = t.name.clone();
    let selects = {
        let wanted = wanted.clone();
        let name = name.clone();
        move |o: &Value| wanted.matches(o) && name.as_deref().is_none_or(|n| n == object::name(o))
    };
    let (initial, from) = match q.get("resourceVersion").filter(|s| !s.is_empty() && *s != "0") {
        Some(rv) => match rv.parse::<u64>() {
            Ok(n) => (Vec::new(), n),
            Err(_) => return status(400, "BadRequest", format!("invalid resourceVersion {rv:?}"), None),
        },
        None => match data.store.list(&t.kind.resource(), t.namespace.as_deref()).await {
            Ok((items, rev)) => (items.into_iter().filter(|o| selects(o)).collect::<Vec<_>>(), rev),
            Err(e) => return store_error(t.kind, e),
        },
    };
    let scope = Scope {
        resource: Some(t.kind.resource()),
        namespace: t.namespace.clone(),
    };
    let printer = t.kind.printer;
    let rx = match data.store.watch(scope, from).await {
        Ok(rx) => rx,
        Err(e) => return store_error(t.kind, e),
    };
    let event = move |event_type: Value, object: Value| {
        let object = match table {
            // One row per event, as kubectl's `get -w` reads them.
            Some(include) => printers::table(printer, &[object], include, None),
            None => object,
        };
        let line = json!({"type": event_type, "object": object});
        Ok::<_, actix_web::Error>(web::Bytes::from(format!("{line}\n")))
    };
    let live_event = event;
    let first = futures_util::stream::iter(initial.into_iter().map(move |o| event(json!("ADDED"), o)));
    // With allowWatchBookmarks, a BOOKMARK each minute carries the revision
    // the watch has reached, so a client resumes from there, not further back.
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true" || b == "1");
    let (kind, api_version) = (t.kind.kind, t.kind.api_version());
    let every = bookmark_every();
    let tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let live = futures_util::stream::unfold((rx, from, tick), move |(mut rx, mut reached, mut tick)| {
        let selects = selects.clone();
        let event = live_event;
        let api_version = api_version.clone();
        async move {
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev? {
                        Ok(ev) => {
                            reached = reached.max(ev.revision);
                            if selects(&ev.object) {
                                return Some((event(json!(ev.event_type), ev.object), (rx, reached, tick)));
                            }
                        }
                        Err(e) => {
                            let line = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": e.to_string()}});
                            return Some((Ok(web::Bytes::from(format!("{line}\n"))), (rx, reached, tick)));
                        }
                    },
                    _ = tick.tick(), if bookmarks => {
                        let line = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": reached.to_string()}}});
                        return Some((Ok(web::Bytes::from(format!("{line}\n"))), (rx, reached, tick)));
                    }
                }
            }
        }
    });
    let stream = first.chain(live);
    HttpResponse::Ok().content_type("application/json").streaming(stream)
}

async fn get(data: &ApiState, t: &Target, table: Option<printers::Include>) -> HttpResponse {
    let name = t.name.as_deref().unwrap_or("");
    match data
        .store
        .get(&t.kind.resource(), t.namespace.as_deref().unwrap_or(""), name)
        .await
    {
        Ok(v) => match table {
            Some(include) => {
                let rv = object::resource_version(&v).to_string();
                HttpResponse::Ok().json(printers::table(t.kind.printer, &[v], include, Some(&rv)))
            }
            None => HttpResponse::Ok().json(v),
        },
        Err(e) => store_error(t.kind, e),
    }
}

async fn create(data: &ApiState, t: &Target, body: &[u8]) -> HttpResponse {
    let mut obj = match parse_body(t.kind, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = ensure_namespace(data, t).await {
        return r;
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let body_ns = object::namespace(&obj).to_string();
    if t.kind.namespaced {
        if !body_ns.is_empty() && body_ns != ns {
            return status(400, "BadRequest", format!("the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"), None);
        }
        object::set_meta(&mut obj, "namespace", ns);
    }
    if let Err(errs) = writes::admit_new(t.kind, &mut obj) {
        let name = object::name(&obj).to_string();
        return invalid(t.kind, &name, errs);
    }
    let claims = match allocate(data, t.kind, &mut obj, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match writes::store_admitted(&*data.store, t.kind, obj).await {
        Ok(v) => HttpResponse::Created().json(v),
        Err(e) => {
            data.allocator.release(&*data.store, &claims).await;
            match e {
                writes::CreateError::Forbidden(message) => status(403, "Forbidden", message, None),
                writes::CreateError::Store(e) => store_error(t.kind, e),
                writes::CreateError::Invalid { errors, name, .. } => invalid(t.kind, &name, errors),
            }
        }
    }
}

/// A Service's cluster IP and node ports, claimed before it is written
/// (keeping what `old` holds); other kinds claim nothing.
async fn allocate(
    data: &ApiState,
    kind: &'static Kind,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<peapod_core::service::alloc::Claims, HttpResponse> {
    use peapod_core::service::alloc::AllocError;
    if !std::ptr::eq(kind, kinds::service()) {
        return Ok(Default::default());
    }
    match data.allocator.allocate(&*data.store, obj, old).await {
        Ok(c) => Ok(c),
        Err(AllocError::Invalid(errs)) => Err(invalid(kind, object::name(obj), errs)),
        Err(AllocError::Full(message)) => Err(status(500, "InternalError", message, None)),
        Err(AllocError::Store(e)) => Err(store_error(kind, e)),
    }
}

/// `PATCH` of an object (or its status) in any of the API server's four
/// formats, by Content-Type. A patch that names no resourceVersion is
/// applied to the latest version, again if that changed meanwhile; a
/// server-side apply of an object that does not exist creates it.
async fn patch(data: &ApiState, t: &Target, req: &HttpRequest, body: &[u8], status_only: bool) -> HttpResponse {
    use peapod_core::patch::{json_patch, strategic_merge, PatchType};
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(kind) = PatchType::from_content_type(content_type) else {
        return status(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"),
            None,
        );
    };
    let parsed = match kind {
        PatchType::Apply => std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())),
        _ => serde_json::from_slice::<Value>(body).map_err(|e| e.to_string()),
    };
    let sent = match parsed {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", format!("the patch is not valid: {e}"), None),
    };
    let pinned = sent.pointer("/metadata/resourceVersion").is_some();
    for _ in 0..5 {
        let current = match data
            .store
            .get(
                &t.kind.resource(),
                t.namespace.as_deref().unwrap_or(""),
                t.name.as_deref().unwrap_or(""),
            )
            .await
        {
            Ok(v) => v,
            Err(StoreError::NotFound { .. }) if kind == PatchType::Apply && !status_only => {
                let named = object::name(&sent);
                if Some(named) != t.name.as_deref() {
                    return status(
                        400,
                        "BadRequest",
                        format!(
                            "the name of the object ({named}) does not match the name on the URL ({})",
                            t.name.as_deref().unwrap_or("")
                        ),
                        None,
                    );
                }
                let body = serde_json::to_vec(&sent).unwrap_or_default();
                return create(data, t, &body).await;
            }
            Err(e) => return store_error(t.kind, e),
        };
        let merged = match kind {
            PatchType::Json => json_patch(&current, &sent),
            PatchType::Merge => {
                let mut c = current.clone();
                scale::merge_patch(&mut c, &sent);
                Ok(c)
            }
            PatchType::Strategic | PatchType::Apply => strategic_merge(t.kind.kind, &current, &sent),
        };
        let mut merged = match merged {
            Ok(v) => v,
            Err(e) => {
                return status(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{}\" could not be patched: {e}",
                        t.kind.kind,
                        t.name.as_deref().unwrap_or("")
                    ),
                    None,
                )
            }
        };
        if !pinned {
            object::set_meta(
                &mut merged,
                "resourceVersion",
                object::resource_version(&current).to_string(),
            );
        }
        match update_object(data, t, merged, status_only).await {
            Ok(r) => return r,
            Err(r) if !pinned && r.status() == actix_web::http::StatusCode::CONFLICT => continue,
            Err(r) => return r,
        }
    }
    status(
        409,
        "Conflict",
        format!(
            "{} \"{}\" kept changing while it was patched",
            t.kind.kind,
            t.name.as_deref().unwrap_or("")
        ),
        None,
    )
}

/// `GET /openapi/v2`: no schemas yet. kubectl asks with a protobuf Accept
/// and decodes the body as protobuf: an empty body is an empty document,
/// so create, apply and edit validate nothing and apply falls back to its
/// compiled-in patch metadata (the kubectl reference, "cheapest fix").
/// `GET /openapi/v3`: where each served group/version's document is.
pub async fn openapi_v3() -> HttpResponse {
    HttpResponse::Ok().json(peapod_core::openapi::discovery())
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`: the
/// schemas of that group/version's kinds (Kubernetes 1.34's), for `kubectl explain`.
pub async fn openapi_v3_document(req: HttpRequest) -> HttpResponse {
    let tail = req.match_info().get("tail").unwrap_or("");
    let segs: Vec<&str> = tail.split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return not_found(&req),
    };
    match peapod_core::openapi::document(group, version) {
        Some(doc) => HttpResponse::Ok()
            .content_type("application/json")
            .body(web::Bytes::from_static(doc)),
        None => not_found(&req),
    }
}

pub async fn openapi_v2() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        .finish()
}

async fn update(data: &ApiState, t: &Target, body: &[u8], status_only: bool) -> HttpResponse {
    let new = match parse_body(t.kind, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match update_object(data, t, new, status_only).await {
        Ok(v) | Err(v) => v,
    }
}

/// Replaces the object at `t` with `new` (or only its status), through admission.
async fn update_object(
    data: &ApiState,
    t: &Target,
    mut new: Value,
    status_only: bool,
) -> Result<HttpResponse, HttpResponse> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    if object::name(&new) != name {
        return Err(status(
            400,
            "BadRequest",
            format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&new)
            ),
            None,
        ));
    }
    let old = match data.store.get(&t.kind.resource(), &ns, &name).await {
        Ok(v) => v,
        Err(e) => return Err(store_error(t.kind, e)),
    };
    new["apiVersion"] = json!(t.kind.api_version());
    new["kind"] = json!(t.kind.kind);
    let mut next = if status_only {
        let mut n = old.clone();
        n["status"] = new["status"].clone();
        object::set_meta(&mut n, "resourceVersion", object::resource_version(&new).to_string());
        n
    } else {
        if t.kind.has_status {
            new["status"] = old["status"].clone();
        }
        // Identity and server-set fields come from the stored object.
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => {
                    if let Some(m) = object::metadata_mut(&mut new) {
                        m.insert(f.into(), v.clone());
                    }
                }
                None => {
                    if let Some(m) = object::metadata_mut(&mut new) {
                        m.remove(f);
                    }
                }
            }
        }
        if let Err(errs) = (t.kind.admit_update)(&old, &mut new) {
            return Err(invalid(t.kind, &name, errs));
        }
        if object::deletion_timestamp(&old).is_some() {
            let had = deletion::finalizers(&old);
            let added: Vec<String> = deletion::finalizers(&new)
                .into_iter()
                .filter(|f| !had.contains(f))
                .collect();
            if !added.is_empty() {
                let errs = FieldErrors(vec![peapod_core::field::FieldError::forbidden(
                    "metadata.finalizers",
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                )]);
                return Err(invalid(t.kind, &name, errs));
            }
        }
        // metadata.generation counts changes of the desired state only.
        let desired = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let generation = if desired(&new) == desired(&old) {
            generation
        } else {
            generation.saturating_add(1)
        };
        if let Some(m) = object::metadata_mut(&mut new) {
            m.insert("generation".into(), json!(generation));
        }
        new
    };
    let claims = if status_only {
        Default::default()
    } else {
        allocate(data, t.kind, &mut next, Some(&old)).await?
    };
    if object::resource_version(&next) == 0 {
        object::set_meta(&mut next, "resourceVersion", object::resource_version(&old).to_string());
    }
    // An update that changes nothing writes nothing (so `apply` twice is idempotent).
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = object::metadata_mut(&mut v) {
            m.remove("resourceVersion");
        }
        v
    };
    if strip(&next) == strip(&old) {
        return Ok(HttpResponse::Ok().json(old));
    }
    // What an update adds to a quota's count (a Service made a NodePort, a
    // claim grown) must fit, checked and written under the namespace's lock.
    let written = if !status_only && matches!(t.kind.plural, "services" | "persistentvolumeclaims") {
        let store = &*data.store;
        let old = &old;
        let outcome = peapod_core::admission::locked(store, &ns, |quotas| async move {
            match peapod_core::admission::admit_update_with(store, t.kind, old, &next, &quotas).await {
                Ok(()) => Ok(deletion::update_or_remove(store, t.kind, next).await),
                Err(refusal) => Err(refusal),
            }
        })
        .await;
        match outcome {
            Ok(Ok(written)) => written,
            Ok(Err(peapod_core::admission::Refusal::Forbidden(m))) => {
                data.allocator.release(&*data.store, &claims).await;
                return Err(status(403, "Forbidden", m, None));
            }
            Ok(Err(peapod_core::admission::Refusal::Store(e))) | Err(e) => {
                data.allocator.release(&*data.store, &claims).await;
                return Err(store_error(t.kind, e));
            }
        }
    } else {
        // Removing the last finalizer of an object whose deletion is over removes it.
        deletion::update_or_remove(&*data.store, t.kind, next).await
    };
    match written {
        Ok(v) => {
            if std::ptr::eq(t.kind, kinds::service()) && !status_only {
                // An update that removed the last finalizer of a deleted service removed it.
                let gone = matches!(
                    data.store.get(&t.kind.resource(), &ns, &name).await,
                    Err(StoreError::NotFound { .. })
                );
                let now = (!gone).then_some(&v);
                data.allocator.release_unused(&*data.store, &old, now).await;
            }
            Ok(HttpResponse::Ok().json(v))
        }
        Err(e) => {
            data.allocator.release(&*data.store, &claims).await;
            Err(store_error(t.kind, e))
        }
    }
}

async fn get_scale(data: &ApiState, t: &Target) -> HttpResponse {
    let (ns, name) = (
        t.namespace.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    );
    match data.store.get(&t.kind.resource(), &ns, &name).await {
        Ok(v) => HttpResponse::Ok().json(scale::of(&v)),
        Err(e) => store_error(t.kind, e),
    }
}

/// `PUT` (a whole `Scale`) or `PATCH` (a merge patch of one) on `scale`.
async fn set_scale(data: &ApiState, t: &Target, body: &[u8], patch: bool) -> HttpResponse {
    let (ns, name) = (
        t.namespace.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    );
    let sent = match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return status(400, "BadRequest", "the body must be a JSON object".into(), None),
        Err(e) => {
            return status(
                400,
                "BadRequest",
                format!("the body of the request was in an unknown format: {e}"),
                None,
            )
        }
    };
    for _ in 0..5 {
        let cur = match data.store.get(&t.kind.resource(), &ns, &name).await {
            Ok(v) => v,
            Err(e) => return store_error(t.kind, e),
        };
        let wanted = if patch {
            let mut s = scale::of(&cur);
            scale::merge_patch(&mut s, &sent);
            // A patch applies to the version it was merged into.
            if sent.pointer("/metadata/resourceVersion").is_none() {
                s["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            }
            s
        } else {
            sent.clone()
        };
        let next = match scale::apply(&cur, &wanted) {
            Ok(v) => v,
            Err(errs) => return invalid(t.kind, &name, errs),
        };
        match update_object(data, t, next, false).await {
            Ok(_) => break,
            // A patch is merged again into the latest version.
            Err(r) if patch && r.status() == actix_web::http::StatusCode::CONFLICT => continue,
            Err(r) => return r,
        }
    }
    get_scale(data, t).await
}

async fn delete(data: &ApiState, t: &Target, q: &HashMap<String, String>, body: &[u8]) -> HttpResponse {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
        .or(opts["gracePeriodSeconds"].as_i64());
    let policy = q
        .get("propagationPolicy")
        .map(String::as_str)
        .or(opts["propagationPolicy"].as_str());
    let propagation = match deletion::Propagation::parse(policy, opts["orphanDependents"].as_bool()) {
        Ok(p) => p,
        Err(message) => return status(400, "BadRequest", message, None),
    };
    let resource = t.kind.resource();
    for _ in 0..5 {
        let cur = match data.store.get(&resource, &ns, &name).await {
            Ok(v) => v,
            Err(e) => return store_error(t.kind, e),
        };
        let mut marked = cur.clone();
        if t.kind.graceful_deletion {
            object::mark_deleted(&mut marked, grace);
        } else {
            // Nothing runs for it: its grace period is over at once.
            deletion::end_grace(&mut marked);
        }
        // A propagation policy asked for on an object already being deleted
        // applies too (kubectl delete --cascade=orphan after a background delete).
        if let Some(f) = propagation.finalizer() {
            deletion::add_finalizer(&mut marked, f);
        }
        if let Err(message) = (t.kind.admit_delete)(&cur, &mut marked) {
            return status(403, "Forbidden", message, None);
        }
        if marked == cur {
            return HttpResponse::Ok().json(cur);
        }
        match deletion::update_or_remove(&*data.store, t.kind, marked).await {
            Ok(v) => {
                // A service removed gives back its cluster IP and node ports.
                if std::ptr::eq(t.kind, kinds::service())
                    && matches!(
                        data.store.get(&resource, &ns, &name).await,
                        Err(StoreError::NotFound { .. })
                    )
                {
                    data.allocator.release_unused(&*data.store, &cur, None).await;
                }
                return HttpResponse::Ok().json(v);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return store_error(t.kind, e),
        }
    }
    status(
        409,
        "Conflict",
        format!("{} \"{name}\" kept changing; try again", t.kind.plural),
        None,
    )
}

async fn logs(data: &ApiState, t: &Target, q: &HashMap<String, String>) -> HttpResponse {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    let pod = match data.store.get(&t.kind.resource(), &ns, &name).await {
        Ok(v) => v,
        Err(e) => return store_error(t.kind, e),
    };
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match q.get("container") {
        Some(c) => c.clone(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return status(
                400,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                ),
                None,
            )
        }
    };
    let init_names: Vec<String> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    if !containers.contains(&container) && !init_names.contains(&container) {
        return status(
            400,
            "BadRequest",
            format!("container {container} is not valid for pod {name}"),
            None,
        );
    }
    let cs = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][*k].as_array().into_iter().flatten())
        .find(|c| c["name"] == container.as_str())
        .cloned();
    let started = cs.as_ref().is_some_and(|c| !c["containerID"].is_null());
    if !started {
        return status(
            400,
            "BadRequest",
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"),
            None,
        );
    }
    let restarts = cs.as_ref().and_then(|c| c["restartCount"].as_u64()).unwrap_or(0) as u32;
    let previous = q.get("previous").is_some_and(|p| p == "true");
    let attempt = if previous {
        if restarts == 0 {
            return status(
                400,
                "BadRequest",
                format!("previous terminated container \"{container}\" in pod \"{name}\" not found"),
                None,
            );
        }
        restarts - 1
    } else {
        restarts
    };
    let file = data.paths.log_file(&ns, &name, object::uid(&pod), &container, attempt);
    let follow = q.get("follow").is_some_and(|f| f == "true") && !previous;
    let opts = match log_options(q, follow, chrono::Utc::now()) {
        Ok(o) => o,
        Err(message) => return status(400, "BadRequest", message, None),
    };
    // The files are opened here: the pod's logs are unlinked when it is
    // removed, and the last lines (written while it stops) must still reach
    // the follower. Without follow the answer is the log as it stood when
    // asked: its lines are counted, and it is read, up to the length it had then.
    let reader = tokio::task::spawn_blocking(move || match LogReader::open(&file, opts) {
        Ok(r) => Some(r),
        // No log yet (or any more): an empty answer, as before the container wrote.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("opening the log {}: {e}", file.display());
            None
        }
    })
    .await
    .ok()
    .flatten();
    let state = LogStream {
        reader,
        store: data.store.clone(),
        ns,
        name,
        uid: object::uid(&pod).to_string(),
        container,
        attempt,
        polls: 0,
    };
    // Read a chunk at a time on the blocking pool: the API's one worker never
    // reads a file itself, and a log of any size costs one chunk of memory.
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            let reader = s.reader.take()?;
            let (reader, chunk) = tokio::task::spawn_blocking(move || {
                let mut reader = reader;
                let chunk = reader.next_chunk();
                (reader, chunk)
            })
            .await
            .ok()?;
            let chunk = match chunk {
                Ok(Some(c)) => c,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("reading the log of {}/{} {}: {e}", s.ns, s.name, s.container);
                    return None;
                }
            };
            let following = reader.following();
            s.reader = Some(reader);
            if !chunk.is_empty() {
                return Some((Ok::<_, actix_web::Error>(web::Bytes::from(chunk)), s));
            }
            // Follow: what is appended, until this attempt no longer runs;
            // then what was written before it stopped.
            s.polls += 1;
            if following
                && s.polls % 5 == 0
                && !still_running(&*s.store, &s.ns, &s.name, &s.uid, &s.container, s.attempt).await
            {
                if let Some(r) = &mut s.reader {
                    r.stop_following();
                }
                continue;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    HttpResponse::Ok().content_type("text/plain").streaming(stream)
}

/// Reads the query of a log request (`PodLogOptions`): `tailLines`,
/// `sinceSeconds` or `sinceTime`, `timestamps`, `limitBytes`.
fn log_options(
    q: &HashMap<String, String>,
    follow: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ReadOptions, String> {
    let int = |key: &str| -> Result<Option<i64>, String> {
        q.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{key}: Invalid value: {v:?}: must be an integer"))
            })
            .transpose()
    };
    let positive = |key: &str| -> Result<Option<i64>, String> {
        match int(key)? {
            Some(n) if n < 1 => Err(format!("{key}: Invalid value: {n}: must be greater than 0")),
            n => Ok(n),
        }
    };
    let tail = match int("tailLines")? {
        Some(n) if n < 0 => {
            return Err(format!(
                "tailLines: Invalid value: {n}: must be greater than or equal to 0"
            ))
        }
        n => n.map(|n| n as usize),
    };
    let since = match (positive("sinceSeconds")?, q.get("sinceTime")) {
        (Some(_), Some(_)) => return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into()),
        (Some(secs), None) => Some(
            chrono::Duration::try_seconds(secs)
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        ),
        (None, Some(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("sinceTime: Invalid value: {t:?}: not an RFC 3339 time: {e}"))?
                .with_timezone(&chrono::Utc),
        ),
        (None, None) => None,
    };
    Ok(ReadOptions {
        tail,
        since,
        timestamps: q.get("timestamps").is_some_and(|t| t == "true"),
        limit_bytes: positive("limitBytes")?.map(|n| n as u64),
        follow,
    })
}

/// Where a log stream stands.
struct LogStream {
    /// `None` once done (or when there is no log).
    reader: Option<LogReader>,
    store: std::sync::Arc<dyn Store>,
    ns: String,
    name: String,
    uid: String,
    container: String,
    attempt: u32,
    polls: u32,
}

async fn still_running(store: &dyn Store, ns: &str, name: &str, uid: &str, container: &str, attempt: u32) -> bool {
    let Ok(pod) = store.get(&kinds::pod().resource(), ns, name).await else {
        return false;
    };
    if object::uid(&pod) != uid {
        return false;
    }
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["name"] == container
                && c["restartCount"].as_u64() == Some(attempt as u64)
                && !c["state"]["running"].is_null()
        })
}

#[cfg(test)]
mod route_tests {
    use super::route;

    #[test]
    fn paths_route_to_kinds_objects_and_subresources() {
        let t = route("", "v1", &["namespaces", "default", "pods", "web", "log"]).unwrap();
        assert_eq!(
            (t.kind.kind, t.namespace.as_deref(), t.name.as_deref(), t.sub.as_deref()),
            ("Pod", Some("default"), Some("web"), Some("log"))
        );
        let t = route("", "v1", &["pods"]).unwrap();
        assert_eq!(
            (t.kind.kind, t.namespace.as_deref(), t.name.as_deref()),
            ("Pod", None, None)
        );
        // A cluster-scoped kind; "namespaces/x/status" is the namespace's status.
        let t = route("", "v1", &["namespaces", "team", "status"]).unwrap();
        assert_eq!(
            (t.kind.kind, t.name.as_deref(), t.sub.as_deref()),
            ("Namespace", Some("team"), Some("status"))
        );
        assert!(
            route("", "v1", &["pods", "web"]).is_none(),
            "a namespaced object needs its namespace"
        );
        assert!(route("", "v1", &["namespaces", "default", "pods", "web", "log", "more"]).is_none());
        assert!(route("", "v2", &["pods"]).is_none());
        assert!(route("apps", "v1", &["widgets"]).is_none());
    }
}

#[cfg(test)]
mod log_tests {
    use super::log_options;
    use std::collections::HashMap;

    fn opts(pairs: &[(&str, &str)]) -> Result<peapod_actors::runtime::logfile::ReadOptions, String> {
        let q: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .to_utc();
        log_options(&q, false, now)
    }

    #[test]
    fn log_options_read_what_kubectl_sends() {
        let o = opts(&[
            ("tailLines", "20"),
            ("timestamps", "true"),
            ("limitBytes", "100"),
            ("sinceSeconds", "60"),
        ])
        .unwrap();
        assert_eq!(o.tail, Some(20));
        assert!(o.timestamps);
        assert_eq!(o.limit_bytes, Some(100));
        assert_eq!(o.since.unwrap().to_rfc3339(), "2026-12-01T09:59:00+00:00");
        let o = opts(&[("sinceTime", "2026-12-01T09:00:00.5+01:00")]).unwrap();
        assert_eq!(o.since.unwrap().to_rfc3339(), "2026-12-01T08:00:00.500+00:00");
        // A huge sinceSeconds is all of the log, not an overflow.
        assert!(opts(&[("sinceSeconds", &i64::MAX.to_string())])
            .unwrap()
            .since
            .is_some());
    }

    #[test]
    fn bad_log_options_name_the_parameter() {
        let err = |pairs: &[(&str, &str)]| opts(pairs).unwrap_err();
        assert!(err(&[("tailLines", "-2")]).starts_with("tailLines: Invalid value: -2"));
        assert!(err(&[("tailLines", "ten")]).starts_with("tailLines: Invalid value: \"ten\""));
        assert!(err(&[("sinceSeconds", "0")]).starts_with("sinceSeconds: Invalid value: 0"));
        assert!(err(&[("limitBytes", "0")]).starts_with("limitBytes: Invalid value: 0"));
        assert!(err(&[("sinceTime", "yesterday")]).starts_with("sinceTime: Invalid value: \"yesterday\""));
        assert_eq!(
            err(&[("sinceTime", "2026-12-01T09:00:00Z"), ("sinceSeconds", "5")]),
            "at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
    }
}
