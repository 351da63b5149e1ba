//! The dataplane against the real kernel, inside throwaway network namespaces.
//!
//! Each test creates its own namespaces (`brd-t-<pid>-<n>`), runs the dataplane on a thread that
//! entered one of them (with its own current-thread runtime), and checks the result with
//! `ip`/`bridge`. Namespaces are deleted by a guard, also when a test fails. Needs root; without
//! it the tests print a skip message, unless `CI` is set, where they fail.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use brindle_agent::dataplane::{
    format_mac, host_veth_name, parse_mac, vtep_mac, ApplyReport, Dataplane, DataplaneError,
    DesiredState, FdbEntry, Neighbor, PodSpec, RouteTarget, Sysctl, VxlanDevice, VXLAN_DEVICE,
};
use ipnet::IpNet;
use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace by name, for running commands in it.
#[derive(Clone)]
struct Ns {
    name: String,
}

/// Owns a network namespace: created by [`Netns::new`], deleted when dropped, also when the
/// test panics.
struct Netns(Ns);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "brd-t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        Netns(Ns { name })
    }
}

impl std::ops::Deref for Netns {
    type Target = Ns;
    fn deref(&self) -> &Ns {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0.name])
            .status();
    }
}

impl Ns {
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a shell command inside the namespace; panics if it fails.
    fn sh(&self, cmd: &str) -> String {
        let (ok, out) = self.try_sh(cmd);
        assert!(ok, "`{cmd}` in {} failed: {out}", self.name);
        out
    }

    fn try_sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("running ip netns exec");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Output lines, trimmed (iproute2 leaves trailing spaces).
    fn lines(&self, cmd: &str) -> Vec<String> {
        self.sh(cmd).lines().map(|l| l.trim().to_string()).collect()
    }
}

fn run(prog: &str, args: &[&str]) {
    let status = Command::new(prog)
        .args(args)
        .status()
        .expect("running a command");
    assert!(status.success(), "{prog} {args:?} failed");
}

/// Whether the tests can run here. Without root they are skipped, except under CI.
fn privileged() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("dataplane netns tests need root (CI is set, so not skipping)");
    }
    eprintln!("skipping: dataplane netns tests need root");
    false
}

/// Runs `f` on a thread inside `ns`, on a current-thread runtime of that thread.
fn in_netns<F, Fut, T>(ns: &Ns, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = ns.path();
    let thread = std::thread::spawn(move || {
        let file = File::open(&path).expect("opening the test netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(f())
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn via_tunnel(gw: &str) -> RouteTarget {
    RouteTarget::ViaOnlink {
        gw: ip(gw),
        dev: VXLAN_DEVICE.into(),
    }
}

fn vxlan_state() -> DesiredState {
    let mut d = DesiredState {
        vxlan: Some(VxlanDevice {
            local_ip: Ipv4Addr::new(192, 168, 80, 1),
            parent: "up0".into(),
            mac: vtep_mac("node-a"),
            tunnel_addr: Some(Ipv4Addr::new(10, 244, 0, 0)),
            mtu: 1450,
        }),
        ..Default::default()
    };
    d.routes
        .insert(net("10.244.0.0/26"), RouteTarget::Blackhole);
    d.routes
        .insert(net("10.244.1.0/26"), via_tunnel("10.244.1.0"));
    d.neighbors.insert(Neighbor {
        dev: VXLAN_DEVICE.into(),
        ip: ip("10.244.1.0"),
        mac: vtep_mac("node-b"),
    });
    d.fdb.insert(FdbEntry {
        dev: VXLAN_DEVICE.into(),
        mac: vtep_mac("node-b"),
        dst: ip("192.168.80.2"),
    });
    d
}

fn assert_clean(report: &ApplyReport) {
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
}

#[test]
fn apply_programs_vxlan_routes_neighbors_fdb_and_converges() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add up0 type veth peer name up1 && \
         ip addr add 192.168.80.1/24 dev up0 && ip link set up0 up && ip link set up1 up",
    );
    let n = Ns::clone(&ns);

    in_netns(&ns, move || async move {
        let ns = n;
        let mut dp = Dataplane::connect().await.expect("connect");
        let node_b = format_mac(&vtep_mac("node-b"));

        // First pass: everything is created.
        let report = dp.apply(&vxlan_state()).await.expect("apply");
        assert_clean(&report);
        assert_eq!(
            (
                report.routes_added,
                report.neighbors_changed,
                report.fdb_changed
            ),
            (2, 1, 1)
        );
        let link = ns.sh(&format!("ip -d link show {VXLAN_DEVICE}"));
        for want in [
            "vxlan id 4096",
            "local 192.168.80.1",
            "dev up0",
            "dstport 4789",
            "nolearning",
            "mtu 1450",
            "state UNKNOWN",
        ] {
            assert!(link.contains(want), "missing {want:?} in {link}");
        }
        assert!(link.contains(&format!("link/ether {}", format_mac(&vtep_mac("node-a")))));
        let addrs = ns.sh(&format!("ip -4 addr show dev {VXLAN_DEVICE}"));
        assert!(addrs.contains("inet 10.244.0.0/32"), "{addrs}");
        let routes = ns.lines("ip route");
        assert!(
            routes.contains(&"blackhole 10.244.0.0/26 proto 98".to_string()),
            "{routes:?}"
        );
        assert!(
            routes.contains(&format!(
                "10.244.1.0/26 via 10.244.1.0 dev {VXLAN_DEVICE} proto 98 onlink"
            )),
            "{routes:?}"
        );
        let neigh = ns.lines(&format!("ip neigh show dev {VXLAN_DEVICE}"));
        assert_eq!(neigh, vec![format!("10.244.1.0 lladdr {node_b} PERMANENT")]);
        let fdb = ns.lines(&format!("bridge fdb show dev {VXLAN_DEVICE}"));
        assert!(
            fdb.contains(&format!("{node_b} dst 192.168.80.2 self permanent")),
            "{fdb:?}"
        );

        // Second pass: nothing to do.
        let report = dp.apply(&vxlan_state()).await.expect("apply");
        assert_eq!(report, ApplyReport::default());

        // A smaller state: node-b is gone, node-c arrived; a foreign route must survive.
        ns.sh("ip route add 10.99.0.0/16 via 192.168.80.2 proto static");
        let mut smaller = vxlan_state();
        smaller.neighbors.clear();
        smaller.fdb.clear();
        smaller.routes.remove(&net("10.244.1.0/26"));
        smaller
            .routes
            .insert(net("10.244.2.0/26"), via_tunnel("10.244.2.0"));
        smaller.neighbors.insert(Neighbor {
            dev: VXLAN_DEVICE.into(),
            ip: ip("10.244.2.0"),
            mac: vtep_mac("node-c"),
        });
        smaller.fdb.insert(FdbEntry {
            dev: VXLAN_DEVICE.into(),
            mac: vtep_mac("node-c"),
            dst: ip("192.168.80.3"),
        });
        let report = dp.apply(&smaller).await.expect("apply");
        assert_clean(&report);
        assert_eq!((report.routes_added, report.routes_removed), (1, 1));
        assert_eq!((report.neighbors_changed, report.fdb_changed), (2, 2));
        let routes = ns.lines("ip route");
        assert!(
            !routes.iter().any(|r| r.starts_with("10.244.1.0/26")),
            "{routes:?}"
        );
        assert!(routes
            .iter()
            .any(|r| r.starts_with("10.244.2.0/26 via 10.244.2.0")));
        assert!(
            routes.contains(&"10.99.0.0/16 via 192.168.80.2 dev up0 proto static".to_string()),
            "foreign route touched: {routes:?}"
        );
        let node_c = format_mac(&vtep_mac("node-c"));
        assert_eq!(
            ns.lines(&format!("ip neigh show dev {VXLAN_DEVICE}")),
            vec![format!("10.244.2.0 lladdr {node_c} PERMANENT")]
        );
        let fdb = ns.sh(&format!("bridge fdb show dev {VXLAN_DEVICE}"));
        assert!(!fdb.contains(&node_b), "{fdb}");
        assert!(fdb.contains(&format!("{node_c} dst 192.168.80.3 self permanent")));

        // A Brindle route deleted by hand comes back on the next pass.
        ns.sh("ip route del blackhole 10.244.0.0/26 proto 98");
        let report = dp.apply(&smaller).await.expect("apply");
        assert_clean(&report);
        assert_eq!((report.routes_added, report.routes_removed), (1, 0));
        assert!(ns
            .lines("ip route")
            .contains(&"blackhole 10.244.0.0/26 proto 98".to_string()));

        // A desired route on a missing device is reported, the rest still applied.
        let mut with_missing = smaller.clone();
        with_missing.routes.insert(
            net("10.244.0.9/32"),
            RouteTarget::Device {
                dev: "brdmissing".into(),
            },
        );
        let report = dp.apply(&with_missing).await.expect("apply");
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(report.errors[0].contains("brdmissing"));

        // Changing the VTEP's parameters recreates the device.
        let mut moved = smaller.clone();
        if let Some(v) = moved.vxlan.as_mut() {
            v.mac = vtep_mac("node-a-renamed");
        }
        let report = dp.apply(&moved).await.expect("apply");
        assert_clean(&report);
        let link = ns.sh(&format!("ip link show {VXLAN_DEVICE}"));
        assert!(
            link.contains(&format_mac(&vtep_mac("node-a-renamed"))),
            "{link}"
        );
        assert!(ns
            .lines("ip route")
            .iter()
            .any(|r| r.starts_with("10.244.2.0/26 via 10.244.2.0")));

        // Nothing desired: Brindle's routes go at once, the foreign route stays; the device
        // lingers (it still decapsulates for slower nodes during a mode change), then goes.
        let report = dp.apply(&DesiredState::default()).await.expect("apply");
        assert_clean(&report);
        let (exists, _) = ns.try_sh(&format!("ip link show {VXLAN_DEVICE}"));
        assert!(exists, "vxlan device removed without its grace period");
        assert!(!ns.lines("ip route").iter().any(|r| r.contains("proto 98")));
        dp.set_vxlan_linger(std::time::Duration::ZERO);
        let report = dp.apply(&DesiredState::default()).await.expect("apply");
        assert_clean(&report);
        let (exists, _) = ns.try_sh(&format!("ip link show {VXLAN_DEVICE}"));
        assert!(!exists, "vxlan device still present");
        let routes = ns.lines("ip route");
        assert!(!routes.iter().any(|r| r.contains("proto 98")), "{routes:?}");
        assert!(routes.iter().any(|r| r.starts_with("10.99.0.0/16")));

        // Interface MTU and addresses for node IP autodetection.
        assert_eq!(dp.link_mtu("up0").await.expect("mtu"), 1500);
        assert!(matches!(
            dp.link_mtu("nope0").await,
            Err(DataplaneError::NoSuchInterface(_))
        ));
        let addrs = dp.addresses().await.expect("addresses");
        assert!(
            addrs.contains(&("up0".to_string(), net("192.168.80.1/24"))),
            "{addrs:?}"
        );
    });
}

/// A node namespace with an uplink and a default route (proxy ARP answers only for addresses
/// the node can route elsewhere), and a pod namespace.
fn node_and_pod() -> (Netns, Netns) {
    let node = Netns::new();
    node.sh(
        "ip link set lo up && ip link add up0 type veth peer name up1 && \
         ip addr add 192.168.77.1/24 dev up0 && ip link set up0 up && ip link set up1 up && \
         ip route add default via 192.168.77.254 dev up0",
    );
    let pod = Netns::new();
    (node, pod)
}

/// A multi-threaded runtime whose workers stay outside `node`, and a dataplane connected inside
/// it (the connection is opened on a thread that entered the namespace).
fn dataplane_in(node: &Netns) -> (tokio::runtime::Runtime, Dataplane) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let path = node.path();
    let dp = std::thread::spawn(move || {
        let file = File::open(&path).expect("opening the node netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let _entered = handle.enter();
        futures::executor::block_on(Dataplane::connect())
    })
    .join()
    .expect("connect thread")
    .expect("connect");
    (runtime, dp)
}

fn pod_spec(pod: &Ns, host_ifname: &str, ip: &str) -> PodSpec {
    PodSpec {
        netns: pod.path(),
        ifname: "eth0".into(),
        host_ifname: host_ifname.into(),
        ips: vec![net(ip)],
        mtu: 1400,
    }
}

#[test]
fn pod_wiring_setup_check_ping_teardown() {
    if !privileged() {
        return;
    }
    let (node, pod) = node_and_pod();
    let host = host_veth_name("default", &format!("pod-{}", node.name));
    let spec = pod_spec(&pod, &host, "10.244.0.5/32");
    let (n, p) = (Ns::clone(&node), Ns::clone(&pod));

    in_netns(&node, move || async move {
        let (node, pod) = (n, p);
        brindle_agent::dataplane::enable_ip_forwarding().expect("ip_forward");
        assert_eq!(node.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
        let dp = Dataplane::connect().await.expect("connect");
        let wirer = dp.pod_wirer();

        let wiring = wirer.setup(&spec).await.expect("setup");
        let mac = parse_mac(&wiring.container_mac).expect("a MAC");
        assert_ne!(mac, [0xee; 6]);

        // Inside the pod.
        let routes = pod.lines("ip route");
        assert!(
            routes.contains(&"default via 169.254.1.1 dev eth0".to_string()),
            "{routes:?}"
        );
        assert!(
            routes.contains(&"169.254.1.1 dev eth0 scope link".to_string()),
            "{routes:?}"
        );
        let eth0 = pod.sh("ip addr show dev eth0");
        assert!(eth0.contains("inet 10.244.0.5/32"), "{eth0}");
        assert!(
            eth0.contains(&format!("link/ether {}", wiring.container_mac)),
            "{eth0}"
        );
        assert!(
            eth0.contains("mtu 1400") && eth0.contains("state UP"),
            "{eth0}"
        );
        assert!(pod.sh("ip link show lo").contains("UP"));

        // On the node.
        let link = node.sh(&format!("ip link show {host}"));
        assert!(link.contains("link/ether ee:ee:ee:ee:ee:ee"), "{link}");
        assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
        for (key, want) in [
            (format!("net/ipv4/conf/{host}/proxy_arp"), "1"),
            (format!("net/ipv4/conf/{host}/forwarding"), "1"),
            (format!("net/ipv4/conf/{host}/route_localnet"), "1"),
            (format!("net/ipv4/neigh/{host}/proxy_delay"), "0"),
        ] {
            assert_eq!(
                node.sh(&format!("cat /proc/sys/{key}")).trim(),
                want,
                "{key}"
            );
        }
        let routes = node.lines("ip route");
        assert!(
            routes.contains(&format!("10.244.0.5 dev {host} proto 98 scope link")),
            "{routes:?}"
        );
        wirer.check(&spec).await.expect("check passes");

        // Traffic both ways, through proxy ARP for 169.254.1.1.
        node.sh("ping -c 1 -W 2 10.244.0.5");
        pod.sh("ping -c 1 -W 2 192.168.77.1");

        // CHECK names what differs.
        pod.sh("ip route del default");
        match wirer.check(&spec).await {
            Err(DataplaneError::Mismatch { differences, .. }) => {
                assert!(
                    differences.contains("default via 169.254.1.1"),
                    "{differences}"
                )
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }

        // Re-ADD replaces the interface and repairs the pod.
        let again = wirer.setup(&spec).await.expect("second setup");
        assert_ne!(again.container_mac, "");
        wirer.check(&spec).await.expect("check after re-add");
        assert_eq!(
            node.lines("ip -o link show")
                .iter()
                .filter(|l| l.contains(&host))
                .count(),
            1
        );

        // Teardown removes the link (and with it the route); twice is fine.
        wirer.teardown(&host).await.expect("teardown");
        let (exists, _) = node.try_sh(&format!("ip link show {host}"));
        assert!(!exists, "host link still present");
        assert!(!node.sh("ip route").contains("10.244.0.5"));
        let (exists, _) = pod.try_sh("ip link show eth0");
        assert!(!exists, "pod side still present");
        wirer.teardown(&host).await.expect("second teardown");
    });
}

#[test]
fn pod_wiring_failures_leave_no_interface() {
    if !privileged() {
        return;
    }
    let (node, pod) = node_and_pod();
    let (n, p) = (Ns::clone(&node), Ns::clone(&pod));

    in_netns(&node, move || async move {
        let node = n;
        let pod_path = p.path();
        let dp = Dataplane::connect().await.expect("connect");
        let wirer = dp.pod_wirer();

        // A netns path that does not exist.
        let host = "brdbadnetns0";
        let mut spec = pod_spec(&p, host, "10.244.0.6/32");
        spec.netns = format!("{pod_path}-does-not-exist");
        match wirer.setup(&spec).await {
            Err(DataplaneError::Netns { path, .. }) => assert_eq!(path, spec.netns),
            other => panic!("expected a Netns error, got {other:?}"),
        }
        let (exists, _) = node.try_sh(&format!("ip link show {host}"));
        assert!(!exists, "interface left behind");

        // A failure after the veth exists: the host route collides with a foreign route.
        node.sh("ip route add 10.244.0.7/32 dev up0 proto static");
        let host = "brdconflict0";
        let mut spec = spec.clone();
        spec.netns = pod_path.clone();
        spec.host_ifname = host.into();
        spec.ips = vec![net("10.244.0.7/32")];
        let err = wirer.setup(&spec).await.expect_err("conflicting route");
        assert!(
            err.to_string().contains("not installed by Brindle"),
            "{err}"
        );
        let (exists, _) = node.try_sh(&format!("ip link show {host}"));
        assert!(!exists, "interface left behind after a late failure");
        assert!(node
            .lines("ip route")
            .contains(&"10.244.0.7 dev up0 proto static scope link".to_string()));

        // An invalid spec is refused before anything is created.
        spec.ips.clear();
        assert!(matches!(
            wirer.setup(&spec).await,
            Err(DataplaneError::InvalidPodSpec { .. })
        ));
    });
}

/// The agent's shape: a multi-threaded runtime whose workers are not in the node's namespace
/// (only the connection is), many pods wired at once from different tasks.
#[test]
fn concurrent_pod_setups_from_threads_outside_the_node_namespace() {
    if !privileged() {
        return;
    }
    let (node, pod_a) = node_and_pod();
    let pod_b = Netns::new();
    let specs: Vec<PodSpec> = [(&pod_a, "10.244.0.11/32"), (&pod_b, "10.244.0.12/32")]
        .iter()
        .enumerate()
        .map(|(i, (p, ip))| pod_spec(p, &format!("brdconc{i}"), ip))
        .collect();

    let (runtime, mut dp) = dataplane_in(&node);

    runtime.block_on(async {
        let mut tasks = Vec::new();
        for spec in specs.clone() {
            let wirer = dp.pod_wirer();
            tasks.push(tokio::spawn(async move { wirer.setup(&spec).await }));
        }
        for task in tasks {
            task.await.expect("task").expect("setup");
        }
        // The desired state does not list the fresh pod routes yet: they survive the grace
        // period instead of being purged.
        let report = dp.apply(&DesiredState::default()).await.expect("apply");
        assert_eq!(report.routes_removed, 0, "{report:?}");
        for spec in &specs {
            dp.pod_wirer().check(spec).await.expect("check");
        }
    });
    for spec in &specs {
        let key = format!("net/ipv4/conf/{}/proxy_arp", spec.host_ifname);
        assert_eq!(node.sh(&format!("cat /proc/sys/{key}")).trim(), "1");
    }
    runtime.block_on(async {
        for spec in &specs {
            dp.pod_wirer()
                .teardown(&spec.host_ifname)
                .await
                .expect("teardown");
        }
    });
    assert!(!node.sh("ip link").contains("brdconc"));
}

/// The reconciler and pod ADDs share one netlink socket, and the kernel runs one dump per socket
/// at a time (EBUSY for a second): reconcile passes and pod setups running together must both
/// succeed.
#[test]
fn reconcile_passes_and_pod_setups_run_together() {
    if !privileged() {
        return;
    }
    let (node, first) = node_and_pod();
    // Thousands of (foreign) routes make every route dump span many messages, so dumps overlap.
    let batch = std::env::temp_dir().join(format!("brindle-busy-{}.batch", std::process::id()));
    let lines: String = (0..4000)
        .map(|i| {
            format!(
                "route add 10.201.{}.{}/32 dev up0 proto static\n",
                i / 250,
                i % 250
            )
        })
        .collect();
    std::fs::write(&batch, lines).expect("batch file");
    node.sh(&format!("ip -batch {}", batch.display()));
    let _ = std::fs::remove_file(&batch);
    let mut pods = vec![first];
    pods.extend((0..5).map(|_| Netns::new()));
    let specs: Vec<PodSpec> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            pod_spec(
                p,
                &format!("brdbusy{i}"),
                &format!("10.244.0.{}/32", 20 + i),
            )
        })
        .collect();
    let (runtime, mut dp) = dataplane_in(&node);

    // As in the agent, the pods are desired before they are wired: the reconciler races the
    // setups to install their host routes, and a setup that finds its route present dumps the
    // table to check it.
    let mut desired = DesiredState::default();
    for spec in &specs {
        desired.routes.insert(
            spec.ips[0],
            RouteTarget::Device {
                dev: spec.host_ifname.clone(),
            },
        );
    }
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for spec in specs.clone() {
            let wirer = dp.pod_wirer();
            tasks.push(tokio::spawn(async move { wirer.setup(&spec).await }));
        }
        for _ in 0..40 {
            dp.apply(&desired)
                .await
                .expect("a reconcile pass during pod setups");
        }
        for task in tasks {
            task.await
                .expect("task")
                .expect("a pod setup during reconcile passes");
        }
        for spec in &specs {
            dp.pod_wirer()
                .teardown(&spec.host_ifname)
                .await
                .expect("teardown");
        }
    });
    assert!(!node.sh("ip link").contains("brdbusy"));
}

/// Dual stack (BRIEF §4): each pod gets its /32 and its /128, an IPv6 default route via the
/// host side's link-local `fe80::ecee:eeff:feee:eeee`; the host side has the IPv6 sysctls and a
/// /128 route per pod. Pods reach each other and the node over IPv6 as over IPv4.
#[test]
fn dual_stack_pods_ping_each_other_and_the_node_over_ipv6() {
    if !privileged() {
        return;
    }
    let (node, pod_a) = node_and_pod();
    let pod_b = Netns::new();
    node.sh("ip -6 addr add fd99::1/64 dev up0 nodad");
    let host_a = host_veth_name("default", &format!("v6a-{}", node.name));
    let host_b = host_veth_name("default", &format!("v6b-{}", node.name));
    let mut spec_a = pod_spec(&pod_a, &host_a, "10.244.0.21/32");
    spec_a.ips.push(net("fd00:10:244::21/122"));
    let mut spec_b = pod_spec(&pod_b, &host_b, "10.244.0.22/32");
    spec_b.ips.push(net("fd00:10:244::22/122"));
    let (n, a, b) = (Ns::clone(&node), Ns::clone(&pod_a), Ns::clone(&pod_b));

    in_netns(&node, move || async move {
        let (node, pod_a, pod_b) = (n, a, b);
        brindle_agent::dataplane::enable_ip_forwarding().expect("ip_forward");
        let dp = Dataplane::connect().await.expect("connect");
        let wirer = dp.pod_wirer();
        wirer.setup(&spec_a).await.expect("setup a");
        wirer.setup(&spec_b).await.expect("setup b");

        // Inside the pod: the /128, no tentative flag, the IPv6 default route.
        let eth0 = pod_a.sh("ip -6 addr show dev eth0");
        assert!(eth0.contains("inet6 fd00:10:244::21/128"), "{eth0}");
        assert!(!eth0.contains("tentative"), "{eth0}");
        assert!(pod_a
            .sh("ip -4 addr show dev eth0")
            .contains("inet 10.244.0.21/32"));
        let routes = pod_a.lines("ip -6 route");
        assert!(
            routes
                .iter()
                .any(|r| r.starts_with("default via fe80::ecee:eeff:feee:eeee dev eth0 ")),
            "{routes:?}"
        );
        assert!(pod_a
            .lines("ip -4 route")
            .contains(&"default via 169.254.1.1 dev eth0".to_string()));
        assert_eq!(
            pod_a
                .sh("cat /proc/sys/net/ipv6/conf/eth0/accept_dad")
                .trim(),
            "0"
        );

        // On the node: the gateway address, the sysctls, the /128 route with Brindle's proto.
        let link = node.sh(&format!("ip -6 addr show dev {host_a}"));
        assert!(
            link.contains("inet6 fe80::ecee:eeff:feee:eeee/64 scope link"),
            "{link}"
        );
        for (key, want) in [
            (format!("net/ipv6/conf/{host_a}/proxy_ndp"), "1"),
            (format!("net/ipv6/conf/{host_a}/forwarding"), "1"),
            (format!("net/ipv6/conf/{host_a}/accept_ra"), "0"),
            (format!("net/ipv6/conf/{host_a}/accept_dad"), "0"),
            (format!("net/ipv6/conf/{host_a}/disable_ipv6"), "0"),
            ("net/ipv6/conf/all/forwarding".to_string(), "1"),
            (format!("net/ipv4/conf/{host_a}/proxy_arp"), "1"),
        ] {
            assert_eq!(
                node.sh(&format!("cat /proc/sys/{key}")).trim(),
                want,
                "{key}"
            );
        }
        let routes = node.lines("ip -6 route");
        assert!(
            routes
                .iter()
                .any(|r| r.starts_with(&format!("fd00:10:244::21 dev {host_a} proto 98"))),
            "{routes:?}"
        );
        wirer.check(&spec_a).await.expect("check a");
        wirer.check(&spec_b).await.expect("check b");

        // Traffic: pod to node, node to pod, pod to pod, over IPv6 and IPv4.
        pod_a.sh("ping -6 -c 1 -W 2 fd99::1");
        node.sh("ping -6 -c 1 -W 2 fd00:10:244::21");
        pod_a.sh("ping -6 -c 1 -W 2 fd00:10:244::22");
        pod_b.sh("ping -6 -c 1 -W 2 fd00:10:244::21");
        pod_a.sh("ping -c 1 -W 2 10.244.0.22");
        // The node learned the pod's MAC by NDP on the veth, and the pod the gateway's.
        let neigh = pod_a.sh("ip -6 neigh show dev eth0");
        assert!(
            neigh.contains("fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee"),
            "{neigh}"
        );

        // CHECK names a missing IPv6 default route and a changed sysctl.
        pod_a.sh("ip -6 route del default");
        node.sh(&format!(
            "echo 0 > /proc/sys/net/ipv6/conf/{host_a}/proxy_ndp"
        ));
        match wirer.check(&spec_a).await {
            Err(DataplaneError::Mismatch { differences, .. }) => {
                assert!(
                    differences
                        .contains("route default via fe80::ecee:eeff:feee:eeee dev eth0 missing"),
                    "{differences}"
                );
                assert!(
                    differences.contains(&format!("ipv6 proxy_ndp on {host_a} is 0, want 1")),
                    "{differences}"
                );
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }

        // Re-ADD repairs; teardown removes both families' host routes.
        wirer.setup(&spec_a).await.expect("re-add");
        wirer.check(&spec_a).await.expect("check after re-add");
        wirer.teardown(&host_a).await.expect("teardown a");
        wirer.teardown(&host_b).await.expect("teardown b");
        assert!(!node.sh("ip -6 route").contains("fd00:10:244::"));
        assert!(!node.sh("ip -4 route").contains("10.244.0.2"));
    });
}

/// An IPv6 pod needs an MTU of at least 1280; a smaller one is refused before anything exists.
#[test]
fn ipv6_pod_with_an_mtu_below_1280_is_refused() {
    if !privileged() {
        return;
    }
    let (node, pod) = node_and_pod();
    let (n, p) = (Ns::clone(&node), Ns::clone(&pod));
    in_netns(&node, move || async move {
        let dp = Dataplane::connect().await.expect("connect");
        let mut spec = pod_spec(&p, "brdsmallmtu0", "fd00:10:244::30/128");
        spec.mtu = 1200;
        let err = dp
            .pod_wirer()
            .setup(&spec)
            .await
            .expect_err("MTU too small");
        assert!(err.to_string().contains("IPv6 minimum 1280"), "{err}");
        assert!(!n.try_sh("ip link show brdsmallmtu0").0);
    });
}

/// IPv6 blocks through the IPv4 VXLAN device: a route via the remote VTEP's link-local, onlink,
/// a permanent IPv6 neighbour for it, an IPv6 blackhole for the local block; a second pass finds
/// nothing to do (the kernel reports these routes back in the shape they were written).
#[test]
fn apply_programs_ipv6_routes_through_vxlan_and_converges() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add up0 type veth peer name up1 && \
         ip addr add 192.168.81.1/24 dev up0 && ip link set up0 up && ip link set up1 up && \
         ip -6 addr add fd99::1/64 dev up0 nodad",
    );
    let n = Ns::clone(&ns);

    in_netns(&ns, move || async move {
        let ns = n;
        let mut dp = Dataplane::connect().await.expect("connect");
        let mac_b = vtep_mac("node-b");
        let ll_b = brindle_agent::dataplane::eui64_link_local(&mac_b);
        let mut state = vxlan_state();
        if let Some(vx) = state.vxlan.as_mut() {
            vx.local_ip = Ipv4Addr::new(192, 168, 81, 1);
        }
        state.fdb = [FdbEntry {
            dev: VXLAN_DEVICE.into(),
            mac: mac_b,
            dst: ip("192.168.81.2"),
        }]
        .into();
        state
            .routes
            .insert(net("fd00:10:244::/122"), RouteTarget::Blackhole);
        state.routes.insert(
            net("fd00:10:244::40/122"),
            RouteTarget::ViaOnlink {
                gw: IpAddr::V6(ll_b),
                dev: VXLAN_DEVICE.into(),
            },
        );
        // Never mode: via the remote node's IPv6 address on the uplink.
        state.routes.insert(
            net("fd00:10:245::40/122"),
            RouteTarget::ViaOnlink {
                gw: ip("fd99::2"),
                dev: "up0".into(),
            },
        );
        state.neighbors.insert(Neighbor {
            dev: VXLAN_DEVICE.into(),
            ip: IpAddr::V6(ll_b),
            mac: mac_b,
        });

        let report = dp.apply(&state).await.expect("apply");
        assert_clean(&report);
        let routes = ns.lines("ip -6 route");
        let has = |prefix: &str| routes.iter().any(|r| r.starts_with(prefix));
        assert!(
            has("blackhole fd00:10:244::/122 dev lo proto 98"),
            "{routes:?}"
        );
        assert!(
            has(&format!(
                "fd00:10:244::40/122 via {ll_b} dev {VXLAN_DEVICE} proto 98"
            )),
            "{routes:?}"
        );
        assert!(
            has("fd00:10:245::40/122 via fd99::2 dev up0 proto 98"),
            "{routes:?}"
        );
        let neigh = ns.lines(&format!("ip -6 neigh show dev {VXLAN_DEVICE}"));
        assert_eq!(
            neigh,
            vec![format!("{ll_b} lladdr {} PERMANENT", format_mac(&mac_b))]
        );

        // Second pass: nothing to do.
        let report = dp.apply(&state).await.expect("apply");
        assert_eq!(report, ApplyReport::default());

        // Without the IPv6 entries they are removed, the IPv4 ones stay.
        let v4_only = vxlan_state();
        let mut v4_only_here = v4_only.clone();
        v4_only_here.vxlan = state.vxlan.clone();
        v4_only_here.fdb = state.fdb.clone();
        let report = dp.apply(&v4_only_here).await.expect("apply");
        assert_clean(&report);
        assert_eq!((report.routes_removed, report.neighbors_changed), (3, 1));
        assert!(!ns.sh("ip -6 route").contains("proto 98"));
        assert!(ns
            .sh("ip -6 neigh show dev vxlan.brindle")
            .trim()
            .is_empty());
        assert!(ns
            .sh("ip -4 route")
            .contains("10.244.1.0/26 via 10.244.1.0"));
        assert!(ns
            .sh("ip -4 addr show dev vxlan.brindle")
            .contains("inet 10.244.0.0/32"));

        // Only IPv6 through the tunnel: the device keeps no IPv4 address.
        let mut v6_only = state.clone();
        if let Some(vx) = v6_only.vxlan.as_mut() {
            vx.tunnel_addr = None;
        }
        v6_only.routes.remove(&net("10.244.1.0/26"));
        v6_only.neighbors.retain(|n| n.ip.is_ipv6());
        let report = dp.apply(&v6_only).await.expect("apply");
        assert_clean(&report);
        assert!(!ns.sh("ip -4 addr show dev vxlan.brindle").contains("inet "));
        assert!(ns
            .sh("ip -6 route")
            .contains(&format!("via {ll_b} dev vxlan.brindle")));
        assert_eq!(
            dp.apply(&v6_only).await.expect("apply"),
            ApplyReport::default()
        );
    });
}

/// The route programmer may write a pod's host route first (the endpoint is registered before
/// the veth exists); wiring then takes the route over instead of failing with EEXIST. IPv6 routes
/// carry the kernel's default metric 1024, which the takeover must recognise.
#[test]
fn pod_wiring_takes_over_an_ipv6_host_route_of_brindle() {
    if !privileged() {
        return;
    }
    let (node, pod) = node_and_pod();
    let host = host_veth_name("default", &format!("take-{}", node.name));
    let mut spec = pod_spec(&pod, &host, "10.244.0.41/32");
    spec.ips.push(net("fd00:10:244::41/128"));
    let n = Ns::clone(&node);
    in_netns(&node, move || async move {
        n.sh("ip -6 route add fd00:10:244::41/128 dev up0 proto 98");
        let dp = Dataplane::connect().await.expect("connect");
        dp.pod_wirer()
            .setup(&spec)
            .await
            .expect("setup takes the route over");
        let routes = n.sh("ip -6 route show proto 98");
        assert!(
            routes.contains(&format!("fd00:10:244::41 dev {host} ")),
            "{routes}"
        );
        assert!(!routes.contains("dev up0"), "{routes}");
    });
}

#[test]
fn nat_outgoing_table_and_sysctls_are_written_checked_and_restored() {
    if !privileged() {
        return;
    }
    let nft = Command::new("nft").arg("--version").output().is_ok();
    if !nft {
        assert!(std::env::var_os("CI").is_none(), "nft missing (CI is set)");
        eprintln!("skipping: nft not installed");
        return;
    }
    let ns = Netns::new();
    ns.sh("ip link set lo up && ip link add up0 type veth peer name up1 && ip link set up0 up");
    ns.sh("sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.up0.rp_filter=1");
    let n = Ns::clone(&ns);

    in_netns(&ns, move || async move {
        let ns = n;
        let mut dp = Dataplane::connect().await.expect("connect");
        let mut d = DesiredState::default();
        d.nat.pools = [net("10.244.0.0/16"), net("10.250.0.0/16")].into();
        d.nat.masquerade = [net("10.244.0.0/16")].into();
        d.sysctls = [
            Sysctl::new(&["net", "ipv4", "ip_forward"], "1", &[]),
            Sysctl::new(&["net", "ipv4", "conf", "up0", "rp_filter"], "2", &["0"]),
        ]
        .into();

        let report = dp.apply(&d).await.expect("apply");
        assert_clean(&report);
        assert!(report.nat_written);
        assert_eq!(report.sysctls_set, 2);
        assert_eq!(ns.sh("sysctl -n net.ipv4.ip_forward").trim(), "1");
        assert_eq!(ns.sh("sysctl -n net.ipv4.conf.up0.rp_filter").trim(), "2");
        let table = ns.sh("nft list table ip brindle-nat");
        assert!(
            table.contains("ip saddr @masq-pools ip daddr != @pools masquerade"),
            "{table}"
        );
        assert!(
            table.contains("elements = { 10.244.0.0/16, 10.250.0.0/16 }"),
            "{table}"
        );
        let (ip6, _) = ns.try_sh("nft list table ip6 brindle-nat");
        assert!(!ip6, "an ip6 table without IPv6 NAT pools");

        // Nothing changed: nothing written.
        let report = dp.apply(&d).await.expect("apply");
        assert_clean(&report);
        assert!(!report.nat_written);
        assert_eq!(report.sysctls_set, 0);

        // Changed behind our back: restored.
        ns.sh("nft flush chain ip brindle-nat postrouting && sysctl -q -w net.ipv4.ip_forward=0");
        let report = dp.apply(&d).await.expect("apply");
        assert_clean(&report);
        assert!(report.nat_written);
        assert_eq!(report.sysctls_set, 1);
        assert!(ns
            .sh("nft list table ip brindle-nat")
            .contains("masquerade"));

        // No NAT pool any more: the table goes; a foreign table is left alone.
        ns.sh("nft add table ip someone-else");
        d.nat.masquerade.clear();
        let report = dp.apply(&d).await.expect("apply");
        assert_clean(&report);
        let tables = ns.sh("nft list tables");
        assert!(!tables.contains("brindle-nat"), "{tables}");
        assert!(tables.contains("table ip someone-else"), "{tables}");
    });
}

/// The route table's batched writes (brindle-bgpd's install path): more routes than fit in one
/// netlink datagram, one of them through a gateway the kernel cannot reach; only that one fails
/// (and stays pending), the rest are in the kernel. Deleting, including a route someone else
/// already removed, and clearing leave nothing behind.
#[test]
fn route_table_batches_fail_only_the_bad_route() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    ns.sh(
        "ip link set lo up && ip link add up0 type veth peer name up1 && \
         ip addr add 192.168.80.1/24 dev up0 && ip link set up0 up && ip link set up1 up",
    );
    let n = Ns::clone(&ns);
    in_netns(&ns, move || async move {
        let ns = n;
        let dp = Dataplane::connect().await.expect("connect");
        let mut table = dp.route_table().await.expect("route table");
        let gw = RouteTarget::Via {
            gws: vec![ip("192.168.80.2")],
        };
        let prefixes: Vec<IpNet> = (0..300)
            .map(|i| net(&format!("20.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        for p in &prefixes {
            table.set(*p, Some(gw.clone()));
        }
        table.set(
            net("30.0.0.0/24"),
            Some(RouteTarget::Via {
                gws: vec![ip("10.99.0.1")],
            }),
        );
        let report = table.flush().await;
        assert_eq!(report.routes_added, 300, "{report:?}");
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(report.errors[0].contains("30.0.0.0/24"), "{report:?}");
        assert_eq!(table.pending(), 1);
        assert_eq!(ns.lines("ip -4 route show proto 98").len(), 300);
        assert!(ns
            .sh("ip -4 route show proto 98 exact 20.0.7.0/24")
            .contains("via 192.168.80.2"));

        // Half deleted; one of them already gone from the kernel (not an error).
        ns.sh("ip route del 20.0.0.0/24 proto 98");
        for p in &prefixes[..150] {
            table.set(*p, None);
        }
        table.set(net("30.0.0.0/24"), None);
        let report = table.flush().await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.routes_removed, 150, "{report:?}");
        assert_eq!(table.pending(), 0);
        assert_eq!(ns.lines("ip -4 route show proto 98").len(), 150);

        let report = table.clear().await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(ns.lines("ip -4 route show proto 98").is_empty());
    });
}
