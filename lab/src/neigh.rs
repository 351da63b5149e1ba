//! The kernel's neighbour (ARP, NDP) tables are host-wide: one per family, shared by every
//! network namespace, with limits (`net.ipv4.neigh.default.gc_thresh1/2/3`, and the `ipv6`
//! ones) that only the initial namespace sets. A mesh of N nodes on one segment holds about
//! N×(N-1) entries (each node resolves every other), so 50 nodes need about 2,450 next to the
//! default hard limit of 1,024: past it the kernel logs "neighbour: arp_cache: neighbor table
//! overflow!" and the routes through unresolved next hops stay missing.
//!
//! [`NeighbourLimits::raise`] adds what a lab needs on top of the current limits (other labs and
//! the host keep their share), and dropping the guard puts the previous values back, unless
//! somebody changed them meanwhile.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
const KNOBS: [&str; 3] = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];

fn path(family: &str, knob: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/neigh/default/{knob}"))
}

fn read(family: &str, knob: &str) -> Result<u64> {
    let p = path(family, knob);
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a number: {text:?}", p.display()))
}

fn write(family: &str, knob: &str, value: u64) -> Result<()> {
    let p = path(family, knob);
    fs::write(&p, value.to_string()).with_context(|| format!("writing {}", p.display()))
}

/// The neighbour entries a lab of `nodes` nodes on one segment with `pods_per_node` pods each
/// can hold in one family: every node resolves every other node and the gateway, the gateway
/// every node, and each pod and its node resolve each other; plus a margin.
pub fn entries_needed(nodes: usize, pods_per_node: usize) -> u64 {
    let n = nodes as u64;
    n * n + 2 * n * pods_per_node as u64 + 128
}

/// Raised neighbour table limits; dropping this restores the previous ones.
#[derive(Debug)]
pub struct NeighbourLimits {
    /// (family, knob, value before, value written).
    changed: Vec<(&'static str, &'static str, u64, u64)>,
}

impl NeighbourLimits {
    /// Adds `entries` to gc_thresh2 and gc_thresh3 (half of it to gc_thresh1) of both families,
    /// when the lab's share would not fit comfortably under the current soft limit (gc_thresh2).
    /// `None` when the limits are large enough already. Needs root in the initial namespace.
    pub fn raise(entries: u64) -> Result<Option<NeighbourLimits>> {
        if entries <= read("ipv4", "gc_thresh2")? / 2 {
            return Ok(None);
        }
        let mut guard = NeighbourLimits {
            changed: Vec::new(),
        };
        for family in FAMILIES {
            // Highest first, so the kernel never sees thresh1 > thresh2 > thresh3 mid-way.
            for (knob, add) in [
                ("gc_thresh3", entries),
                ("gc_thresh2", entries),
                ("gc_thresh1", entries / 2),
            ] {
                let before = read(family, knob)?;
                let after = before + add;
                write(family, knob, after)?;
                guard.changed.push((family, knob, before, after));
            }
        }
        Ok(Some(guard))
    }

    /// `ipv4 gc_thresh1/2/3 128/512/1024 -> 1378/3012/3524` (and ipv6 likewise).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for family in FAMILIES {
            let mine: Vec<_> = KNOBS
                .iter()
                .filter_map(|k| {
                    self.changed
                        .iter()
                        .find(|(f, knob, _, _)| *f == family && knob == k)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let join = |pick: fn(&(&str, &str, u64, u64)) -> u64| {
                mine.iter()
                    .map(|c| pick(c).to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            };
            parts.push(format!(
                "net.{family}.neigh.default.gc_thresh1/2/3 {} -> {}",
                join(|c| c.2),
                join(|c| c.3)
            ));
        }
        parts.join(", ")
    }
}

impl Drop for NeighbourLimits {
    fn drop(&mut self) {
        // Lowest first, the reverse of `raise`.
        for (family, knob, before, after) in self.changed.drain(..).rev() {
            match read(family, knob) {
                Ok(now) if now == after => {
                    if let Err(e) = write(family, knob, before) {
                        eprintln!("cannot restore net.{family}.neigh.default.{knob}: {e:#}");
                    }
                }
                Ok(now) => eprintln!(
                    "net.{family}.neigh.default.{knob} is {now}, not the {after} the lab set: \
                     left as it is"
                ),
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_50_node_mesh_needs_more_than_the_default_hard_limit() {
        assert!(entries_needed(50, 1) > 1024);
        assert_eq!(entries_needed(50, 1), 2500 + 100 + 128);
        assert!(entries_needed(4, 2) < 512 / 2);
    }
}
