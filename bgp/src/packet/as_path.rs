//! AS_PATH (RFC 4271 §4.3, §5.1.2) with 4-octet AS numbers, its 2- and 4-octet wire forms, and
//! the AS4_PATH reconstruction of RFC 6793 §4.2.3.

use super::wire::Reader;
use super::AS_TRANS;

/// AS_PATH segment types (RFC 4271 §4.3; confederation segments from RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl SegmentType {
    fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 => SegmentType::ConfedSequence,
            4 => SegmentType::ConfedSet,
            _ => return None,
        })
    }

    pub(crate) fn is_confed(self) -> bool {
        matches!(self, SegmentType::ConfedSequence | SegmentType::ConfedSet)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

/// An AS_PATH with 4-octet AS numbers, whatever the session's encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn from_sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    /// The path length for route selection (RFC 4271 §9.1.2.2 a): an AS_SET counts as one,
    /// confederation segments do not count (RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// The leftmost AS, if the path starts with an AS_SEQUENCE.
    pub fn leftmost(&self) -> Option<u32> {
        let first = self.segments.first()?;
        match first.kind {
            SegmentType::Sequence => first.asns.first().copied(),
            _ => None,
        }
    }

    /// Whether `asn` appears anywhere in the path (loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// Prepends `asn` as a speaker does when sending to an external peer (RFC 4271 §5.1.2).
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentType::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn)
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }
}

/// AS_PATH or AS4_PATH segments (RFC 4271 §4.3) with RFC 7606 §7.2's definition of malformed,
/// plus AS 0 (RFC 7607 §2) and AS_SET / AS_CONFED_SET (RFC 9774 §3), which are
/// treat-as-withdraw too.
pub(crate) fn decode_as_path(value: &[u8], four_octet: bool) -> Result<AsPath, &'static str> {
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let (Some(kind), Some(count)) = (r.u8(), r.u8()) else {
            return Err("AS_PATH segment header truncated");
        };
        let kind = SegmentType::from_wire(kind).ok_or("unknown AS_PATH segment type")?;
        if count == 0 {
            return Err("AS_PATH segment of length 0");
        }
        let mut asns = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let asn = if four_octet {
                r.u32()
            } else {
                r.u16().map(u32::from)
            };
            let asn = asn.ok_or("AS_PATH segment overruns the attribute")?;
            if asn == 0 {
                return Err("AS_PATH contains AS 0");
            }
            asns.push(asn);
        }
        if matches!(kind, SegmentType::Set | SegmentType::ConfedSet) {
            return Err("AS_PATH contains an AS_SET");
        }
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

/// RFC 6793 §4.2.3: the 4-octet path from a 2-octet peer's AS_PATH and AS4_PATH. `None` when
/// AS4_PATH is longer than AS_PATH, which makes it wrong and ignored.
pub(crate) fn merge_as4_path(as_path: &AsPath, as4_path: AsPath) -> Option<AsPath> {
    let n = as_path.path_len();
    let m = as4_path.path_len();
    // A shorter AS_PATH than AS4_PATH means AS4_PATH is wrong: ignore it.
    if n < m {
        return None;
    }
    // Keep the leading n - m AS numbers of AS_PATH (counted as for the path length) and put
    // AS4_PATH after them.
    let mut keep = n - m;
    let mut merged: Vec<AsSegment> = Vec::new();
    for seg in &as_path.segments {
        match seg.kind {
            SegmentType::ConfedSequence | SegmentType::ConfedSet => merged.push(seg.clone()),
            _ if keep == 0 => break,
            SegmentType::Set => {
                merged.push(seg.clone());
                keep -= 1;
            }
            SegmentType::Sequence => {
                let take = keep.min(seg.asns.len());
                merged.push(AsSegment {
                    kind: SegmentType::Sequence,
                    asns: seg.asns[..take].to_vec(),
                });
                keep -= take;
            }
        }
    }
    for seg in as4_path.segments {
        match merged.last_mut() {
            Some(last)
                if last.kind == SegmentType::Sequence
                    && seg.kind == SegmentType::Sequence
                    && last.asns.len() + seg.asns.len() <= 255 =>
            {
                last.asns.extend(seg.asns)
            }
            _ => merged.push(seg),
        }
    }
    Some(AsPath { segments: merged })
}

/// AS_PATH segments on the wire, 2- or 4-octet; segments longer than 255 AS numbers are split.
/// In 2-octet form, AS numbers above 65535 become AS_TRANS (RFC 6793 §4.2.2).
pub(crate) fn as_path_value(path: &AsPath, four_octet: bool, skip_confed: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in &path.segments {
        if skip_confed && seg.kind.is_confed() {
            continue;
        }
        for chunk in seg.asns.chunks(255) {
            v.push(seg.kind as u8);
            v.push(chunk.len() as u8);
            for &asn in chunk {
                if four_octet {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(kind: SegmentType, asns: &[u32]) -> AsSegment {
        AsSegment {
            kind,
            asns: asns.to_vec(),
        }
    }

    #[test]
    fn path_len_counts_a_set_as_one_and_confederations_as_nothing() {
        let path = AsPath {
            segments: vec![
                seg(SegmentType::ConfedSequence, &[65100, 65101]),
                seg(SegmentType::Sequence, &[1, 2, 3]),
                seg(SegmentType::Set, &[4, 5]),
            ],
        };
        assert_eq!(path.path_len(), 4);
        assert_eq!(path.leftmost(), None);
        assert!(path.contains(5));
    }

    #[test]
    fn prepend_extends_the_leading_sequence() {
        let mut path = AsPath::from_sequence(vec![2]);
        path.prepend(1);
        assert_eq!(path, AsPath::from_sequence(vec![1, 2]));
        let mut path = AsPath::default();
        path.prepend(7);
        assert_eq!(path.leftmost(), Some(7));
    }

    #[test]
    fn long_segments_are_split_on_the_wire() {
        let path = AsPath::from_sequence((1..=300).collect());
        let v = as_path_value(&path, true, false);
        assert_eq!((v[0], v[1]), (2, 255));
        let second = 2 + 255 * 4;
        assert_eq!((v[second], v[second + 1]), (2, 45));
        let back = decode_as_path(&v, true).expect("decodes");
        assert_eq!(back.path_len(), 300);
    }

    #[test]
    fn merge_keeps_the_leading_confederation_segment() {
        // RFC 6793 §4.2.3: confederation segments do not count, and stay in front.
        let as_path = AsPath {
            segments: vec![
                seg(SegmentType::ConfedSequence, &[65100]),
                seg(SegmentType::Sequence, &[65002, u32::from(AS_TRANS)]),
            ],
        };
        let as4 = AsPath::from_sequence(vec![4_200_000_001]);
        assert_eq!(
            merge_as4_path(&as_path, as4),
            Some(AsPath {
                segments: vec![
                    seg(SegmentType::ConfedSequence, &[65100]),
                    seg(SegmentType::Sequence, &[65002, 4_200_000_001]),
                ]
            })
        );
    }
}
