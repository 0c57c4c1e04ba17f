//! Which program the daemon runs as a shim.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The shim's file name, installed beside `peapod`.
pub const SHIM_NAME: &str = "peapod-shim";

/// How the daemon runs its shims: `peapod-shim <command> …`, a small binary
/// of its own (each container start maps, relocates and forks it; the whole
/// daemon cost about 300 page faults more per start), or, where only
/// `peapod` is installed, `peapod shim <command> …`: the same commands.
#[derive(Clone, Debug)]
pub struct ShimProgram {
    /// The executable.
    pub path: PathBuf,
    /// True when `path` is `peapod` and the commands go under `shim`.
    pub under_peapod: bool,
}

impl ShimProgram {
    /// `peapod-shim` beside `daemon_exe` when it is there, else `daemon_exe shim`.
    pub fn beside(daemon_exe: &Path) -> Self {
        let own = daemon_exe.with_file_name(SHIM_NAME);
        if own.is_file() {
            Self {
                path: own,
                under_peapod: false,
            }
        } else {
            Self {
                path: daemon_exe.to_path_buf(),
                under_peapod: true,
            }
        }
    }

    /// The arguments before a shim command's own.
    fn prefix(&self) -> &'static [&'static str] {
        if self.under_peapod {
            &["shim"]
        } else {
            &[]
        }
    }

    /// `<program> [shim] <args…>`.
    pub fn command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = std::process::Command::new(&self.path);
        cmd.args(self.prefix()).args(args);
        cmd
    }

    /// [`Self::command`] for tokio.
    pub fn tokio_command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_shim_binary_beside_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("peapod");
        std::fs::write(&daemon, b"").unwrap();
        let alone = ShimProgram::beside(&daemon);
        assert!(alone.under_peapod);
        assert_eq!(alone.path, daemon);
        let cmd = alone.command(["run", "--config", "x"]);
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["shim", "run", "--config", "x"]);

        std::fs::write(dir.path().join(SHIM_NAME), b"").unwrap();
        let own = ShimProgram::beside(&daemon);
        assert!(!own.under_peapod);
        assert_eq!(own.path, dir.path().join(SHIM_NAME));
        let cmd = own.command(["run", "--config", "x"]);
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["run", "--config", "x"]);
    }
}
