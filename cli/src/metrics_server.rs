//! The daemon's metrics listener: `/metrics` (everything), `/metrics/cadvisor`
//! and `/metrics/probes` (kubelet's split), `/healthz` and `/readyz`, on a TCP
//! address of its own so Prometheus never needs the API's socket.

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::{Context, Result};
use peapod_core::store::Store;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The store once it is open, for the gauges read from it at scrape time.
pub type StoreSlot = Arc<OnceLock<Arc<dyn Store>>>;

/// Which series a path serves.
#[derive(Clone, Copy)]
enum Set {
    All,
    Cadvisor,
    Probes,
}

async fn scrape(set: Set, store: web::Data<StoreSlot>) -> HttpResponse {
    if let Some(s) = store.get() {
        peapod_metrics::metrics().store_watchers.set(s.watchers() as i64);
    }
    // cgroup and /proc reads: on the blocking pool, never on a server thread.
    let body = web::block(move || match set {
        Set::All => peapod_metrics::render(),
        Set::Cadvisor => peapod_metrics::render_cadvisor(),
        Set::Probes => peapod_metrics::render_probes(),
    })
    .await;
    match body {
        Ok(body) => HttpResponse::Ok().content_type(peapod_metrics::TEXT_FORMAT).body(body),
        Err(e) => HttpResponse::InternalServerError().body(format!("gathering metrics: {e}\n")),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// As the API server's `/readyz`: `ok` when ready, the list of checks with
/// `?verbose` or when something is not ready (then 500).
async fn readyz(req: HttpRequest) -> HttpResponse {
    let (ready, text) = peapod_metrics::health::readiness();
    let verbose = req
        .query_string()
        .split('&')
        .any(|q| q == "verbose" || q.starts_with("verbose="));
    let body = if ready && !verbose { "ok".to_string() } else { text };
    let mut resp = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::InternalServerError()
    };
    resp.content_type("text/plain").body(body)
}

/// Binds `addr` and starts serving; writes the bound address (a port 0
/// becomes the one the kernel chose) to `<run_dir>/metrics-address`.
pub fn start(addr: &str, run_dir: &Path, store: StoreSlot) -> Result<actix_web::dev::Server> {
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics-address {addr:?}: not an IP:port address"))?;
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(web::Data::new(store.clone()))
            .route("/metrics", web::get().to(|s| scrape(Set::All, s)))
            .route("/metrics/cadvisor", web::get().to(|s| scrape(Set::Cadvisor, s)))
            .route("/metrics/probes", web::get().to(|s| scrape(Set::Probes, s)))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .bind(parsed)
    .with_context(|| {
        format!("listen on {addr} for metrics (another daemon there? choose one with --metrics-address, or pass --no-metrics)")
    })?;
    let bound = server.addrs().first().copied().unwrap_or(parsed);
    let file = run_dir.join("metrics-address");
    std::fs::write(&file, format!("{bound}\n")).with_context(|| format!("write {}", file.display()))?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(server.run())
}
