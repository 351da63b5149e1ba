//! The real `brindle` plugin against a real `brindle-node`, in network namespaces: what a
//! container runtime sees (stdout, exit status) and what is left on the node afterwards (IPAM
//! allocations read back with `brindlectl`, host interfaces with `ip link`).
//!
//! Each test builds its own node: a namespace with an uplink veth, an embedded datastore in a
//! fresh directory holding one IP pool, and an agent on its own socket; pods are namespaces of
//! their own. Everything is removed by guards, also when a test fails. Needs root; without it
//! the tests print a skip message, unless `CI` is set, where they fail.

mod node;

use std::process::Command;
use std::time::{Duration, Instant};

use node::*;
use serde_json::json;

#[test]
fn add_twice_check_and_del_twice_against_the_real_agent() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let pod = Netns::new("brc-pod");
    let args = k8s_args("cart-7", "c0ffee01");
    let pod_path = pod.path();
    let env = pod_env("c0ffee01", &pod_path, &args);

    let out = node.plugin("ADD", &node.conf("1.1.0", json!({})), &env);
    assert_ok(&out, "ADD");
    let first = stdout_json(&out);
    assert_eq!(first["cniVersion"], "1.1.0");
    let ip = pod_address(&first);
    let host_veth = first["interfaces"][0]["name"].as_str().expect("host veth");
    assert!(host_veth.starts_with("brd"), "{first}");
    // 1.1.0 reports the MTU the pod really got.
    let link = pod.ip(&["-o", "link", "show", "dev", "eth0"]);
    let mtu = first["interfaces"][1]["mtu"]
        .as_u64()
        .expect("mtu in 1.1.0");
    assert!(link.contains(&format!(" mtu {mtu} ")), "{link} vs {first}");
    assert_eq!(first["interfaces"][0]["mtu"], mtu);
    assert_eq!(first["interfaces"][1]["sandbox"], pod.path());
    assert_eq!(node.host_veths(), [host_veth]);
    assert!(
        pod.ip(&["-o", "addr", "show", "dev", "eth0"])
            .contains(&format!("{ip}/32")),
        "the pod has its address"
    );

    // The endpoint records the Kubernetes identity, the interfaces and the address.
    let eps = node.endpoints();
    assert_eq!(eps.len(), 1, "{eps:?}");
    let spec = &eps[0]["spec"];
    assert_eq!(spec["namespace"], "shop");
    assert_eq!(spec["pod"], "cart-7");
    assert_eq!(spec["endpoint"], "eth0");
    assert_eq!(spec["interfaceName"], host_veth);
    assert_eq!(spec["containerID"], "c0ffee01");
    assert_eq!(spec["ipNetworks"], json!([format!("{ip}/32")]));

    // A second ADD returns the same result and allocates nothing more.
    let allocations = node.allocations();
    assert_eq!(allocations.len(), 1, "{allocations:?}");
    let out = node.plugin("ADD", &node.conf("1.1.0", json!({})), &env);
    assert_ok(&out, "second ADD");
    assert_eq!(stdout_json(&out), first, "a repeated ADD answers the same");
    assert_eq!(node.allocations(), allocations);
    assert_eq!(node.host_veths(), [host_veth]);

    // CHECK with the cached result: all is as recorded.
    let with_prev = node.conf("1.1.0", json!({ "prevResult": first.clone() }));
    assert_ok(&node.plugin("CHECK", &with_prev, &env), "CHECK");

    // A cached result that disagrees with the pod is named.
    let mut wrong = first.clone();
    wrong["ips"][0]["address"] = json!("10.250.0.200/32");
    let out = node.plugin(
        "CHECK",
        &node.conf("1.1.0", json!({ "prevResult": wrong })),
        &env,
    );
    let msg = assert_cni_error(&out, 100, "CHECK with a wrong prevResult");
    assert!(msg.contains("10.250.0.200/32"), "{msg}");

    // Kernel state that differs is named: a sysctl on the host veth, the pod's address.
    node.ns.ip(&["link", "set", host_veth, "mtu", "1400"]);
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &node.ns.0,
            "sh",
            "-c",
            &format!("echo 0 > /proc/sys/net/ipv4/conf/{host_veth}/proxy_arp"),
        ],
    );
    pod.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    // (Removing the pod's only IPv4 address also makes the kernel flush its routes.)
    let out = node.plugin("CHECK", &with_prev, &env);
    let msg = assert_cni_error(&out, 100, "CHECK of a broken pod");
    for part in [
        "proxy_arp on",
        "host interface MTU is 1400",
        &format!("address {ip}/32 missing"),
        "route default via 169.254.1.1 dev eth0 missing",
    ] {
        assert!(msg.contains(part), "CHECK should name {part:?}: {msg}");
    }

    // A repeated ADD of a broken pod wires it again, with the same address.
    let out = node.plugin("ADD", &node.conf("1.1.0", json!({})), &env);
    assert_ok(&out, "ADD of a broken pod");
    let rewired = stdout_json(&out);
    assert_eq!(pod_address(&rewired), ip);
    // The veth pair is new, but the pod's MAC is derived from the interface names, so the
    // result cached before the re-ADD still fits.
    assert_eq!(rewired["interfaces"], first["interfaces"]);
    assert_ok(
        &node.plugin("CHECK", &with_prev, &env),
        "CHECK with the result before re-ADD",
    );
    let with_prev = node.conf("1.1.0", json!({ "prevResult": rewired }));
    assert_ok(
        &node.plugin("CHECK", &with_prev, &env),
        "CHECK after re-ADD",
    );
    assert_eq!(node.allocations().len(), 1);

    // DEL removes everything; a second DEL, and one without the namespace, still succeed.
    let out = node.plugin("DEL", &with_prev, &env);
    assert_ok(&out, "DEL");
    assert!(out.stdout.is_empty(), "DEL prints nothing");
    node.assert_clean("DEL");
    assert_ok(&node.plugin("DEL", &with_prev, &env), "second DEL");
    let no_netns = pod_env("c0ffee01", "", &args);
    assert_ok(
        &node.plugin("DEL", &node.conf("1.1.0", json!({})), &no_netns),
        "DEL without CNI_NETNS",
    );
    // CHECK of a pod that is gone says so.
    let out = node.plugin("CHECK", &with_prev, &env);
    assert_cni_error(&out, 3, "CHECK after DEL");
}

#[test]
fn every_version_gets_its_result_shape_from_the_real_agent() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let mut pods = Vec::new();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .into_iter()
        .enumerate()
    {
        let ns = Netns::new("brc-pod");
        let container = format!("ver{i}");
        let result = add(&node, version, &container, &format!("v{i}"), &ns);
        assert_eq!(result["cniVersion"], version);
        let ip = &result["ips"][0];
        assert_eq!(
            ip.get("version").is_some(),
            version < "1.0.0",
            "{version}: {result}"
        );
        assert_eq!(ip["interface"], 1, "{version}");
        assert_eq!(
            result["interfaces"][1].get("mtu").is_some(),
            version == "1.1.0",
            "{version}: {result}"
        );
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0", "{version}");
        pods.push((container, ns, version));
    }
    assert_eq!(node.allocations().len(), 5);
    for (container, ns, version) in &pods {
        let args = k8s_args("x", container);
        let pod_name = format!("v{}", &container[3..]);
        let args = args.replace("K8S_POD_NAME=x", &format!("K8S_POD_NAME={pod_name}"));
        let out = node.plugin(
            "DEL",
            &node.conf(version, json!({})),
            &pod_env(container, &ns.path(), &args),
        );
        assert_ok(&out, &format!("DEL {version}"));
    }
    node.assert_clean("DEL of every version's pod");
}

#[test]
fn gc_releases_what_the_runtime_no_longer_lists() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let keep_ns = Netns::new("brc-pod");
    let stale_ns = [Netns::new("brc-pod"), Netns::new("brc-pod")];
    let keep = add(&node, "1.1.0", "keep01", "keep", &keep_ns);
    for (i, ns) in stale_ns.iter().enumerate() {
        add(
            &node,
            "1.1.0",
            &format!("stale0{i}"),
            &format!("stale{i}"),
            ns,
        );
    }
    // A pod whose sandbox was replaced without a DEL for the old one: the old container's
    // address is leaked, while the host veth (named after the pod) now serves the new sandbox.
    let old_ns = Netns::new("brc-pod");
    add(&node, "1.1.0", "web-old", "web", &old_ns);
    let web_ns = Netns::new("brc-pod");
    let web = add(&node, "1.1.0", "web-new", "web", &web_ns);
    assert_eq!(node.allocations().len(), 5);
    assert_eq!(node.host_veths().len(), 4);

    // An allocation of another network on this node is not GC's business.
    let other = Netns::new("brc-pod");
    let other_conf = node.conf("1.1.0", json!({"name": "other-net"}));
    let other_args = k8s_args("other", "other01");
    assert_ok(
        &node.plugin(
            "ADD",
            &other_conf,
            &pod_env("other01", &other.path(), &other_args),
        ),
        "ADD in another network",
    );

    let gc_conf = node.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [
            {"containerID": "keep01", "ifname": "eth0"},
            {"containerID": "web-new", "ifname": "eth0"},
        ]}),
    );
    let out = node.plugin("GC", &gc_conf, &[]);
    assert_ok(&out, "GC");
    assert!(out.stdout.is_empty(), "GC prints nothing");

    let mut handles: Vec<String> = node.allocations().into_iter().map(|(_, h)| h).collect();
    handles.sort();
    assert_eq!(
        handles,
        [
            "k8s-pod-network.keep01",
            "k8s-pod-network.web-new",
            "other-net.other01"
        ],
        "only the valid attachments and the other network keep addresses"
    );
    let veths = node.host_veths();
    assert_eq!(veths.len(), 3, "{veths:?}");
    for result in [&keep, &web] {
        let veth = result["interfaces"][0]["name"].as_str().expect("veth");
        assert!(veths.iter().any(|v| v == veth), "{veth} kept: {veths:?}");
    }
    let mut pods: Vec<String> = node
        .endpoints()
        .iter()
        .map(|e| e["spec"]["pod"].as_str().unwrap_or("").to_string())
        .collect();
    pods.sort();
    assert_eq!(pods, ["keep", "other", "web"]);

    // The kept pods are untouched, the replaced sandbox's successor included.
    for (result, container, pod, ns) in [
        (&keep, "keep01", "keep", &keep_ns),
        (&web, "web-new", "web", &web_ns),
    ] {
        let args = k8s_args(pod, container);
        let with_prev = node.conf("1.1.0", json!({ "prevResult": result }));
        assert_ok(
            &node.plugin("CHECK", &with_prev, &pod_env(container, &ns.path(), &args)),
            &format!("CHECK of {pod} after GC"),
        );
    }
    // GC again finds nothing more to do.
    assert_ok(&node.plugin("GC", &gc_conf, &[]), "second GC");
    assert_eq!(node.allocations().len(), 3);

    // GC without the list is refused, and removes nothing.
    let out = node.plugin("GC", &node.conf("1.1.0", json!({})), &[]);
    let msg = assert_cni_error(&out, 7, "GC without valid-attachments");
    assert!(msg.contains("cni.dev/valid-attachments"), "{msg}");
    assert_eq!(node.allocations().len(), 3);
}

#[test]
fn status_is_51_when_the_pool_is_full_and_50_when_the_agent_is_down() {
    if !can_run() {
        return;
    }
    // One block of 4 addresses.
    let mut node = Node::start("10.250.9.0/30", 30);
    let conf = node.conf("1.1.0", json!({}));
    assert_ok(&node.plugin("STATUS", &conf, &[]), "STATUS with room");

    let mut namespaces = Vec::new();
    let mut added = 0;
    loop {
        let ns = Netns::new("brc-pod");
        let container = format!("fill{added}");
        let args = k8s_args(&format!("fill{added}"), &container);
        let out = node.plugin("ADD", &conf, &pod_env(&container, &ns.path(), &args));
        if !out.status.success() {
            let v = stdout_json(&out);
            assert_eq!(v["code"], 101, "a full pool is 'no address': {v}");
            break;
        }
        added += 1;
        namespaces.push(ns);
        assert!(added <= 4, "a /30 holds at most 4 pods");
    }
    assert_eq!(added, 4, "every address of the /30 is usable");
    assert_eq!(
        node.host_veths().len(),
        4,
        "the failed ADD left no interface"
    );
    let out = node.plugin("STATUS", &conf, &[]);
    let msg = assert_cni_error(&out, 51, "STATUS with a full pool");
    assert!(msg.contains("no IP pool has room"), "{msg}");

    let args = k8s_args("fill0", "fill0");
    assert_ok(
        &node.plugin(
            "DEL",
            &conf,
            &pod_env("fill0", &namespaces[0].path(), &args),
        ),
        "DEL",
    );
    assert_ok(&node.plugin("STATUS", &conf, &[]), "STATUS after a DEL");

    node.stop_agent();
    let out = node.plugin("STATUS", &conf, &[]);
    let msg = assert_cni_error(&out, 50, "STATUS without an agent");
    assert!(msg.contains(&node.socket.display().to_string()), "{msg}");
    // ADD with the agent down is "try again later".
    let ns = Netns::new("brc-pod");
    let args = k8s_args("late", "late01");
    let out = node.plugin("ADD", &conf, &pod_env("late01", &ns.path(), &args));
    assert_cni_error(&out, 11, "ADD without an agent");
    // So is DEL: answering success would let the runtime forget a pod whose address and
    // interface are still there.
    let args = k8s_args("fill1", "fill1");
    let out = node.plugin(
        "DEL",
        &conf,
        &pod_env("fill1", &namespaces[1].path(), &args),
    );
    let msg = assert_cni_error(&out, 11, "DEL without an agent");
    assert!(msg.contains("is brindle-node running"), "{msg}");
}

#[test]
fn bad_input_is_a_named_error_and_leaks_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let pod = Netns::new("brc-pod");
    let args = k8s_args("web", "bad01");
    let pod_path = pod.path();
    let env = pod_env("bad01", &pod_path, &args);
    let conf = node.conf("1.0.0", json!({}));

    // Malformed configuration JSON.
    let out = run_plugin("ADD", "{\"cniVersion\": \"1.0.0\", \"name\": ", &env);
    let msg = assert_cni_error(&out, 6, "malformed JSON");
    assert!(msg.contains("decode"), "{msg}");
    node.assert_clean("malformed JSON");

    // Each missing variable is named.
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let partial: Vec<(&str, &str)> = env.iter().copied().filter(|(k, _)| *k != var).collect();
        let out = node.plugin("ADD", &conf, &partial);
        let msg = assert_cni_error(&out, 4, var);
        assert!(msg.contains(var), "{msg}");
        node.assert_clean(var);
    }

    // An unknown CNI_ARGS key without IgnoreUnknown; with it, the same key is accepted.
    let strict = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;SURPRISE=1";
    let out = node.plugin("ADD", &conf, &pod_env("bad01", &pod.path(), strict));
    let msg = assert_cni_error(&out, 4, "unknown CNI_ARGS key");
    assert!(
        msg.contains("SURPRISE") && msg.contains("IgnoreUnknown"),
        "{msg}"
    );
    node.assert_clean("unknown CNI_ARGS key");

    // A namespace path that does not exist: the agent names it, and undoes the allocation.
    let gone = format!("/run/netns/{}", unique("brc-missing"));
    let out = node.plugin("ADD", &conf, &pod_env("bad01", &gone, &args));
    let msg = assert_cni_error(&out, 3, "missing netns");
    assert!(msg.contains(&gone), "{msg}");
    node.assert_clean("a missing netns");

    // An agent that does not answer: paused, so connections queue but nothing is read.
    let pid = node.agent_pid();
    assert!(signal(pid, "STOP"), "pausing the agent");
    let impatient = node.conf("1.0.0", json!({"agent_timeout_seconds": 1}));
    let started = Instant::now();
    let out = node.plugin("ADD", &impatient, &env);
    let waited = started.elapsed();
    assert!(signal(pid, "CONT"), "resuming the agent");
    let msg = assert_cni_error(&out, 11, "an agent that does not answer");
    assert!(msg.contains("no complete answer within 1s"), "{msg}");
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");
    // The request the agent finds when it wakes up is past its deadline: it says so, and
    // allocates and wires nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.agent_log().contains("after the plugin's deadline") {
        assert!(
            Instant::now() < deadline,
            "the resumed agent did not refuse the late request:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.assert_clean("an agent that did not answer");

    // And the pod can be added normally afterwards.
    assert_ok(&node.plugin("ADD", &conf, &env), "ADD after all that");
    assert_eq!(node.allocations().len(), 1);
}

#[test]
fn an_add_finishing_after_the_plugins_deadline_is_undone() {
    if !can_run() {
        return;
    }
    if Command::new("sqlite3").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but sqlite3 is missing"
        );
        eprintln!("skipped: needs the sqlite3 shell");
        return;
    }
    let node = Node::start(POOL_CIDR, 26);
    let pod = Netns::new("brc-pod");
    let args = k8s_args("slow", "slow01");
    let pod_path = pod.path();
    let env = pod_env("slow01", &pod_path, &args);

    // The agent reads the request in time, then waits for the datastore past the deadline.
    let lock = DatastoreLock::take(&node);
    let impatient = node.conf("1.0.0", json!({"agent_timeout_seconds": 1}));
    let out = node.plugin("ADD", &impatient, &env);
    let msg = assert_cni_error(&out, 11, "ADD slower than the plugin's deadline");
    assert!(msg.contains("no complete answer within 1s"), "{msg}");
    drop(lock);

    // The agent finishes the ADD, sees that the plugin gave up, and undoes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = node.agent_log();
        if log.contains("ADD finished after the plugin's deadline; undoing it")
            && node.allocations().is_empty()
            && node.host_veths().is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late ADD was not undone: {:?} {:?}\n{log}",
            node.allocations(),
            node.host_veths()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.assert_clean("an ADD that finished after the deadline");
    assert!(
        pod.ip(&["-o", "link", "show"])
            .lines()
            .all(|l| !l.contains("eth0")),
        "the pod's interface is gone"
    );

    // With patience, the same ADD works.
    let out = node.plugin("ADD", &node.conf("1.0.0", json!({})), &env);
    assert_ok(&out, "ADD in time");
    assert_eq!(node.allocations().len(), 1);
}
