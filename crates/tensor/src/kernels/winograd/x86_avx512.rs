//! The AVX-512 bodies of the Winograd transforms ([`super::planes`]): the input
//! transform and the output transform (joined into pixels, or with ReLU and
//! max-pool for inference), each the
//! operations of its AVX2 body in [`super::x86`], in the same order, on 16
//! tiles per register instead of 8, so the same bits. A leaf module: raw
//! pointers, f32 only.

use super::x86::{input_transform_f32, output_transform_maxpool_f32};
use std::arch::x86_64::*;

/// `LOW[s]` picks pixels `s, s + 4, ..., s + 28` of two registers (32 pixels, 8
/// tiles) into lanes 0-7; `HIGH[s]` the same into lanes 8-15.
const LOW: [[i32; 16]; 4] = phase_indices(0);
const HIGH: [[i32; 16]; 4] = phase_indices(8);

const fn phase_indices(first_lane: usize) -> [[i32; 16]; 4] {
    let mut indices = [[0; 16]; 4];
    let mut s = 0;
    while s < 4 {
        let mut t = 0;
        while t < 8 {
            indices[s][first_lane + t] = (4 * t + s) as i32;
            t += 1;
        }
        s += 1;
    }
    indices
}

/// The four phases of 64 pixels (16 tiles of 4): `phase[s]` lane `t` = `pixels[4 t + s]`.
///
/// # Safety
/// AVX-512F is enabled in the caller; 64 floats are readable at `pixels`.
#[inline(always)]
unsafe fn split16(pixels: *const f32) -> [__m512; 4] {
    // SAFETY: four loads of 16 inside the 64 the caller vouches for.
    unsafe {
        phases_of([
            _mm512_loadu_ps(pixels),
            _mm512_loadu_ps(pixels.add(16)),
            _mm512_loadu_ps(pixels.add(32)),
            _mm512_loadu_ps(pixels.add(48)),
        ])
    }
}

/// [`split16`] of the 64 pixels from column `x` of a plane row `row` (`width`
/// values; `x` may lie before it or run past its end): the pixels outside the
/// row are zeros, as if the row had been copied into a zero-padded buffer, and
/// are never read.
///
/// # Safety
/// AVX-512F is enabled in the caller; `row` holds `width` readable values.
#[inline(always)]
unsafe fn split16_in_row(row: *const f32, x: isize, width: isize) -> [__m512; 4] {
    // SAFETY: each load reads only the lanes its mask keeps, all inside the row's `width`
    // values (masked-off lanes are not accessed, so they cannot fault); the addresses of the
    // others are formed by wrapping arithmetic and never dereferenced.
    unsafe {
        let load = |k: isize| {
            let first = x + 16 * k;
            _mm512_maskz_loadu_ps(lanes_between(first, 0, width), row.wrapping_offset(first))
        };
        phases_of([load(0), load(1), load(2), load(3)])
    }
}

/// The lanes `i` of a 16-lane register holding elements `first + i` for which
/// `lo <= first + i < hi`, as a mask.
#[inline(always)]
fn lanes_between(first: isize, lo: isize, hi: isize) -> __mmask16 {
    let (from, to) = ((lo - first).clamp(0, 16) as u32, (hi - first).clamp(0, 16) as u32);
    match to > from {
        true => (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16,
        false => 0,
    }
}

/// The four phases of 64 pixels loaded in four registers ([`split16`]).
#[inline(always)]
unsafe fn phases_of(v: [__m512; 4]) -> [__m512; 4] {
    // SAFETY: register arithmetic, and loads of the two constant index tables.
    unsafe {
        let mut phases = [_mm512_setzero_ps(); 4];
        for (s, phase) in phases.iter_mut().enumerate() {
            let low = _mm512_permutex2var_ps(v[0], _mm512_loadu_si512(LOW[s].as_ptr().cast()), v[1]);
            let high = _mm512_permutex2var_ps(v[2], _mm512_loadu_si512(HIGH[s].as_ptr().cast()), v[3]);
            *phase = _mm512_mask_blend_ps(0xFF00, low, high);
        }
        phases
    }
}

/// `out = B^T x` on six registers, as `x86::bt6` (same operations, same order).
#[inline(always)]
unsafe fn bt6(x: [__m512; 6]) -> [__m512; 6] {
    // SAFETY: register arithmetic only; AVX-512F is enabled in every caller.
    unsafe {
        let (four, five, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0), _mm512_set1_ps(2.0));
        let [x0, x1, x2, x3, x4, x5] = x;
        let (d42, d31) = (_mm512_sub_ps(x4, x2), _mm512_mul_ps(two, _mm512_sub_ps(x3, x1)));
        [
            _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, x0), _mm512_mul_ps(five, x2)), x4),
            _mm512_sub_ps(_mm512_add_ps(x3, x4), _mm512_mul_ps(four, _mm512_add_ps(x1, x2))),
            _mm512_add_ps(_mm512_sub_ps(x4, x3), _mm512_mul_ps(four, _mm512_sub_ps(x1, x2))),
            _mm512_add_ps(d42, d31),
            _mm512_sub_ps(d42, d31),
            _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, x1), _mm512_mul_ps(five, x3)), x5),
        ]
    }
}

/// [`input_transform_f32`] 16 tiles at a time (the last 8, when `n` is not a
/// multiple of 16, by the AVX2 body): the six rows split into phases, `B^T`
/// along y, `B^T` along x, the 36 results stored at `v[p * point_stride + t]`.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; each `rows[l]` holds `4 n + 4` elements;
/// `v` holds `35 point_stride + n`; `n` is a multiple of 8.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn input_transform_avx512_f32(rows: [*const f32; 6], n: usize, v: *mut f32, point_stride: usize) {
    // SAFETY: reads end at rows[l][4 n + 3], writes at v[35 point_stride + n - 1].
    unsafe {
        let mut t = 0;
        while t + 16 <= n {
            // d[l][ph] = row_l[4 t' + ph] for the 16 tiles t' = t..t+16
            let mut d = [[_mm512_setzero_ps(); 6]; 6];
            for (d_row, row) in d.iter_mut().zip(rows) {
                let first = split16(row.add(4 * t));
                let next = split16(row.add(4 * t + 4));
                *d_row = [first[0], first[1], first[2], first[3], next[0], next[1]];
            }
            store_bt_d_bt(&d, v.add(t), point_stride, 0xFFFF);
            t += 16;
        }
        if t < n {
            input_transform_f32(rows.map(|row| row.add(4 * t)), n - t, v.add(t), point_stride);
        }
    }
}

/// [`input_transform_avx512_f32`] for a block that overhangs the plane,
/// reading the plane where it lies instead of a zero-padded copy of its rows:
/// `rows[l]` is the plane row `(width,)` of the block's input row `l`, or null
/// for a row above or below the plane (all zeros); `x0` the plane column of the
/// block's first input pixel (`-pad_left` on the left edge). Pixels outside the
/// plane are zeros, as in the copy, so the same `V`, bit for bit; the last 8
/// tiles, when `n` is not a multiple of 16, run 16 wide with half the lanes
/// stored (their operations are lane by lane, as in the AVX2 body).
///
/// Why: on 56-wide maps (ResNet's first stage) every block overhangs the plane,
/// and copying its six rows per channel (`memmove` calls of 56 values) took a
/// fifth of the convolution.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; each non-null `rows[l]` holds `width`
/// elements; `v` holds `35 point_stride + n`; `n` is a multiple of 8.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn input_transform_in_plane_avx512_f32(
    rows: [*const f32; 6],
    x0: isize,
    width: usize,
    n: usize,
    v: *mut f32,
    point_stride: usize,
) {
    // SAFETY: reads stay inside each row's `width` values (split16_in_row), writes end at
    // v[35 point_stride + n - 1] (the store mask keeps tiles t..n of the last 16).
    unsafe {
        let mut t = 0;
        while t < n {
            let x = x0 + 4 * t as isize;
            let mut d = [[_mm512_setzero_ps(); 6]; 6];
            for (d_row, &row) in d.iter_mut().zip(&rows) {
                if !row.is_null() {
                    let first = split16_in_row(row, x, width as isize);
                    let next = split16_in_row(row, x + 4, width as isize);
                    *d_row = [first[0], first[1], first[2], first[3], next[0], next[1]];
                }
            }
            store_bt_d_bt(&d, v.add(t), point_stride, lanes_between(t as isize, 0, n as isize));
            t += 16;
        }
    }
}

/// `V[j*6 + i] = (B^T d B)[j][i]` of 16 tiles' phases `d[l][ph]`: `B^T` along y,
/// then along x, stored at `v[(j*6 + i) * point_stride]`, the lanes of `lanes` only.
///
/// # Safety
/// AVX-512F is enabled in the caller; the kept lanes of the 36 stores are writable.
#[inline(always)]
unsafe fn store_bt_d_bt(d: &[[__m512; 6]; 6], v: *mut f32, point_stride: usize, lanes: __mmask16) {
    // SAFETY: register arithmetic, and stores of the lanes the caller vouches for.
    unsafe {
        // along y: e[j][ph] = sum_l B^T[j][l] d[l][ph]
        let mut e = [[_mm512_setzero_ps(); 6]; 6];
        for ph in 0..6 {
            let column = bt6([d[0][ph], d[1][ph], d[2][ph], d[3][ph], d[4][ph], d[5][ph]]);
            for (e_row, value) in e.iter_mut().zip(column) {
                e_row[ph] = value;
            }
        }
        // along x: V[j*6 + i] = sum_ph B^T[i][ph] e[j][ph]
        for (j, e_row) in e.iter().enumerate() {
            for (i, &value) in bt6(*e_row).iter().enumerate() {
                _mm512_mask_storeu_ps(v.add((j * 6 + i) * point_stride), lanes, value);
            }
        }
    }
}

/// `A^T` along y for the 16 tiles from `t` of one output channel's products:
/// `h[r][i] = sum_j A^T[r][j] M[j*6 + i]`, the first half of `A^T M A` that every
/// output transform shares; only the tiles of `lanes` are read (the others are
/// zeros).
///
/// # Safety
/// The features of the callers are enabled; `m` holds the lanes of `lanes` of
/// `35 point_stride + t + 16`.
#[inline(always)]
unsafe fn along_y(m: *const f32, point_stride: usize, t: usize, lanes: __mmask16) -> [[__m512; 6]; 4] {
    // SAFETY: 36 loads of the kept lanes inside the range the caller vouches for; register arithmetic.
    unsafe {
        let mut h = [[_mm512_setzero_ps(); 6]; 4];
        for i in 0..6 {
            let load = |j: usize| _mm512_maskz_loadu_ps(lanes, m.add((j * 6 + i) * point_stride + t));
            let column = at6([load(0), load(1), load(2), load(3), load(4), load(5)]);
            for (h_row, value) in h.iter_mut().zip(column) {
                h_row[i] = value;
            }
        }
        h
    }
}

/// `out = A^T m` on six registers, as `x86::at6` (same operations, same order).
#[inline(always)]
unsafe fn at6(m: [__m512; 6]) -> [__m512; 4] {
    // SAFETY: register arithmetic only; AVX-512F is enabled in every caller.
    unsafe {
        let (two, four, eight) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(8.0));
        let [m0, m1, m2, m3, m4, m5] = m;
        let (sum12, diff12) = (_mm512_add_ps(m1, m2), _mm512_sub_ps(m1, m2));
        let (sum34, diff34) = (_mm512_add_ps(m3, m4), _mm512_sub_ps(m3, m4));
        [
            _mm512_add_ps(_mm512_add_ps(m0, sum12), sum34),
            _mm512_add_ps(diff12, _mm512_mul_ps(two, diff34)),
            _mm512_add_ps(sum12, _mm512_mul_ps(four, sum34)),
            _mm512_add_ps(_mm512_add_ps(diff12, _mm512_mul_ps(eight, diff34)), m5),
        ]
    }
}

/// Lanes `0, 16, 1, 17, ..., 7, 23` and `8, 24, ..., 15, 31` of two registers:
/// the even and odd pooled columns interleaved.
const INTERLEAVE: [[i32; 16]; 2] = interleave_indices();

const fn interleave_indices() -> [[i32; 16]; 2] {
    let mut indices = [[0; 16]; 2];
    let mut half = 0;
    while half < 2 {
        let mut i = 0;
        while i < 8 {
            indices[half][2 * i] = (8 * half + i) as i32;
            indices[half][2 * i + 1] = (16 + 8 * half + i) as i32;
            i += 1;
        }
        half += 1;
    }
    indices
}

/// [`output_transform_maxpool_f32`] 16 tiles at a time (the last 8, when the
/// block is not a multiple of 16 tiles, by the AVX2 body): `A^T M A`, + b,
/// ReLU, then the maxima of `pool x pool` windows taken on the phases. Pooled
/// row `q` of tile `t` goes to `pooled[q] + 4 t / pool`.
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; `m` holds `35 point_stride + 8 chunks`;
/// each of the first `pooled_rows` (<= 4 / pool) `pooled` rows holds
/// `32 chunks / pool` elements.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn output_transform_maxpool_avx512_f32(
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
        let (bias, zero) = (_mm512_set1_ps(bias), _mm512_setzero_ps());
        let tiles = 8 * chunks;
        let mut t = 0;
        while t + 16 <= tiles {
            let h = along_y(m, point_stride, t, 0xFFFF);
            // along x, + b, ReLU (y > 0 ? y : +0, NaN -> 0): y[r][s] = pixel (r, 4t + s)
            let mut y = [[zero; 4]; 4];
            for (y_row, h_row) in y.iter_mut().zip(&h) {
                for (value, phase) in y_row.iter_mut().zip(at6(*h_row)) {
                    let biased = _mm512_add_ps(phase, bias);
                    *value = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(biased, zero), biased);
                }
            }
            if pool == 4 {
                let mut best = y[0][0];
                for value in y.iter().flatten() {
                    best = _mm512_max_ps(best, *value);
                }
                _mm512_storeu_ps(pooled[0].add(t), best);
            } else {
                for (q, &row) in pooled.iter().enumerate().take(pooled_rows) {
                    let (upper, lower) = (y[2 * q], y[2 * q + 1]);
                    let even = _mm512_max_ps(_mm512_max_ps(upper[0], upper[1]), _mm512_max_ps(lower[0], lower[1]));
                    let odd = _mm512_max_ps(_mm512_max_ps(upper[2], upper[3]), _mm512_max_ps(lower[2], lower[3]));
                    for (half, indices) in INTERLEAVE.iter().enumerate() {
                        let index = _mm512_loadu_si512(indices.as_ptr().cast());
                        _mm512_storeu_ps(row.add(2 * t + 16 * half), _mm512_permutex2var_ps(even, index, odd));
                    }
                }
            }
            t += 16;
        }
        if t < tiles {
            let out = pooled.map(|row| row.add(4 * t / pool));
            output_transform_maxpool_f32(
                m.add(t),
                point_stride,
                out,
                pooled_rows,
                (tiles - t) / 8,
                bias_value(bias),
                pool,
            );
        }
    }
}

/// Pairs of tiles' pixels in 64-bit lanes: `[0, 8, 1, 9, 2, 10, 3, 11]` and
/// `[4, 12, ..., 7, 15]` of two registers.
const PAIRS: [[i64; 8]; 2] = [[0, 8, 1, 9, 2, 10, 3, 11], [4, 12, 5, 13, 6, 14, 7, 15]];

/// The four phases of 16 tiles, + `bias` (and ReLU: `y > 0 ? y : +0`, NaN -> 0),
/// joined back into 64 pixels at `out`: pixel `4 t + s` is lane `t` of phase `s`;
/// only the first `limit` pixels are stored.
///
/// # Safety
/// AVX-512F is enabled in the caller; `out` holds `min(limit, 64)` elements.
#[inline(always)]
unsafe fn join16(phases: [__m512; 4], out: *mut f32, bias: __m512, relu: bool, limit: usize) {
    // SAFETY: register arithmetic, and four stores of the lanes below `limit` of the 64
    // pixels (addresses past it are formed by wrapping arithmetic and not written).
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut y = [zero; 4];
        for (value, &phase) in y.iter_mut().zip(&phases) {
            let biased = _mm512_add_ps(phase, bias);
            *value = match relu {
                true => _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(biased, zero), biased),
                false => biased,
            };
        }
        // (p0 p1) and (p2 p3) of each tile side by side, tiles 0-7 and 8-15
        let (low, high) =
            (_mm512_loadu_si512(INTERLEAVE[0].as_ptr().cast()), _mm512_loadu_si512(INTERLEAVE[1].as_ptr().cast()));
        let ab = [_mm512_permutex2var_ps(y[0], low, y[1]), _mm512_permutex2var_ps(y[0], high, y[1])];
        let cd = [_mm512_permutex2var_ps(y[2], low, y[3]), _mm512_permutex2var_ps(y[2], high, y[3])];
        // then the two pairs of each tile one after the other: 4 tiles (16 pixels) a store
        for (half, (&ab, &cd)) in ab.iter().zip(&cd).enumerate() {
            for (quarter, pairs) in PAIRS.iter().enumerate() {
                let index = _mm512_loadu_si512(pairs.as_ptr().cast());
                let pixels = _mm512_permutex2var_pd(_mm512_castps_pd(ab), index, _mm512_castps_pd(cd));
                let first = 32 * half + 16 * quarter;
                let lanes = lanes_between(first as isize, 0, limit as isize);
                _mm512_mask_storeu_ps(out.wrapping_add(first), lanes, _mm512_castpd_ps(pixels));
            }
        }
    }
}

/// [`super::x86::output_transform_f32`] 16 tiles at a time: `A^T M A`, + b (and ReLU), the
/// phases joined into pixels in the first `valid_rows` rows, all `32 chunks`
/// pixels of each ([`output_transform_in_plane_avx512_f32`] with every pixel
/// valid: the last 8 tiles, when there are not 16, as half a register).
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; `m` holds `35 point_stride + 8 chunks`;
/// each of the first `valid_rows` (<= 4) `rows` holds `32 chunks` elements.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn output_transform_avx512_f32(
    m: *const f32,
    point_stride: usize,
    rows: [*mut f32; 4],
    valid_rows: usize,
    chunks: usize,
    bias: f32,
    relu: bool,
) {
    // SAFETY: the same ranges, n = 8 chunks tiles and valid = 32 chunks = 4 n pixels.
    unsafe {
        output_transform_in_plane_avx512_f32(m, point_stride, rows, valid_rows, 8 * chunks, 32 * chunks, bias, relu)
    }
}

/// [`output_transform_avx512_f32`] straight into a plane whose width does not
/// end on a chunk of 8 tiles (ResNet's 56-wide maps: 14 tiles a row, padded to
/// 16), instead of through a slab and a copy: the first `valid` pixels of each
/// of the first `valid_rows` rows are stored (masked stores), the `n` tiles'
/// products read 16 at a time (the last 8, when `n` is not a multiple of 16, as
/// half a register: the AVX2 body's operations lane by lane, so the same bits).
///
/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA; `m` holds `35 point_stride + n`; each of
/// the first `valid_rows` (<= 4) `rows` holds `valid` (<= 4 n) elements; `n` is
/// a multiple of 8.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn output_transform_in_plane_avx512_f32(
    m: *const f32,
    point_stride: usize,
    rows: [*mut f32; 4],
    valid_rows: usize,
    n: usize,
    valid: usize,
    bias: f32,
    relu: bool,
) {
    // SAFETY: reads keep the tiles below n (the masks), writes the pixels below `valid`.
    unsafe {
        let bias_vec = _mm512_set1_ps(bias);
        let mut t = 0;
        while t < n && 4 * t < valid {
            let h = along_y(m, point_stride, t, lanes_between(t as isize, 0, n as isize));
            for (&row, h_row) in rows.iter().zip(&h).take(valid_rows) {
                join16(at6(*h_row), row.add(4 * t), bias_vec, relu, valid - 4 * t);
            }
            t += 16;
        }
    }
}

/// The bias back from its register (every lane holds it).
#[inline(always)]
unsafe fn bias_value(bias: __m512) -> f32 {
    // SAFETY: register arithmetic only; AVX-512F is enabled in every caller.
    unsafe { _mm_cvtss_f32(_mm512_castps512_ps128(bias)) }
}

#[cfg(test)]
mod tests {
    use super::super::x86::output_transform_f32;
    use super::*;
    use crate::kernels::cpu;

    /// The pooled output transform: the AVX-512 body gives the AVX2 body's bits
    /// for pools 2 and 4, bottom-edge rows too (40 tiles: 16 + 16 + 8).
    #[test]
    fn the_avx512_pooled_output_transform_gives_the_bits_of_the_avx2_body() {
        if !cpu::features().avx512f {
            assert_ne!(cpu::isa(), cpu::Isa::Avx512);
            return;
        }
        let (chunks, point_stride) = (5, 43);
        let m: Vec<f32> = (0..36 * point_stride).map(|i| ((i * 6151 % 997) as f32 - 480.0) / 53.0).collect();
        for (pool, pooled_rows, bias) in [(2, 2, 0.25), (2, 1, 0.25), (4, 1, 0.25), (2, 2, -1e6), (4, 1, -1e6)] {
            let len = 32 * chunks / pool;
            let (mut wide, mut narrow) = (vec![vec![0.0f32; len]; 2], vec![vec![1.0f32; len]; 2]);
            let [w0, w1] = &mut wide[..] else { unreachable!() };
            let [n0, n1] = &mut narrow[..] else { unreachable!() };
            // SAFETY: the CPU has AVX-512F (checked) and so AVX2 and FMA; `m` holds 36
            // point_stride >= 35 point_stride + 8 chunks; each pooled row 32 chunks / pool.
            unsafe {
                let (wide_rows, narrow_rows) = ([w0.as_mut_ptr(), w1.as_mut_ptr()], [n0.as_mut_ptr(), n1.as_mut_ptr()]);
                output_transform_maxpool_avx512_f32(
                    m.as_ptr(),
                    point_stride,
                    wide_rows,
                    pooled_rows,
                    chunks,
                    bias,
                    pool,
                );
                output_transform_maxpool_f32(m.as_ptr(), point_stride, narrow_rows, pooled_rows, chunks, bias, pool);
            }
            for q in 0..pooled_rows {
                let bits = |row: &[f32]| row.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&wide[q]), bits(&narrow[q]), "pool {pool}, row {q}, bias {bias}");
                // the ReLU: all +0 under a large negative bias, some values above 0 otherwise
                match bias < 0.0 {
                    true => assert!(wide[q].iter().all(|&v| v.to_bits() == 0)),
                    false => assert!(wide[q].iter().any(|&v| v > 0.0)),
                }
            }
        }
    }

    /// The output transform joined into pixels: the AVX-512 body gives the AVX2
    /// body's bits, with and without the ReLU, on 4 and on 3 valid rows.
    #[test]
    fn the_avx512_output_transform_gives_the_bits_of_the_avx2_body() {
        if !cpu::features().avx512f {
            assert_ne!(cpu::isa(), cpu::Isa::Avx512);
            return;
        }
        let (chunks, point_stride) = (5, 43);
        let m: Vec<f32> = (0..36 * point_stride).map(|i| ((i * 4099 % 991) as f32 - 500.0) / 41.0).collect();
        for (relu, valid_rows) in [(true, 4), (false, 4), (true, 3)] {
            let len = 32 * chunks;
            let (mut wide, mut narrow) = (vec![0.0f32; 4 * len], vec![1.0f32; 4 * len]);
            // SAFETY: the CPU has AVX-512F (checked) and so AVX2 and FMA; `m` holds 36
            // point_stride >= 35 point_stride + 8 chunks; each row 32 chunks elements.
            unsafe {
                let wide_rows: [*mut f32; 4] = std::array::from_fn(|r| wide.as_mut_ptr().add(r * len));
                let narrow_rows: [*mut f32; 4] = std::array::from_fn(|r| narrow.as_mut_ptr().add(r * len));
                output_transform_avx512_f32(m.as_ptr(), point_stride, wide_rows, valid_rows, chunks, -0.5, relu);
                output_transform_f32(m.as_ptr(), point_stride, narrow_rows, valid_rows, chunks, -0.5, relu);
            }
            let bits = |values: &[f32]| values.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let valid = valid_rows * len;
            assert_eq!(bits(&wide[..valid]), bits(&narrow[..valid]), "relu {relu}, {valid_rows} rows");
            assert!(wide[..valid].iter().any(|&v| v < 0.0) != relu && wide[..valid].iter().any(|&v| v > 0.0));
        }
    }

    /// Blocks that overhang the plane: the in-plane input transform gives the
    /// bits of the AVX-512 body on a zero-padded copy of the block's rows (what
    /// `planes::block_rows` builds), on either edge, with rows above and below
    /// the plane, for 8 to 32 tiles; it writes no tile past `n`, and reads no
    /// pixel outside its rows (each row is its own allocation).
    #[test]
    fn the_in_plane_input_transform_gives_the_bits_of_a_zero_padded_copy() {
        if !cpu::features().avx512f {
            assert_ne!(cpu::isa(), cpu::Isa::Avx512);
            return;
        }
        let point_stride = 41;
        let mut cases = 0;
        for (n, width, x0) in
            [(16, 56, -1), (8, 56, 23), (16, 56, 15), (24, 90, -2), (32, 120, -1), (8, 5, -1), (16, 70, 7)]
        {
            for y0 in [-1isize, 0, 3, 5] {
                let row_len = 4 * n + 4;
                let plane_rows: Vec<Vec<f32>> = (0..8)
                    .map(|y| (0..width).map(|x| (((y * 977 + x * 7919) % 1000) as f32 - 500.0) / 37.0).collect())
                    .collect();
                let live = |l: usize| usize::try_from(y0 + l as isize).ok().filter(|&y| y < plane_rows.len());
                // the copy: row l's pixels x0..x0 + row_len, zeros outside the plane
                let copies: Vec<Vec<f32>> = (0..6)
                    .map(|l| {
                        let pixel = |e: usize| {
                            let x = x0 + e as isize;
                            let inside = live(l).filter(|_| x >= 0 && (x as usize) < width);
                            inside.map_or(0.0, |y| plane_rows[y][x as usize])
                        };
                        (0..row_len).map(pixel).collect()
                    })
                    .collect();
                let copied: [*const f32; 6] = std::array::from_fn(|l| copies[l].as_ptr());
                let in_plane: [*const f32; 6] =
                    std::array::from_fn(|l| live(l).map_or(std::ptr::null(), |y| plane_rows[y].as_ptr()));
                let (mut expected, mut got) = (vec![f32::NAN; 36 * point_stride], vec![f32::NAN; 36 * point_stride]);
                // SAFETY: the CPU has AVX-512F (checked) and so AVX2 and FMA; each copy holds
                // 4 n + 4 values, each plane row `width`; each output 36 point_stride >= 35
                // point_stride + n.
                unsafe {
                    input_transform_avx512_f32(copied, n, expected.as_mut_ptr(), point_stride);
                    input_transform_in_plane_avx512_f32(in_plane, x0, width, n, got.as_mut_ptr(), point_stride);
                }
                let bits = |values: &[f32]| values.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for p in 0..36 {
                    let at = p * point_stride;
                    assert_eq!(bits(&got[at..at + n]), bits(&expected[at..at + n]), "n {n} x0 {x0} y0 {y0} point {p}");
                    assert!(got[at + n..at + point_stride].iter().all(|v| v.is_nan()), "a tile past n written");
                }
                cases += 1;
            }
        }
        assert_eq!(cases, 28);
    }

    /// Straight into the plane: the in-plane output transform gives the bits
    /// the AVX-512 body writes into a slab of the block's full width, in the
    /// first `valid` pixels of the first `valid_rows` rows, and writes nothing
    /// past them (each row is its own allocation, with a guard after it).
    #[test]
    fn the_in_plane_output_transform_gives_the_bits_of_the_slab() {
        if !cpu::features().avx512f {
            assert_ne!(cpu::isa(), cpu::Isa::Avx512);
            return;
        }
        let point_stride = 45;
        let m: Vec<f32> = (0..36 * point_stride).map(|i| ((i * 4099 % 991) as f32 - 500.0) / 41.0).collect();
        for (n, valid, valid_rows, relu) in [
            (16, 56, 4, true),
            (16, 40, 3, false),
            (8, 20, 4, true),
            (24, 90, 2, true),
            (32, 127, 1, false),
            (8, 1, 4, false),
        ] {
            const GUARD: usize = 20;
            let mut slab = vec![0.0f32; 4 * 4 * n];
            let mut rows = vec![vec![f32::NAN; valid + GUARD]; 4];
            // SAFETY: the CPU has AVX-512F (checked) and so AVX2 and FMA; `m` holds 36
            // point_stride >= 35 point_stride + n; each slab row 4 n = 32 (n / 8) pixels; each
            // plane row `valid` (+ the guard).
            unsafe {
                let slab_rows: [*mut f32; 4] = std::array::from_fn(|r| slab.as_mut_ptr().add(r * 4 * n));
                output_transform_avx512_f32(m.as_ptr(), point_stride, slab_rows, 4, n / 8, -0.5, relu);
                let plane_rows: [*mut f32; 4] = std::array::from_fn(|r| rows[r].as_mut_ptr());
                output_transform_in_plane_avx512_f32(
                    m.as_ptr(),
                    point_stride,
                    plane_rows,
                    valid_rows,
                    n,
                    valid,
                    -0.5,
                    relu,
                );
            }
            let bits = |values: &[f32]| values.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (r, row) in rows.iter().enumerate() {
                let case = format!("n {n} valid {valid} row {r}");
                if r < valid_rows {
                    assert_eq!(bits(&row[..valid]), bits(&slab[r * 4 * n..][..valid]), "{case}");
                    assert!(row[valid..].iter().all(|v| v.is_nan()), "{case}: a pixel past valid written");
                } else {
                    assert!(row.iter().all(|v| v.is_nan()), "{case}: a row past valid_rows written");
                }
            }
        }
    }

    /// The AVX-512 body gives the AVX2 body's bits (40 tiles: two chunks of 16,
    /// then 8 by the AVX2 body); a CPU without AVX-512 never runs it.
    #[test]
    fn the_avx512_input_transform_gives_the_bits_of_the_avx2_body() {
        if !cpu::features().avx512f {
            assert_ne!(cpu::isa(), cpu::Isa::Avx512);
            return;
        }
        let (n, point_stride) = (40, 45);
        let row_len = 4 * n + 4;
        let pixels: Vec<f32> = (0..6 * row_len).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0).collect();
        let rows: [*const f32; 6] = std::array::from_fn(|l| pixels[l * row_len..].as_ptr());
        let (mut wide, mut narrow) = (vec![0.0f32; 36 * point_stride], vec![1.0f32; 36 * point_stride]);
        // SAFETY: the CPU has AVX-512F (checked) and so AVX2 and FMA; each row holds 4 n + 4
        // values, each output 36 point_stride >= 35 point_stride + n.
        unsafe {
            input_transform_avx512_f32(rows, n, wide.as_mut_ptr(), point_stride);
            input_transform_f32(rows, n, narrow.as_mut_ptr(), point_stride);
        }
        for p in 0..36 {
            let (a, b) = (&wide[p * point_stride..][..n], &narrow[p * point_stride..][..n]);
            assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "point {p}"
            );
        }
    }
}
