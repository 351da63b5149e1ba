//! Helpers for the unit tests: a small deterministic PRNG for fuzz-style tests.

/// xorshift64* (Vigna): good enough to shake a parser, with no dependency.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Random bytes, of a random length up to `max_len`. Biased towards the bytes parsers
    /// care about so that random input gets past the first check now and then.
    pub(crate) fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\r\n:;{}[]\",0123456789abcdefHTP/. ";
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| {
                if self.below(2) == 0 {
                    INTERESTING[self.below(INTERESTING.len())]
                } else {
                    self.next_u64() as u8
                }
            })
            .collect()
    }

    /// A copy of `seed` with a few random edits: flipped, inserted, deleted or truncated bytes.
    pub(crate) fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..=self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(4) {
                0 if at < out.len() => out[at] = self.next_u64() as u8,
                1 => out.insert(at, self.next_u64() as u8),
                2 if at < out.len() => {
                    out.remove(at);
                }
                _ => out.truncate(at),
            }
        }
        out
    }
}
