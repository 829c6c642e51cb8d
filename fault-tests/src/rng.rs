//! The one source of randomness of a simulation run.
//!
//! Every random decision — network delays, fault placement, workload, crash
//! points — is drawn from one [`SimRng`] seeded with the run's u64 seed, so a
//! seed plus the commit replays a run exactly. Sub-generators are forked with
//! [`SimRng::fork`] so that adding a draw in one component does not shift the
//! draws of another.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Deterministic random number generator (rand 0.8 `StdRng`, seeded from a u64).
#[derive(Debug, Clone)]
pub struct SimRng {
    inner: StdRng,
}

impl SimRng {
    /// A generator whose whole output is decided by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: StdRng::seed_from_u64(seed),
        }
    }

    /// An independent generator derived from this one and a stream label.
    ///
    /// The label keeps the streams of different components apart even when
    /// they are forked in a different order.
    pub fn fork(&mut self, label: &str) -> SimRng {
        let base: u64 = self.inner.gen();
        SimRng::new(base ^ fnv1a64(label.as_bytes()))
    }

    /// A uniformly distributed u64.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.gen()
    }

    /// A value in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "SimRng::range: lo {lo} > hi {hi}");
        self.inner.gen_range(lo..=hi)
    }

    /// An index in `0..len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "SimRng::index: empty range");
        self.inner.gen_range(0..len)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.inner.gen_range(0..1000u32) < per_mille
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.inner.fill(buf);
    }
}

/// FNV-1a, 64 bit: a small hash whose output is fixed by its definition
/// (unlike `std`'s `DefaultHasher`), used for labels and trace hashes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn forks_with_different_labels_differ() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        let mut fa = a.fork("net");
        let mut fb = b.fork("disk");
        assert_ne!(fa.next_u64(), fb.next_u64());
    }

    #[test]
    fn fnv_known_value() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
