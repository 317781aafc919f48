//! The element type: one small trait carries `f32` (training) and `f64` (gradient
//! checks) through the same kernels, so the checks exercise production code.

use ndarray::{NdFloat, ScalarOperand};
use std::fmt::{Debug, Display};

/// A floating-point element the kernels can run on: `f32` or `f64`.
///
/// Besides ordinary arithmetic (from [`NdFloat`]) it names the one routine that
/// differs by type, the general matrix multiply, with `matrixmultiply`'s contract:
///
/// `C := alpha * A * B + beta * C`, where `A` is `m x k`, `B` is `k x n` and `C` is
/// `m x n`, and each matrix is addressed by a row stride and a column stride in
/// elements (`A[i][j]` lives at `a + i * rsa + j * csa`). Transposing a matrix is
/// therefore free: swap its two strides. If `beta` is zero, `C` is not read.
pub trait Element: NdFloat + ScalarOperand + Default + Debug + Display + Send + Sync + 'static {
    /// `"f32"` or `"f64"`, for messages.
    const NAME: &'static str;

    /// Converts from `f64` (rounding to nearest for `f32`).
    fn from_f64(value: f64) -> Self;

    /// Converts to `f64` (exactly).
    fn to_f64(self) -> f64;

    /// The raw GEMM; prefer the bounds-checked [`crate::kernels::gemm::gemm`].
    ///
    /// # Safety
    /// Every element addressed by the dimensions and strides must lie inside the
    /// allocations `a`, `b` and `c`, and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// The raw `C := A * B^T + beta * C` of [`crate::kernels::gemm_nt::gemm_nt`] (row strides
    /// `lda`, `ldb`, `ldc`; unit column strides) on this CPU's SIMD kernel;
    /// returns `false`, touching nothing, if the CPU has none (the caller then
    /// falls back to [`crate::kernels::gemm::gemm`]). Prefer the bounds-checked
    /// [`crate::kernels::gemm_nt::gemm_nt`].
    ///
    /// # Safety
    /// Every element addressed by the dimensions and strides must lie inside the
    /// allocations, and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_nt_raw(
        m: usize,
        n: usize,
        k: usize,
        a: *const Self,
        lda: usize,
        b: *const Self,
        ldb: usize,
        beta: Self,
        c: *mut Self,
        ldc: usize,
    ) -> bool;

    /// The raw `C := A * B + beta * C` of [`crate::kernels::gemm_packed::gemm_packed`], `A`
    /// given as its packed panels; returns `false`, touching nothing, if the CPU
    /// has no kernel for it (the caller then falls back to [`crate::kernels::gemm::gemm`]).
    ///
    /// # Safety
    /// `panels` holds `ceil(m / MR) * k * MR` elements; every element of `b` and `c`
    /// addressed by the dimensions and strides is in bounds; `c` aliases neither.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_packed_raw(
        m: usize,
        n: usize,
        k: usize,
        panels: *const Self,
        b: *const Self,
        ldb: usize,
        beta: Self,
        c: *mut Self,
        ldc: usize,
    ) -> bool;
}

/// The two implementations differ only in their names: the `matrixmultiply`
/// routine and our kernels' instantiations for the type.
macro_rules! impl_element {
    ($t:ty, $name:literal, $matrixmultiply:ident, $gemm_nt_dispatch:ident, $gemm_packed_kernel:ident) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            #[allow(clippy::unnecessary_cast)]
            fn from_f64(value: f64) -> Self {
                value as $t
            }
            #[allow(clippy::unnecessary_cast)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe { matrixmultiply::$matrixmultiply(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
            unsafe fn gemm_nt_raw(
                m: usize,
                n: usize,
                k: usize,
                a: *const Self,
                lda: usize,
                b: *const Self,
                ldb: usize,
                beta: Self,
                c: *mut Self,
                ldc: usize,
            ) -> bool {
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: forwarded from the caller's contract.
                    unsafe { crate::kernels::x86_gemm_nt::$gemm_nt_dispatch(m, n, k, a, lda, b, ldb, beta, c, ldc) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (m, n, k, a, lda, b, ldb, beta, c, ldc);
                    false
                }
            }
            unsafe fn gemm_packed_raw(
                m: usize,
                n: usize,
                k: usize,
                panels: *const Self,
                b: *const Self,
                ldb: usize,
                beta: Self,
                c: *mut Self,
                ldc: usize,
            ) -> bool {
                #[cfg(target_arch = "x86_64")]
                {
                    if crate::kernels::x86_gemm_packed::available() {
                        // SAFETY: the CPU has AVX-512F; the rest is the caller's contract.
                        unsafe {
                            crate::kernels::x86_gemm_packed::$gemm_packed_kernel(m, n, k, panels, b, ldb, beta, c, ldc)
                        };
                        return true;
                    }
                }
                let _ = (m, n, k, panels, b, ldb, beta, c, ldc);
                false
            }
        }
    };
}

impl_element!(f32, "f32", sgemm, dispatch_f32, avx512_f32);
impl_element!(f64, "f64", dgemm, dispatch_f64, avx512_f64);
