//! `misbehave`: a third-party style plugin built outside the default
//! workspace members. Its `volumeAttributes.mode` picks the behaviour of
//! `publish`: `ok` writes a marker file, `panic` panics, `hang` never returns.
//! Its configuration's `initDelaySeconds` makes `init` take that long (a
//! daemon is not ready until its plugins are initialised).

use peapod_plugin_sdk::*;

#[derive(Default)]
struct Misbehave;

impl VolumePlugin for Misbehave {
    fn init(&self, req: InitRequest) -> Result<InitResponse, PluginError> {
        if let Some(secs) = req.config.get("initDelaySeconds").and_then(|v| v.as_u64()) {
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
        Ok(InitResponse::default())
    }

    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        match req.volume_context.get("mode").map(String::as_str).unwrap_or("ok") {
            "panic" => panic!("misbehave was asked to panic for pod {}", req.pod.name),
            "hang" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            _ => {
                std::fs::create_dir_all(&req.target_path).map_err(|e| PluginError::internal(e.to_string()))?;
                std::fs::write(
                    format!("{}/from-rust-plugin", req.target_path),
                    format!("{}\n", req.pod.uid),
                )
                .map_err(|e| PluginError::internal(e.to_string()))?;
                Ok(PublishResponse::default())
            }
        }
    }

    fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        let _ = std::fs::remove_file(format!("{}/from-rust-plugin", req.target_path));
        Ok(UnpublishResponse::default())
    }
}

export_volume_plugin!(Misbehave, name = "misbehave", version = "0.0.1");
