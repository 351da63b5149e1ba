//! Route reflection (RFC 4456): bgpd reflects between three clients (BIRD and two GoBGPs,
//! none of them configured as anything but a plain iBGP peer) and two non-clients (GoBGP).

use std::time::Duration;

use super::harness::*;
use super::*;

const CLUSTER: &str = "10.255.0.1";

/// The path GoBGP holds for `prefix`, once it has one.
fn gobgp_path(g: &Gobgp, prefix: &str) -> serde_json::Value {
    wait_until(
        &format!("{prefix} in GoBGP"),
        Duration::from_secs(15),
        || {
            let rib = g.rib("ipv4");
            rib.get(prefix)
                .and_then(|paths| paths.get(0))
                .cloned()
                .ok_or_else(|| format!("{rib:?}"))
        },
    )
}

/// ORIGINATOR_ID (9) and CLUSTER_LIST (10) of a GoBGP path, as JSON text.
fn reflection_attrs(path: &serde_json::Value) -> (String, String) {
    let text = |code| {
        gobgp_attr(path, code)
            .map(|a| a.to_string())
            .unwrap_or_default()
    };
    (text(9), text(10))
}

/// bgpd with `cluster_id` and `rr_client: true` on three of its five iBGP peers: a client's
/// route reaches every other peer, clients and non-clients, with ORIGINATOR_ID the client's
/// router ID and CLUSTER_LIST the cluster ID (BIRD shows both); a non-client's route reaches
/// the clients but not the other non-client; nothing else about the route changes (next hop,
/// AS_PATH).
#[test]
fn reflector_with_bird_and_gobgp_clients_and_non_clients() {
    let test = "reflector_with_bird_and_gobgp_clients_and_non_clients";
    let Some(bins) = binaries(test, &["bird", "birdc", "gobgpd", "gobgp"]) else {
        return;
    };
    let mut lab = Lab::new();
    let nb = lab.netns("rr");
    let names = ["bird", "c2", "c3", "n1", "n2"];
    let nss: Vec<String> = names.iter().map(|n| lab.netns(n)).collect();
    let links: Vec<Link> = nss.iter().map(|ns| lab.link(&nb, ns)).collect();
    let (lb, l2, l3, l4, l5) = (&links[0], &links[1], &links[2], &links[3], &links[4]);

    let mut config = bird_config(lb, false, &["10.61.0.0/24"]);
    config.asn = BGPD_AS;
    config.peers = vec![(lb.b4(), lb.a4(), BGPD_AS)];
    let bird = Bird::start(&lab, "bird", &nss[0], config);
    let gobgp = |i: usize, link: &Link| {
        Gobgp::start(
            &lab,
            names[i],
            &nss[i],
            &GobgpConfig {
                router_id: link.b4(),
                asn: BGPD_AS,
                local: link.b4(),
                peers: vec![(link.a4(), BGPD_AS)],
                hold_time: HOLD,
                neighbor_extra: String::new(),
            },
        )
    };
    let (c2, c3, n1, n2) = (gobgp(1, l2), gobgp(2, l3), gobgp(3, l4), gobgp(4, l5));

    let mut spec = bgpd_spec(lb, lb.b4(), BGPD_AS, &[]);
    spec.install_routes = false;
    spec.extra = vec![format!("cluster_id: {CLUSTER}")];
    let client = |address| BgpdPeer {
        extra: vec!["rr_client: true".into()],
        ..peer(address, BGPD_AS)
    };
    spec.peers = vec![
        client(lb.b4()),
        client(l2.b4()),
        client(l3.b4()),
        peer(l4.b4(), BGPD_AS),
        peer(l5.b4(), BGPD_AS),
    ];
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    for link in &links {
        bgpd.wait_established(link.b4(), SESSION_UP);
    }

    // A non-client's route: to the three clients, not to the other non-client.
    n1.cli(&["global", "rib", "add", "10.64.0.0/24"]);
    for g in [&c2, &c3] {
        let path = gobgp_path(g, "10.64.0.0/24");
        let (originator, clusters) = reflection_attrs(&path);
        assert!(originator.contains(&l4.b4().to_string()), "{path}");
        assert!(clusters.contains(CLUSTER), "{path}");
    }
    let shown = wait_bird_route(&bird, "10.64.0.0/24", true);
    assert!(
        shown.contains(&format!("BGP.originator_id: {}", l4.b4())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("BGP.cluster_list: {CLUSTER}")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("BGP.next_hop: {}", l4.b4())),
        "next hop unchanged: {shown}"
    );

    // A client's route (BIRD's): to every other peer. Once it is in n2, n1's route would have
    // been there too had bgpd reflected it between non-clients.
    for g in [&c2, &c3, &n1, &n2] {
        let path = gobgp_path(g, "10.61.0.0/24");
        let (originator, clusters) = reflection_attrs(&path);
        assert!(originator.contains(&lb.b4().to_string()), "{path}");
        assert!(clusters.contains(CLUSTER), "{path}");
        let as_path = gobgp_attr(&path, 2).expect("AS_PATH attribute");
        assert!(
            as_path
                .pointer("/as_paths/0/asns")
                .is_none_or(|a| a == &serde_json::json!([])),
            "AS_PATH stays empty over iBGP: {path}"
        );
    }
    let rib = n2.rib("ipv4");
    assert!(
        !rib.contains_key("10.64.0.0/24"),
        "a non-client's route was reflected to a non-client: {rib:?}"
    );

    // A GoBGP client's route reaches BIRD (a client) and both non-clients.
    c2.cli(&["global", "rib", "add", "10.62.0.0/24"]);
    let shown = wait_bird_route(&bird, "10.62.0.0/24", true);
    assert!(
        shown.contains(&format!("BGP.originator_id: {}", l2.b4())),
        "{shown}"
    );
    for g in [&c3, &n1, &n2] {
        gobgp_path(g, "10.62.0.0/24");
    }
    let counts = bgpd.peer(l2.b4()).expect("peer");
    assert_eq!((counts.received, counts.accepted), (1, 1), "{counts:?}");
}
