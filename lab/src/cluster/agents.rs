//! The agents of a cluster: starting, stopping and killing `brindle-node`, health, readiness,
//! and what its BGP speaker reports.

use crate::*;

impl Cluster {
    /// `brindlectl bgp peers -o json` of node `i`.
    pub fn bgp_peers(&self, i: usize) -> Result<serde_json::Value> {
        let out = run(
            &self.bins.join("brindlectl").display().to_string(),
            &[
                "bgp",
                "peers",
                "--socket",
                &self.nodes[i].socket.display().to_string(),
                "-o",
                "json",
            ],
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// `brindlectl node status` of node `i` (calicoctl's table).
    pub fn node_status(&self, i: usize) -> Result<String> {
        run(
            &self.bins.join("brindlectl").display().to_string(),
            &[
                "node",
                "status",
                "--socket",
                &self.nodes[i].socket.display().to_string(),
            ],
        )
    }

    /// Waits until node `i` has `want` BGP sessions, all Established.
    pub fn wait_established(&self, i: usize, want: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let peers = self.bgp_peers(i).unwrap_or_default();
            let list = peers.as_array().cloned().unwrap_or_default();
            let up = list.iter().filter(|p| p["state"] == "Established").count();
            if list.len() == want && up == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {up} of {want} BGP sessions Established after {timeout:?}: {peers}\n{}",
                    self.nodes[i].name,
                    tail(&self.nodes[i].log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Racks: waits until both ToRs know every block and every node has its default route
    /// (to its ToR) and the other rack's blocks.
    pub fn wait_racks_converged(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let blocks = self.ctl(&["get", "ipamblocks", "-o", "json"])?;
            let blocks: serde_json::Value = serde_json::from_str(&blocks)?;
            let blocks: Vec<(String, String)> = blocks["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    (
                        b["spec"]["cidr"].as_str().unwrap_or_default().to_string(),
                        b["spec"]["affinity"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            let mut missing = Vec::new();
            for tor in &self.tors {
                let table = tor.birdc(&["show", "route"]).unwrap_or_default();
                for (cidr, _) in &blocks {
                    if !table.contains(cidr.as_str()) {
                        missing.push(format!("ToR {}: {cidr}", tor.rack));
                    }
                }
            }
            for (i, node) in self.nodes.iter().enumerate() {
                let routes = self.routes(i)?;
                if !routes.lines().any(|l| l.starts_with("default via")) {
                    missing.push(format!("{}: default", node.name));
                }
                for (cidr, owner) in &blocks {
                    let other_rack = self.nodes.iter().enumerate().any(|(j, n)| {
                        *owner == format!("host:{}", n.name)
                            && self.segment_of(j) != self.segment_of(i)
                    });
                    if other_rack && !routes.lines().any(|l| l.starts_with(&format!("{cidr} "))) {
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
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Cuts node `i` off the network as a power cut would: its uplink goes down, so its peers
    /// hear nothing more (no TCP FIN, no NOTIFICATION), then its agent is killed.
    pub fn power_off(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        in_ns(&node.netns, "ip", &["link", "set", "eth0", "down"])?;
        if let Some(mut child) = node.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Runs `brindlectl` against the lab's datastore.
    /// (In the fabric namespace, where etcd is reachable.)
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let bin = self.bins.join("brindlectl").display().to_string();
        let mut all = vec!["--datastore", &self.datastore];
        all.extend_from_slice(args);
        in_ns(&self.fabric, &bin, &all)
    }

    /// Starts (or restarts) node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let bin = self.bins.join("brindle-node");
        let datastore = self.datastore.clone();
        let routing = self.spec.routing.clone();
        let hold = self.spec.bgp_hold_time;
        let secrets = self.dir.join("secrets");
        let resync = self.spec.resync_interval_secs.to_string();
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&bin)
            .args(["--node-name", &node.name])
            .args(["--datastore", &datastore])
            .args(["--node-ip", &format!("{}/24", node.ip)])
            .arg("--socket")
            .arg(&node.socket)
            .args(["--health-listen", "127.0.0.1:9099"])
            .args(["--resync-interval", &resync])
            .args(if routing.is_bgp() {
                vec![
                    "--routing".to_string(),
                    "bgp".to_string(),
                    "--bgp-hold-time".to_string(),
                    hold.to_string(),
                    "--bgp-secrets-dir".to_string(),
                    secrets.display().to_string(),
                ]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        node.agent = Some(child);
        Ok(())
    }

    /// Stops node `i`'s agent with SIGTERM and waits for it.
    pub fn stop_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].agent.take() {
            terminate(&mut child);
        }
        Ok(())
    }

    /// Kills node `i`'s agent with SIGKILL (no shutdown of any kind: a crash, an OOM kill)
    /// and waits for it.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].agent.take() {
            // `ip netns exec` execs the agent, so the child's pid is the agent's.
            child.kill().context("sending SIGKILL to the agent")?;
            child.wait().context("waiting for the killed agent")?;
        }
        Ok(())
    }

    pub(crate) fn start_agents(&mut self) -> Result<()> {
        self.say(&format!(
            "[3/5] starting {} brindle-node agents",
            self.nodes.len()
        ));
        for i in 0..self.nodes.len() {
            self.start_agent(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Waits until node `i`'s agent answers on its socket and reports ready.
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let node = &mut self.nodes[i];
            if let Some(child) = node.agent.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "brindle-node on {} exited ({status}); its log {}:\n{}",
                        node.name,
                        node.log.display(),
                        tail(&node.log, 20)
                    );
                }
            }
            if let Ok(out) = run(
                &self.bins.join("brindlectl").display().to_string(),
                &[
                    "status",
                    "--socket",
                    &node.socket.display().to_string(),
                    "-o",
                    "json",
                ],
            ) {
                if out.contains("\"ready\": true") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "brindle-node on {} not ready after {:?}; its log:\n{}",
                    node.name,
                    timeout,
                    tail(&node.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GETs `path` from node `i`'s health server (127.0.0.1:9099 in the node's namespace);
    /// returns the status line.
    pub fn health(&self, i: usize, path: &str) -> Result<String> {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/9099; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; head -n 1 <&3"
        );
        let out = in_ns(&self.nodes[i].netns, "bash", &["-c", &script])?;
        Ok(out.trim().to_string())
    }
}
