//! GoBGP: its TOML configuration, gobgpd in a namespace with its API on a Unix socket, and the
//! `gobgp` CLI to read and change its RIB.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{wait_until, Lab, Proc};

/// What a gobgpd instance is configured with.
#[derive(Clone, Debug)]
pub struct GobgpConfig {
    pub router_id: IpAddr,
    pub asn: u32,
    pub local: IpAddr,
    /// Neighbours: address and AS.
    pub peers: Vec<(IpAddr, u32)>,
    pub hold_time: u16,
    /// TOML added to every neighbour's section, e.g. its graceful-restart settings.
    pub neighbor_extra: String,
}

impl GobgpConfig {
    pub fn render(&self) -> String {
        let mut conf = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  local-address-list = [\"{}\"]\n",
            self.asn, self.router_id, self.local
        );
        for (address, asn) in &self.peers {
            let family = if address.is_ipv4() {
                "ipv4-unicast"
            } else {
                "ipv6-unicast"
            };
            let _ = write!(
                conf,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{address}\"\n    \
                 peer-as = {asn}\n  [neighbors.timers.config]\n    connect-retry = 1\n    \
                 hold-time = {hold}\n    keepalive-interval = {keepalive}\n  \
                 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
                 afi-safi-name = \"{family}\"\n{extra}",
                extra = self.neighbor_extra,
                hold = self.hold_time,
                keepalive = (self.hold_time / 3).max(1),
            );
        }
        conf
    }
}

/// A gobgpd in a namespace; its API on a Unix socket in the lab directory so that the `gobgp`
/// CLI runs from the test's own namespace.
pub struct Gobgp {
    pub api: String,
    pub proc: Proc,
    conf: PathBuf,
    ns: String,
}

impl Gobgp {
    pub fn start(lab: &Lab, name: &str, ns: &str, config: &GobgpConfig) -> Gobgp {
        let conf = lab.path(&format!("{name}.toml"));
        std::fs::write(&conf, config.render()).expect("write gobgp.toml");
        let api = format!("unix://{}", lab.path(&format!("{name}.sock")).display());
        let log = lab.path(&format!("{name}.log"));
        let proc = Gobgp::spawn(name, ns, &conf, &api, log);
        Gobgp {
            api,
            proc,
            conf,
            ns: ns.to_string(),
        }
    }

    fn spawn(name: &str, ns: &str, conf: &Path, api: &str, log: PathBuf) -> Proc {
        let conf_s = conf.display().to_string();
        let proc = Proc::spawn(
            name,
            ns,
            &[
                "gobgpd",
                "-f",
                &conf_s,
                "--api-hosts",
                api,
                "--pprof-disable",
                "-p",
            ],
            &[],
            log,
        );
        wait_until(
            &format!("{name} answers gobgp"),
            Duration::from_secs(10),
            || gobgp_cli(api, &["global"]).map(|_| ()),
        );
        proc
    }

    /// Kills gobgpd and starts it again with the same configuration (its RIB starts empty).
    pub fn restart(&mut self) {
        let log = self.proc.log.clone();
        let name = self.proc.name.clone();
        self.proc.kill();
        // gobgpd does not remove its API socket when killed.
        let _ = std::fs::remove_file(self.api.trim_start_matches("unix://"));
        self.proc = Gobgp::spawn(&name, &self.ns, &self.conf, &self.api, log);
    }

    /// Runs the `gobgp` CLI against this daemon; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        gobgp_cli(&self.api, args).unwrap_or_else(|e| panic!("gobgp {args:?}: {e}"))
    }

    /// The global RIB of one family ("ipv4" or "ipv6") as `prefix -> paths`.
    pub fn rib(&self, family: &str) -> serde_json::Map<String, serde_json::Value> {
        let out = self.cli(&["global", "rib", "-a", family, "-j"]);
        if out.trim().is_empty() || out.trim() == "null" {
            return serde_json::Map::new();
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("gobgp rib JSON {out:?}: {e}"))
    }

    /// The session state with `neighbor` as `gobgp neighbor` reports it ("established", ...).
    pub fn neighbor_state(&self, neighbor: &str) -> String {
        let out = gobgp_cli(&self.api, &["neighbor", neighbor, "-j"]).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| {
                v.pointer("/state/session_state")
                    .map(|s| s.to_string().trim_matches('"').to_string())
            })
            .unwrap_or_else(|| format!("? {out}"))
    }
}

fn gobgp_cli(api: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("gobgp")
        .args(["--target", api])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The path attributes of GoBGP's JSON for one path, by type code (1 ORIGIN, 2 AS_PATH,
/// 3 NEXT_HOP, 5 LOCAL_PREF, 14 MP_REACH_NLRI).
pub fn gobgp_attr(path: &serde_json::Value, code: u64) -> Option<&serde_json::Value> {
    path.get("attrs")?
        .as_array()?
        .iter()
        .find(|a| a.get("type").and_then(serde_json::Value::as_u64) == Some(code))
}
