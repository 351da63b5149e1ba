//! What the cluster does with packets: routes, pings between pods, interface and router
//! counters, continuous pings.

use crate::*;

impl Cluster {
    /// Brindle's routes (proto 98) of node `i`, IPv4 then IPv6, as `ip route` prints them.
    pub fn routes(&self, i: usize) -> Result<String> {
        let netns = &self.nodes[i].netns;
        let v4 = ip(&["-n", netns, "route", "show", "proto", "98"])?;
        let v6 = ip(&["-n", netns, "-6", "route", "show", "proto", "98"])?;
        Ok(v4 + &v6)
    }

    /// Waits until every node has a route for every other node's blocks and a blackhole for its own.
    pub fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let blocks = self.ctl(&["get", "ipamblocks", "-o", "json"])?;
            let blocks: serde_json::Value = serde_json::from_str(&blocks)?;
            let mut missing = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                let routes = self.routes(i)?;
                for block in blocks["items"].as_array().into_iter().flatten() {
                    let cidr = block["spec"]["cidr"].as_str().unwrap_or_default();
                    let owner = block["spec"]["affinity"].as_str().unwrap_or_default();
                    // Unencapsulated, a node behind the router is the network's business.
                    let behind_router = self.spec.encap == Encap::Never
                        && self.nodes.iter().enumerate().any(|(j, n)| {
                            owner == format!("host:{}", n.name)
                                && self.segment_of(j) != self.segment_of(i)
                        });
                    let own = owner == format!("host:{}", node.name);
                    // A node's own blocks are blackholed (pod routes are more specific).
                    if own
                        && !routes
                            .lines()
                            .any(|l| l.starts_with(&format!("blackhole {cidr} ")))
                    {
                        missing.push(format!("{}: blackhole {cidr}", node.name));
                    }
                    if !own
                        && !behind_router
                        && !routes.lines().any(|l| l.starts_with(&format!("{cidr} ")))
                    {
                        missing.push(format!("{}: {cidr}", node.name));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("routes missing after {timeout:?}: {}", missing.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `from` reaches `to_ip`, IPv4 or IPv6 (a few tries, for convergence).
    pub fn ping(&self, from: &Pod, to_ip: &str, tries: u32) -> bool {
        (0..tries).any(|_| in_ns(&from.netns, "ping", &["-c", "1", "-W", "1", "-q", to_ip]).is_ok())
    }

    /// Pings every pod's IPv6 address from every pod with one; (from, to) -> reached.
    pub fn ping6_matrix(&self) -> Result<BTreeMap<(String, String), bool>> {
        let mut out = BTreeMap::new();
        for from in self.pods.iter().filter(|p| p.ip6.is_some()) {
            for to in &self.pods {
                check_interrupted()?;
                if let (true, Some(ip6)) = (from.name != to.name, &to.ip6) {
                    out.insert(
                        (from.name.clone(), to.name.clone()),
                        self.ping(from, ip6, 3),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Pings every pod from every pod; returns the matrix (from, to) -> reached.
    pub fn ping_matrix(&self) -> Result<BTreeMap<(String, String), bool>> {
        let mut out = BTreeMap::new();
        for from in &self.pods {
            for to in &self.pods {
                check_interrupted()?;
                if from.name != to.name {
                    out.insert(
                        (from.name.clone(), to.name.clone()),
                        self.ping(from, &to.ip, 3),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Packets sent through node `i`'s `vxlan.brindle` device.
    pub fn vxlan_tx_packets(&self, i: usize) -> Result<u64> {
        self.tx_packets(i, "vxlan.brindle")
    }

    /// Device `dev` of node `i` in one line: `mtu 1480, up, addresses 10.244.3.0/32`.
    pub fn link_summary(&self, i: usize, dev: &str) -> Result<String> {
        let out = ip(&["-n", &self.nodes[i].netns, "-j", "addr", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let link = &v[0];
        let up = link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        let addrs: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect();
        Ok(format!(
            "mtu {}, {}, addresses {}",
            link["mtu"],
            if up { "up" } else { "down" },
            if addrs.is_empty() {
                "none".to_string()
            } else {
                addrs.join(" ")
            }
        ))
    }

    /// Packets sent through device `dev` of node `i`.
    pub fn tx_packets(&self, i: usize, dev: &str) -> Result<u64> {
        let out = ip(&["-n", &self.nodes[i].netns, "-s", "-j", "link", "show", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .ok_or_else(|| anyhow!("no tx counter for {dev} on {}", self.nodes[i].name))
    }

    /// Gives the fabric router a static route to every node's blocks, via that node (flannel's
    /// host-gw, or what a ToR learns over BGP): what pod traffic between segments needs when
    /// it is not encapsulated.
    pub fn route_blocks_via_router(&self) -> Result<()> {
        let blocks = self.ctl(&["get", "ipamblocks", "-o", "json"])?;
        let blocks: serde_json::Value = serde_json::from_str(&blocks)?;
        for block in blocks["items"].as_array().into_iter().flatten() {
            let cidr = block["spec"]["cidr"].as_str().unwrap_or_default();
            let owner = block["spec"]["affinity"].as_str().unwrap_or_default();
            if let Some(node) = self
                .nodes
                .iter()
                .find(|n| owner == format!("host:{}", n.name))
            {
                in_ns(
                    &self.fabric,
                    "ip",
                    &["route", "replace", cidr, "via", &node.ip],
                )?;
            }
        }
        Ok(())
    }

    /// Starts counting, on the fabric router, the packets it routes between two of its
    /// interfaces (segments, outside): VXLAN packets, and unencapsulated packets from `pool`.
    /// Read with [`Cluster::router_counters`].
    pub fn count_routed(&self, pool: &str) -> Result<()> {
        // Only routed packets: with br_netfilter loaded, bridged ones pass this hook too.
        let routed = r#"iifname . oifname { "br0" . "br1", "br1" . "br0", "br0" . "out0", "out0" . "br0", "br1" . "out0", "out0" . "br1" }"#;
        let script = format!(
            r#"table ip lab-wire {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        {routed} udp dport 4789 counter comment "vxlan"
        {routed} ip saddr {pool} counter comment "pods"
    }}
}}
"#
        );
        nft_script(&self.fabric, &script)
    }

    /// (VXLAN packets, unencapsulated pod packets) the router has routed since
    /// [`Cluster::count_routed`].
    pub fn router_counters(&self) -> Result<(u64, u64)> {
        let out = in_ns(&self.fabric, "nft", &["list", "table", "ip", "lab-wire"])?;
        Ok((counter(&out, "vxlan")?, counter(&out, "pods")?))
    }

    /// Starts recording the source address of every ping request (ICMP and ICMPv6) arriving
    /// in namespace `ns` (what a server there sees). Read with [`Cluster::ping_sources`].
    pub fn record_ping_sources(&self, ns: &str) -> Result<()> {
        let script = r#"table ip lab-seen {
    set sources { type ipv4_addr; flags dynamic; size 1024; }
    chain input {
        type filter hook input priority 0; policy accept;
        icmp type echo-request add @sources { ip saddr }
    }
}
table ip6 lab-seen {
    set sources { type ipv6_addr; flags dynamic; size 1024; }
    chain input {
        type filter hook input priority 0; policy accept;
        icmpv6 type echo-request add @sources { ip6 saddr }
    }
}
"#;
        nft_script(ns, script)
    }

    /// The sources recorded by [`Cluster::record_ping_sources`] in `ns` (IPv4 first, then
    /// IPv6), and forgets them.
    pub fn ping_sources(&self, ns: &str) -> Result<Vec<String>> {
        let mut sources = Vec::new();
        for family in ["ip", "ip6"] {
            let out = in_ns(ns, "nft", &["list", "set", family, "lab-seen", "sources"])?;
            in_ns(ns, "nft", &["flush", "set", family, "lab-seen", "sources"])?;
            let Some(start) = out.find("elements = {") else {
                continue;
            };
            let rest = &out[start + "elements = {".len()..];
            let end = rest.find('}').unwrap_or(rest.len());
            sources.extend(
                rest[..end]
                    .split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty()),
            );
        }
        Ok(sources)
    }

    /// Pings `to_ip` from `from` every `interval` until stopped; for reachability while
    /// something changes.
    pub fn ping_continuously(&self, from: &Pod, to_ip: &str, interval: Duration) -> Result<Pinger> {
        // Every reply is a line: into a file, not a pipe nobody reads until the stop, which
        // would fill (64 KiB, some 20 s of pings) and block ping.
        static PINGERS: AtomicU32 = AtomicU32::new(0);
        let output = self.dir.join(format!(
            "ping-{}-{}.txt",
            from.name,
            PINGERS.fetch_add(1, Ordering::Relaxed)
        ));
        let file =
            fs::File::create(&output).with_context(|| format!("creating {}", output.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &from.netns, "ping", "-n", "-D"])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .args(["-W", "1", to_ip])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Pinger {
            child: Some(child),
            interval,
            output,
        })
    }
}

/// A running `ping` ([`Cluster::ping_continuously`]); killed on drop.
pub struct Pinger {
    child: Option<Child>,
    interval: Duration,
    /// Where ping writes its replies and summary.
    output: PathBuf,
}

/// How long before the stop an unanswered echo may have been sent and still be forgiven as in
/// flight rather than lost.
const IN_FLIGHT: Duration = Duration::from_millis(200);

impl Pinger {
    /// Stops the ping (SIGINT, so it prints its summary); returns (sent, received).
    ///
    /// SIGINT ends ping at once, without waiting for the replies in flight, so the echoes
    /// still unanswered at the end are not counted as sent when they are no more than the
    /// last [`IN_FLIGHT`] of them; a path that broke for good leaves a longer unanswered
    /// tail, and every one of those counts as lost.
    pub fn stop(mut self) -> Result<(u64, u64)> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("ping already stopped"))?;
        // `ip netns exec` execs ping, so the child's pid is ping's.
        run("kill", &["-INT", &child.id().to_string()])?;
        child.wait().context("waiting for ping")?;
        let text = fs::read_to_string(&self.output)
            .with_context(|| format!("reading {}", self.output.display()))?;
        count_echoes(&text, self.interval)
    }
}

/// (sent, received) from ping's output, forgiving the unanswered echoes of the last
/// [`IN_FLIGHT`] (see [`Pinger::stop`]).
fn count_echoes(text: &str, interval: Duration) -> Result<(u64, u64)> {
    let (transmitted, received) = ping_summary(text)?;
    let last_answered = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let window = (IN_FLIGHT.as_millis() / interval.as_millis().max(1)) as u64;
    let tail = transmitted.saturating_sub(last_answered);
    let sent = if tail <= window {
        transmitted - tail
    } else {
        transmitted
    };
    Ok((sent, received.min(sent)))
}

/// (transmitted, received) from ping's summary line.
fn ping_summary(text: &str) -> Result<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| anyhow!("no ping summary in: {text}"))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [sent, received, ..] => Ok((sent, received)),
        _ => bail!("cannot read ping summary: {line}"),
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Loads an nft script in namespace `ns`.
fn nft_script(ns: &str, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("nft stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The packet count of the rule commented `name` in an `nft list` output.
fn counter(listing: &str, name: &str) -> Result<u64> {
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{name}\"")))
        .ok_or_else(|| anyhow!("no counter {name} in:\n{listing}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "packets")
        .and_then(|p| words.get(p + 1))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unreadable counter: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(answered: &[u64], transmitted: u64) -> String {
        let mut text = String::from("PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n");
        for seq in answered {
            text += &format!("64 bytes from 10.0.0.2: icmp_seq={seq} ttl=63 time=0.1 ms\n");
        }
        text += &format!(
            "\n--- 10.0.0.2 ping statistics ---\n{transmitted} packets transmitted, {} received, 0% packet loss, time 1000ms\n",
            answered.len()
        );
        text
    }

    #[test]
    fn an_echo_in_flight_at_the_stop_is_not_lost() {
        let ms10 = Duration::from_millis(10);
        assert_eq!(
            count_echoes(&output(&[1, 2, 3], 4), ms10).ok(),
            Some((3, 3))
        );
        assert_eq!(
            count_echoes(&output(&[1, 2, 3], 3), ms10).ok(),
            Some((3, 3))
        );
    }

    #[test]
    fn a_lost_echo_before_the_last_answer_counts() {
        let ms10 = Duration::from_millis(10);
        assert_eq!(
            count_echoes(&output(&[1, 3, 4], 5), ms10).ok(),
            Some((4, 3))
        );
    }

    #[test]
    fn a_path_broken_for_good_counts_every_unanswered_echo() {
        let answered: Vec<u64> = (1..=50).collect();
        let ms10 = Duration::from_millis(10);
        assert_eq!(
            count_echoes(&output(&answered, 80), ms10).ok(),
            Some((80, 50))
        );
        // 20 unanswered at 10 ms are exactly the 200 ms forgiven.
        assert_eq!(
            count_echoes(&output(&answered, 70), ms10).ok(),
            Some((50, 50))
        );
    }
}
