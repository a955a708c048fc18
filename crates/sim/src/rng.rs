//! A small seeded PRNG (SplitMix64): the simulator's only source of
//! randomness, so that the same seed gives the same run.

/// SplitMix64: tiny, fast, and good enough for choosing jobs and drawing
/// failure times. Not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from a seed. Different `stream`s of one seed are
    /// independent sequences (e.g. one for best-effort choice, one for
    /// failures), so adding draws to one does not shift the other.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng {
            state: seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F),
        };
        // Mix once so that small seeds do not give similar first draws.
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        // 53 random bits give every representable multiple of 2^-53.
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next_u64() >> 11) as f64;
        v * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (clamped to [0, 1]).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// An integer uniform in [0, n) (n > 0); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: the bias is below 2^-64 * n, negligible here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An exponentially distributed value with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the log is finite.
        -mean * (1.0 - self.next_f64()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = {
            let mut r = Rng::new(1, 0);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(1, 0);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(1, 1);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn distributions_have_the_right_means() {
        let mut r = Rng::new(42, 0);
        let n = 200_000;
        let mut sum_u = 0.0;
        let mut sum_e = 0.0;
        let mut hits = 0;
        for _ in 0..n {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            sum_u += u;
            sum_e += r.exponential(10.0);
            hits += u64::from(r.chance(0.25));
            assert!(r.below(7) < 7);
        }
        let n = f64::from(n);
        assert!((sum_u / n - 0.5).abs() < 0.01);
        assert!((sum_e / n - 10.0).abs() < 0.2);
        #[allow(clippy::cast_precision_loss)]
        let share = hits as f64 / n;
        assert!((share - 0.25).abs() < 0.01);
    }
}
