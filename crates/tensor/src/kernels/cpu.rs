//! The one seam for instruction sets: what this CPU can run, detected once,
//! and the one pattern by which a kernel picks its SIMD body.
//!
//! Every fast kernel is written once, as a plain `#[inline(always)]` body in
//! portable Rust. Its SIMD variant is either
//!
//! - **the same body compiled for more features** (`simd_variant!`): the
//!   compiler widens the same operations (AVX2: 8 f32 per instruction instead
//!   of SSE2's 4), so it gives the same bits; or
//! - **a hand-written body** in an `x86` file (raw pointers and intrinsics,
//!   one per instruction set and type), chosen by matching on [`isa`] or on a
//!   feature predicate below.
//!
//! Adding an instruction set (NEON, AVX-512 for a kernel that lacks it) means:
//! a field in [`Features`] filled in [`detect`], a predicate, and the bodies.
//! No kernel calls `is_x86_feature_detected!` itself.
//!
//! [`use_portable_bodies`] switches every SIMD body off for the whole process,
//! so tests can hold the plain bodies (what other CPUs run) to the reference.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The instruction-set extensions the kernels use, as this CPU reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// 256-bit integer and float vectors.
    pub avx2: bool,
    /// Fused multiply-add (`a * b + c` rounded once).
    pub fma: bool,
    /// 512-bit vectors (the foundation set).
    pub avx512f: bool,
}

/// Reads the CPU's features (once per process; [`features`] caches it).
pub fn detect() -> Features {
    #[cfg(target_arch = "x86_64")]
    {
        Features {
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            fma: std::arch::is_x86_feature_detected!("fma"),
            avx512f: std::arch::is_x86_feature_detected!("avx512f"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Features::default()
    }
}

static DETECTED: OnceLock<Features> = OnceLock::new();
static PORTABLE_ONLY: AtomicBool = AtomicBool::new(false);

/// The features the kernels may use: the CPU's, or none after
/// [`use_portable_bodies`]`(true)`.
#[inline]
pub fn features() -> Features {
    if PORTABLE_ONLY.load(Ordering::Relaxed) {
        return Features::default();
    }
    *DETECTED.get_or_init(detect)
}

/// With `true`, every kernel runs its plain (non-SIMD) body, as on a CPU
/// without AVX2: for tests that hold those bodies to the reference.
/// Process-wide; the default is `false`.
#[doc(hidden)]
pub fn use_portable_bodies(portable: bool) {
    PORTABLE_ONLY.store(portable, Ordering::Relaxed);
}

/// AVX2 (the same-body variants of pooling, col2im and the bias epilogue).
#[inline]
pub fn avx2() -> bool {
    features().avx2
}

/// AVX2 and FMA (the Winograd bodies).
#[inline]
pub fn avx2_fma() -> bool {
    let f = features();
    f.avx2 && f.fma
}

/// The widest GEMM body family this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F and FMA: 16 f32 per register.
    Avx512,
    /// AVX2 and FMA: 8 f32 per register.
    Avx2,
    /// Neither: the portable fallbacks (`matrixmultiply`, plain loops).
    Portable,
}

/// The GEMM body family to run ([`Isa`]).
#[inline]
pub fn isa() -> Isa {
    let f = features();
    if f.avx512f && f.fma {
        Isa::Avx512
    } else if f.avx2 && f.fma {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

/// Defines `fn NAME<T: Element>(args) -> R` that runs `BODY(args)` compiled
/// with `#[target_feature(enable = FEATURES)]` when `WHEN()` holds, and the plain
/// `BODY(args)` otherwise. The body must be `#[inline(always)]` so that it is
/// compiled inside each variant; both variants run the same operations in the
/// same order, so they give the same bits.
///
/// ```text
/// simd_variant! {
///     /// doc of the dispatching function
///     pub fn add_bias = add_bias_body, "avx2", avx2; (row: &mut [T], bias: T, relu: bool)
/// }
/// ```
macro_rules! simd_variant {
    (
        $(#[$doc:meta])*
        $vis:vis fn $name:ident = $body:ident, $features:literal, $when:ident;
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
    ) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<T: $crate::element::Element>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = $features)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn compiled_for_features<T: $crate::element::Element>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::kernels::cpu::$when() {
                    // SAFETY: the CPU has the features the variant is compiled for.
                    return unsafe { compiled_for_features($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_variant;

#[cfg(test)]
mod tests {
    use super::*;

    // (the portable switch is process-wide: it is exercised in a test binary of
    // its own, `tests/winograd_portable.rs`, not beside the other unit tests)
    #[test]
    fn the_predicates_agree_with_the_detected_features() {
        let f = detect();
        assert_eq!(avx2_fma(), f.avx2 && f.fma);
        assert_eq!(isa() == Isa::Avx512, f.avx512f && f.fma);
        if !f.avx2 {
            assert_ne!(isa(), Isa::Avx2);
        }
    }
}
