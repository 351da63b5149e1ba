//! Building and tearing down a cluster: the fabric namespace and its segments, the nodes,
//! the datastore (embedded or etcd) and the IP pools.

use crate::*;

impl Cluster {
    /// Builds the cluster: fabric, nodes, agents, pool, pods. On error, what was built is torn
    /// down before returning.
    pub fn build(spec: ClusterSpec) -> Result<Cluster> {
        if !is_root() {
            bail!("the lab needs root (network namespaces); run it as root");
        }
        let bins = bin_dir()?;
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{}", std::process::id() % 0xfff, n);
        let dir = std::env::temp_dir().join(format!("brindle-lab-{id}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let datastore = match spec.datastore {
            Datastore::Embedded => format!("embedded:{}", dir.join("store.db").display()),
            Datastore::Etcd => ETCD_URL.replacen("http://", "etcd://", 1),
        };
        let mut cluster = Cluster {
            fabric: format!("bl{id}-fabric"),
            outside: None,
            id,
            conflist: dir.join("10-brindle.conflist"),
            dir,
            bins,
            nodes: Vec::new(),
            pods: Vec::new(),
            datastore,
            spec,
            namespaces: Vec::new(),
            etcd: None,
            tors: Vec::new(),
            neighbour_limits: None,
        };
        // On error `cluster` is dropped here, which tears down whatever exists.
        cluster.raise_neighbour_limits()?;
        cluster.build_fabric()?;
        if cluster.spec.datastore == Datastore::Etcd {
            cluster.start_etcd()?;
        }
        cluster.create_pool()?;
        cluster.apply_resources()?;
        cluster.start_agents()?;
        cluster.start_pods()?;
        Ok(cluster)
    }

    /// The nodes resolve each other in the host-wide neighbour table: make room for them.
    fn raise_neighbour_limits(&mut self) -> Result<()> {
        let entries = neigh::entries_needed(self.spec.nodes, self.spec.pods_per_node);
        self.neighbour_limits = neigh::NeighbourLimits::raise(entries)?;
        if let Some(limits) = &self.neighbour_limits {
            eprintln!(
                "{} nodes need about {entries} neighbour (ARP/NDP) entries in the host-wide table: \
                 raised {} until the lab ends",
                self.spec.nodes,
                limits.describe()
            );
        }
        Ok(())
    }

    pub(crate) fn add_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        in_ns(name, "ip", &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The segment (0-based) node `i` (0-based) sits on.
    pub fn segment_of(&self, i: usize) -> usize {
        let segments = self.spec.segments.max(1);
        let per_segment = self.spec.nodes.div_ceil(segments);
        (i / per_segment.max(1)).min(segments - 1)
    }

    pub(crate) fn build_fabric(&mut self) -> Result<()> {
        let steps = self.spec.nodes;
        if !(1..=2).contains(&self.spec.segments) {
            bail!("segments must be 1 or 2, not {}", self.spec.segments);
        }
        self.say(&format!(
            "[1/5] fabric: {} bridge(s) in {} and {} node namespaces on 10.99.0.0/24{}",
            self.spec.segments,
            self.fabric,
            steps,
            if self.spec.segments == 2 {
                " and 10.99.1.0/24"
            } else {
                ""
            }
        ));
        let fabric = self.fabric.clone();
        self.add_netns(&fabric)?;
        // The fabric is the nodes' default gateway, as a real network's router would be: proxy
        // ARP for the pods' gateway 169.254.1.1 answers only when the node has a route to it.
        in_ns(&fabric, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        for seg in 0..self.spec.segments {
            let br = format!("br{seg}");
            in_ns(&fabric, "ip", &["link", "add", &br, "type", "bridge"])?;
            in_ns(&fabric, "ip", &["link", "set", &br, "up"])?;
            // With racks, the ToR holds the gateway address and routes.
            if self.spec.routing != Routing::BgpRacks {
                in_ns(
                    &fabric,
                    "ip",
                    &["addr", "add", &format!("10.99.{seg}.1/24"), "dev", &br],
                )?;
            }
        }
        if self.spec.outside {
            let outside = format!("bl{}-outside", self.id);
            self.add_netns(&outside)?;
            ip(&[
                "-n", &fabric, "link", "add", "out0", "type", "veth", "peer", "name", "eth0",
                "netns", &outside,
            ])?;
            in_ns(
                &fabric,
                "ip",
                &["addr", "add", "203.0.113.1/24", "dev", "out0"],
            )?;
            in_ns(&fabric, "ip", &["link", "set", "out0", "up"])?;
            in_ns(
                &outside,
                "ip",
                &["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"],
            )?;
            in_ns(&outside, "ip", &["link", "set", "eth0", "up"])?;
            in_ns(
                &outside,
                "ip",
                &["route", "add", "default", "via", "203.0.113.1"],
            )?;
            if self.spec.pool_cidr_v6.is_some() {
                in_ns(
                    &fabric,
                    "ip",
                    &[
                        "-6",
                        "addr",
                        "add",
                        "2001:db8:113::1/64",
                        "dev",
                        "out0",
                        "nodad",
                    ],
                )?;
                in_ns(
                    &outside,
                    "ip",
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("{OUTSIDE_IP6}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )?;
                in_ns(
                    &outside,
                    "ip",
                    &["-6", "route", "add", "default", "via", "2001:db8:113::1"],
                )?;
            }
            self.outside = Some(outside);
        }
        if self.spec.pool_cidr_v6.is_some() {
            in_ns(
                &fabric,
                "ip",
                &["-6", "addr", "add", "fd99::1/64", "dev", "br0", "nodad"],
            )?;
            in_ns(
                &fabric,
                "sysctl",
                &["-q", "-w", "net.ipv6.conf.all.forwarding=1"],
            )?;
        }
        for i in 1..=self.spec.nodes {
            check_interrupted()?;
            let name = format!("node{i}");
            let netns = format!("bl{}-{name}", self.id);
            let seg = self.segment_of(i - 1);
            let node_ip = format!("10.99.{seg}.{}", 10 + i);
            self.add_netns(&netns)?;
            let port = format!("n{i}");
            ip(&[
                "-n", &fabric, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &netns,
            ])?;
            in_ns(
                &fabric,
                "ip",
                &["link", "set", &port, "master", &format!("br{seg}"), "up"],
            )?;
            in_ns(
                &netns,
                "ip",
                &["addr", "add", &format!("{node_ip}/24"), "dev", "eth0"],
            )?;
            in_ns(&netns, "ip", &["link", "set", "eth0", "up"])?;
            // With racks, the default route is learned from the ToR.
            if self.spec.routing != Routing::BgpRacks {
                in_ns(
                    &netns,
                    "ip",
                    &["route", "add", "default", "via", &format!("10.99.{seg}.1")],
                )?;
            }
            if let Some(mtu) = self.spec.uplink_mtu {
                let mtu = mtu.to_string();
                in_ns(&netns, "ip", &["link", "set", "eth0", "mtu", &mtu])?;
                in_ns(&fabric, "ip", &["link", "set", &port, "mtu", &mtu])?;
            }
            if self.spec.pool_cidr_v6.is_some() {
                let node_ip6 = format!("fd99::{}/64", 10 + i);
                in_ns(
                    &netns,
                    "ip",
                    &["-6", "addr", "add", &node_ip6, "dev", "eth0", "nodad"],
                )?;
                if self.spec.outside {
                    in_ns(
                        &netns,
                        "ip",
                        &["-6", "route", "add", "default", "via", "fd99::1"],
                    )?;
                }
            }
            self.nodes.push(Node {
                socket: self.dir.join(format!("{name}.sock")),
                log: self.dir.join(format!("{name}.log")),
                name,
                netns,
                ip: node_ip,
                agent: None,
            });
        }
        Ok(())
    }

    /// Applies [`ClusterSpec::resources`], and for racks the rack topology's resources, and
    /// starts the ToRs.
    pub(crate) fn apply_resources(&mut self) -> Result<()> {
        let mut yaml = self.spec.resources.clone();
        if self.spec.routing == Routing::BgpRacks {
            if self.spec.segments != 2 {
                bail!("racks need 2 segments");
            }
            let node_racks: Vec<(String, usize)> = (0..self.nodes.len())
                .map(|i| (self.nodes[i].name.clone(), self.segment_of(i)))
                .collect();
            let rack = bgp::rack_resources(&node_racks, 2);
            yaml = if yaml.is_empty() {
                rack
            } else {
                format!("{rack}---\n{yaml}")
            };
            let rack_nodes: Vec<Vec<String>> = (0..2)
                .map(|r| {
                    (0..self.nodes.len())
                        .filter(|&i| self.segment_of(i) == r)
                        .map(|i| self.nodes[i].ip.clone())
                        .collect()
                })
                .collect();
            self.say("      BIRD ToR per rack (eBGP), nodes peering only with their ToR");
            let fabric = self.fabric.clone();
            let prefix = format!("bl{}", self.id);
            let dir = self.dir.clone();
            let mut namespaces = Vec::new();
            let tors = bgp::start_tors(&fabric, &prefix, &dir, &rack_nodes, &mut |ns| {
                ip(&["netns", "add", ns])?;
                namespaces.push(ns.to_string());
                in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
                Ok(())
            });
            self.namespaces.extend(namespaces);
            self.tors = tors?;
        }
        if yaml.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("resources.yaml");
        fs::write(&path, yaml)?;
        self.ctl(&["apply", "-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Starts etcd in the fabric namespace and waits until it answers.
    pub(crate) fn start_etcd(&mut self) -> Result<()> {
        self.say(&format!("      etcd in {} on {ETCD_URL}", self.fabric));
        let data = self.dir.join("etcd");
        let log = fs::File::create(self.dir.join("etcd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.fabric, "etcd", "--name", "lab"])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                ETCD_URL,
                "--advertise-client-urls",
                ETCD_URL,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server)")?;
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = "exec 3<>/dev/tcp/10.99.0.1/2379; printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
        loop {
            check_interrupted()?;
            if let Ok(out) = in_ns(&self.fabric, "bash", &["-c", probe]) {
                if out.contains("\"health\":\"true\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not healthy after 20 s:\n{}",
                    tail(&self.dir.join("etcd.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn create_pool(&mut self) -> Result<()> {
        self.apply_pools()?;
        // Each node's copy gets that node's agent socket (in `runtime`).
        let mut plugins = vec![serde_json::json!({"type": "brindle"})];
        plugins.extend(self.spec.chain.iter().cloned());
        let conflist =
            serde_json::json!({"cniVersion": "1.0.0", "name": "lab-net", "plugins": plugins});
        fs::write(&self.conflist, serde_json::to_string_pretty(&conflist)?)?;
        Ok(())
    }

    /// Changes the pools' encapsulation and `natOutgoing` (`brindlectl apply` of the changed
    /// IPPools, as a user would).
    pub fn set_pools(&mut self, encap: Encap, nat_outgoing: bool) -> Result<()> {
        self.spec.encap = encap;
        self.spec.nat_outgoing = nat_outgoing;
        self.apply_pools()
    }

    pub(crate) fn apply_pools(&mut self) -> Result<()> {
        let fields = format!(
            "{}\n  natOutgoing: {}",
            self.spec.encap.pool_fields(),
            self.spec.nat_outgoing
        );
        let mut pools = Vec::new();
        for (name, cidr) in [
            (
                "lab-pool",
                Some(&self.spec.pool_cidr).filter(|c| !c.is_empty()),
            ),
            ("lab-pool-v6", self.spec.pool_cidr_v6.as_ref()),
        ] {
            if let Some(cidr) = cidr {
                pools.push((name, cidr.clone()));
            }
        }
        let cidrs: Vec<&str> = pools.iter().map(|(_, c)| c.as_str()).collect();
        self.say(&format!(
            "[2/5] datastore {} with IPPool {} ({fields})",
            self.datastore,
            cidrs.join(" and ")
        ));
        let pool = pools
            .iter()
            .map(|(name, cidr)| {
                format!(
                    "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  {fields}\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n");
        let path = self.dir.join("pool.yaml");
        fs::write(&path, pool)?;
        self.ctl(&["apply", "-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Tears everything down (also done on drop).
    pub fn teardown(&mut self) {
        for pod in self.pods.clone() {
            if let Ok(rt) = self.runtime(pod.node) {
                let _ = rt.del(&Self::attachment(&pod), Some(&pod.result));
            }
        }
        self.pods.clear();
        for node in &mut self.nodes {
            if let Some(mut child) = node.agent.take() {
                terminate(&mut child);
            }
        }
        if let Some(mut etcd) = self.etcd.take() {
            terminate(&mut etcd);
        }
        for tor in &mut self.tors {
            tor.stop();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
        // With the namespaces gone, their entries go too: the previous limits fit again.
        if let Some(limits) = self.neighbour_limits.take() {
            let what = limits.describe();
            drop(limits);
            eprintln!("neighbour table limits put back to their values before the lab (it had raised {what})");
        }
        if std::env::var_os("BRINDLE_LAB_KEEP_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
