//! Test-only fault injection: with the `fault-injection` cargo feature (the
//! test build has it, release builds do not), `PEAPOD_FAULTS` makes a named
//! point panic, kill the whole process with SIGKILL, or sleep:
//!
//! ```text
//! PEAPOD_FAULTS="pod.reconcile@crashy=panic*3;runtime.before-spawn@web-c-1=kill"
//!                point[@substring of its context]=panic|kill|sleep:<ms>[*times]
//! ```
//!
//! Without `*times` a fault fires every time the point is reached.
//! `PEAPOD_FAULTS_FILE` names a file holding more of the same; it is read
//! again whenever it changes, so a test can arm a fault at the moment it
//! wants (its counts start afresh then). Shims are started with the daemon's
//! environment, so shim points work the same way. Without the feature,
//! [`point`] compiles to nothing.
//!
//! Points: `node.watch`, `namespace.pass`, `pod.reconcile`, `container.start`,
//! `container.exit`, `probe.tick` (actor crashes); `runtime.before-spawn`,
//! `runtime.shim-spawned`, `container.prestop-started`,
//! `container.prestop-done`, `pod.terminating`
//! (daemon kills at crash windows); `shim.create` (in the shim, before the
//! container is created); `store.create` (context `resource/namespace/name`,
//! before any object is written: a sleep there widens an admission's window).

/// Reaches the fault point `name`; `context` says which object (a pod name,
/// a container id) so a fault can target one.
#[cfg(feature = "fault-injection")]
pub fn point(name: &str, context: &str) {
    imp::point(name, context)
}

/// Reaches the fault point `name` (no faults in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str, _context: &str) {}

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::{Mutex, OnceLock};

    #[derive(Debug, Clone)]
    enum Action {
        Panic,
        Kill,
        Sleep(u64),
    }

    #[derive(Debug)]
    struct Fault {
        point: String,
        filter: Option<String>,
        action: Action,
        left: Option<u32>,
    }

    struct Armed {
        from_env: Vec<Fault>,
        from_file: Vec<Fault>,
        file: Option<std::path::PathBuf>,
        stamp: Option<(std::time::SystemTime, u64)>,
    }

    impl Armed {
        /// Rereads the file when it changed.
        fn refresh(&mut self) {
            let Some(file) = &self.file else { return };
            let stamp = std::fs::metadata(file)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            if stamp != self.stamp {
                self.stamp = stamp;
                self.from_file = parse(&std::fs::read_to_string(file).unwrap_or_default());
            }
        }
    }

    fn armed() -> &'static Mutex<Armed> {
        static FAULTS: OnceLock<Mutex<Armed>> = OnceLock::new();
        FAULTS.get_or_init(|| {
            Mutex::new(Armed {
                from_env: parse(&std::env::var("PEAPOD_FAULTS").unwrap_or_default()),
                from_file: Vec::new(),
                file: std::env::var_os("PEAPOD_FAULTS_FILE").map(Into::into),
                stamp: None,
            })
        })
    }

    fn parse(spec: &str) -> Vec<Fault> {
        spec.split(';')
            .filter(|s| !s.trim().is_empty())
            .filter_map(|entry| {
                let (lhs, rhs) = entry.trim().split_once('=')?;
                let (point, filter) = match lhs.split_once('@') {
                    Some((p, f)) => (p.to_string(), Some(f.to_string())),
                    None => (lhs.to_string(), None),
                };
                let (action, times) = match rhs.split_once('*') {
                    Some((a, n)) => (a, n.parse().ok()),
                    None => (rhs, None),
                };
                let action = match action {
                    "panic" => Action::Panic,
                    "kill" => Action::Kill,
                    a => Action::Sleep(a.strip_prefix("sleep:")?.parse().ok()?),
                };
                Some(Fault {
                    point,
                    filter,
                    action,
                    left: times,
                })
            })
            .collect()
    }

    pub fn point(name: &str, context: &str) {
        let action = {
            let mut armed = armed().lock().unwrap_or_else(|p| p.into_inner());
            armed.refresh();
            let armed = &mut *armed;
            let Some(f) = armed.from_env.iter_mut().chain(armed.from_file.iter_mut()).find(|f| {
                f.point == name && f.left != Some(0) && f.filter.as_deref().is_none_or(|s| context.contains(s))
            }) else {
                return;
            };
            if let Some(n) = &mut f.left {
                *n -= 1;
            }
            f.action.clone()
        };
        eprintln!("fault injected at {name} ({context}): {action:?}");
        match action {
            Action::Panic => panic!("fault injected at {name} ({context})"),
            Action::Kill => {
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
            }
            Action::Sleep(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn specs_parse() {
            let f = super::parse("pod.reconcile@crashy=panic*3; runtime.before-spawn=kill;shim.create=sleep:3000");
            assert_eq!(f.len(), 3);
            assert_eq!(f[0].filter.as_deref(), Some("crashy"));
            assert_eq!(f[0].left, Some(3));
            assert!(matches!(f[2].action, super::Action::Sleep(3000)));
        }
    }
}
