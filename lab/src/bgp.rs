//! BGP in the lab: agents in `--routing bgp`, Node and BGPPeer resources, and top-of-rack
//! routers (BIRD 2) for the rack topology.
//!
//! Racks ([`Routing::BgpRacks`]): each L2 segment is a rack whose ToR is a BIRD in its own
//! namespace, holding the rack's gateway address `10.99.<rack>.1` on the rack's bridge (the
//! fabric namespace then only bridges, it routes nothing). The two ToRs are joined by a
//! point-to-point link (`10.98.0.0/31`) and peer over eBGP. Rack `r`'s ToR is AS `65100 + r`,
//! its nodes AS `65000 + r`; nodes peer only with their ToR (a BGPPeer per rack, selected by
//! the node label `rack`), the ToR sends them a default route and the other rack's blocks.
//! The nodes have no default route of their own: what they reach, they reach through BGP.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{in_ns, ip, tail};

/// How the lab's nodes route to each other.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Routing {
    /// From the datastore (brindle-node's default).
    #[default]
    Static,
    /// `--routing bgp`: the node-to-node mesh unless the resources say otherwise.
    Bgp,
    /// `--routing bgp` with a BIRD ToR per segment (see the module docs).
    BgpRacks,
}

impl Routing {
    pub fn is_bgp(&self) -> bool {
        !matches!(self, Routing::Static)
    }
}

/// The AS of rack `r`'s ToR.
pub fn tor_asn(rack: usize) -> u32 {
    65100 + rack as u32
}

/// The AS of rack `r`'s nodes.
pub fn rack_node_asn(rack: usize) -> u32 {
    65000 + rack as u32
}

/// A running ToR.
pub struct Tor {
    pub rack: usize,
    pub netns: String,
    pub ctl: PathBuf,
    pub conf: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Tor {
    /// `birdc show route [args]` on this ToR.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .context("running birdc")?;
        if !out.status.success() {
            bail!(
                "birdc {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether BIRD 2 is installed.
pub fn bird_available() -> bool {
    Path::new("/usr/sbin/bird").exists()
        && Command::new("sh")
            .args(["-c", "command -v birdc"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// BIRD's configuration for rack `rack`'s ToR with the rack's node addresses.
pub fn tor_config(rack: usize, nodes: &[String]) -> String {
    let me = format!("10.99.{rack}.1");
    let p2p_me = format!("10.98.0.{rack}");
    let p2p_other = format!("10.98.0.{}", 1 - rack.min(1));
    let mut conf = format!(
        r#"log stderr all;
router id {me};
protocol device {{ scan time 2; }}
protocol direct {{ ipv4; interface "*"; }}
protocol kernel {{
  ipv4 {{ import none; export where source = RTS_BGP; }};
  merge paths on;
}}
# The default route the rack's nodes learn: this router is their way out.
protocol static default_route {{ ipv4; route 0.0.0.0/0 blackhole; }}
filter to_nodes {{
  if net = 0.0.0.0/0 || source = RTS_BGP then accept;
  reject;
}}
protocol bgp other_tor {{
  local {p2p_me} as {my_as};
  neighbor {p2p_other} as {other_as};
  hold time 9;
  ipv4 {{ import all; export where source = RTS_BGP; }};
}}
"#,
        my_as = tor_asn(rack),
        other_as = tor_asn(1 - rack.min(1)),
    );
    for (i, node) in nodes.iter().enumerate() {
        conf.push_str(&format!(
            r#"protocol bgp node{i} {{
  local {me} as {my_as};
  neighbor {node} as {node_as};
  hold time 9;
  connect retry time 2;
  ipv4 {{ import all; export filter to_nodes; }};
}}
"#,
            my_as = tor_asn(rack),
            node_as = rack_node_asn(rack),
        ));
    }
    conf
}

/// Creates the ToR namespaces, their links and their BIRDs. `fabric` holds the bridges
/// `br0`, `br1`; `prefix` names the namespaces; `dir` receives configurations and logs.
pub fn start_tors(
    fabric: &str,
    prefix: &str,
    dir: &Path,
    rack_nodes: &[Vec<String>],
    add_netns: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<Vec<Tor>> {
    let mut tors = Vec::new();
    let names: Vec<String> = (0..rack_nodes.len())
        .map(|r| format!("{prefix}-tor{r}"))
        .collect();
    for (rack, netns) in names.iter().enumerate() {
        add_netns(netns)?;
        in_ns(netns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        ip(&[
            "-n",
            fabric,
            "link",
            "add",
            &format!("tor{rack}"),
            "type",
            "veth",
            "peer",
            "name",
            "rack",
            "netns",
            netns,
        ])?;
        in_ns(
            fabric,
            "ip",
            &[
                "link",
                "set",
                &format!("tor{rack}"),
                "master",
                &format!("br{rack}"),
                "up",
            ],
        )?;
        in_ns(
            netns,
            "ip",
            &["addr", "add", &format!("10.99.{rack}.1/24"), "dev", "rack"],
        )?;
        in_ns(netns, "ip", &["link", "set", "rack", "up"])?;
    }
    if names.len() == 2 {
        ip(&[
            "-n", &names[0], "link", "add", "p2p", "type", "veth", "peer", "name", "p2p", "netns",
            &names[1],
        ])?;
        for (rack, netns) in names.iter().enumerate() {
            in_ns(
                netns,
                "ip",
                &["addr", "add", &format!("10.98.0.{rack}/31"), "dev", "p2p"],
            )?;
            in_ns(netns, "ip", &["link", "set", "p2p", "up"])?;
        }
    }
    for (rack, netns) in names.iter().enumerate() {
        let conf = dir.join(format!("tor{rack}.conf"));
        let ctl = dir.join(format!("tor{rack}.ctl"));
        let log = dir.join(format!("tor{rack}.log"));
        fs::write(&conf, tor_config(rack, &rack_nodes[rack]))?;
        let logf = fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "/usr/sbin/bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("starting BIRD (Debian package bird2)")?;
        let tor = Tor {
            rack,
            netns: netns.clone(),
            ctl,
            conf,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tor.birdc(&["show", "status"]).is_err() {
            if Instant::now() > deadline {
                bail!("BIRD on {netns} does not answer:\n{}", tail(&tor.log, 20));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tors.push(tor);
    }
    Ok(tors)
}

/// The YAML of the rack topology's resources: each node's Node (label `rack`, the rack's AS),
/// the mesh off, and a BGPPeer per rack to its ToR.
pub fn rack_resources(node_racks: &[(String, usize)], racks: usize) -> String {
    let mut docs = vec![
        "apiVersion: brindle.dev/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n".to_string(),
    ];
    for (name, rack) in node_racks {
        docs.push(format!(
            "apiVersion: brindle.dev/v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    rack: r{rack}\nspec:\n  bgp:\n    asNumber: {}\n",
            rack_node_asn(*rack)
        ));
    }
    for rack in 0..racks {
        docs.push(format!(
            "apiVersion: brindle.dev/v1\nkind: BGPPeer\nmetadata:\n  name: tor-r{rack}\nspec:\n  nodeSelector: rack == 'r{rack}'\n  peerIP: 10.99.{rack}.1\n  asNumber: {}\n",
            tor_asn(rack)
        ));
    }
    docs.join("---\n")
}
