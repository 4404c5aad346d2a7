//! A daemon under test: a child process whose stdout and stderr are read line by line on
//! their own threads, killed when dropped. Tests wait for the line that says where it
//! listens (`listening on ADDR`) instead of sleeping.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A spawned process with its output lines; killed and reaped on drop.
pub struct Daemon {
    name: String,
    child: Child,
    stdout: Mutex<Receiver<String>>,
    /// None when the lines are echoed ([`Daemon::spawn_echoing`]).
    stderr: Option<Mutex<Receiver<String>>>,
}

impl Daemon {
    /// Spawns `cmd` with stdin closed and stdout/stderr piped; its stderr lines are kept for
    /// [`Daemon::stderr_until`]. `name` labels panics.
    #[track_caller]
    pub fn spawn(name: &str, cmd: &mut Command) -> Daemon {
        Daemon::start(name, cmd, false)
    }

    /// As [`Daemon::spawn`], but its stderr lines are copied to this process's stderr as
    /// `[name] line` (a failing test's reader sees the daemon's log) and not kept.
    #[track_caller]
    pub fn spawn_echoing(name: &str, cmd: &mut Command) -> Daemon {
        Daemon::start(name, cmd, true)
    }

    #[track_caller]
    fn start(name: &str, cmd: &mut Command, echo: bool) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let err = child.stderr.take().expect("piped stderr");
        let stderr = if echo {
            let label = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("[{label}] {line}");
                }
            });
            None
        } else {
            Some(Mutex::new(lines(err)))
        };
        Daemon {
            name: name.to_string(),
            child,
            stdout: Mutex::new(stdout),
            stderr,
        }
    }

    /// The rest (trimmed) of the next stdout line that starts with `prefix`; earlier lines
    /// are passed over. Panics if none comes `within` or the process closes its stdout.
    #[track_caller]
    pub fn stdout_after(&self, prefix: &str, within: Duration) -> String {
        let rx = self.stdout.lock().unwrap();
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => panic!(
                    "{} printed no stdout line starting with {prefix:?} within {within:?} ({e})",
                    self.name
                ),
            }
        }
    }

    /// The stderr lines from the last one read up to the first that contains `needle`
    /// (included). Panics if none comes `within`.
    #[track_caller]
    pub fn stderr_until(&self, needle: &str, within: Duration) -> Vec<String> {
        let rx = self
            .stderr
            .as_ref()
            .expect("stderr_until on a Daemon started with spawn_echoing")
            .lock()
            .unwrap();
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains(needle);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!(
                    "{} wrote no stderr line containing {needle:?} within {within:?} ({e}); it wrote: {seen:#?}",
                    self.name
                ),
            }
        }
    }

    /// The process, to signal it or wait for its exit.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
