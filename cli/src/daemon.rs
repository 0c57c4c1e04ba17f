//! `peapod daemon`: opens the store, starts the node's actor tree and serves the API.

use crate::api::{self, ApiState};
use anyhow::{Context, Result};
use peapod_actors::node::{ensure_default_namespaces, NodeActor};
use peapod_actors::runtime::{NodePaths, Runtime};
use peapod_core::store::{SqliteStore, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Runs until killed.
pub fn run(root: PathBuf, run_dir: PathBuf) -> Result<()> {
    let paths = NodePaths::new(root, run_dir);
    std::fs::create_dir_all(&paths.root).with_context(|| format!("create {}", paths.root.display()))?;
    std::fs::create_dir_all(&paths.run).with_context(|| format!("create {}", paths.run.display()))?;
    let exe = std::env::current_exe().context("locate the peapod binary")?;
    let rt = Runtime::new(paths.clone(), exe).map_err(anyhow::Error::msg)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(paths.store_db())?);
    let node_name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let socket = paths.api_socket();
    actix_rt::System::new().block_on(async move {
        ensure_default_namespaces(&*store).await?;
        let _node = actix::Actor::start(NodeActor::new(rt, store.clone(), node_name));
        let _ = std::fs::remove_file(&socket);
        let state = actix_web::web::Data::new(ApiState {
            store,
            paths: paths.clone(),
        });
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .app_data(actix_web::web::PayloadConfig::new(8 << 20))
                .route("/api", actix_web::web::get().to(api::api_versions))
                .route("/api/v1", actix_web::web::get().to(api::resource_list))
                .route("/api/v1/{tail:.*}", actix_web::web::route().to(api::core_v1))
        })
        .workers(1)
        .bind_uds(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        tracing::info!("peapod daemon serving on {}", socket.display());
        server.run().await?;
        Ok(())
    })
}
