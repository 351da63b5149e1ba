//! IPIP end to end, in a VM: this machine's kernel has no `ipip` module, so the test boots
//! Debian's cloud kernel (`linux-image-cloud-amd64`, which has it) in qemu (TCG) from an
//! initramfs it builds: busybox, `ip` from iproute2, the kernel modules the lab needs (ipip with
//! tunnel4 and ip_tunnel, veth, bridge with stp and llc), the Brindle binaries and their shared
//! libraries. Its `/init` (lab/vm/ipip-init.sh) runs `brindle-lab demo --encap ipip` with two
//! nodes and one pod each: every pod pings every other pod, the routes and the `tunl0` counters
//! are printed, and the demo fails if a node sent nothing through `tunl0`. Then the in-VM
//! scenarios of this file: pool mode changes under a running ping, and `ipipMode: CrossSubnet`
//! with four nodes on two segments joined by a router namespace (same segment direct, across
//! through `tunl0`, by `tunl0`'s TX counters). The test reads the console with a deadline and
//! checks the result line, the routes and the counters.
//!
//! Root only (building the initramfs needs the root-only kernel image); skipped outside CI when
//! not root or when a package is missing (qemu-system-x86, linux-image-cloud-amd64,
//! busybox-static, cpio, iproute2).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brindle_lab::{bin_dir, is_root, Cluster, ClusterSpec, Encap};

/// The modules `/init` loads (each after its dependencies).
const MODULES: &[&str] = &["ipip", "veth", "bridge"];
/// How long the VM may take, boot to power-off (TCG is slow; a run takes about a minute).
const DEADLINE: Duration = Duration::from_secs(480);
const PASS: &str = "BRINDLE-VM-RESULT: PASS";
const RESULT: &str = "BRINDLE-VM-RESULT:";

/// The cloud kernel: its image and its modules directory.
struct CloudKernel {
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn find_cloud_kernel() -> Option<CloudKernel> {
    let mut versions: Vec<String> = fs::read_dir("/usr/lib/modules")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|v| v.ends_with("-cloud-amd64"))
        .filter(|v| Path::new(&format!("/boot/vmlinuz-{v}")).exists())
        .collect();
    versions.sort();
    let v = versions.pop()?;
    Some(CloudKernel {
        vmlinuz: PathBuf::from(format!("/boot/vmlinuz-{v}")),
        modules: PathBuf::from(format!("/usr/lib/modules/{v}")),
    })
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The cloud kernel and the tools, or `None` when the test is to be skipped.
fn prerequisites() -> Option<CloudKernel> {
    let kernel = find_cloud_kernel();
    let missing: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("ip", "iproute2"),
    ]
    .into_iter()
    .filter(|(bin, _)| which(bin).is_none())
    .map(|(_, package)| package)
    .chain(kernel.is_none().then_some("linux-image-cloud-amd64"))
    .collect();
    let reason = if !is_root() {
        "needs root".to_string()
    } else if !missing.is_empty() {
        format!("needs the packages {missing:?}")
    } else {
        return kernel;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the IPIP VM test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop (the VM, when the test fails or times out).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `modules` and their dependencies (from `modules.dep`), each after what it needs.
fn module_order(modules_dir: &Path, modules: &[&str]) -> Vec<String> {
    let dep = fs::read_to_string(modules_dir.join("modules.dep")).expect("reading modules.dep");
    let deps: BTreeMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| {
            let (module, needs) = l.split_once(':')?;
            Some((module, needs.split_whitespace().collect()))
        })
        .collect();
    let by_name = |name: &str| {
        deps.keys()
            .find(|path| {
                Path::new(path)
                    .file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.split('.').next() == Some(name))
            })
            .map(|p| p.to_string())
            .unwrap_or_else(|| panic!("module {name} not in modules.dep"))
    };
    // modules.dep lists a module's dependencies transitively, deepest last.
    let mut order: Vec<String> = Vec::new();
    for name in modules {
        let path = by_name(name);
        let needs = deps.get(path.as_str()).cloned().unwrap_or_default();
        for m in needs
            .iter()
            .rev()
            .map(|m| m.to_string())
            .chain([path.clone()])
        {
            if !order.contains(&m) {
                order.push(m);
            }
        }
    }
    order
}

/// Copies `src` to `root` + `src` (same path inside), creating directories.
fn copy_same_path(root: &Path, src: &Path) {
    let dst = root.join(src.strip_prefix("/").expect("an absolute path"));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).expect("creating a directory in the initramfs");
    }
    fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
}

/// The shared libraries `binary` needs, by `ldd`, the dynamic loader included.
fn shared_libraries(binary: &Path) -> BTreeSet<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("running ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `src` into `bin` as `name`, without debug information (debug builds are ~200 MB).
fn install_binary(bin: &Path, src: &Path, name: &str, libs: &mut BTreeSet<PathBuf>) {
    let dst = bin.join(name);
    let stripped = Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(&dst)
        .arg(src)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    }
    libs.extend(shared_libraries(src));
}

/// Builds the initramfs (a gzipped newc cpio) in `work`; returns its path.
fn build_initramfs(work: &Path, kernel: &CloudKernel) -> PathBuf {
    let root = work.join("root");
    let bin = root.join("bin");
    for dir in ["bin", "proc", "sys", "dev", "run", "tmp", "etc", "modules"] {
        fs::create_dir_all(root.join(dir)).expect("creating initramfs directories");
    }
    // Busybox and its applets; `ip` is iproute2's (netns, JSON), `ping` busybox's.
    let busybox = which("busybox").expect("busybox checked");
    let mut libs = BTreeSet::new();
    install_binary(&bin, &busybox, "busybox", &mut libs);
    let applets = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "ip" && applet != "busybox" {
            symlink("busybox", bin.join(applet)).expect("linking a busybox applet");
        }
    }
    install_binary(&bin, &which("ip").expect("ip checked"), "ip", &mut libs);
    let brindle_bins = bin_dir().expect("Brindle binaries built");
    for name in ["brindle-node", "brindlectl", "brindle"] {
        install_binary(&bin, &brindle_bins.join(name), name, &mut libs);
    }
    install_binary(
        &bin,
        Path::new(env!("CARGO_BIN_EXE_brindle-lab")),
        "brindle-lab",
        &mut libs,
    );
    // This test binary too: /init runs its in-VM scenario after the demo.
    let me = std::env::current_exe().expect("this test binary");
    install_binary(&bin, &me, "ipip-scenarios", &mut libs);
    for lib in &libs {
        copy_same_path(&root, lib);
    }
    // Kernel modules, in load order.
    let order = module_order(&kernel.modules, MODULES);
    let mut listing = String::new();
    for module in &order {
        let name = Path::new(module)
            .file_name()
            .and_then(|f| f.to_str())
            .expect("module file name");
        fs::copy(kernel.modules.join(module), root.join("modules").join(name))
            .unwrap_or_else(|e| panic!("copying {module}: {e}"));
        listing.push_str(name);
        listing.push('\n');
    }
    fs::write(root.join("modules/order"), listing).expect("writing modules/order");
    let init = root.join("init");
    fs::write(&init, include_str!("../vm/ipip-init.sh")).expect("writing /init");
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).expect("chmod /init");

    let image = work.join("initrd.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$1\"")
        .arg("sh")
        .arg(&image)
        .current_dir(&root)
        .status()
        .expect("running cpio");
    assert!(status.success(), "building the initramfs failed");
    image
}

/// Boots the VM; returns its console output once it powered off (or at the deadline).
fn boot(kernel: &CloudKernel, initrd: &Path) -> (String, bool) {
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
        // No NIC: nothing leaves the VM, and no option ROM (ipxe-qemu) is needed.
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu-system-x86_64");
    let mut vm = KillOnDrop(child);
    let console = Arc::new(Mutex::new(String::new()));
    let reader = {
        let console = Arc::clone(&console);
        let stdout = vm.0.stdout.take().expect("qemu stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut out = std::io::stderr();
                let _ = writeln!(out, "vm| {line}");
                let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
                c.push_str(&line);
                c.push('\n');
            }
        })
    };
    let deadline = Instant::now() + DEADLINE;
    let mut finished = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = vm.0.try_wait() {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(vm);
    let _ = reader.join();
    let out = console.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (out, finished)
}

/// The console's last lines, for failure messages (all of it is on stderr as `vm| ...`).
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_tunl0_in_a_vm() {
    let Some(kernel) = prerequisites() else {
        return;
    };
    let work = TempDir::new("brindle-ipip-vm");
    let initrd = build_initramfs(&work.0, &kernel);
    let started = Instant::now();
    let (console, finished) = boot(&kernel, &initrd);
    let took = started.elapsed();
    // Not eprintln!: the test harness would hold it back; the console lines are not held either.
    let _ = writeln!(
        std::io::stderr(),
        "VM ran {took:?} (powered off by itself: {finished})"
    );
    let last = tail(&console);
    let result = console
        .lines()
        .find(|l| l.contains(RESULT))
        .unwrap_or_else(|| {
            panic!("no result line after {took:?} (powered off: {finished}); last lines of the console:\n{last}")
        });
    assert!(
        result.contains(PASS),
        "{result}; last lines of the console:\n{last}"
    );
    // The module brought the fallback device (printed by /init before the demo).
    assert!(
        console
            .lines()
            .any(|l| l.contains("brindle-vm: kernel") && l.contains("tunl0@NONE")),
        "the kernel had no tunl0; last lines of the console:\n{last}"
    );
    // Each node routes the other's block through tunl0 to the other node's IP.
    let tunnel_routes: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("via 10.99.0.") && l.contains("dev tunl0 onlink"))
        .collect();
    assert!(
        tunnel_routes.len() >= 2,
        "expected a tunl0 route per node; last lines of the console:\n{last}"
    );
    // tunl0 is up with MTU uplink-20 and a /32 tunnel address from the pool, on every node.
    let devices: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("device tunl0:"))
        .collect();
    assert_eq!(devices.len(), 2, "last lines of the console:\n{last}");
    for d in &devices {
        assert!(
            d.contains("mtu 1480, up, addresses 10.244.") && d.trim_end().ends_with("/32"),
            "{d}"
        );
    }
    // The Node resources carry the IPIP tunnel addresses, and IPAM counts them as in use.
    for node in ["node1", "node2"] {
        assert!(
            console
                .lines()
                .any(|l| l.starts_with(node) && l.contains(" 10.244.")),
            "{node}: no IPIP tunnel address in brindlectl get nodes; last lines of the console:\n{last}"
        );
    }
    assert!(
        console.contains("Found 2 node tunnel IPs.")
            && console.contains("Check complete; found 0 problems."),
        "ipam check; last lines of the console:\n{last}"
    );
    // The pings went through tunl0: per node a count of packets sent, each non-zero.
    let counters = console
        .split("tunl0 packets sent during the pings:")
        .nth(1)
        .unwrap_or_else(|| panic!("no tunl0 counters printed; last lines of the console:\n{last}"));
    let sent: Vec<u64> = counters
        .lines()
        .skip(1)
        .take(2)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(
        sent.len(),
        2,
        "two counters; last lines of the console:\n{last}"
    );
    assert!(
        sent.iter().all(|n| *n >= 2),
        "each node's echo and reply go through tunl0: {sent:?}"
    );
    // The in-VM CrossSubnet scenario ran (its asserts are part of the PASS line) and said
    // what the counters showed.
    assert!(
        console
            .lines()
            .any(|l| l.contains("CrossSubnet: tunl0 packets sent")),
        "no CrossSubnet summary; last lines of the console:\n{last}"
    );
    assert!(finished, "the VM did not power off within {DEADLINE:?}");
}

/// Set by the VM's /init for the in-VM scenario below.
const IN_VM: &str = "BRINDLE_IN_VM";

/// Waits until node `i` routes `block` through `dev`; returns the route line.
fn wait_route_dev(cluster: &Cluster, i: usize, block: &str, dev: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let routes = cluster.routes(i).expect("routes");
        if let Some(line) = routes
            .lines()
            .find(|l| l.starts_with(&format!("{block} ")) && l.contains(&format!("dev {dev} ")))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "node{}: {block} not through {dev} after 60 s:\n{routes}",
            i + 1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Applies the lab pool with these modes.
fn set_pool_modes(cluster: &Cluster, ipip: &str, vxlan: &str) {
    let path = std::env::temp_dir().join("lab-pool-modes.yaml");
    fs::write(
        &path,
        format!(
            "apiVersion: brindle.dev/v1\nkind: IPPool\nmetadata:\n  name: lab-pool\nspec:\n  \
             cidr: 10.244.0.0/16\n  ipipMode: {ipip}\n  vxlanMode: {vxlan}\n"
        ),
    )
    .expect("writing the pool");
    cluster
        .ctl(&["apply", "-f", &path.display().to_string()])
        .expect("pool applied");
}

/// A continuous ping (5 per second) from a pod, running while the pool changes.
struct Pinger(Child);

impl Pinger {
    fn start(netns: &str, to: &str, count: u32) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-q", "-i", "0.2", "-W", "2"])
            .args(["-c", &count.to_string(), to])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ping");
        Pinger(child)
    }

    /// (transmitted, received).
    fn finish(self) -> (u32, u32) {
        let out = self.0.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let numbers: Vec<u32> = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }
}

/// Inside the VM (started by the test above, which checks its PASS line): a pool's mode moves
/// traffic between tunl0 and the direct path, and back, while a pod keeps pinging the other.
#[test]
#[ignore = "runs inside the IPIP VM that pods_on_two_nodes_reach_each_other_through_tunl0_in_a_vm boots"]
fn in_vm_pool_mode_changes_move_traffic_without_losing_reachability() {
    assert!(
        std::env::var_os(IN_VM).is_some(),
        "only the IPIP VM runs this (its kernel has ipip.ko)"
    );
    let cluster = Cluster::build(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        encap: Encap::IpipAlways,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(60))
        .expect("routes converge");
    let (a, b) = (&cluster.pods[0], &cluster.pods[1]);
    let block_of = |i: usize| {
        let routes = cluster.routes(i).expect("routes");
        routes
            .lines()
            .find_map(|l| l.strip_prefix("blackhole "))
            .map(|b| b.trim().to_string())
            .unwrap_or_else(|| panic!("node{}: no local block:\n{routes}", i + 1))
    };
    let (block_a, block_b) = (block_of(0), block_of(1));
    wait_route_dev(&cluster, 0, &block_b, "tunl0");
    wait_route_dev(&cluster, 1, &block_a, "tunl0");
    assert!(cluster.ping(a, &b.ip, 10), "IPIP: {} -> {}", a.name, b.ip);

    for (ipip, dev) in [("Never", "eth0"), ("Always", "tunl0")] {
        let tunl_before = cluster.tx_packets(0, "tunl0").expect("counter");
        let pinger = Pinger::start(&a.netns, &b.ip, 50);
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        set_pool_modes(&cluster, ipip, "Never");
        let route_a = wait_route_dev(&cluster, 0, &block_b, dev);
        wait_route_dev(&cluster, 1, &block_a, dev);
        let switched = started.elapsed();
        let (sent, received) = pinger.finish();
        let through_tunl = cluster.tx_packets(0, "tunl0").expect("counter") - tunl_before;
        let summary = format!(
            "ipipMode {ipip}: routes moved to {dev} in {switched:?} ({route_a}); \
             ping {received}/{sent} answered; {through_tunl} packets through tunl0"
        );
        println!("{summary}");
        // The kernel replaces each route in place: at most a packet or two in flight are lost.
        assert!(sent >= 40 && received + 3 >= sent, "{summary}");
        assert!(
            cluster.ping(a, &b.ip, 10),
            "{summary}: reachable afterwards"
        );
        let tunl_after = cluster.tx_packets(0, "tunl0").expect("counter");
        assert!(cluster.ping(a, &b.ip, 3), "{summary}");
        let sent_now = cluster.tx_packets(0, "tunl0").expect("counter") - tunl_after;
        match dev {
            "tunl0" => assert!(sent_now >= 1, "{summary}: the last ping skipped tunl0"),
            _ => assert_eq!(
                sent_now, 0,
                "{summary}: the last ping still went through tunl0"
            ),
        }
        // Without an IPIP pool tunl0 keeps no address (the tunnel address was released).
        let tunl = cluster.link_summary(0, "tunl0").expect("tunl0");
        assert_eq!(
            tunl.contains("addresses none"),
            ipip == "Never",
            "{summary}: tunl0 {tunl}"
        );
    }
    // The same pod on the other side answers too.
    assert!(cluster.ping(b, &a.ip, 10), "{} -> {}", b.name, a.ip);
}

/// Inside the VM: `ipipMode: CrossSubnet` with four nodes on two L2 segments joined by a
/// router (the lab's fabric namespace): a pod's traffic to a pod on its own segment goes
/// direct (`tunl0` sends nothing), to a pod on the other segment through `tunl0`.
#[test]
#[ignore = "runs inside the IPIP VM that pods_on_two_nodes_reach_each_other_through_tunl0_in_a_vm boots"]
fn in_vm_cross_subnet_tunnels_only_between_segments() {
    assert!(
        std::env::var_os(IN_VM).is_some(),
        "only the IPIP VM runs this (its kernel has ipip.ko)"
    );
    let cluster = Cluster::build(ClusterSpec {
        nodes: 4,
        pods_per_node: 1,
        segments: 2,
        encap: Encap::IpipCrossSubnet,
        verbose: false,
        ..ClusterSpec::default()
    })
    .expect("cluster builds");
    cluster
        .wait_converged(Duration::from_secs(60))
        .expect("routes converge");
    // node1 and node2 on 10.99.0.0/24, node3 and node4 on 10.99.1.0/24.
    assert_eq!(
        (0..4).map(|i| cluster.segment_of(i)).collect::<Vec<_>>(),
        [0, 0, 1, 1]
    );
    let pod_on = |node: usize| {
        cluster
            .pods
            .iter()
            .find(|p| p.node == node)
            .unwrap_or_else(|| panic!("no pod on node{}", node + 1))
    };
    let block_of = |i: usize| {
        let routes = cluster.routes(i).expect("routes");
        routes
            .lines()
            .find_map(|l| l.strip_prefix("blackhole "))
            .map(|b| b.trim().to_string())
            .unwrap_or_else(|| panic!("node{}: no local block:\n{routes}", i + 1))
    };
    let (a, same, across) = (pod_on(0), pod_on(1), pod_on(2));
    let same_route = wait_route_dev(&cluster, 0, &block_of(1), "eth0");
    let across_route = wait_route_dev(&cluster, 0, &block_of(2), "tunl0");
    // And the way back, for the replies.
    wait_route_dev(&cluster, 1, &block_of(0), "eth0");
    wait_route_dev(&cluster, 2, &block_of(0), "tunl0");
    assert!(
        same_route.contains("via 10.99.0.12"),
        "same segment: {same_route}"
    );
    assert!(
        across_route.contains("via 10.99.1.13") && across_route.contains("onlink"),
        "across: {across_route}"
    );

    let tunl = |i: usize| cluster.tx_packets(i, "tunl0").expect("tunl0 counter");
    let before = (tunl(0), tunl(1));
    assert!(
        cluster.ping(a, &same.ip, 10),
        "same segment: {} -> {}",
        a.name,
        same.ip
    );
    let same_sent = (tunl(0) - before.0, tunl(1) - before.1);
    let before = (tunl(0), tunl(2));
    assert!(
        cluster.ping(a, &across.ip, 10),
        "across: {} -> {}",
        a.name,
        across.ip
    );
    let across_sent = (tunl(0) - before.0, tunl(2) - before.1);
    println!(
        "CrossSubnet: tunl0 packets sent (node1, peer) for a ping on the same segment \
         {same_sent:?}, across segments {across_sent:?}; routes: {same_route} | {across_route}"
    );
    assert_eq!(
        same_sent,
        (0, 0),
        "same segment: the echo or its reply went through tunl0"
    );
    assert!(
        across_sent.0 >= 1 && across_sent.1 >= 1,
        "across segments: the echo and its reply go through tunl0: {across_sent:?}"
    );
}
