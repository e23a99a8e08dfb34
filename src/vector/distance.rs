//! Distance kernels over `f32` slices.
//!
//! The loops keep eight independent accumulators so the compiler turns them
//! into SIMD code; on x86-64 a copy compiled for AVX2+FMA is picked at run time.

use super::Metric;

macro_rules! kernel {
    ($name:ident, $a:ident, $b:ident, $acc:ident, $body:expr, $finish:expr) => {
        #[inline(always)]
        fn $name($a: &[f32], $b: &[f32]) -> f32 {
            let n = $a.len().min($b.len());
            let (a, b) = (&$a[..n], &$b[..n]);
            let mut $acc = [0f32; 8];
            let chunks = n / 8;
            for c in 0..chunks {
                let x = &a[c * 8..c * 8 + 8];
                let y = &b[c * 8..c * 8 + 8];
                for i in 0..8 {
                    let (p, q) = (x[i], y[i]);
                    $acc[i] += $body(p, q);
                }
            }
            let mut tail = 0f32;
            for i in chunks * 8..n {
                tail += $body(a[i], b[i]);
            }
            let s: f32 = $acc.iter().sum::<f32>() + tail;
            $finish(s)
        }
    };
}

kernel!(
    l2_sq_generic,
    a,
    b,
    acc,
    |p: f32, q: f32| (p - q) * (p - q),
    |s| s
);
kernel!(dot_generic, a, b, acc, |p: f32, q: f32| p * q, |s| s);
kernel!(l1_generic, a, b, acc, |p: f32, q: f32| (p - q).abs(), |s| s);

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        super::l2_sq_generic(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot_generic(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l1(a: &[f32], b: &[f32]) -> f32 {
        super::l1_generic(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

macro_rules! dispatch {
    ($pub_name:ident, $generic:ident, $fast:ident) => {
        /// Kernel entry point; slices are compared up to the shorter length.
        #[inline]
        pub fn $pub_name(a: &[f32], b: &[f32]) -> f32 {
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    return unsafe { avx2::$fast(a, b) };
                }
            }
            $generic(a, b)
        }
    };
}

dispatch!(l2_squared, l2_sq_generic, l2_sq);
dispatch!(dot, dot_generic, dot);
dispatch!(l1, l1_generic, l1);

/// Cosine distance `1 - a·b / (|a||b|)`; NaN when either vector is zero, as in pgvector.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let ab = dot(a, b) as f64;
    let aa = dot(a, a) as f64;
    let bb = dot(b, b) as f64;
    let denom = (aa * bb).sqrt();
    if denom == 0.0 {
        return f64::NAN;
    }
    let sim = (ab / denom).clamp(-1.0, 1.0);
    1.0 - sim
}

/// Ask for `v` in the cache ahead of reading it (rows read in turn from
/// scattered places would each wait for memory).
#[inline]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = v.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: a prefetch is only a hint, and the address lies in `v`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// A fast, order-preserving "score" for `metric`: smaller is closer. For L2 it
/// is the squared distance; [`finish`] turns a score into the SQL distance.
#[inline]
pub fn score(metric: Metric, a: &[f32], b: &[f32], b_norm: f32) -> f32 {
    match metric {
        Metric::L2 => l2_squared(a, b),
        Metric::NegativeInnerProduct => -dot(a, b),
        Metric::L1 => l1(a, b),
        // Bit strings are scored by `bits`; float vectors have no such distance.
        Metric::Hamming | Metric::Jaccard => f32::NAN,
        Metric::Cosine => {
            let ab = dot(a, b);
            let aa = dot(a, a);
            let denom = (aa.sqrt()) * b_norm;
            if denom == 0.0 {
                f32::NAN
            } else {
                1.0 - (ab / denom).clamp(-1.0, 1.0)
            }
        }
    }
}

/// Convert a [`score`] into the distance the SQL operator returns.
#[inline]
pub fn finish(metric: Metric, score: f32) -> f64 {
    match metric {
        Metric::L2 => (score as f64).sqrt(),
        _ => score as f64,
    }
}

/// The exact SQL distance between two vectors for `metric`.
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    match metric {
        Metric::L2 => (l2_squared(a, b) as f64).sqrt(),
        Metric::NegativeInnerProduct => -(dot(a, b) as f64),
        Metric::Cosine => cosine(a, b),
        Metric::L1 => l1(a, b) as f64,
        Metric::Hamming | Metric::Jaccard => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_l2(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    #[test]
    fn kernels_match_naive() {
        for n in [1usize, 3, 8, 9, 17, 128, 784] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let d = l2_squared(&a, &b);
            assert!((d - naive_l2(&a, &b)).abs() < 1e-3 * (1.0 + d));
            let ip: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - ip).abs() < 1e-3 * (1.0 + ip.abs()));
            let l1n: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
            assert!((l1(&a, &b) - l1n).abs() < 1e-3 * (1.0 + l1n));
        }
    }

    #[test]
    fn metric_values() {
        let a = [1.0, 0.0];
        let b = [0.0, 1.0];
        assert!((distance(Metric::L2, &a, &b) - 2f64.sqrt()).abs() < 1e-6);
        assert!((distance(Metric::Cosine, &a, &b) - 1.0).abs() < 1e-6);
        assert_eq!(distance(Metric::NegativeInnerProduct, &a, &a), -1.0);
        assert_eq!(distance(Metric::L1, &a, &b), 2.0);
        assert!(distance(Metric::Cosine, &[0.0, 0.0], &b).is_nan());
    }
}
