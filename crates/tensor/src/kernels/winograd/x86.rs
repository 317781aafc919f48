//! The AVX2 + FMA f32 bodies of the Winograd path ([`super::passes`]).
//!
//! A leaf module: raw pointers and one element type, no generic
//! [`crate::element::Element`]. The generic code computes the same sums in
//! the same order (with separate multiply and add where these fuse them), and
//! runs for f64 and on CPUs without AVX2.

use super::tiles::PATCH;
use std::arch::x86_64::*;

/// One `R x (8 NV)` block of the point GEMM, held in `R NV` registers over the
/// whole depth: `C[r][j] := sum_p A[r][p] B[p][j] (+ C[r][j] if accumulate)`,
/// `A[r][p] = a[r * lda + p]`, `B[p][j] = b[p * ldb + j]`, `C[r][j] = c[r * ldc + j]`.
///
/// Per depth step: `NV` loads of `B`, `R` broadcasts of `A`, `R NV` FMAs. The
/// main shape is 6 x 16 (12 accumulators + 2 of `B` + 1 broadcast = 15 of the
/// 16 AVX2 registers; 6 x 24 or 4 x 24 would not fit and spill).
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` holds rows `0..R` of `depth` elements at
/// stride `lda`, `b` rows `0..depth` of `8 NV` elements at stride `ldb`, `c`
/// rows `0..R` of `8 NV` elements at stride `ldc`; `c` aliases neither.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn point_block_f32<const R: usize, const NV: usize>(
    depth: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: every address below lies inside the rows the caller vouches for.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; R];
        if accumulate {
            for (r, acc_row) in acc.iter_mut().enumerate() {
                for (v, acc_vec) in acc_row.iter_mut().enumerate() {
                    *acc_vec = _mm256_loadu_ps(c.add(r * ldc + 8 * v));
                }
            }
        }
        for p in 0..depth {
            let b_row = b.add(p * ldb);
            let mut b_vecs = [_mm256_setzero_ps(); NV];
            for (v, b_vec) in b_vecs.iter_mut().enumerate() {
                *b_vec = _mm256_loadu_ps(b_row.add(8 * v));
            }
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let a_value = _mm256_broadcast_ss(&*a.add(r * lda + p));
                for (acc_vec, &b_vec) in acc_row.iter_mut().zip(&b_vecs) {
                    *acc_vec = _mm256_fmadd_ps(a_value, b_vec, *acc_vec);
                }
            }
        }
        for (r, acc_row) in acc.iter().enumerate() {
            for (v, &acc_vec) in acc_row.iter().enumerate() {
                _mm256_storeu_ps(c.add(r * ldc + 8 * v), acc_vec);
            }
        }
    }
}

/// The AVX-512 form of [`point_block_f32`]: an `R x (16 NZ + 8 NY)` block in
/// `R (NZ + NY)` registers, `NZ` 512-bit and `NY` 256-bit vectors per row (a
/// 24-wide block of tiles is one of each). The 32 registers of AVX-512 hold
/// 12 x 24 or 12 x 32 (24 accumulators + the `B` vectors + 1 broadcast): twice
/// the rows of the AVX2 body, each FMA twice as wide. Every `C[r][j]` is the
/// same chain of FMAs over `p` in order, so the bits are those of the AVX2 body.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; `a` holds rows `0..R` of `depth` elements
/// at stride `lda`, `b` rows `0..depth` of `16 NZ + 8 NY` elements at stride
/// `ldb`, `c` rows `0..R` of `16 NZ + 8 NY` elements at stride `ldc`; `c`
/// aliases neither.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn point_block_avx512_f32<const R: usize, const NZ: usize, const NY: usize>(
    depth: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: every address below lies inside the rows the caller vouches for.
    unsafe {
        let mut acc_z = [[_mm512_setzero_ps(); NZ]; R];
        let mut acc_y = [[_mm256_setzero_ps(); NY]; R];
        // C[r][j] for the 512-bit vector v of row r at j = 16 v, the 256-bit one at 16 NZ + 8 v
        let (at_z, at_y) = (|r: usize, v: usize| r * ldc + 16 * v, |r: usize, v: usize| r * ldc + 16 * NZ + 8 * v);
        if accumulate {
            for (r, (row_z, row_y)) in acc_z.iter_mut().zip(&mut acc_y).enumerate() {
                for (v, acc) in row_z.iter_mut().enumerate() {
                    *acc = _mm512_loadu_ps(c.add(at_z(r, v)));
                }
                for (v, acc) in row_y.iter_mut().enumerate() {
                    *acc = _mm256_loadu_ps(c.add(at_y(r, v)));
                }
            }
        }
        for p in 0..depth {
            let b_row = b.add(p * ldb);
            let b_z: [__m512; NZ] = std::array::from_fn(|v| _mm512_loadu_ps(b_row.add(16 * v)));
            let b_y: [__m256; NY] = std::array::from_fn(|v| _mm256_loadu_ps(b_row.add(16 * NZ + 8 * v)));
            for (r, (row_z, row_y)) in acc_z.iter_mut().zip(&mut acc_y).enumerate() {
                let a_z = _mm512_set1_ps(*a.add(r * lda + p));
                for (acc, &b_vec) in row_z.iter_mut().zip(&b_z) {
                    *acc = _mm512_fmadd_ps(a_z, b_vec, *acc);
                }
                // the low half of the broadcast is the 256-bit broadcast
                let a_y = _mm512_castps512_ps256(a_z);
                for (acc, &b_vec) in row_y.iter_mut().zip(&b_y) {
                    *acc = _mm256_fmadd_ps(a_y, b_vec, *acc);
                }
            }
        }
        for (r, (row_z, row_y)) in acc_z.iter().zip(&acc_y).enumerate() {
            for (v, &acc) in row_z.iter().enumerate() {
                _mm512_storeu_ps(c.add(at_z(r, v)), acc);
            }
            for (v, &acc) in row_y.iter().enumerate() {
                _mm256_storeu_ps(c.add(at_y(r, v)), acc);
            }
        }
    }
}

/// Transposes an 8x8 block: `dst[j * ld_dst + i] = src[i * ld_src + j]`.
///
/// # Safety
/// The CPU has AVX2; `src` holds 8 rows of 8 at stride `ld_src`, `dst` 8 rows of 8
/// at stride `ld_dst`; they do not overlap.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn transpose8x8_f32(src: *const f32, ld_src: usize, dst: *mut f32, ld_dst: usize) {
    // SAFETY: the addresses are the caller's 8x8 blocks.
    unsafe {
        let row = |i: usize| _mm256_loadu_ps(src.add(i * ld_src));
        let r = [row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)];
        // pairs of rows interleaved, then pairs of pairs, then the 128-bit halves
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (j, &row) in out.iter().enumerate() {
            _mm256_storeu_ps(dst.add(j * ld_dst), row);
        }
    }
}

/// `out = A^T m` on `n` (a multiple of 8) lanes: six vectors in, four out, as
/// `apply_at` of `transforms`, 8 tiles per instruction.
///
/// # Safety
/// The CPU has AVX2; each input and output vector holds `n` elements; no
/// output overlaps another vector.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn apply_at_f32(m: [*const f32; 6], out: [*mut f32; 4], n: usize) {
    // SAFETY: `n` elements from each pointer, as the caller vouches.
    unsafe {
        let (two, four, eight) = (_mm256_set1_ps(2.0), _mm256_set1_ps(4.0), _mm256_set1_ps(8.0));
        for t in (0..n).step_by(8) {
            let load = |i: usize| _mm256_loadu_ps(m[i].add(t));
            let [m0, m1, m2, m3, m4, m5] = [load(0), load(1), load(2), load(3), load(4), load(5)];
            let (sum12, diff12) = (_mm256_add_ps(m1, m2), _mm256_sub_ps(m1, m2));
            let (sum34, diff34) = (_mm256_add_ps(m3, m4), _mm256_sub_ps(m3, m4));
            let o0 = _mm256_add_ps(_mm256_add_ps(m0, sum12), sum34);
            let o1 = _mm256_add_ps(diff12, _mm256_mul_ps(two, diff34));
            let o2 = _mm256_add_ps(sum12, _mm256_mul_ps(four, sum34));
            let o3 = _mm256_add_ps(_mm256_add_ps(diff12, _mm256_mul_ps(eight, diff34)), m5);
            for (dst, value) in out.iter().zip([o0, o1, o2, o3]) {
                _mm256_storeu_ps(dst.add(t), value);
            }
        }
    }
}

/// `out = A d` (four vectors in, six out), as `apply_a` of `transforms`.
///
/// # Safety
/// As [`apply_at_f32`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn apply_a_f32(d: [*const f32; 4], out: [*mut f32; 6], n: usize) {
    // SAFETY: `n` elements from each pointer, as the caller vouches.
    unsafe {
        let (two, four, eight) = (_mm256_set1_ps(2.0), _mm256_set1_ps(4.0), _mm256_set1_ps(8.0));
        for t in (0..n).step_by(8) {
            let load = |i: usize| _mm256_loadu_ps(d[i].add(t));
            let [d0, d1, d2, d3] = [load(0), load(1), load(2), load(3)];
            let (even, odd) = (_mm256_add_ps(d0, d2), _mm256_add_ps(d1, d3));
            let even4 = _mm256_add_ps(d0, _mm256_mul_ps(four, d2));
            let odd28 = _mm256_add_ps(_mm256_mul_ps(two, d1), _mm256_mul_ps(eight, d3));
            let outputs = [
                d0,
                _mm256_add_ps(even, odd),
                _mm256_sub_ps(even, odd),
                _mm256_add_ps(even4, odd28),
                _mm256_sub_ps(even4, odd28),
                d3,
            ];
            for (dst, value) in out.iter().zip(outputs) {
                _mm256_storeu_ps(dst.add(t), value);
            }
        }
    }
}

/// Splits 32 consecutive pixels (8 tiles of 4) into their 4 phases:
/// `phase[s][t] = pixels[4 t + s]`. A 4x4 transpose of pairs after grouping
/// each vector's pixels by phase.
#[inline(always)]
unsafe fn split4(pixels: *const f32) -> [__m256; 4] {
    // SAFETY: 32 readable floats at `pixels` (the callers' contract); AVX2 is enabled in every caller.
    unsafe {
        let by_phase = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        // w_i = (p0 p0 p1 p1 p2 p2 p3 p3) of tiles 2i, 2i+1
        let grouped =
            |i: usize| _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_loadu_ps(pixels.add(8 * i)), by_phase));
        let w = [grouped(0), grouped(1), grouped(2), grouped(3)];
        let t0 = _mm256_unpacklo_pd(w[0], w[1]);
        let t1 = _mm256_unpackhi_pd(w[0], w[1]);
        let t2 = _mm256_unpacklo_pd(w[2], w[3]);
        let t3 = _mm256_unpackhi_pd(w[2], w[3]);
        [
            _mm256_castpd_ps(_mm256_permute2f128_pd::<0x20>(t0, t2)),
            _mm256_castpd_ps(_mm256_permute2f128_pd::<0x20>(t1, t3)),
            _mm256_castpd_ps(_mm256_permute2f128_pd::<0x31>(t0, t2)),
            _mm256_castpd_ps(_mm256_permute2f128_pd::<0x31>(t1, t3)),
        ]
    }
}

/// The four phases of a row of gradient pixels: `phase[s][t] = row[4 t + s]`.
///
/// # Safety
/// The CPU has AVX2; `row` holds `4 n` elements, each `phases[s]` `n`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn split_phases4_f32(row: *const f32, phases: [*mut f32; 4], n: usize) {
    // SAFETY: reads `4 n`, writes `n` per phase.
    unsafe {
        for t in (0..n).step_by(8) {
            for (dst, value) in phases.iter().zip(split4(row.add(4 * t))) {
                _mm256_storeu_ps(dst.add(t), value);
            }
        }
    }
}

/// Joins four phases back into pixels with the epilogue:
/// `row[4 t + s] = relu?(phase[s][t] + bias)` for `t < 8 chunks`.
///
/// # Safety
/// The CPU has AVX2; `row` holds `32 chunks` elements, each `phases[s]` `8 chunks`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn join_phases_f32(phases: [*const f32; 4], row: *mut f32, chunks: usize, bias: f32, relu: bool) {
    // SAFETY: reads 8 per phase per chunk, writes 32 per chunk, as the caller vouches.
    unsafe {
        for chunk in 0..chunks {
            let load = |ph: usize| _mm256_loadu_ps(phases[ph].add(8 * chunk));
            join4([load(0), load(1), load(2), load(3)], row.add(32 * chunk), bias, relu);
        }
    }
}

/// The epilogue of an output row chunk: `y = phase + b` (then `max(y, 0)` with
/// `relu`) on the four phases of 8 tiles, joined back into 32 pixels at `out`:
/// the inverse of [`split4`], the same 4x4 transpose of pixel pairs, then the
/// phases ungrouped.
///
/// # Safety
/// AVX2 is enabled in the caller; `out` holds 32 elements.
#[inline(always)]
unsafe fn join4(phases: [__m256; 4], out: *mut f32, bias: f32, relu: bool) {
    // SAFETY: register arithmetic, and 4 stores of 8 into the 32 the caller vouches for.
    unsafe {
        let (bias, zero) = (_mm256_set1_ps(bias), _mm256_setzero_ps());
        // (a plain loop, not a closure: a closure here would not inherit the caller's AVX2)
        let mut p = [_mm256_setzero_pd(); 4];
        for (pair, phase) in p.iter_mut().zip(phases) {
            let mut value = _mm256_add_ps(phase, bias);
            if relu {
                // y > 0 ? y : 0 (NaN -> 0, like the im2col epilogue)
                value = _mm256_and_ps(value, _mm256_cmp_ps::<_CMP_GT_OQ>(value, zero));
            }
            *pair = _mm256_castps_pd(value);
        }
        let t0 = _mm256_unpacklo_pd(p[0], p[1]);
        let t1 = _mm256_unpackhi_pd(p[0], p[1]);
        let t2 = _mm256_unpacklo_pd(p[2], p[3]);
        let t3 = _mm256_unpackhi_pd(p[2], p[3]);
        let w = [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ];
        let by_tile = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        for (q, &value) in w.iter().enumerate() {
            _mm256_storeu_ps(out.add(8 * q), _mm256_permutevar8x32_ps(_mm256_castpd_ps(value), by_tile));
        }
    }
}

/// `out = B^T x` on six vectors in registers (the lanes are 8 tiles).
#[inline(always)]
unsafe fn bt6(x: [__m256; 6]) -> [__m256; 6] {
    // SAFETY: register arithmetic only; AVX2 is enabled in every caller.
    unsafe {
        let (four, five, two) = (_mm256_set1_ps(4.0), _mm256_set1_ps(5.0), _mm256_set1_ps(2.0));
        let [x0, x1, x2, x3, x4, x5] = x;
        let (d42, d31) = (_mm256_sub_ps(x4, x2), _mm256_mul_ps(two, _mm256_sub_ps(x3, x1)));
        [
            _mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(four, x0), _mm256_mul_ps(five, x2)), x4),
            _mm256_sub_ps(_mm256_add_ps(x3, x4), _mm256_mul_ps(four, _mm256_add_ps(x1, x2))),
            _mm256_add_ps(_mm256_sub_ps(x4, x3), _mm256_mul_ps(four, _mm256_sub_ps(x1, x2))),
            _mm256_add_ps(d42, d31),
            _mm256_sub_ps(d42, d31),
            _mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(four, x1), _mm256_mul_ps(five, x3)), x5),
        ]
    }
}

/// `A^T` along y for the 8 tiles from `t` of one output channel's products:
/// `h[r][i] = sum_j A^T[r][j] M[j*6 + i]`, the first half of `A^T M A` that every
/// output transform shares.
///
/// # Safety
/// The features of the callers are enabled; `m` holds `35 point_stride + t + 8`.
#[inline(always)]
unsafe fn along_y(m: *const f32, point_stride: usize, t: usize) -> [[__m256; 6]; 4] {
    // SAFETY: 36 loads of 8 inside the range the caller vouches for; register arithmetic.
    unsafe {
        let mut h = [[_mm256_setzero_ps(); 6]; 4];
        for i in 0..6 {
            let load = |j: usize| _mm256_loadu_ps(m.add((j * 6 + i) * point_stride + t));
            let column = at6([load(0), load(1), load(2), load(3), load(4), load(5)]);
            for (h_row, value) in h.iter_mut().zip(column) {
                h_row[i] = value;
            }
        }
        h
    }
}

/// `out = A^T m` on six vectors in registers.
#[inline(always)]
unsafe fn at6(m: [__m256; 6]) -> [__m256; 4] {
    // SAFETY: register arithmetic only; AVX2 is enabled in every caller.
    unsafe {
        let (two, four, eight) = (_mm256_set1_ps(2.0), _mm256_set1_ps(4.0), _mm256_set1_ps(8.0));
        let [m0, m1, m2, m3, m4, m5] = m;
        let (sum12, diff12) = (_mm256_add_ps(m1, m2), _mm256_sub_ps(m1, m2));
        let (sum34, diff34) = (_mm256_add_ps(m3, m4), _mm256_sub_ps(m3, m4));
        [
            _mm256_add_ps(_mm256_add_ps(m0, sum12), sum34),
            _mm256_add_ps(diff12, _mm256_mul_ps(two, diff34)),
            _mm256_add_ps(sum12, _mm256_mul_ps(four, sum34)),
            _mm256_add_ps(_mm256_add_ps(diff12, _mm256_mul_ps(eight, diff34)), m5),
        ]
    }
}

/// The whole input transform of one channel, fused: for each chunk of 8 tiles,
/// the six rows split into phases, `B^T` along y, `B^T` along x, and the 36
/// results stored at `v[p * point_stride + t]`. The same operations in the same
/// order as the staged generic path (so the same bits).
///
/// # Safety
/// The CPU has AVX2; each `rows[l]` holds `4 n + 4` elements; `v` holds
/// `35 point_stride + n`; `n` is a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn input_transform_f32(rows: [*const f32; 6], n: usize, v: *mut f32, point_stride: usize) {
    // SAFETY: reads end at rows[l][4 n + 3], writes at v[35 point_stride + n - 1].
    unsafe {
        for t in (0..n).step_by(8) {
            // d[l][ph] = row_l[4 t' + ph] for the 8 tiles t' = t..t+8
            let mut d = [[_mm256_setzero_ps(); 6]; 6];
            for (l, row) in rows.iter().enumerate() {
                let first = split4(row.add(4 * t));
                let next = split4(row.add(4 * t + 4));
                d[l] = [first[0], first[1], first[2], first[3], next[0], next[1]];
            }
            bt_d_bt(d, v.add(t), point_stride);
        }
    }
}

/// `V[j*6 + i] = (B^T d B)[j][i]` for 8 tiles, stored at `v[(j*6 + i) * point_stride]`:
/// `B^T` along y, then along x, as every input transform runs it.
///
/// # Safety
/// AVX2 is enabled in the caller; `v` holds `35 point_stride + 8`.
#[inline(always)]
unsafe fn bt_d_bt(d: [[__m256; 6]; 6], v: *mut f32, point_stride: usize) {
    // SAFETY: register arithmetic, and 36 stores of 8 inside the range the caller vouches for.
    unsafe {
        // along y: e[j][ph] = sum_l B^T[j][l] d[l][ph]
        let mut e = [[_mm256_setzero_ps(); 6]; 6];
        for ph in 0..6 {
            let column = bt6([d[0][ph], d[1][ph], d[2][ph], d[3][ph], d[4][ph], d[5][ph]]);
            for j in 0..6 {
                e[j][ph] = column[j];
            }
        }
        // along x: V[j*6 + i] = sum_ph B^T[i][ph] e[j][ph]
        for (j, e_row) in e.iter().enumerate() {
            for (i, &value) in bt6(*e_row).iter().enumerate() {
                _mm256_storeu_ps(v.add((j * 6 + i) * point_stride), value);
            }
        }
    }
}

/// [`input_transform_f32`] for tiles gathered one by one (`super::gathered`):
/// tile `t`'s 6x6 input patch row-major at `patches[t * PATCH..][..36]`. Each
/// chunk of 8 patches is transposed (five 8x8 transposes) into `d[l][ph]`,
/// then transformed by the same operations (so the same bits as the rows).
///
/// # Safety
/// The CPU has AVX2; `patches` holds `n * PATCH` elements; `v` holds
/// `35 point_stride + n`; `n` is a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn input_transform_patches_f32(patches: *const f32, n: usize, v: *mut f32, point_stride: usize) {
    // SAFETY: reads end at patches[n PATCH - 1], writes at v[35 point_stride + n - 1];
    // the transposes write inside `by_value`.
    unsafe {
        // by_value[k * 8 + i] = value k (= l*6 + ph) of tile t + i
        let mut by_value = [0.0f32; PATCH * 8];
        for t in (0..n).step_by(8) {
            for column in 0..PATCH / 8 {
                let src = patches.add(t * PATCH + 8 * column);
                transpose8x8_f32(src, PATCH, by_value.as_mut_ptr().add(64 * column), 8);
            }
            let d = std::array::from_fn(|l| std::array::from_fn(|ph| _mm256_loadu_ps(&by_value[8 * (l * 6 + ph)])));
            bt_d_bt(d, v.add(t), point_stride);
        }
    }
}

/// The whole output transform of one output channel, fused: for each chunk of
/// 8 tiles, `A^T` along y, `A^T` along x, bias and ReLU, and the four phases
/// joined into `valid_rows` output rows (32 pixels per chunk each). `m` is
/// `M[0][k][0]`, point `p` at `m[p * point_stride]`.
///
/// # Safety
/// The CPU has AVX2; `m` holds `35 point_stride + 8 chunks`; each of the first
/// `valid_rows` (<= 4) `rows` holds `32 chunks` elements.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn output_transform_f32(
    m: *const f32,
    point_stride: usize,
    rows: [*mut f32; 4],
    valid_rows: usize,
    chunks: usize,
    bias: f32,
    relu: bool,
) {
    // SAFETY: reads and writes stay in the ranges the caller vouches for.
    unsafe {
        for chunk in 0..chunks {
            let t = 8 * chunk;
            let h = along_y(m, point_stride, t);
            for (r, &row) in rows.iter().enumerate().take(valid_rows) {
                // along x, then + b, ReLU, and the phases joined back into pixels
                join4(at6(h[r]), row.add(32 * chunk), bias, relu);
            }
        }
    }
}

/// [`output_transform_f32`] for tiles gathered one by one (`super::gathered`):
/// the same `A^T M A`, bias and ReLU (so the same bits), each tile's 4x4
/// outputs stored row-major at `patches[t * 16..][..16]` (two 8x8 transposes
/// per chunk of 8 tiles) for the caller to put in place.
///
/// # Safety
/// The CPU has AVX2; `m` holds `35 point_stride + n`; `patches` holds `16 n`;
/// `n` is a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn output_transform_patches_f32(
    m: *const f32,
    point_stride: usize,
    n: usize,
    bias: f32,
    relu: bool,
    patches: *mut f32,
) {
    // SAFETY: reads end at m[35 point_stride + n - 1], writes at patches[16 n - 1]; the
    // stores into `by_pixel` stay inside it.
    unsafe {
        let (bias, zero) = (_mm256_set1_ps(bias), _mm256_setzero_ps());
        // by_pixel[(r * 4 + s) * 8 + i] = output (r, s) of tile t + i
        let mut by_pixel = [0.0f32; 16 * 8];
        for t in (0..n).step_by(8) {
            let h = along_y(m, point_stride, t);
            for (r, h_row) in h.iter().enumerate() {
                for (s, phase) in at6(*h_row).into_iter().enumerate() {
                    // as join4: + b, then y > 0 ? y : 0
                    let mut value = _mm256_add_ps(phase, bias);
                    if relu {
                        value = _mm256_and_ps(value, _mm256_cmp_ps::<_CMP_GT_OQ>(value, zero));
                    }
                    _mm256_storeu_ps(by_pixel.as_mut_ptr().add(8 * (r * 4 + s)), value);
                }
            }
            for half in 0..2 {
                transpose8x8_f32(by_pixel.as_ptr().add(64 * half), 8, patches.add(16 * t + 8 * half), 16);
            }
        }
    }
}

/// [`output_transform_f32`] with ReLU, then a `pool x pool` max-pool (stride
/// `pool`, 2 or 4) of the block's four rows, taken on the phases before they
/// are joined into pixels: phase `s` of row `r` holds pixel `4t + s` of the 8
/// tiles `t`, so a 4x4 window is one tile (the maximum of 16 vectors) and a
/// 2x2 window two phases of two rows. Pooled row `q` of chunk `c` goes to
/// `pooled[q] + 32 c / pool`; only the first `pooled_rows` (4 / pool, or fewer
/// at the plane's bottom edge) are written. The ReLU makes every value `+0` or
/// more and never NaN, so the maxima are those of any order, bit for bit.
///
/// # Safety
/// The CPU has AVX2; `m` holds `35 point_stride + 8 chunks`; each of the
/// first `pooled_rows` (<= 4 / pool) `pooled` rows holds `32 chunks / pool` elements.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn output_transform_maxpool_f32(
    m: *const f32,
    point_stride: usize,
    pooled: [*mut f32; 2],
    pooled_rows: usize,
    chunks: usize,
    bias: f32,
    pool: usize,
) {
    // SAFETY: reads and writes stay in the ranges the caller vouches for.
    unsafe {
        let (bias, zero) = (_mm256_set1_ps(bias), _mm256_setzero_ps());
        for chunk in 0..chunks {
            let t = 8 * chunk;
            let h = along_y(m, point_stride, t);
            // along x, + b, ReLU: y[r][s] = pixel (r, 4t + s) of each tile
            let mut y = [[zero; 4]; 4];
            for (y_row, h_row) in y.iter_mut().zip(&h) {
                for (value, phase) in y_row.iter_mut().zip(at6(*h_row)) {
                    let biased = _mm256_add_ps(phase, bias);
                    *value = _mm256_and_ps(biased, _mm256_cmp_ps::<_CMP_GT_OQ>(biased, zero));
                }
            }
            if pool == 4 {
                let mut best = y[0][0];
                for value in y.iter().flatten() {
                    best = _mm256_max_ps(best, *value);
                }
                _mm256_storeu_ps(pooled[0].add(8 * chunk), best);
                continue;
            }
            for (q, &row) in pooled.iter().enumerate().take(pooled_rows) {
                let (upper, lower) = (y[2 * q], y[2 * q + 1]);
                // columns 2t (phases 0, 1) and 2t + 1 (phases 2, 3) of pooled row q
                let even = _mm256_max_ps(_mm256_max_ps(upper[0], upper[1]), _mm256_max_ps(lower[0], lower[1]));
                let odd = _mm256_max_ps(_mm256_max_ps(upper[2], upper[3]), _mm256_max_ps(lower[2], lower[3]));
                let (low, high) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
                _mm256_storeu_ps(row.add(16 * chunk), _mm256_permute2f128_ps::<0x20>(low, high));
                _mm256_storeu_ps(row.add(16 * chunk + 8), _mm256_permute2f128_ps::<0x31>(low, high));
            }
        }
    }
}

/// `out = A d` on four vectors in registers (a 4-long `dY` column into 6).
#[inline(always)]
unsafe fn a4(d: [__m256; 4]) -> [__m256; 6] {
    // SAFETY: register arithmetic only; AVX2 is enabled in every caller.
    unsafe {
        let (two, four, eight) = (_mm256_set1_ps(2.0), _mm256_set1_ps(4.0), _mm256_set1_ps(8.0));
        let [d0, d1, d2, d3] = d;
        let (even, odd) = (_mm256_add_ps(d0, d2), _mm256_add_ps(d1, d3));
        let even4 = _mm256_add_ps(d0, _mm256_mul_ps(four, d2));
        let odd28 = _mm256_add_ps(_mm256_mul_ps(two, d1), _mm256_mul_ps(eight, d3));
        [
            d0,
            _mm256_add_ps(even, odd),
            _mm256_sub_ps(even, odd),
            _mm256_add_ps(even4, odd28),
            _mm256_sub_ps(even4, odd28),
            d3,
        ]
    }
}

/// The whole `A dY A^T` of one output channel's gradient, fused: for each
/// chunk of 8 tiles, the four rows split into phases, `A` along y, `A` along x,
/// the 36 results stored at `out[p * point_stride + t]`.
///
/// # Safety
/// The CPU has AVX2; each `rows[r]` holds `4 n` elements; `out` holds
/// `35 point_stride + n`; `n` is a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn grad_transform_f32(rows: [*const f32; 4], n: usize, out: *mut f32, point_stride: usize) {
    // SAFETY: reads end at rows[r][4 n - 1], writes at out[35 point_stride + n - 1].
    unsafe {
        for t in (0..n).step_by(8) {
            let g = [
                split4(rows[0].add(4 * t)),
                split4(rows[1].add(4 * t)),
                split4(rows[2].add(4 * t)),
                split4(rows[3].add(4 * t)),
            ];
            // along y: h[j][s] = sum_r A[j][r] g[r][s]
            let mut h = [[_mm256_setzero_ps(); 4]; 6];
            for s in 0..4 {
                let column = a4([g[0][s], g[1][s], g[2][s], g[3][s]]);
                for j in 0..6 {
                    h[j][s] = column[j];
                }
            }
            // along x: DY'[j*6 + i] = sum_s A[i][s] h[j][s]
            for (j, h_row) in h.iter().enumerate() {
                for (i, &value) in a4(*h_row).iter().enumerate() {
                    _mm256_storeu_ps(out.add((j * 6 + i) * point_stride + t), value);
                }
            }
        }
    }
}
