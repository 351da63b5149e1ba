//! UPDATE decode and encode throughput, in prefixes per second (criterion).
//!
//! Two messages, as a reflector or a large peer sends them: 1,000 IPv4 /24s in the classic
//! NLRI field, and 550 IPv6 /48s in MP_REACH_NLRI, each with typical attributes (ORIGIN,
//! a three-AS AS_PATH, NEXT_HOP, MED, LOCAL_PREF, two COMMUNITIES). Each is encoded from the
//! decoded form and decoded from the wire form, header included, on a 4-octet-AS iBGP session.
//!
//! `cargo bench -p brindle-bgp --bench codec`; criterion reports "elements/s", one element
//! being one prefix.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use brindle_bgp::packet::{
    decode, encode, Afi, AsPath, DecodeContext, EncodeContext, Message, MpReach, Origin,
    PathAttributes, Safi, Update,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

fn attributes() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![65001, 65002, 4_200_000_003])),
        med: Some(10),
        local_pref: Some(100),
        communities: vec![(65001 << 16) | 100, (65001 << 16) | 200],
        ..PathAttributes::default()
    }
}

fn ipv4_update(n: u32) -> Update {
    let mut attributes = attributes();
    attributes.next_hop = Some(Ipv4Addr::new(192, 0, 2, 1));
    Update {
        attributes,
        nlri: (0..n)
            .map(|i| {
                let net = Ipv4Net::new(Ipv4Addr::from((20 << 24) + (i << 8)), 24).expect("a /24");
                IpNet::V4(net)
            })
            .collect(),
        ..Update::default()
    }
}

fn ipv6_update(n: u16) -> Update {
    Update {
        attributes: attributes(),
        mp_reach: Some(MpReach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            next_hop: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            link_local_next_hop: None,
            nlri: (0..n)
                .map(|i| {
                    let net = Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0), 48)
                        .expect("a /48");
                    IpNet::V6(net)
                })
                .collect(),
        }),
        ..Update::default()
    }
}

fn bench(c: &mut Criterion) {
    let enc = EncodeContext {
        four_octet_as: true,
    };
    let dec = DecodeContext {
        four_octet_as: true,
        peer_is_ebgp: false,
        peer_asn: 0,
    };
    let mut group = c.benchmark_group("update");
    for (name, update, prefixes) in [
        ("ipv4_1000x24", ipv4_update(1000), 1000u64),
        ("ipv6_mp_reach_550x48", ipv6_update(550), 550),
    ] {
        let msg = Message::Update(update);
        let wire = encode(&msg, &enc).expect("the UPDATE fits in 4,096 octets");
        // The round trip is exact, so both directions measure the same message.
        let (back, used) = decode(&wire, &dec)
            .expect("decodes")
            .expect("a whole message");
        assert_eq!((&back, used), (&msg, wire.len()), "{name}: round trip");
        group.throughput(Throughput::Elements(prefixes));
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode(black_box(&wire), &dec))
        });
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode(black_box(&msg), &enc))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
