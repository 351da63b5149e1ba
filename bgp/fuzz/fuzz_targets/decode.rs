//! Feeds arbitrary bytes to the packet decoder as a stream, and re-encodes whatever decodes.
//! The first byte chooses the session context; the decoder must never panic.
#![no_main]

use brindle_bgp::packet::{decode, encode, DecodeContext, EncodeContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let ctx = DecodeContext {
        four_octet_as: flags & 1 != 0,
        peer_is_ebgp: flags & 2 != 0,
        peer_asn: if flags & 4 != 0 { 65001 } else { 0 },
    };
    let enc = EncodeContext {
        four_octet_as: ctx.four_octet_as,
    };
    while let Ok(Some((msg, n))) = decode(rest, &ctx) {
        let _ = encode(&msg, &enc);
        rest = &rest[n..];
    }
});
