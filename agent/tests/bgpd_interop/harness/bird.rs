//! BIRD 2: its configuration, the daemon in a namespace, and `birdc` to read its RIB.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ipnet::IpNet;

use super::{wait_until, Lab, Proc};

/// What a BIRD instance is configured with.
#[derive(Clone, Debug)]
pub struct BirdConfig {
    pub router_id: IpAddr,
    pub asn: u32,
    /// Neighbours: local address, neighbour address, neighbour AS.
    pub peers: Vec<(IpAddr, IpAddr, u32)>,
    /// Blackhole routes exported to every neighbour.
    pub statics: Vec<IpNet>,
    pub hold_time: u16,
    pub passive: bool,
    /// Filter statements run on every exported static route before it is accepted, e.g.
    /// `bgp_community.add((65002, 100));`.
    pub export_actions: String,
    /// Options added to every `protocol bgp` block, e.g. `multihop 2;`.
    pub protocol_extra: String,
    /// More configuration after the protocols, e.g. a `protocol kernel`.
    pub global_extra: String,
}

impl BirdConfig {
    pub fn render(&self, log: &Path) -> String {
        let mut conf = format!(
            "log \"{}\" all;\nrouter id {};\nprotocol device {{ scan time 1; }}\n",
            log.display(),
            self.router_id
        );
        let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
            self.statics.iter().partition(|p| matches!(p, IpNet::V4(_)));
        for (name, channel, routes) in [("static4", "ipv4", v4), ("static6", "ipv6", v6)] {
            let _ = writeln!(conf, "protocol static {name} {{\n  {channel};");
            for r in routes {
                let _ = writeln!(conf, "  route {r} blackhole;");
            }
            conf.push_str("}\n");
        }
        // Hold time 0 means no KEEPALIVEs at all (RFC 4271 §4.2); BIRD then takes no
        // keepalive time.
        let keepalive = match self.hold_time {
            0 => String::new(),
            hold => format!("keepalive time {};", (hold / 3).max(1)),
        };
        for (i, (local, neighbor, asn)) in self.peers.iter().enumerate() {
            let channel = if neighbor.is_ipv4() { "ipv4" } else { "ipv6" };
            let _ = write!(
                conf,
                "protocol bgp peer{i} {{\n  local {local} as {asn_self};\n  neighbor {neighbor} as {asn};\n  \
                 passive {passive};\n  hold time {hold};\n  {keepalive}\n  \
                 connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 2;\n  \
                 debug {{ states, events, packets }};\n  {extra}\n  \
                 {channel} {{ import all; export filter {{ if source = RTS_STATIC then {{ \
                 {actions} accept; }} reject; }}; }};\n}}\n",
                actions = self.export_actions,
                extra = self.protocol_extra,
                asn_self = self.asn,
                passive = if self.passive { "on" } else { "off" },
                hold = self.hold_time,
            );
        }
        conf.push_str(&self.global_extra);
        conf
    }
}

/// A BIRD 2 daemon in a namespace, with its control socket in the lab directory.
pub struct Bird {
    pub ns: String,
    pub ctl: PathBuf,
    pub conf_path: PathBuf,
    pub config: BirdConfig,
    log: PathBuf,
    name: String,
    pub proc: Proc,
}

impl Bird {
    pub fn start(lab: &Lab, name: &str, ns: &str, config: BirdConfig) -> Bird {
        let conf_path = lab.path(&format!("{name}.conf"));
        let log = lab.path(&format!("{name}.log"));
        std::fs::write(&conf_path, config.render(&log)).expect("write bird.conf");
        let ctl = lab.path(&format!("{name}.ctl"));
        let proc = Bird::spawn(name, ns, &conf_path, &ctl, &log);
        Bird {
            ns: ns.to_string(),
            ctl,
            conf_path,
            config,
            log,
            name: name.to_string(),
            proc,
        }
    }

    fn spawn(name: &str, ns: &str, conf: &Path, ctl: &Path, log: &Path) -> Proc {
        let (conf_s, ctl_s) = (conf.display().to_string(), ctl.display().to_string());
        let mut proc = Proc::spawn(
            name,
            ns,
            &["bird", "-f", "-c", &conf_s, "-s", &ctl_s],
            &[],
            log.to_path_buf(),
        );
        wait_until(
            &format!("{name} answers birdc"),
            Duration::from_secs(10),
            || {
                assert!(proc.alive(), "{name} exited: {}", proc.log_text());
                birdc(ctl, &["show", "status"]).ok_or_else(|| "no answer".to_string())
            },
        );
        proc
    }

    /// Kills BIRD (SIGKILL: no NOTIFICATION) and starts it again with the same configuration.
    pub fn restart(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_file(&self.ctl);
        self.proc = Bird::spawn(&self.name, &self.ns, &self.conf_path, &self.ctl, &self.log);
    }

    /// Writes a new configuration and has BIRD apply it (`birdc configure`).
    pub fn reconfigure(&mut self, config: BirdConfig) {
        std::fs::write(&self.conf_path, config.render(&self.log)).expect("write bird.conf");
        self.config = config;
        let out = birdc(&self.ctl, &["configure"]).unwrap_or_default();
        assert!(out.contains("Reconfigured"), "birdc configure: {out}");
    }

    /// `show route <prefix> all`: the text when BIRD has the route, else Err with what it said.
    pub fn route(&self, prefix: &str) -> Result<String, String> {
        let out = birdc(&self.ctl, &["show", "route", prefix, "all"]).unwrap_or_default();
        let found = out.lines().any(|l| l.starts_with(&format!("{prefix} ")));
        if found {
            Ok(out)
        } else {
            Err(out)
        }
    }

    /// The state of protocol `peer<i>` as `show protocols` prints it ("Established", "Active").
    pub fn peer_state(&self, i: usize) -> String {
        let out = birdc(&self.ctl, &["show", "protocols", &format!("peer{i}")]).unwrap_or_default();
        out.lines()
            .find(|l| l.starts_with(&format!("peer{i} ")))
            .and_then(|l| l.split_whitespace().nth(5))
            .unwrap_or("?")
            .to_string()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `birdc -s ctl args...`; None if BIRD did not answer.
pub fn birdc(ctl: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(ctl)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
