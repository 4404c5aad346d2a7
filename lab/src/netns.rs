//! Named network namespaces, the TUN device inside each, and cleaning them up.
//!
//! Names are `geoloc-lab-<pid>-<lab>-<host index>`, so parallel runs never clash and
//! `geoloc lab cleanup` can tell leftovers of dead processes from live labs.
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::Mutex;

use nix::sched::CloneFlags;

use crate::error::{LabError, Result};

/// Prefix of every namespace the lab creates.
pub const NS_PREFIX: &str = "geoloc-lab-";
/// Name of the TUN interface inside each namespace.
pub const TUN_NAME: &str = "lab0";

/// Namespaces and child processes created by this process and not yet removed, so a
/// signal handler can remove them all ([`cleanup_registered`]).
static LIVE: Mutex<Live> = Mutex::new(Live {
    namespaces: Vec::new(),
    pids: Vec::new(),
});

struct Live {
    namespaces: Vec<String>,
    pids: Vec<i32>,
}

pub(crate) fn register_ns(ns: &str) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .namespaces
        .push(ns.to_string());
}
pub(crate) fn register_pid(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .pids
        .push(pid as i32);
}
pub(crate) fn unregister_pid(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .pids
        .retain(|p| *p != pid as i32);
}

/// Kills every child process the lab started (SIGKILL) and deletes every namespace it
/// created. Safe to call from a signal-handling task, more than once.
pub fn cleanup_registered() {
    let (pids, namespaces) = {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        (
            std::mem::take(&mut live.pids),
            std::mem::take(&mut live.namespaces),
        )
    };
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for ns in namespaces {
        let _ = delete(&ns);
    }
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| LabError::Command {
        command: format!("{cmd:?}"),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("{cmd:?}"),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn ip(ns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// Checks the two things the lab needs: root and a usable `/dev/net/tun`.
pub fn check_privileges() -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Err(LabError::NotRoot(uid));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(LabError::NoTun)?;
    Ok(())
}

/// `ip netns add NAME` (registered for cleanup).
pub fn create(ns: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "add", ns]))?;
    register_ns(ns);
    Ok(())
}

/// `ip netns del NAME`.
pub fn delete(ns: &str) -> Result<()> {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .namespaces
        .retain(|n| n != ns);
    run(Command::new("ip").args(["netns", "del", ns]))
}

/// Sysctls written inside each namespace before its TUN device exists.
const SYSCTLS: &[(&str, &str)] = &[
    // The hosts' kernels must answer every probe: no ICMP rate limiting.
    ("net/ipv4/icmp_ratelimit", "0"),
    ("net/ipv6/icmp/ratelimit", "0"),
    // Agents may use unprivileged datagram ICMP sockets.
    ("net/ipv4/ping_group_range", "0 2147483647"),
    // No duplicate address detection or router solicitations on the TUN link.
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/default/router_solicitations", "0"),
];

/// Creates the TUN device inside `ns` (from a thread that enters the namespace; the
/// returned descriptor works from any thread) and writes the namespace's sysctls.
pub fn open_tun_in(ns: &str) -> Result<File> {
    let ns_owned = ns.to_string();
    let handle = std::thread::spawn(move || -> Result<File> {
        let ns = ns_owned;
        let path = format!("/run/netns/{ns}");
        let nsfd = File::open(&path).map_err(|source| LabError::Namespace {
            ns: ns.clone(),
            what: "open",
            source,
        })?;
        nix::sched::setns(&nsfd, CloneFlags::CLONE_NEWNET).map_err(|e| LabError::Namespace {
            ns: ns.clone(),
            what: "setns",
            source: e.into(),
        })?;
        // /proc/sys/net is resolved against the network namespace of the opening thread.
        for (key, value) in SYSCTLS {
            std::fs::write(format!("/proc/sys/{key}"), value).map_err(|source| {
                LabError::Namespace {
                    ns: ns.clone(),
                    what: "sysctl",
                    source,
                }
            })?;
        }
        crate::sys::open_tun(TUN_NAME).map_err(|source| LabError::Namespace {
            ns: ns.clone(),
            what: "TUNSETIFF",
            source,
        })
    });
    handle
        .join()
        .map_err(|_| LabError::Emulator("namespace thread panicked".into()))?
}

/// Brings up `lo` and the TUN device with the host's addresses and default routes.
pub fn configure(ns: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    ip(ns, &["link", "set", "lo", "up"])?;
    ip(ns, &["link", "set", TUN_NAME, "mtu", "1500", "up"])?;
    ip(ns, &["addr", "add", &format!("{v4}/32"), "dev", TUN_NAME])?;
    ip(
        ns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{v6}/128"),
            "dev",
            TUN_NAME,
            "nodad",
        ],
    )?;
    ip(
        ns,
        &[
            "route",
            "add",
            "default",
            "dev",
            TUN_NAME,
            "src",
            &v4.to_string(),
        ],
    )?;
    ip(
        ns,
        &[
            "-6",
            "route",
            "add",
            "default",
            "dev",
            TUN_NAME,
            "src",
            &v6.to_string(),
        ],
    )?;
    Ok(())
}

/// Every namespace whose name starts with [`NS_PREFIX`].
pub fn list_lab_namespaces() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir("/run/netns") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LabError::Read {
                path: "/run/netns".into(),
                source,
            })
        }
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(NS_PREFIX))
        .collect();
    out.sort();
    Ok(out)
}

/// The pid embedded in a lab namespace name.
pub fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(NS_PREFIX)?.split('-').next()?.parse().ok()
}

/// What `geoloc lab cleanup` did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    pub removed: Vec<String>,
    pub kept_live: Vec<String>,
    pub killed: Vec<i32>,
}

/// Removes lab namespaces left behind by processes that no longer run (all of them with
/// `all`). With `kill`, processes still inside a removed namespace get SIGKILL first.
pub fn cleanup_stale(all: bool, kill: bool) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for ns in list_lab_namespaces()? {
        let alive =
            owner_pid(&ns).is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if alive && !all {
            report.kept_live.push(ns);
            continue;
        }
        if kill {
            let out = Command::new("ip").args(["netns", "pids", &ns]).output();
            if let Ok(out) = out {
                for pid in String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    if nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .is_ok()
                    {
                        report.killed.push(pid);
                    }
                }
            }
        }
        delete(&ns)?;
        report.removed.push(ns);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_pid_parses_names() {
        assert_eq!(super::owner_pid("geoloc-lab-1234-0-7"), Some(1234));
        assert_eq!(super::owner_pid("other-1234"), None);
        assert_eq!(super::owner_pid("geoloc-lab-x-0"), None);
    }
}
