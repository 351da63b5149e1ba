//! brindle-bgpd under test: its YAML file, the process in a namespace, and its status through
//! `brindlectl bgp peers|routes -o json`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::{all_routes, kernel_routes, wait_until, Lab, Proc};

/// One row of `brindlectl bgp peers -o json`.
#[derive(Clone, Debug, Deserialize)]
pub struct PeerStatus {
    pub address: String,
    pub asn: u32,
    pub state: String,
    #[serde(default)]
    pub since: serde_json::Value,
    #[serde(default)]
    pub info: Option<String>,
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub advertised: u64,
    #[serde(default)]
    pub peer_type: String,
}

/// One row of `brindlectl bgp routes -o json`.
#[derive(Clone, Debug, Deserialize)]
pub struct RouteStatus {
    pub prefix: String,
    pub next_hops: Vec<String>,
    pub source: String,
    pub as_path: Vec<u32>,
    pub best: bool,
    /// Why the route is not the best (empty for the best).
    #[serde(default)]
    pub reason: String,
}

/// What brindle-bgpd is configured with; rendered as its YAML file.
#[derive(Clone, Debug)]
pub struct BgpdSpec {
    pub router_id: IpAddr,
    pub asn: u32,
    pub listen: Option<String>,
    pub originate: Vec<String>,
    pub install_routes: bool,
    pub peers: Vec<BgpdPeer>,
    /// More top-level YAML, one `key: value` a line (`cluster_id: 10.0.0.1`).
    pub extra: Vec<String>,
}

/// One entry of `peers:`.
#[derive(Clone, Debug)]
pub struct BgpdPeer {
    pub address: IpAddr,
    pub asn: u32,
    pub passive: bool,
    pub multihop: Option<u8>,
    /// More YAML keys of this peer, one `key: value` a line (`rr_client: true`, `password: x`).
    pub extra: Vec<String>,
}

/// An active, directly connected peer.
pub fn peer(address: IpAddr, asn: u32) -> BgpdPeer {
    BgpdPeer {
        address,
        asn,
        passive: false,
        multihop: None,
        extra: Vec::new(),
    }
}

impl BgpdSpec {
    pub fn render(&self) -> String {
        let mut yaml = format!("router_id: {}\nasn: {}\n", self.router_id, self.asn);
        if let Some(listen) = &self.listen {
            let _ = writeln!(yaml, "listen: \"{listen}\"");
        }
        let _ = writeln!(yaml, "install_routes: {}", self.install_routes);
        yaml.push_str("originate:\n");
        for prefix in &self.originate {
            let _ = writeln!(yaml, "  - \"{prefix}\"");
        }
        if self.originate.is_empty() {
            yaml = yaml.replace("originate:\n", "originate: []\n");
        }
        yaml.push_str("peers:\n");
        for p in &self.peers {
            let _ = writeln!(
                yaml,
                "  - address: \"{}\"\n    asn: {}\n    passive: {}",
                p.address, p.asn, p.passive
            );
            if let Some(ttl) = p.multihop {
                let _ = writeln!(yaml, "    multihop: {ttl}");
            }
            for line in &p.extra {
                let _ = writeln!(yaml, "    {line}");
            }
        }
        if self.peers.is_empty() {
            yaml = yaml.replace("peers:\n", "peers: []\n");
        }
        for line in &self.extra {
            let _ = writeln!(yaml, "{line}");
        }
        yaml
    }
}

/// Where cargo built the binaries under test.
pub struct Binaries {
    pub bgpd: &'static str,
    pub ctl: &'static str,
}

/// brindle-bgpd in a namespace, its status socket in the lab directory.
pub struct Bgpd {
    pub ns: String,
    pub conf: PathBuf,
    pub socket: PathBuf,
    pub spec: BgpdSpec,
    bin: &'static str,
    ctl: &'static str,
    log: PathBuf,
    pub proc: Proc,
}

impl Bgpd {
    pub fn start(lab: &Lab, bins: &Binaries, ns: &str, spec: BgpdSpec) -> Bgpd {
        let conf = lab.path("bgpd.yaml");
        std::fs::write(&conf, spec.render()).expect("write bgpd.yaml");
        let socket = lab.path("bgpd.sock");
        let log = lab.path("bgpd.log");
        let proc = Bgpd::spawn(bins.bgpd, ns, &conf, &socket, &log);
        let mut bgpd = Bgpd {
            ns: ns.to_string(),
            conf,
            socket,
            spec,
            bin: bins.bgpd,
            ctl: bins.ctl,
            log,
            proc,
        };
        bgpd.wait_serving();
        bgpd
    }

    fn spawn(bin: &str, ns: &str, conf: &Path, socket: &Path, log: &Path) -> Proc {
        let (conf_s, socket_s) = (conf.display().to_string(), socket.display().to_string());
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,brindle_bgp=debug".into());
        Proc::spawn(
            "brindle-bgpd",
            ns,
            &[bin, "--config", &conf_s, "--status-socket", &socket_s],
            &[("RUST_LOG", &filter)],
            log.to_path_buf(),
        )
    }

    fn wait_serving(&mut self) {
        wait_until(
            "brindle-bgpd serves its status",
            Duration::from_secs(10),
            || {
                assert!(
                    self.proc.alive(),
                    "brindle-bgpd exited: {}",
                    self.proc.log_text()
                );
                self.peers().map(|_| ())
            },
        );
    }

    /// Kills bgpd with SIGKILL: no Cease, and its routes and status socket stay behind, as
    /// after a crash.
    pub fn crash(&mut self) {
        self.proc.signal("KILL");
        assert!(
            self.proc.wait_exit(Duration::from_secs(5)).is_some(),
            "brindle-bgpd survived SIGKILL"
        );
    }

    /// Starts bgpd again with the same file.
    pub fn restart(&mut self) {
        self.proc = Bgpd::spawn(self.bin, &self.ns, &self.conf, &self.socket, &self.log);
        self.wait_serving();
    }

    /// Rewrites the configuration file and sends SIGHUP.
    pub fn reload(&mut self, spec: BgpdSpec) {
        std::fs::write(&self.conf, spec.render()).expect("write bgpd.yaml");
        self.spec = spec;
        self.proc.signal("HUP");
    }

    fn ctl_json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, String> {
        let out = Command::new(self.ctl)
            .args(["bgp", what, "-o", "json", "--socket"])
            .arg(&self.socket)
            .output()
            .map_err(|e| format!("brindlectl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "brindlectl bgp {what}: {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_str(&stdout)
            .map_err(|e| format!("brindlectl bgp {what} JSON: {e}: {stdout}"))
    }

    /// `brindlectl bgp peers -o json`.
    pub fn peers(&self) -> Result<Vec<PeerStatus>, String> {
        self.ctl_json("peers")
    }

    /// `brindlectl bgp routes -o json`.
    pub fn routes(&self) -> Result<Vec<RouteStatus>, String> {
        self.ctl_json("routes")
    }

    /// The status row of one peer.
    pub fn peer(&self, address: IpAddr) -> Result<PeerStatus, String> {
        let peers = self.peers()?;
        peers
            .iter()
            .find(|p| p.address.parse::<IpAddr>().ok() == Some(address))
            .cloned()
            .ok_or_else(|| format!("{address} not in {peers:?}"))
    }

    /// Waits until the session with `address` is Established; its status row.
    pub fn wait_established(&self, address: IpAddr, limit: Duration) -> PeerStatus {
        wait_until(
            &format!("brindle-bgpd's session with {address} Established"),
            limit,
            || {
                let peer = self.peer(address)?;
                if peer.state == "Established" {
                    Ok(peer)
                } else {
                    Err(format!("{peer:?}"))
                }
            },
        )
    }

    /// Waits until `routes` shows (or no longer shows) a route for `prefix` from `source`
    /// ("local" or a peer's address); the route when present.
    pub fn wait_route(&self, prefix: &str, source: &str, present: bool) -> Option<RouteStatus> {
        wait_until(
            &format!("route {prefix} from {source} present={present} in brindlectl bgp routes"),
            Duration::from_secs(15),
            || {
                let routes = self.routes()?;
                let found = routes
                    .iter()
                    .find(|r| r.prefix == prefix && same_source(&r.source, source))
                    .cloned();
                match (found, present) {
                    (Some(r), true) => Ok(Some(r)),
                    (None, false) => Ok(None),
                    _ => Err(format!("{routes:#?}")),
                }
            },
        )
    }

    /// Waits until the kernel of bgpd's namespace holds (or no longer holds) a route for
    /// `prefix` with rtproto 98 whose `ip route` text contains every one of `expect`; the text.
    pub fn wait_kernel_route(&self, prefix: &str, expect: &[&str], present: bool) -> String {
        self.wait_kernel_route_within(prefix, expect, present, Duration::from_secs(15))
    }

    /// [`Bgpd::wait_kernel_route`] with another limit.
    pub fn wait_kernel_route_within(
        &self,
        prefix: &str,
        expect: &[&str],
        present: bool,
        limit: Duration,
    ) -> String {
        wait_until(
            &format!(
                "kernel route {prefix} {expect:?} present={present} in {}",
                self.ns
            ),
            limit,
            || {
                let text = kernel_routes(&self.ns, prefix);
                let matches = !text.trim().is_empty() && expect.iter().all(|e| text.contains(e));
                let gone = text.trim().is_empty();
                if (present && matches) || (!present && gone) {
                    Ok(text)
                } else {
                    let family = if prefix.contains(':') { "-6" } else { "-4" };
                    Err(format!(
                        "proto 98: {text:?}\nall routes:\n{}",
                        all_routes(&self.ns, family)
                    ))
                }
            },
        )
    }
}

fn same_source(shown: &str, wanted: &str) -> bool {
    match (shown.parse::<IpAddr>(), wanted.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => shown == wanted,
    }
}

/// Seconds since 1970 of a `since` as brindlectl prints it (`2026-11-23T08:04:05Z`).
pub fn since_secs(since: &serde_json::Value) -> Option<i64> {
    let s = since.as_str()?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}
