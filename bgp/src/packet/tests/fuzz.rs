//! No panic, no stdout, on random and mutated input.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// xorshift64* (Vigna): enough randomness to shake a decoder, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seed_messages() -> Vec<Vec<u8>> {
    let four = EncodeContext {
        four_octet_as: true,
    };
    let two = EncodeContext::default();
    let mut seeds = Vec::new();
    let full = Message::Update(Update {
        withdrawn: vec![net("10.9.0.0/16")],
        attributes: full_attributes(),
        nlri: vec![net("10.1.0.0/26")],
        ..Update::default()
    });
    let v6 = Message::Update(Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(vec![65001, 4_200_000_001])),
            ..PathAttributes::default()
        },
        mp_reach: Some(MpReach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            next_hop: IpAddr::V6("2001:db8::1".parse().expect("addr")),
            link_local_next_hop: Some("fe80::1".parse().expect("addr")),
            nlri: vec![net("fd00::/64")],
        }),
        mp_unreach: Some(MpUnreach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            withdrawn: vec![net("fd01::/64")],
        }),
        ..Update::default()
    });
    let open = Message::Open(Open {
        version: 4,
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(4_200_000_001),
            Capability::GracefulRestart {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                    forwarding_preserved: true,
                }],
            },
            Capability::AddPath(vec![(Afi::IPV4, Safi::UNICAST, AddPathMode::Both)]),
        ],
    });
    for m in [&full, &v6, &open] {
        seeds.push(encode(m, &four).expect("encodes"));
        seeds.push(encode(m, &two).expect("encodes"));
    }
    seeds.push(encode(&Message::Keepalive, &four).expect("encodes"));
    seeds.push(
        encode(
            &Message::Notification(Notification::new(6, 2, b"\x03bye".to_vec())),
            &four,
        )
        .expect("encodes"),
    );
    seeds.push(msg(5, &[0, 2, 0, 1]));
    // ATTR_SET with a malformed inner attribute: what would make bgp-rs print.
    seeds.push(update_msg(
        &[],
        &cat(&[&base_attrs(), &[0xc0, 128, 7, 0, 0, 0xfd, 0xe9, 0x40, 1, 9]]),
        NLRI_10_1,
    ));
    seeds
}

fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seeds[rng.below(seeds.len())].clone();
    match rng.below(6) {
        // Change 1-4 bytes anywhere (header included).
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                m[i] = rng.byte();
            }
        }
        // Change 1-4 bytes of the body and keep the header consistent.
        1 => {
            for _ in 0..1 + rng.below(4) {
                let i = 19 + rng.below(m.len() - 19);
                if i < m.len() {
                    m[i] = rng.byte();
                }
            }
        }
        // Truncate, then fix the header length so that the body is what is cut.
        2 => {
            let keep = 19 + rng.below(m.len() - 18);
            m.truncate(keep);
            let len = m.len() as u16;
            m[16..18].copy_from_slice(&len.to_be_bytes());
        }
        // Insert random bytes in the body and fix the length.
        3 => {
            let at = 19 + rng.below(m.len() - 18);
            let n = 1 + rng.below(8);
            let extra: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            m.splice(at..at, extra);
            let len = m.len().min(4096) as u16;
            m[16..18].copy_from_slice(&len.to_be_bytes());
        }
        // A random body of a random valid type.
        4 => {
            let n = rng.below(120);
            let body: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            m = msg(1 + rng.below(5) as u8, &body);
        }
        // Random bytes with a correct marker.
        _ => {
            let n = rng.below(64);
            m = vec![0xff; 16];
            m.extend((0..n).map(|_| rng.byte()));
        }
    }
    m
}

const FUZZ_CHILD_ENV: &str = "BRINDLE_PACKET_FUZZ_CHILD";
const FUZZ_ITERATIONS: usize = 200_000;

fn fuzz_decode(iterations: usize) {
    let seeds = seed_messages();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Outcomes, to show the run reaches past the framing: clean messages, UPDATEs with
    // RFC 7606 errors, and fatal errors.
    let (mut clean, mut with_errors, mut fatal) = (0usize, 0usize, 0usize);
    for _ in 0..iterations {
        let m = mutate(&mut rng, &seeds);
        let ctx = DecodeContext {
            four_octet_as: rng.below(2) == 0,
            peer_is_ebgp: rng.below(2) == 0,
            peer_asn: 65001,
        };
        let mut rest = &m[..];
        loop {
            let (msg, n) = match decode(rest, &ctx) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => {
                    // Every fatal error maps to a NOTIFICATION with a defined code.
                    assert!((1..=7).contains(&e.notification().code));
                    fatal += 1;
                    break;
                }
            };
            match &msg {
                Message::Update(u) if !u.errors.is_empty() => with_errors += 1,
                _ => clean += 1,
            }
            assert!((19..=rest.len()).contains(&n));
            // Whatever decodes must encode without panicking (it may be refused).
            let _ = encode(
                &msg,
                &EncodeContext {
                    four_octet_as: ctx.four_octet_as,
                },
            );
            rest = &rest[n..];
        }
    }
    eprintln!("fuzz: {clean} clean, {with_errors} UPDATEs with attribute errors, {fatal} fatal");
    assert!(clean > iterations / 20 && with_errors > iterations / 100 && fatal > iterations / 20);
}

/// The body of the no-panic test, run in a child process so that its stdout can be checked
/// (libtest captures only Rust's print macros of the test thread, which is what bgp-rs uses,
/// so the child runs with --nocapture). Does nothing unless started by the parent.
#[test]
fn fuzz_child() {
    if std::env::var_os(FUZZ_CHILD_ENV).is_some() {
        fuzz_decode(FUZZ_ITERATIONS);
    }
}

#[test]
fn decode_survives_200k_random_and_mutated_messages_without_printing() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "packet::tests::fuzz::fuzz_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FUZZ_CHILD_ENV, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fuzz run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test packet::tests::fuzz::fuzz_child ... ok"),
        "child did not run the fuzz test:\n{stdout}"
    );
    assert!(
        !stdout.contains("Error:"),
        "something printed to stdout:\n{stdout}"
    );
}
