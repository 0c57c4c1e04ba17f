//! The smallest useful plugin: `publish` makes sure the target directory
//! exists, `unpublish` succeeds, `get_volume_stats` reports nothing used.
//! Build it with `cargo build -p peapod-plugin-sdk --example noop` and copy
//! `target/debug/examples/libnoop.so` into a plugin directory.

use peapod_plugin_sdk::*;

#[derive(Default)]
struct Noop;

impl VolumePlugin for Noop {
    fn capabilities(&self) -> u64 {
        CAP_STATS
    }

    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        std::fs::create_dir_all(&req.target_path)
            .map_err(|e| PluginError::internal(format!("create {}: {e}", req.target_path)))?;
        Ok(PublishResponse::default())
    }

    fn unpublish(&self, _req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        Ok(UnpublishResponse::default())
    }

    fn get_volume_stats(&self, _req: VolumeStatsRequest) -> Result<VolumeStats, PluginError> {
        Ok(VolumeStats::default())
    }
}

export_volume_plugin!(Noop, name = "noop", version = env!("CARGO_PKG_VERSION"));
