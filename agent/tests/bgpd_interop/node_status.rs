//! `brindlectl node status` against brindle-bgpd with peers in every condition an operator
//! meets: up, wrong AS, nothing listening, TCP MD5 mismatch; and the `brindle_bgp_*` metrics
//! of the same sessions on `metrics_listen`.

use std::process::Command;

use super::*;

/// `brindlectl node status [-o json] --socket ...`: (exit success, stdout, stderr).
fn node_status(bins: &Binaries, socket: &std::path::Path, json: bool) -> (bool, String, String) {
    let mut cmd = Command::new(bins.ctl);
    cmd.args(["node", "status", "--socket"]).arg(socket);
    if json {
        cmd.args(["-o", "json"]);
    }
    let out = cmd.output().expect("brindlectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table row of `address` split on `|`, trimmed: [address, type, state, since, info].
fn row(text: &str, address: &str) -> Option<Vec<String>> {
    text.lines()
        .find(|l| l.starts_with(&format!("| {address} ")))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
}

/// `GET /metrics` inside bgpd's namespace.
fn scrape(ns: &str, addr: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sf", "--max-time", "5"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of one series in a Prometheus text.
fn metric(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

/// brindle-bgpd with four IPv4 peers and one IPv6 peer: BIRD up over IPv4 and IPv6, BIRD
/// with another AS than configured, an address where nothing listens, BIRD with another TCP
/// MD5 key. `node status` shows each with its reason; `-o json` says the same; the metrics
/// show the state gauge and the route counts per family.
#[test]
fn node_status_shows_why_each_session_is_or_is_not_up() {
    let test = "node_status_shows_why_each_session_is_or_is_not_up";
    let Some(bins) = binaries(test, &["bird", "birdc", "curl"]) else {
        return;
    };
    let mut lab = Lab::new();
    let nb = lab.netns("bgpd");
    let (ng, nw, nr, nm) = (
        lab.netns("good"),
        lab.netns("wrongas"),
        lab.netns("refuse"),
        lab.netns("md5"),
    );
    let (lg, lw, lr, lm) = (
        lab.link(&nb, &ng),
        lab.link(&nb, &nw),
        lab.link(&nb, &nr),
        lab.link(&nb, &nm),
    );

    let mut good = bird_config(&lg, false, &["10.99.1.0/24", "10.99.2.0/24", "fd99:1::/64"]);
    good.peers.push((lg.b6(), lg.a6(), BGPD_AS));
    let _good = Bird::start(&lab, "good", &ng, good);
    let _wrong = Bird::start(&lab, "wrongas", &nw, bird_config(&lw, false, &[]));
    let mut md5 = bird_config(&lm, false, &[]);
    md5.protocol_extra = "password \"s3cret\";".into();
    let _md5 = Bird::start(&lab, "md5", &nm, md5);

    let mut spec = bgpd_spec(&lg, lg.b4(), BIRD_AS, &["10.98.0.0/24"]);
    spec.peers.push(peer(lg.b6(), BIRD_AS));
    spec.peers.push(peer(lw.b4(), 65009));
    spec.peers.push(peer(lr.b4(), BIRD_AS));
    spec.peers
        .push(with_password(peer(lm.b4(), BIRD_AS), "wrong"));
    spec.extra = vec!["metrics_listen: 127.0.0.1:9091".into()];
    let bgpd = Bgpd::start(&lab, &bins, &nb, spec);
    bgpd.wait_established(lg.b4(), SESSION_UP);
    bgpd.wait_established(lg.b6(), SESSION_UP);

    // Every failure reported, MD5 last: it shows once a connect has timed out (10 s).
    let (g4, g6, w, r, m) = (
        lg.b4().to_string(),
        lg.b6().to_string(),
        lw.b4().to_string(),
        lr.b4().to_string(),
        lm.b4().to_string(),
    );
    let text = wait_until(
        "node status shows every peer's reason",
        Duration::from_secs(25),
        || {
            let (ok, out, err) = node_status(&bins, &bgpd.socket, false);
            if !ok {
                return Err(format!("failed: {err}"));
            }
            let info = |a: &str| row(&out, a).map(|r| r[4].clone()).unwrap_or_default();
            let all = info(&g4) == "Established"
                && info(&g6) == "Established"
                && info(&w).contains("bad peer AS: expected 65009, got 65002")
                && info(&r).contains("connection refused")
                && info(&m).contains("authentication failure");
            if all {
                Ok(out)
            } else {
                Err(out)
            }
        },
    );
    assert!(
        text.starts_with("Brindle process is running.\n\nIPv4 BGP status\n+"),
        "{text}"
    );
    assert!(text.ends_with("+\n\n"), "ends with an empty line:\n{text}");
    let v6_at = text.find("IPv6 BGP status").expect("an IPv6 section");
    assert!(text[v6_at..].contains(&format!("| {g6} ")), "{text}");
    assert!(!text[..v6_at].contains(&format!("| {g6} ")), "{text}");
    for (address, state) in [
        (&g4, "up"),
        (&g6, "up"),
        (&w, "start"),
        (&r, "start"),
        (&m, "start"),
    ] {
        let cells = row(&text, address).expect("a row");
        assert_eq!(cells[1], "global", "{text}");
        assert_eq!(cells[2], state, "{text}");
        // HH:MM:SS: the sessions changed state less than 20 hours ago.
        assert!(
            cells[3].len() == 8 && cells[3].as_bytes()[2] == b':',
            "{text}"
        );
    }
    let widths: Vec<usize> = text
        .lines()
        .filter(|l| l.starts_with('|') || l.starts_with('+'))
        .map(|l| l.chars().count())
        .collect();
    assert!(
        widths[..8].iter().all(|w| *w == widths[0]),
        "ragged table:\n{text}"
    );

    let (ok, json, err) = node_status(&bins, &bgpd.socket, true);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("node status -o json parses");
    assert_eq!(v["running"], true);
    assert_eq!(v["bgp_running"], true);
    let ipv4 = v["ipv4"].as_array().expect("ipv4 array");
    assert_eq!(ipv4.len(), 4, "{json}");
    let by = |a: &str| {
        ipv4.iter()
            .find(|p| p["peer_address"] == a)
            .unwrap_or_else(|| panic!("{a} in {json}"))
            .clone()
    };
    assert_eq!(by(&g4)["state"], "up");
    assert_eq!(by(&g4)["bgp_state"], "Established");
    assert_eq!(by(&r)["state"], "start");
    assert!(by(&w)["info"]
        .as_str()
        .is_some_and(|i| i.contains("bad peer AS")));
    assert_eq!(v["ipv6"][0]["peer_address"], g6.as_str());

    // bgp peers: counts per family for the good peer.
    let peers = bgpd.peers().expect("bgp peers");
    let good4 = peers.iter().find(|p| p.address == g4).expect("good peer");
    assert_eq!(good4.received, 2, "{good4:?}");

    // Metrics of the same sessions.
    let text = wait_until("metrics with route counts", Duration::from_secs(10), || {
        let text = scrape(&nb, "127.0.0.1:9091")?;
        let l = format!(r#"peer="{g4}",peer_type="global""#);
        match metric(
            &text,
            &format!(r#"brindle_bgp_routes_received{{family="ipv4-unicast",{l}}}"#),
        )
        .as_deref()
        {
            Some("2") => Ok(text),
            _ => Err(text),
        }
    });
    let series = |peer: &str, state: &str| {
        metric(
            &text,
            &format!(
                r#"brindle_bgp_session_state{{peer="{peer}",peer_type="global",state="{state}"}}"#
            ),
        )
    };
    assert_eq!(series(&g4, "Established").as_deref(), Some("1"), "{text}");
    assert_eq!(series(&g6, "Established").as_deref(), Some("1"), "{text}");
    assert_eq!(series(&r, "Established").as_deref(), Some("0"), "{text}");
    assert_eq!(
        metric(
            &text,
            &format!(
                r#"brindle_bgp_routes_received{{family="ipv6-unicast",peer="{g6}",peer_type="global"}}"#
            )
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                r#"brindle_bgp_routes_advertised{{family="ipv4-unicast",peer="{g4}",peer_type="global"}}"#
            )
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    let up_count = metric(
        &text,
        &format!(r#"brindle_bgp_session_established_total{{peer="{g4}",peer_type="global"}}"#),
    );
    assert_eq!(up_count.as_deref(), Some("1"), "{text}");
    let flaps = metric(
        &text,
        &format!(r#"brindle_bgp_session_transitions_total{{peer="{r}",peer_type="global"}}"#),
    )
    .and_then(|v| v.parse::<u64>().ok());
    assert!(flaps.is_some_and(|n| n >= 2), "{text}");
}

/// Nothing on the socket: calicoctl's line, exit status 1.
#[test]
fn node_status_says_when_nothing_runs() {
    let bins = Binaries {
        bgpd: env!("CARGO_BIN_EXE_brindle-bgpd"),
        ctl: env!("CARGO_BIN_EXE_brindlectl"),
    };
    let missing = std::env::temp_dir().join(format!("bgi-none-{}.sock", std::process::id()));
    let (ok, out, err) = node_status(&bins, &missing, false);
    assert!(!ok);
    assert_eq!(out, "Brindle process is not running.\n");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let (ok, out, _) = node_status(&bins, &missing, true);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json even when down");
    assert_eq!(v["running"], false);
}

fn with_password(mut p: BgpdPeer, key: &str) -> BgpdPeer {
    p.extra.push(format!("password: {key}"));
    p
}
