//! The lab the interop scenarios run in: network namespaces joined by veth pairs, and the
//! routers started inside them as real processes (brindle-bgpd, BIRD 2, GoBGP), each with its
//! configuration generated into the lab's temporary directory.
//!
//! ```text
//!   Lab ── Netns "bgi-<pid>-<n>-<role>" (deleted on drop)
//!       └─ Link: veth pair between two namespaces, 10.0.<k>.1/24 + fd00:0:<k>::1/64 on the
//!          first end, .2 / ::2 on the second
//!   Proc ── a child process (SIGCONT + SIGKILL + wait on drop; its log printed when the test
//!           panics)
//! ```
//!
//! The routers have a module each: `bird` (BIRD 2 and `birdc`), `gobgp` (gobgpd and the `gobgp`
//! CLI), `bgpd` (brindle-bgpd and `brindlectl bgp ... -o json`).
//!
//! Addresses repeat between labs: each lab has its own namespaces, so tests run in parallel.
//! Locals drop in reverse order, so a test that creates the `Lab` first has its routers killed
//! before the namespaces go.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod bgpd;
mod bird;
mod gobgp;

pub use bgpd::*;
pub use bird::*;
pub use gobgp::*;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Whether the scenario can run here: root and the given programs. Without them it is skipped
/// with a notice, unless `CI` is set, where it fails.
pub fn can_run(test: &str, programs: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("needs {}", missing.join(", "))
    } else {
        "needs root".to_string()
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} {why} (CI is set, so not skipping)"
    );
    eprintln!("skipped: {test} {why}");
    false
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Polls `probe` every 100 ms until it returns `Ok`, or panics after `limit` with what it last
/// returned as `Err`.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not reached within {limit:?}; last seen:\n{last}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so the pairs.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair between two namespaces, with the addresses of each end.
#[derive(Clone, Debug)]
pub struct Link {
    pub a: (String, IpAddr, IpAddr),
    pub b: (String, IpAddr, IpAddr),
}

impl Link {
    /// The IPv4 address of the first end.
    pub fn a4(&self) -> IpAddr {
        self.a.1
    }
    pub fn a6(&self) -> IpAddr {
        self.a.2
    }
    pub fn b4(&self) -> IpAddr {
        self.b.1
    }
    pub fn b6(&self) -> IpAddr {
        self.b.2
    }
}

/// The namespaces and files of one scenario.
pub struct Lab {
    pub dir: PathBuf,
    id: String,
    links: u32,
    namespaces: Vec<Netns>,
}

impl Lab {
    pub fn new() -> Lab {
        static REAP: std::sync::Once = std::sync::Once::new();
        REAP.call_once(reap_abandoned_labs);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("bgi-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab temp dir");
        Lab {
            dir,
            id,
            links: 0,
            namespaces: Vec::new(),
        }
    }

    /// Creates a namespace for `role` with its loopback up; returns its name.
    pub fn netns(&mut self, role: &str) -> String {
        let name = format!("bgi-{}-{role}", self.id);
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(Netns { name: name.clone() });
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Joins two namespaces with a veth pair: 10.0.k.1/24 and fd00:0:k::1/64 in `a`, .2 and ::2
    /// in `b` (k counts the lab's links from 1). IPv6 addresses skip duplicate detection so they
    /// are usable at once.
    pub fn link(&mut self, a: &str, b: &str) -> Link {
        self.links += 1;
        let k = self.links;
        // Interface names are at most 15 bytes; these only need to be unique inside each
        // namespace, but are created under unique names anyway.
        let tag = NEXT_LAB.fetch_add(1, Ordering::SeqCst) % 10_000;
        let pid = std::process::id() % 100_000;
        let (da, db) = (format!("v{pid}x{tag}a"), format!("v{pid}x{tag}b"));
        run(
            "ip",
            &[
                "link", "add", &da, "netns", a, "type", "veth", "peer", "name", &db, "netns", b,
            ],
        );
        let mut ends = Vec::new();
        for (ns, dev, host) in [(a, &da, 1), (b, &db, 2)] {
            let v4: IpAddr = format!("10.0.{k}.{host}").parse().expect("v4");
            let v6: IpAddr = format!("fd00:0:{k}::{host}").parse().expect("v6");
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            );
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            ends.push((ns.to_string(), v4, v6));
        }
        let b = ends.pop().expect("two ends");
        let a = ends.pop().expect("two ends");
        Link { a, b }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.namespaces.clear();
        if std::env::var_os("BRINDLE_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lab files kept in {}", self.dir.display());
        }
    }
}

/// Removes what a test process killed before its guards ran (SIGKILL, a timeout) left behind:
/// namespaces `bgi-<pid>-...` of a pid that no longer runs, the routers still inside them, and
/// their `/tmp/bgi-<pid>-...` directories.
fn reap_abandoned_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("bgi-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pids = Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for router in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", router]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        if let Some(id) = name.strip_prefix("bgi-") {
            // bgi-<pid>-<n>-<role> in /run/netns, bgi-<pid>-<n> in /tmp.
            let dir: Vec<&str> = id.splitn(3, '-').take(2).collect();
            let _ = std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("bgi-{}", dir.join("-"))),
            );
        }
    }
}

/// A router process; killed (after a SIGCONT, in case a test stopped it) and reaped on drop.
/// When the test is panicking, its log is printed.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `argv` inside `ns` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, ns: &str, argv: &[&str], env: &[(&str, &str)], log: PathBuf) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = file.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({argv:?}): {e}"));
        Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (HUP, STOP, CONT, TERM, KILL).
    pub fn signal(&self, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.pid().to_string()]);
    }

    /// Stops the process with SIGSTOP and returns once every one of its threads is stopped.
    /// kill(2) only queues a stop: the other threads of a multi-threaded process keep running
    /// until one of them takes the signal, which can take milliseconds on a busy machine.
    pub fn freeze(&self) {
        self.signal("STOP");
        let tasks = format!("/proc/{}/task", self.pid());
        wait_until(
            &format!("every thread of {} stopped", self.name),
            Duration::from_secs(5),
            || {
                let dir = std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?;
                for task in dir.flatten() {
                    let stat =
                        std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    // The state follows the command name in parentheses: "T" when stopped.
                    let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
                    if state != Some('T') {
                        return Err(format!("{}: {state:?}", task.path().display()));
                    }
                }
                Ok(())
            },
        );
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code().or(Some(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills and reaps the process now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            let mut out = String::new();
            for line in tail.iter().rev() {
                let _ = writeln!(out, "  {line}");
            }
            eprintln!("---- {} log ({}):\n{out}", self.name, self.log.display());
        }
    }
}

/// Kernel routes of `ns` with Brindle's rtproto (98) for `prefix`: the `ip route` lines, empty
/// when there is none.
pub fn kernel_routes(ns: &str, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    run(
        "ip",
        &[
            "-n", ns, family, "route", "show", "proto", "98", "exact", prefix,
        ],
    )
}

/// All of `ns`'s routes in one family, for messages.
pub fn all_routes(ns: &str, family: &str) -> String {
    run("ip", &["-n", ns, family, "route", "show"])
}
