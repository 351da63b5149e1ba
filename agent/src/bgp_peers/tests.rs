use super::*;
use crate::model::NodeBgpSpec;

fn node(
    name: &str,
    ip: &str,
    labels: &[(&str, &str)],
    rr: Option<&str>,
) -> (String, Object<NodeSpec>) {
    let spec = NodeSpec {
        bgp: Some(NodeBgpSpec {
            ipv4_address: Some(ip.to_string()),
            route_reflector_cluster_id: rr.map(str::to_string),
            ..NodeBgpSpec::default()
        }),
        ..NodeSpec::default()
    };
    let mut obj = Object::new(name, spec);
    obj.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (name.to_string(), obj)
}

fn peer(name: &str, yaml: &str) -> (String, Object<BgpPeerSpec>) {
    let spec: BgpPeerSpec = serde_yaml::from_str(yaml).expect("BGPPeer yaml");
    (name.to_string(), Object::new(name, spec))
}

struct NoSecrets;
impl SecretSource for NoSecrets {
    fn get(&self, s: &SecretKeyRef) -> Result<String, String> {
        Err(format!("no secret {}", s.name))
    }
}

fn compute(
    local: &str,
    nodes: &BTreeMap<String, Object<NodeSpec>>,
    config: Option<&BgpConfigurationSpec>,
    peers: &BTreeMap<String, Object<BgpPeerSpec>>,
    secrets: &dyn SecretSource,
) -> (LocalBgp, BTreeMap<IpAddr, DesiredPeer>, Vec<String>) {
    let view = BgpView {
        local,
        nodes,
        config,
        configs: &BTreeMap::new(),
        peers,
    };
    let me = local_bgp(&view).expect("local settings");
    let (p, w) = desired_peers(&view, &me, secrets);
    (me, p, w)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn the_mesh_peers_every_node_and_one_side_of_each_pair_connects() {
    let nodes: BTreeMap<_, _> = [
        node("a", "10.0.0.9/24", &[], None),
        node("b", "10.0.0.10/24", &[], None),
        node("c", "10.0.0.11/24", &[], None),
    ]
    .into();
    let none = BTreeMap::new();
    let (me, a, w) = compute("a", &nodes, None, &none, &NoSecrets);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(me.asn, 64512);
    assert_eq!(
        a.keys().copied().collect::<Vec<_>>(),
        [ip("10.0.0.10"), ip("10.0.0.11")]
    );
    assert!(a
        .values()
        .all(|p| p.peer_type == PeerType::NodeToNodeMesh && p.neighbor.asn == 64512));
    // String comparison, as Calico: "10.0.0.10" < "10.0.0.9", so a connects to b.
    assert!(!a[&ip("10.0.0.10")].neighbor.passive);
    let (_, b, _) = compute("b", &nodes, None, &none, &NoSecrets);
    assert!(
        b[&ip("10.0.0.9")].neighbor.passive,
        "exactly one side of a-b connects"
    );
    for (x, y) in [("b", "c"), ("a", "c")] {
        let (_, px, _) = compute(x, &nodes, None, &none, &NoSecrets);
        let (_, py, _) = compute(y, &nodes, None, &none, &NoSecrets);
        let yip = IpAddr::V4(
            parse_v4_cidr_or_addr(
                nodes[y]
                    .spec
                    .bgp
                    .as_ref()
                    .and_then(|b| b.ipv4_address.as_deref())
                    .expect("ip"),
            )
            .expect("ip"),
        );
        let xip = IpAddr::V4(
            parse_v4_cidr_or_addr(
                nodes[x]
                    .spec
                    .bgp
                    .as_ref()
                    .and_then(|b| b.ipv4_address.as_deref())
                    .expect("ip"),
            )
            .expect("ip"),
        );
        assert_ne!(
            px[&yip].neighbor.passive, py[&xip].neighbor.passive,
            "{x}-{y}"
        );
    }

    // Mesh off, the Node's AS wins over the global one.
    let config = BgpConfigurationSpec {
        node_to_node_mesh_enabled: Some(false),
        as_number: Some(65000),
        ..BgpConfigurationSpec::default()
    };
    let mut nodes2 = nodes.clone();
    if let Some(b) = nodes2.get_mut("a").and_then(|n| n.spec.bgp.as_mut()) {
        b.as_number = Some(65009);
    }
    let (me, p, _) = compute("a", &nodes2, Some(&config), &none, &NoSecrets);
    assert_eq!(me.asn, 65009);
    assert!(p.is_empty());
    let (me, _, _) = compute("b", &nodes2, Some(&config), &none, &NoSecrets);
    assert_eq!(me.asn, 65000);
}

#[test]
fn reflectors_leave_the_mesh_and_peer_with_their_clients() {
    let nodes: BTreeMap<_, _> = [
        node(
            "rr",
            "10.0.0.1/24",
            &[("route-reflector", "true")],
            Some("244.0.0.1"),
        ),
        node("c1", "10.0.0.2/24", &[], None),
        node("c2", "10.0.0.3/24", &[], None),
    ]
    .into();
    let config = BgpConfigurationSpec {
        node_to_node_mesh_enabled: Some(false),
        ..BgpConfigurationSpec::default()
    };
    let peers: BTreeMap<_, _> = [peer(
        "to-rr",
        "nodeSelector: all()\npeerSelector: route-reflector == 'true'\n",
    )]
    .into();
    let (me, rr, w) = compute("rr", &nodes, Some(&config), &peers, &NoSecrets);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(me.cluster_id, Some(Ipv4Addr::new(244, 0, 0, 1)));
    assert_eq!(
        rr.keys().copied().collect::<Vec<_>>(),
        [ip("10.0.0.2"), ip("10.0.0.3")]
    );
    assert!(rr
        .values()
        .all(|p| p.neighbor.rr_client && p.peer_type == PeerType::NodeSpecific));
    let (_, c1, _) = compute("c1", &nodes, Some(&config), &peers, &NoSecrets);
    assert_eq!(c1.keys().copied().collect::<Vec<_>>(), [ip("10.0.0.1")]);
    assert!(!c1[&ip("10.0.0.1")].neighbor.rr_client);

    // With the mesh on, the clients still mesh among themselves but not with the reflector.
    let (_, c1, _) = compute("c1", &nodes, None, &BTreeMap::new(), &NoSecrets);
    assert_eq!(c1.keys().copied().collect::<Vec<_>>(), [ip("10.0.0.3")]);
    let (_, rr, _) = compute("rr", &nodes, None, &BTreeMap::new(), &NoSecrets);
    assert!(rr.is_empty());
}

#[test]
fn bgp_peers_select_nodes_and_carry_their_options() {
    let dir = std::env::temp_dir().join(format!("brindle-secrets-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("bgp")).expect("mkdir");
    std::fs::write(dir.join("bgp").join("tor"), "s3cret\n").expect("write");
    let nodes: BTreeMap<_, _> = [
        node("a", "10.0.1.2/24", &[("rack", "r1")], None),
        node("b", "10.0.2.2/24", &[("rack", "r2")], None),
    ]
    .into();
    let peers: BTreeMap<_, _> = [
        peer("tor-r1", "nodeSelector: rack == 'r1'\npeerIP: 10.0.1.1\nasNumber: 65101\npassword:\n  secretKeyRef: {name: bgp, key: tor}\nmaxRestartTime: 30s\nttlSecurity: 1\nkeepOriginalNextHop: true\n"),
        peer("tor-r2", "nodeSelector: rack == 'r2'\npeerIP: 10.0.2.1:1179\nasNumber: 65102\n"),
        peer("gw", "peerIP: 192.0.2.1\nasNumber: 65200\npassword:\n  secretKeyRef: {name: bgp, key: missing}\n"),
        peer("bad", "peerIP: 192.0.2.9\n"),
    ]
    .into();
    let (_, a, w) = compute("a", &nodes, None, &peers, &SecretDir(dir.clone()));
    let tor = &a[&ip("10.0.1.1")];
    assert_eq!(tor.peer_type, PeerType::NodeSpecific);
    assert_eq!(tor.neighbor.asn, 65101);
    assert!(!tor.neighbor.passive, "not a node: we connect");
    assert_eq!(tor.neighbor.password, Md5Key::new(b"s3cret"));
    assert_eq!(tor.neighbor.graceful_restart_time, Some(30));
    assert_eq!(tor.neighbor.ttl_security, Some(1));
    assert!(tor.neighbor.next_hop_keep);
    assert_eq!(tor.neighbor.local_address, Some(ip("10.0.1.2")));
    assert_eq!(tor.neighbor.peer_type, PeerType::NodeSpecific);
    assert!(
        !a.contains_key(&ip("10.0.2.1")),
        "rack r2's ToR is not ours"
    );
    assert!(a.contains_key(&ip("10.0.2.2")), "the mesh is still on");
    assert!(!a.contains_key(&ip("192.0.2.1")), "no secret, no session");
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w
        .iter()
        .any(|w| w.contains("BGPPeer/gw") && w.contains("missing")));
    assert!(w
        .iter()
        .any(|w| w.contains("BGPPeer/bad") && w.contains("asNumber")));
    let (_, b, _) = compute("b", &nodes, None, &peers, &SecretDir(dir.clone()));
    assert_eq!(b[&ip("10.0.2.1")].neighbor.port, 1179);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_change_resets_only_the_sessions_it_affects() {
    let nodes: BTreeMap<_, _> = [
        node("a", "10.0.0.1/24", &[], None),
        node("b", "10.0.0.2/24", &[], None),
        node("c", "10.0.0.3/24", &[], None),
    ]
    .into();
    let (_, before, _) = compute("a", &nodes, None, &BTreeMap::new(), &NoSecrets);
    let mut nodes2 = nodes.clone();
    if let Some(b) = nodes2.get_mut("c").and_then(|n| n.spec.bgp.as_mut()) {
        b.as_number = Some(65003);
    }
    nodes2.extend([node("d", "10.0.0.4/24", &[], None)]);
    nodes2.remove("b");
    let (_, after, _) = compute("a", &nodes2, None, &BTreeMap::new(), &NoSecrets);
    let (remove, add) = diff(&before, &after);
    assert_eq!(remove, [ip("10.0.0.2"), ip("10.0.0.3")]);
    assert_eq!(
        add.iter().map(|n| (n.address, n.asn)).collect::<Vec<_>>(),
        [(ip("10.0.0.3"), 65003), (ip("10.0.0.4"), 64512)]
    );
    assert_eq!(diff(&after, &after), (vec![], vec![]));
}

#[test]
fn keepalive_time_sets_a_hold_time_of_three_keepalives() {
    let nodes: BTreeMap<_, _> = [node("a", "10.0.0.1/24", &[], None)].into();
    let peers: BTreeMap<_, _> = [
        peer(
            "fast",
            "peerIP: 10.0.0.254\nasNumber: 65100\nkeepaliveTime: 10s\n",
        ),
        peer("plain", "peerIP: 10.0.0.253\nasNumber: 65100\n"),
    ]
    .into();
    let (_, a, w) = compute("a", &nodes, None, &peers, &NoSecrets);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(a[&ip("10.0.0.254")].neighbor.hold_time, Some(30));
    assert_eq!(
        a[&ip("10.0.0.253")].neighbor.hold_time,
        None,
        "the speaker's --bgp-hold-time"
    );
    // A change of keepaliveTime resets that session only.
    let mut faster = peers.clone();
    if let Some(p) = faster.get_mut("fast") {
        p.spec.keepalive_time = Some("5s".into());
    }
    let (_, b, _) = compute("a", &nodes, None, &faster, &NoSecrets);
    let (remove, add) = diff(&a, &b);
    assert_eq!(remove, [ip("10.0.0.254")]);
    assert_eq!(add.len(), 1);
    assert_eq!(add[0].hold_time, Some(15));
}

#[test]
fn an_ipv6_peer_is_reached_from_the_nodes_ipv6_address() {
    let (name, mut a) = node("a", "10.0.0.1/24", &[], None);
    if let Some(b) = a.spec.bgp.as_mut() {
        b.ipv6_address = Some("fd99::10/64".into());
    }
    let nodes: BTreeMap<_, _> = [(name, a), node("b", "10.0.0.2/24", &[], None)].into();
    let peers: BTreeMap<_, _> = [
        peer("v6", "peerIP: fd99::1\nasNumber: 65300\n"),
        peer("v6port", "peerIP: '[fd99::2]:1179'\nasNumber: 65300\n"),
    ]
    .into();
    let (me, a, w) = compute("a", &nodes, None, &peers, &NoSecrets);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(me.address_v6, Some("fd99::10".parse().expect("v6")));
    let v6 = &a[&ip("fd99::1")];
    assert_eq!(v6.neighbor.local_address, Some(ip("fd99::10")));
    assert_eq!(v6.neighbor.port, 179);
    assert_eq!(v6.peer_type, PeerType::Global);
    assert!(!v6.neighbor.passive, "not a node: we connect");
    assert_eq!(a[&ip("fd99::2")].neighbor.port, 1179);
    // Node b has no IPv6 address: the kernel chooses the source.
    let (_, b, _) = compute("b", &nodes, None, &peers, &NoSecrets);
    assert_eq!(b[&ip("fd99::1")].neighbor.local_address, None);
}

#[test]
fn a_per_node_listen_port_is_where_that_node_listens_and_is_reached() {
    let nodes: BTreeMap<_, _> = [
        node("a", "10.0.0.1/24", &[("rr", "yes")], None),
        node("b", "10.0.0.2/24", &[], None),
    ]
    .into();
    let default = BgpConfigurationSpec {
        listen_port: Some(1790),
        ..BgpConfigurationSpec::default()
    };
    let per_node = BgpConfigurationSpec {
        listen_port: Some(1791),
        ..BgpConfigurationSpec::default()
    };
    let configs: BTreeMap<String, Object<BgpConfigurationSpec>> = [
        (
            "default".to_string(),
            Object::new("default", default.clone()),
        ),
        ("node.a".to_string(), Object::new("node.a", per_node)),
    ]
    .into();
    let peers: BTreeMap<_, _> = [peer(
        "to-a",
        "nodeSelector: all()\npeerSelector: rr == 'yes'\n",
    )]
    .into();
    let view = |local| BgpView {
        local,
        nodes: &nodes,
        config: Some(&default),
        configs: &configs,
        peers: &peers,
    };
    let a = local_bgp(&view("a")).expect("a");
    assert_eq!(a.listen_port, 1791, "node.a overrides default");
    let b = local_bgp(&view("b")).expect("b");
    assert_eq!(b.listen_port, 1790);
    let (from_b, w) = desired_peers(&view("b"), &b, &NoSecrets);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        from_b[&ip("10.0.0.1")].neighbor.port,
        1791,
        "BGPPeer to node a"
    );
    let (from_a, _) = desired_peers(&view("a"), &a, &NoSecrets);
    assert_eq!(
        from_a[&ip("10.0.0.2")].neighbor.port,
        1790,
        "reverse peering to b"
    );
}
