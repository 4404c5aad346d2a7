//! A running lab: its namespaces, TUN devices, emulator thread and child processes.
use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::emulator::{Emulator, Shared, Stats, StatsSnapshot};
use crate::error::{LabError, Result};
use crate::netns;
use crate::topology::Topology;

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// One host of a running lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    pub name: String,
    /// Its network namespace (`ip netns exec <ns> ...`).
    pub ns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// A running emulated Internet. Dropping it stops the emulator, kills the processes it
/// started and deletes its namespaces.
pub struct Lab {
    topo: Arc<Topology>,
    hosts: Vec<LabHost>,
    namespaces: Vec<String>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    children: Mutex<Vec<(String, Child)>>,
}

impl Lab {
    /// Creates one namespace and TUN per host, configures them and starts the emulator.
    /// On error everything created so far is removed.
    pub fn up(topo: Topology, seed: u64) -> Result<Self> {
        netns::check_privileges()?;
        let topo = Arc::new(topo);
        let n = topo.hosts().len();
        let id = format!(
            "{}{}-{}",
            netns::NS_PREFIX,
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            cut: (0..n).map(|_| AtomicBool::new(false)).collect(),
            stats: Stats::default(),
        });
        let mut lab = Lab {
            topo: topo.clone(),
            hosts: Vec::with_capacity(n),
            namespaces: Vec::with_capacity(n),
            shared: shared.clone(),
            thread: None,
            children: Mutex::new(Vec::new()),
        };
        let mut tuns = Vec::with_capacity(n);
        for (i, h) in topo.hosts().iter().enumerate() {
            let ns = format!("{id}-{i}");
            netns::create(&ns)?;
            lab.namespaces.push(ns.clone());
            tuns.push(netns::open_tun_in(&ns)?);
            netns::configure(&ns, h.v4, h.v6)?;
            lab.hosts.push(LabHost {
                name: h.name.clone(),
                ns,
                v4: h.v4,
                v6: h.v6,
            });
        }
        let emu = Emulator::new(topo, tuns, shared, seed);
        let thread = std::thread::Builder::new()
            .name("lab-emulator".into())
            .spawn(move || emu.run())
            .map_err(|e| LabError::Emulator(e.to_string()))?;
        lab.thread = Some(thread);
        Ok(lab)
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Result<&LabHost> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::UnknownHost(name.into()))
    }

    /// `ip netns exec <host's namespace> program args...`, not started.
    pub fn command<I, S>(&self, host: &str, program: impl AsRef<OsStr>, args: I) -> Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let h = self.host(host)?;
        let mut c = Command::new("ip");
        c.arg("netns")
            .arg("exec")
            .arg(&h.ns)
            .arg(program)
            .args(args);
        Ok(c)
    }

    /// Starts `cmd` (from [`Lab::command`]) and keeps it: it is killed when the lab goes
    /// down. `ip netns exec` execs the program, so the child's pid is the program's.
    pub fn spawn(&self, label: &str, mut cmd: Command) -> Result<u32> {
        let child = cmd.spawn().map_err(|e| LabError::Command {
            command: format!("{cmd:?}"),
            detail: e.to_string(),
        })?;
        let pid = child.id();
        netns::register_pid(pid);
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((label.to_string(), child));
        Ok(pid)
    }

    /// Sends `signal` to the child started under `label`; with SIGKILL, also reaps it.
    pub fn signal_child(&self, label: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let pos = children
            .iter()
            .position(|(l, _)| l == label)
            .ok_or_else(|| LabError::UnknownHost(label.into()))?;
        let pid = children[pos].1.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).map_err(|e| {
            LabError::Command {
                command: format!("kill -{signal} {pid}"),
                detail: e.to_string(),
            }
        })?;
        if signal == nix::sys::signal::Signal::SIGKILL {
            let (_, mut child) = children.remove(pos);
            let _ = child.wait();
            netns::unregister_pid(pid);
        }
        Ok(())
    }

    /// Cuts a host off (every packet from or to it dropped) or reconnects it.
    pub fn set_cut(&self, host: &str, cut: bool) -> Result<()> {
        let i = self
            .topo
            .index(host)
            .ok_or_else(|| LabError::UnknownHost(host.into()))?;
        self.shared.cut[i].store(cut, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Stops everything now (what `Drop` does), reporting the first error.
    pub fn down(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        // Ask nicely, then insist.
        for (_, c) in &children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for (_, c) in &mut children {
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
            netns::unregister_pid(c.id());
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut first = Ok(());
        for ns in self.namespaces.drain(..) {
            if let Err(e) = netns::delete(&ns) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "lab teardown");
        }
    }
}
