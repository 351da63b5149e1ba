//! Brindle names and kinds as Kubernetes spells them.
//!
//! # Names
//!
//! A custom resource's `metadata.name` must be a DNS-1123 subdomain: at most 253 characters of
//! `[a-z0-9.-]`, in dot-separated labels that start and end with a letter or digit. Most Brindle
//! names already are (IPAM names blocks as Calico does, `10-244-0-0-26`, and handles by their
//! lowercased ID); those map to themselves. Any other name (`10.244.0.0/26`, `Worker_1`) is
//! escaped, reversibly:
//!
//! ```text
//! x--<escaped>     every byte outside [a-z0-9] written as '-' and two lowercase hex digits
//! 10.244.0.0/26 -> x--10-2e244-2e0-2e0-2f26        Worker_1 -> x---57orker-5f1
//! ```
//!
//! A name that is valid but starts with `x--` is escaped too, so no two names map to one.
//! Names read back that do not start with `x--` are taken as they are (objects created with
//! kubectl keep their names); one that starts with `x--` must be exactly what the encoder
//! writes (`x--abc` is refused: it would be a second spelling of `abc`).

/// Longest `metadata.name` of a custom resource.
const MAX_NAME: usize = 253;
/// Marks an escaped name.
const ESCAPED: &str = "x--";

/// A Brindle name the Kubernetes datastore cannot store.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error(
        "name {name:?} is {len} characters as a Kubernetes name (escaped: {mapped:?}); \
         the limit is 253"
    )]
    TooLong {
        name: String,
        mapped: String,
        len: usize,
    },
    #[error("Kubernetes name {0:?} starts with x-- but is not an escaped Brindle name")]
    BadEscape(String),
}

/// Whether `name` is a DNS-1123 subdomain (Kubernetes' `IsDNS1123Subdomain`).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_NAME
        && !name.is_empty()
        && name.split('.').all(|label| {
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let bytes = label.as_bytes();
            let ends_ok = match (bytes.first(), bytes.last()) {
                (Some(&first), Some(&last)) => alnum(first) && alnum(last),
                _ => false,
            };
            ends_ok && bytes.iter().all(|&b| alnum(b) || b == b'-')
        })
}

/// The Kubernetes name of a Brindle name.
pub fn to_k8s_name(name: &str) -> Result<String, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if is_dns1123_subdomain(name) && !name.starts_with(ESCAPED) {
        return Ok(name.to_string());
    }
    let mut mapped = String::with_capacity(ESCAPED.len() + name.len() * 2);
    mapped.push_str(ESCAPED);
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            mapped.push(char::from(b));
        } else {
            mapped.push_str(&format!("-{b:02x}"));
        }
    }
    if mapped.len() > MAX_NAME {
        return Err(NameError::TooLong {
            name: name.to_string(),
            len: mapped.len(),
            mapped,
        });
    }
    Ok(mapped)
}

/// The Brindle name of a Kubernetes name (the inverse of [`to_k8s_name`]).
pub fn from_k8s_name(k8s: &str) -> Result<String, NameError> {
    let Some(escaped) = k8s.strip_prefix(ESCAPED) else {
        return Ok(k8s.to_string());
    };
    let bad = || NameError::BadEscape(k8s.to_string());
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'-' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            if hex.bytes().any(|h| h.is_ascii_uppercase()) {
                return Err(bad());
            }
            let byte = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
            // Only bytes the encoder escapes: a second spelling would make names ambiguous.
            if byte.is_ascii_lowercase() || byte.is_ascii_digit() {
                return Err(bad());
            }
            bytes.push(byte);
            rest = &tail[2..];
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() {
            bytes.push(b);
            rest = tail;
        } else {
            return Err(bad());
        }
    }
    let name = String::from_utf8(bytes).map_err(|_| bad())?;
    // Only the spelling the encoder writes: `x--abc` would otherwise be a second name for `abc`.
    if to_k8s_name(&name).as_deref() != Ok(k8s) {
        return Err(bad());
    }
    Ok(name)
}

/// The resource (plural) of a kind, as Calico names its CRDs: lowercase, `y` -> `ies`, else
/// `s` (`IPPool` -> `ippools`, `BlockAffinity` -> `blockaffinities`).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// Whether `kind` can be a Kubernetes kind: a letter, then letters and digits.
pub fn valid_kind(kind: &str) -> bool {
    kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_keep_valid_names_and_escape_the_rest_reversibly() {
        for (name, k8s) in [
            ("default-ipv4-ippool", "default-ipv4-ippool"),
            ("10-244-0-0-26", "10-244-0-0-26"),
            ("node1-10-244-0-0-26", "node1-10-244-0-0-26"),
            ("k8s-pod-network.0123abcd", "k8s-pod-network.0123abcd"),
            ("fd00-0-0-0-0-0-0-0-122", "fd00-0-0-0-0-0-0-0-122"),
            ("10.244.0.0/26", "x--10-2e244-2e0-2e0-2f26"),
            ("fd00::/122", "x--fd00-3a-3a-2f122"),
            ("Worker_1", "x---57orker-5f1"),
            ("-a", "x---2da"),
            ("a.", "x--a-2e"),
            ("a..b", "x--a-2e-2eb"),
            ("x--y", "x--x-2d-2dy"),
            ("é", "x---c3-a9"),
        ] {
            let mapped = to_k8s_name(name).expect(name);
            assert_eq!(mapped, k8s, "{name}");
            assert!(is_dns1123_subdomain(&mapped), "{mapped} is a valid name");
            assert_eq!(from_k8s_name(&mapped).expect(&mapped), name, "round trip");
        }
    }

    #[test]
    fn kubernetes_names_reject_what_cannot_be_stored_or_read() {
        assert_eq!(to_k8s_name(""), Err(NameError::Empty));
        let long = "A".repeat(100);
        let err = to_k8s_name(&long).expect_err("too long once escaped");
        assert!(err.to_string().contains("limit is 253"), "{err}");
        assert!(to_k8s_name(&"a".repeat(253)).is_ok());
        for bad in [
            "x--", "x--a-", "x--a-2", "x--a-zz", "x--a-61", "x--a-2E", "x--ff-ff", "x--abc",
        ] {
            assert!(from_k8s_name(bad).is_err(), "{bad}");
        }
    }

    /// A small deterministic PRNG (xorshift64*).
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn kubernetes_names_are_a_bijection_on_random_inputs() {
        let alphabet: Vec<char> = "abcxz09-._/:A Zé".chars().collect();
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (rng(&mut state) % 12) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(rng(&mut state) as usize) % alphabet.len()])
                .collect();
            // Any Brindle name: maps to a valid name that maps back.
            if let Ok(k8s) = to_k8s_name(&s) {
                assert!(is_dns1123_subdomain(&k8s), "{s:?} -> {k8s:?}");
                assert_eq!(from_k8s_name(&k8s).as_deref(), Ok(s.as_str()), "{k8s:?}");
            }
            // Any name read from the API server: accepted only in the encoder's spelling, and
            // never a panic.
            let escaped = format!("x--{s}");
            if let Ok(name) = from_k8s_name(&escaped) {
                assert_eq!(to_k8s_name(&name).as_deref(), Ok(escaped.as_str()));
            }
            let _ = from_k8s_name(&s);
        }
    }

    #[test]
    fn kubernetes_names_checks_dns1123() {
        for ok in ["a", "a-b", "a.b", "0", "a.b-c.d"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn plurals_are_calicos() {
        for (kind, plural_) in [
            ("IPPool", "ippools"),
            ("IPAMBlock", "ipamblocks"),
            ("BlockAffinity", "blockaffinities"),
            ("IPAMHandle", "ipamhandles"),
            ("IPAMConfig", "ipamconfigs"),
            ("BGPConfiguration", "bgpconfigurations"),
            ("BGPPeer", "bgppeers"),
            ("Node", "nodes"),
            ("WorkloadEndpoint", "workloadendpoints"),
        ] {
            assert_eq!(plural(kind), plural_);
        }
    }
}
