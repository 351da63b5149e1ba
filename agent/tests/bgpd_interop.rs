//! brindle-bgpd against real routers, BIRD 2 and GoBGP, in network namespaces.

#[path = "bgpd_interop/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use harness::*;

/// The harness itself: BIRD and GoBGP peer with each other (iBGP) and exchange routes.
#[test]
fn harness_bird_and_gobgp_exchange_routes() {
    if !can_run(
        "harness_bird_and_gobgp_exchange_routes",
        &["bird", "birdc", "gobgpd", "gobgp"],
    ) {
        return;
    }
    let mut lab = Lab::new();
    let (g, b) = (lab.netns("gobgp"), lab.netns("bird"));
    let link = lab.link(&g, &b);
    let gobgp = Gobgp::start(
        &lab,
        "gobgp",
        &g,
        &GobgpConfig {
            router_id: link.a4(),
            asn: 65010,
            local: link.a4(),
            peers: vec![(link.b4(), 65010)],
            hold_time: 6,
        },
    );
    let bird = Bird::start(
        &lab,
        "bird",
        &b,
        BirdConfig {
            router_id: link.b4(),
            asn: 65010,
            peers: vec![(link.b4(), link.a4(), 65010)],
            statics: vec!["10.99.99.0/24".parse().expect("prefix")],
            hold_time: 6,
            passive: false,
        },
    );
    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    let shown = wait_until("GoBGP's route in BIRD", Duration::from_secs(15), || {
        bird.route("10.9.0.0/24")
    });
    assert!(shown.contains("BGP.local_pref: 100"), "{shown}");
    let rib = wait_until("BIRD's route in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv4");
        rib.get("10.99.99.0/24")
            .cloned()
            .ok_or_else(|| format!("{rib:?}"))
    });
    assert!(gobgp_attr(&rib[0], 5).is_some(), "{rib:?}");
    gobgp.cli(&["global", "rib", "del", "10.9.0.0/24"]);
    wait_until(
        "GoBGP's withdrawal in BIRD",
        Duration::from_secs(15),
        || match bird.route("10.9.0.0/24") {
            Ok(s) => Err(s),
            Err(_) => Ok(()),
        },
    );
}
