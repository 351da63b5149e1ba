//! brindle-bgpd against real routers, BIRD 2 (eBGP) and GoBGP (iBGP), in network namespaces.
//!
//! ```text
//!   netns bgpd: brindle-bgpd, AS 64512   ──veth──   netns bird: BIRD 2, AS 65002 (eBGP)
//!     10.0.1.1/24, fd00:0:1::1/64                    10.0.1.2/24, fd00:0:1::2/64
//!     install_routes: true (rtproto 98)          or  netns gobgp: gobgpd, AS 64512 (iBGP)
//! ```
//!
//! The test drives each router the way an operator would (its configuration file and SIGHUP,
//! `birdc configure`, `gobgp global rib add`) and checks what a user sees: `brindlectl bgp peers`
//! and `bgp routes`, `birdc show route`, `gobgp global rib`, and `ip route` in bgpd's namespace.
//! Needs root, bird2 and gobgpd; skipped without them unless `CI` is set.
//! `BRINDLE_KEEP_LAB=1` keeps the generated configurations and logs.
//!
//! `bgpd_interop/harness/`: the lab (namespaces, veth, processes) and one module per router.
//! The scenarios: `bird_ebgp` (BIRD as eBGP peer), `gobgp` (GoBGP, mostly iBGP), `sessions`
//! (faults and configuration changes), `node_status` (`brindlectl node status` and the BGP
//! metrics with peers up, of the wrong AS, refusing, and with a wrong MD5 key). docs/bgp.md lists what each test shows.

#[path = "bgpd_interop/harness/mod.rs"]
#[allow(dead_code)]
mod harness;

#[path = "bgpd_interop/bird_ebgp.rs"]
mod bird_ebgp;
#[path = "bgpd_interop/gobgp.rs"]
mod gobgp;
#[path = "bgpd_interop/graceful_restart.rs"]
mod graceful_restart;
#[path = "bgpd_interop/node_status.rs"]
mod node_status;
#[path = "bgpd_interop/reflection.rs"]
mod reflection;
#[path = "bgpd_interop/security.rs"]
mod security;
#[path = "bgpd_interop/sessions.rs"]
mod sessions;

use std::net::IpAddr;
use std::time::Duration;

use harness::*;

const BGPD_AS: u32 = 64512;
const BIRD_AS: u32 = 65002;
/// The hold time BIRD and GoBGP offer; the negotiated one is the smaller of both sides'.
const HOLD: u16 = 6;
const SESSION_UP: Duration = Duration::from_secs(20);

fn binaries(test: &str, peers: &[&str]) -> Option<Binaries> {
    let bins = Binaries {
        bgpd: env!("CARGO_BIN_EXE_brindle-bgpd"),
        ctl: env!("CARGO_BIN_EXE_brindlectl"),
    };
    can_run(test, peers).then_some(bins)
}

fn prefix(s: &str) -> ipnet::IpNet {
    s.parse().expect("test prefix")
}

fn bird_config(link: &Link, v6: bool, statics: &[&str]) -> BirdConfig {
    let (local, neighbor) = if v6 {
        (link.b6(), link.a6())
    } else {
        (link.b4(), link.a4())
    };
    BirdConfig {
        router_id: link.b4(),
        asn: BIRD_AS,
        peers: vec![(local, neighbor, BGPD_AS)],
        statics: statics.iter().map(|s| prefix(s)).collect(),
        hold_time: HOLD,
        passive: false,
        export_actions: String::new(),
        protocol_extra: String::new(),
        global_extra: String::new(),
    }
}

fn bgpd_spec(link: &Link, address: IpAddr, peer_as: u32, originate: &[&str]) -> BgpdSpec {
    BgpdSpec {
        router_id: link.a4(),
        asn: BGPD_AS,
        listen: None,
        originate: originate.iter().map(|s| s.to_string()).collect(),
        install_routes: true,
        peers: vec![peer(address, peer_as)],
        extra: Vec::new(),
    }
}

/// Waits until BIRD has (or no longer has) `prefix`; `show route ... all` when present.
fn wait_bird_route(bird: &Bird, prefix: &str, present: bool) -> String {
    wait_until(
        &format!("BIRD route {prefix} present={present}"),
        Duration::from_secs(15),
        || match (bird.route(prefix), present) {
            (Ok(text), true) => Ok(text),
            (Err(_), false) => Ok(String::new()),
            (Ok(text), false) | (Err(text), true) => Err(text),
        },
    )
}

/// The harness itself, without bgpd: BIRD and GoBGP peer with each other (iBGP) and exchange
/// routes, so a failure above is bgpd's and not the lab's.
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
            hold_time: HOLD,
            neighbor_extra: String::new(),
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
            statics: vec![prefix("10.99.99.0/24")],
            hold_time: HOLD,
            passive: false,
            export_actions: String::new(),
            protocol_extra: String::new(),
            global_extra: String::new(),
        },
    );
    gobgp.cli(&["global", "rib", "add", "10.9.0.0/24"]);
    let shown = wait_bird_route(&bird, "10.9.0.0/24", true);
    assert!(shown.contains("BGP.local_pref: 100"), "{shown}");
    let paths = wait_until("BIRD's route in GoBGP", Duration::from_secs(15), || {
        let rib = gobgp.rib("ipv4");
        rib.get("10.99.99.0/24")
            .cloned()
            .ok_or_else(|| format!("{rib:?}"))
    });
    assert!(gobgp_attr(&paths[0], 5).is_some(), "{paths:?}");
    gobgp.cli(&["global", "rib", "del", "10.9.0.0/24"]);
    wait_bird_route(&bird, "10.9.0.0/24", false);
}
