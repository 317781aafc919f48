//! The plane transforms of the fast Winograd path ([`super::passes`], read
//! it first): one input channel into `V = B^T d B`, one output channel's
//! products back into pixels (`A^T M A`, bias, ReLU), and one gradient channel
//! into `A dY A^T`, for one block of tiles. With AVX2 and f32 each runs fused
//! in registers (`x86`; the input and output transforms in AVX-512 where the
//! CPU has it, `x86_avx512`); otherwise the staged plain bodies of
//! [`super::transforms`].

use super::tiles::{Block, Shape, LANES};
use super::transforms::{apply_a, apply_at, apply_bt, six, six_mut};
#[cfg(target_arch = "x86_64")]
use super::transforms::{f32_mut_ptr, f32_ptr, simd_f32};
#[cfg(target_arch = "x86_64")]
use super::x86::{
    grad_transform_f32, input_transform_f32, join_phases_f32, output_transform_f32, output_transform_maxpool_f32,
    split_phases4_f32,
};
#[cfg(target_arch = "x86_64")]
use super::x86_avx512::{
    input_transform_avx512_f32, input_transform_in_plane_avx512_f32, output_transform_avx512_f32,
    output_transform_in_plane_avx512_f32, output_transform_maxpool_avx512_f32,
};
use super::{ALPHA, TILE};
use crate::element::Element;

/// The six input rows of `block` (`y0..y0 + 6`, columns `x0..x0 + row_len`,
/// zeros outside the plane) into `rows_buf`, `row_len` apart, for a block
/// that does not lie inside the plane. With `zeros_ready`, `rows_buf` already
/// holds these rows of another channel of the same block: the zeros lie in
/// the same places, and only the plane's values are copied.
#[inline(always)]
fn block_rows<T: Element>(
    plane: &[T],
    shape: &Shape,
    (y0, x0): (isize, isize),
    row_len: usize,
    rows_buf: &mut [T],
    zeros_ready: bool,
) {
    let (x_start, x_end) = (x0.max(0) as usize, ((x0 + row_len as isize).min(shape.width as isize)).max(0) as usize);
    if !zeros_ready {
        rows_buf[..ALPHA * row_len].fill(T::zero());
    }
    if x_start >= x_end {
        return;
    }
    let first = (x_start as isize - x0) as usize;
    for l in 0..ALPHA {
        let y = y0 + l as isize;
        if y >= 0 && y < shape.height as isize {
            let src = &plane[y as usize * shape.width..][x_start..x_end];
            rows_buf[l * row_len + first..][..x_end - x_start].copy_from_slice(src);
        }
    }
}

/// `V[p][c][t] = (B^T d B)[p]` for the tiles of `block` in one input plane,
/// `v` addressed as `v[p * point_stride + t]`; `zeros_ready` as in [`block_rows`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn transform_input_plane<T: Element>(
    plane: &[T],
    shape: &Shape,
    block: Block,
    rows_buf: &mut [T],
    phases: &mut [T],
    half: &mut [T],
    v: &mut [T],
    point_stride: usize,
    zeros_ready: bool,
) {
    let tb = block.padded;
    // 4 tb + 2 pixels reach the last tile; 2 more of zeros let the SIMD split read 32 at a time
    let row_len = TILE * tb + 4;
    let y0 = (block.ty * TILE) as isize - shape.pad_top as isize;
    let x0 = (block.tx0 * TILE) as isize - shape.pad_left as isize;
    #[cfg(target_arch = "x86_64")]
    let simd = simd_f32::<T>();
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    // with SIMD, rows that lie inside the plane are read where they are, and with AVX-512
    // those of a block that overhangs it too (masked loads)
    let inside = y0 >= 0 && y0 as usize + ALPHA <= shape.height && x0 >= 0 && x0 as usize + row_len <= shape.width;
    let in_plane = simd && (inside || in_plane_edges());
    if !in_plane {
        block_rows(plane, shape, (y0, x0), row_len, rows_buf, zeros_ready);
    }
    #[cfg(target_arch = "x86_64")]
    if in_plane && !inside {
        let row = |l: usize| match usize::try_from(y0 + l as isize) {
            Ok(y) if y < shape.height => f32_ptr(&plane[y * shape.width..][..shape.width]),
            _ => std::ptr::null(),
        };
        assert!(v.len() >= 35 * point_stride + tb);
        // SAFETY: AVX-512F, AVX2 and FMA are present (in_plane_edges); each non-null row holds
        // `width` elements of the plane, `v` the 36 points (asserted); T is f32.
        unsafe {
            let rows = [row(0), row(1), row(2), row(3), row(4), row(5)];
            input_transform_in_plane_avx512_f32(rows, x0, shape.width, tb, f32_mut_ptr(v), point_stride)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        let row = |l: usize| {
            let row = if inside {
                &plane[(y0 as usize + l) * shape.width + x0 as usize..][..row_len]
            } else {
                &rows_buf[l * row_len..][..row_len]
            };
            f32_ptr(row)
        };
        assert!(v.len() >= 35 * point_stride + tb);
        // SAFETY: AVX2 is present, and AVX-512F where `isa` says so; each row holds row_len =
        // 4 tb + 4 elements (of the plane, checked by `inside`, or of rows_buf), `v` the 36
        // points (asserted); T is f32.
        unsafe {
            let rows = [row(0), row(1), row(2), row(3), row(4), row(5)];
            match crate::kernels::cpu::isa() {
                crate::kernels::cpu::Isa::Avx512 => input_transform_avx512_f32(rows, tb, f32_mut_ptr(v), point_stride),
                _ => input_transform_f32(rows, tb, f32_mut_ptr(v), point_stride),
            }
        };
        return;
    }
    // phases: d[l][ph][t] = row_l[4t + ph], at phases[(l * 6 + ph) * tb + t];
    // phases 4 and 5 are phases 0 and 1 one tile on
    for l in 0..ALPHA {
        let row = &rows_buf[l * row_len..][..row_len];
        let [p0, p1, p2, p3, p4, p5] = six_mut(phases, l * ALPHA * tb, tb, tb);
        for t0 in (0..tb).step_by(LANES) {
            let pixels: &[T; TILE * LANES] = row[TILE * t0..][..TILE * LANES].try_into().expect("32 pixels");
            let mut split = [[T::zero(); LANES]; TILE];
            for t in 0..LANES {
                for ph in 0..TILE {
                    split[ph][t] = pixels[TILE * t + ph];
                }
            }
            p0[t0..t0 + LANES].copy_from_slice(&split[0]);
            p1[t0..t0 + LANES].copy_from_slice(&split[1]);
            p2[t0..t0 + LANES].copy_from_slice(&split[2]);
            p3[t0..t0 + LANES].copy_from_slice(&split[3]);
        }
        p4[..tb - 1].copy_from_slice(&p0[1..]);
        p5[..tb - 1].copy_from_slice(&p1[1..]);
        (p4[tb - 1], p5[tb - 1]) = (row[TILE * tb], row[TILE * tb + 1]);
    }
    // along y: half[j][ph] = sum_l B^T[j][l] d[l][ph]
    for ph in 0..ALPHA {
        apply_bt(six(phases, ph * tb, ALPHA * tb, tb), six_mut(half, ph * tb, ALPHA * tb, tb));
    }
    // along x: V[j*6 + i] = sum_ph B^T[i][ph] half[j][ph]
    for j in 0..ALPHA {
        apply_bt(six(half, j * ALPHA * tb, tb, tb), six_mut(v, j * ALPHA * point_stride, point_stride, tb));
    }
}

/// [`transform_input_plane`] for every channel of `image` `(C, H, W)`:
/// channel `c`'s tiles from `v[c * channel_stride]`, points `C * channel_stride` apart.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn transform_input_channels<T: Element>(
    image: &[T],
    shape: &Shape,
    block: Block,
    rows_buf: &mut [T],
    phases: &mut [T],
    half: &mut [T],
    v: &mut [T],
    channel_stride: usize,
) {
    let plane = shape.height * shape.width;
    for c in 0..shape.channels {
        let image_plane = &image[c * plane..][..plane];
        let point_stride = shape.channels * channel_stride;
        let v = &mut v[c * channel_stride..];
        // after the first channel, the block's rows keep their zeros
        transform_input_plane(image_plane, shape, block, rows_buf, phases, half, v, point_stride, c > 0);
    }
}

/// Reads the products `M[p][k][t]` of one output channel (`m[p * point_stride + t]`),
/// computes `A^T M A`, adds the bias (and the fused ReLU) and writes the valid
/// part into the output plane.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn transform_output_plane<T: Element>(
    m: &[T],
    point_stride: usize,
    shape: &Shape,
    block: Block,
    bias: T,
    relu: bool,
    half: &mut [T],
    out4: &mut [T],
    plane: &mut [T],
) {
    let tb = block.padded;
    let y_first = block.ty * TILE;
    #[cfg(target_arch = "x86_64")]
    {
        let x_first = block.tx0 * TILE;
        let valid = (shape.out_w - x_first).min(block.count * TILE);
        if simd_f32::<T>() && !valid.is_multiple_of(TILE * LANES) && in_plane_edges() {
            return output_in_plane_avx512(m, point_stride, shape, block, (bias, relu), plane);
        }
        if simd_f32::<T>() && valid.is_multiple_of(TILE * LANES) {
            let valid_rows = TILE.min(shape.out_h - y_first);
            assert!(m.len() >= 35 * point_stride + tb);
            let bias = bias.to_f64() as f32;
            let mut row = |r: usize| {
                let r = r.min(valid_rows - 1);
                f32_mut_ptr(&mut plane[(y_first + r) * shape.out_w + x_first..][..valid])
            };
            let rows = [row(0), row(1), row(2), row(3)];
            // SAFETY: AVX2 is present, and AVX-512F where `isa` says so; `m` holds the 36 points
            // (asserted), each of the first `valid_rows` rows `valid` = 32 chunks pixels of the
            // plane (rows past those are never written); T is f32.
            unsafe {
                let body = match crate::kernels::cpu::isa() {
                    crate::kernels::cpu::Isa::Avx512 => output_transform_avx512_f32,
                    _ => output_transform_f32,
                };
                body(f32_ptr(m), point_stride, rows, valid_rows, valid / (TILE * LANES), bias, relu)
            };
            return;
        }
    }
    // along y: half[r][i] = sum_j A^T[r][j] M[j*6 + i], at half[(r * 6 + i) * tb]
    for i in 0..ALPHA {
        let [h0, h1, h2, h3, _, _] = six_mut(half, i * tb, ALPHA * tb, tb);
        apply_at(six(m, i * point_stride, ALPHA * point_stride, tb), [h0, h1, h2, h3]);
    }
    for r in 0..TILE.min(shape.out_h - y_first) {
        // along x: y[r][s] = sum_i A^T[s][i] half[r][i], at out4[s * tb]
        let [o0, o1, o2, o3, _, _] = six_mut(out4, 0, tb, tb);
        apply_at(six(half, r * ALPHA * tb, tb, tb), [o0, o1, o2, o3]);
        // interleave the four phases into the output row, + bias (and ReLU)
        let x_first = block.tx0 * TILE;
        let valid = (shape.out_w - x_first).min(block.count * TILE);
        let row = &mut plane[(y_first + r) * shape.out_w + x_first..][..valid];
        let epilogue = |value: T| {
            let biased = value + bias;
            if !relu || biased > T::zero() {
                biased
            } else {
                T::zero()
            }
        };
        // 8 tiles (32 pixels) at a time, then the rest pixel by pixel
        let full_chunks = valid / (TILE * LANES);
        #[cfg(target_arch = "x86_64")]
        if simd_f32::<T>() {
            let source = |s: usize| f32_ptr(&out4[s * tb..][..tb]);
            let sources = [source(0), source(1), source(2), source(3)];
            let bias = bias.to_f64() as f32;
            // SAFETY: AVX2 is present; `row` holds `valid` >= 32 full_chunks elements and each
            // phase tb >= 8 full_chunks (full_chunks * 32 <= valid <= 4 count <= 4 tb); T is f32.
            unsafe { join_phases_f32(sources, f32_mut_ptr(row), full_chunks, bias, relu) };
            for x in full_chunks * TILE * LANES..valid {
                row[x] = epilogue(out4[(x % TILE) * tb + x / TILE]);
            }
            continue;
        }
        for (chunk, pixels) in row.chunks_exact_mut(TILE * LANES).enumerate() {
            let t0 = chunk * LANES;
            let phases: [&[T; LANES]; TILE] =
                std::array::from_fn(|s| out4[s * tb + t0..][..LANES].try_into().expect("LANES"));
            let mut joined = [T::zero(); TILE * LANES];
            for t in 0..LANES {
                for s in 0..TILE {
                    joined[TILE * t + s] = epilogue(phases[s][t]);
                }
            }
            pixels.copy_from_slice(&joined);
        }
        for x in full_chunks * TILE * LANES..valid {
            row[x] = epilogue(out4[(x % TILE) * tb + x / TILE]);
        }
    }
}

/// [`transform_output_plane`] for a block whose valid width does not end on a
/// chunk of 8 tiles, straight into the plane with AVX-512's masked stores
/// ([`output_transform_in_plane_avx512_f32`]), with `bias` and then `relu`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn output_in_plane_avx512<T: Element>(
    m: &[T],
    point_stride: usize,
    shape: &Shape,
    block: Block,
    (bias, relu): (T, bool),
    plane: &mut [T],
) {
    let (tb, y_first, x_first) = (block.padded, block.ty * TILE, block.tx0 * TILE);
    let valid = (shape.out_w - x_first).min(block.count * TILE);
    let valid_rows = TILE.min(shape.out_h - y_first);
    assert!(in_plane_edges() && m.len() >= 35 * point_stride + tb && valid <= TILE * tb);
    let mut row = |r: usize| {
        let r = r.min(valid_rows - 1);
        f32_mut_ptr(&mut plane[(y_first + r) * shape.out_w + x_first..][..valid])
    };
    let rows = [row(0), row(1), row(2), row(3)];
    let bias = bias.to_f64() as f32;
    // SAFETY: AVX-512F, AVX2 and FMA are present (in_plane_edges, asserted); `m` holds the 36
    // points of tb tiles (asserted), each of the first `valid_rows` rows `valid` pixels of the
    // plane (rows past those are never written); T is f32 (f32_mut_ptr checks).
    unsafe { output_transform_in_plane_avx512_f32(f32_ptr(m), point_stride, rows, valid_rows, tb, valid, bias, relu) };
}

/// The products of one output channel (as [`transform_output_plane`]) through
/// `A^T M A`, bias and ReLU, then max-pooled by `pool x pool` windows at
/// stride `pool` (2 or 4, PyTorch's floor mode) into the pooled plane
/// `(out_h / pool, out_w / pool)`. With AVX2 and f32 the pooling runs on the
/// phases in registers ([`output_transform_maxpool_f32`]); otherwise the block
/// goes through the slab `slab` ([`slab_to_plane`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn transform_output_plane_maxpool<T: Element>(
    m: &[T],
    point_stride: usize,
    shape: &Shape,
    block: Block,
    bias: T,
    pool: usize,
    half: &mut [T],
    out4: &mut [T],
    slab_buf: &mut [T],
    plane: &mut [T],
) {
    let (y_first, x_first) = (block.ty * TILE, block.tx0 * TILE);
    #[cfg(target_arch = "x86_64")]
    if simd_f32::<T>() {
        const MOST: usize = super::tiles::TILE_BLOCK.next_multiple_of(LANES) * TILE / 2;
        let pooled_rows = TILE.min(shape.out_h - y_first) / pool;
        let pooled_valid = (shape.out_w - x_first).min(block.count * TILE) / pool;
        let pooled_w = shape.out_w / pool;
        let mut rows = [[0.0f32; MOST]; 2];
        let [upper, lower] = &mut rows;
        assert!(m.len() >= 35 * point_stride + block.padded && TILE * block.padded / pool <= MOST);
        // SAFETY: AVX2 is present, and AVX-512F where `isa` says so; `m` holds the 36 points
        // (asserted), each of the two row buffers 4 padded / pool elements (asserted); T is f32.
        unsafe {
            let (upper, lower) = (upper.as_mut_ptr(), lower.as_mut_ptr());
            let bias = bias.to_f64() as f32;
            let body = match crate::kernels::cpu::isa() {
                crate::kernels::cpu::Isa::Avx512 => output_transform_maxpool_avx512_f32,
                _ => output_transform_maxpool_f32,
            };
            body(f32_ptr(m), point_stride, [upper, lower], pooled_rows, block.padded / LANES, bias, pool)
        };
        for (q, row) in rows.iter().enumerate().take(pooled_rows) {
            let out = &mut plane[(y_first / pool + q) * pooled_w + x_first / pool..][..pooled_valid];
            for (target, &value) in out.iter_mut().zip(&row[..pooled_valid]) {
                *target = T::from_f64(value as f64);
            }
        }
        return;
    }
    let (slab_shape, slab_block) = slab(shape, block);
    transform_output_plane(m, point_stride, &slab_shape, slab_block, bias, true, half, out4, slab_buf);
    slab_to_plane(slab_buf, shape, block, pool, plane);
}

/// Whether the output transform can write `block`'s pixels straight into the
/// output plane: its fused AVX2 body stores 8 tiles (32 pixels) at a time, so
/// the valid width must be a multiple of that, unless the AVX-512 body stores
/// the rest with masks ([`in_plane_edges`]). Other blocks (the last of a tile
/// row, usually) and pooled outputs go through a slab ([`slab`]).
pub(crate) fn fits_plane<T: Element>(shape: &Shape, block: Block) -> bool {
    let valid = (shape.out_w - block.tx0 * TILE).min(block.count * TILE);
    valid.is_multiple_of(TILE * LANES) || (simd_f32_here::<T>() && in_plane_edges())
}

/// Whether blocks that overhang the plane are transformed where they lie,
/// their edges read and written with AVX-512's masked loads and stores
/// ([`input_transform_in_plane_avx512_f32`], [`output_transform_in_plane_avx512_f32`]),
/// instead of through copies of their rows: on a CPU with AVX-512F.
#[inline(always)]
fn in_plane_edges() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::kernels::cpu::isa() == crate::kernels::cpu::Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`simd_f32`] where it exists (x86-64), false elsewhere.
#[inline(always)]
fn simd_f32_here<T: Element>() -> bool {
    #[cfg(target_arch = "x86_64")]
    return simd_f32::<T>();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The slab: `block`'s four output rows at its full padded width, `(4, 4 tb)`,
/// described as a shape and a block of their own so that
/// [`transform_output_plane`] writes it with its SIMD body (4 tb is a multiple
/// of 32). Pixels past the plane's edge are computed from zero-padded tiles
/// and never read.
pub(crate) fn slab(shape: &Shape, block: Block) -> (Shape, Block) {
    let tb = block.padded;
    (Shape { out_h: TILE, out_w: TILE * tb, ..*shape }, Block { ty: 0, tx0: 0, count: tb, padded: tb })
}

/// Writes a slab ([`slab`]) into the output: with `pool` 1 its valid pixels
/// into the plane `(out_h, out_w)`; with `pool` 2 or 4 the maxima of its
/// `pool x pool` windows (stride `pool`, whole windows only: PyTorch's floor
/// mode) into the pooled plane `(out_h / pool, out_w / pool)`. `pool` divides
/// [`TILE`], so no window straddles two blocks. The maximum keeps the first of
/// equal values (`v > best`), as [`crate::layers::MaxPool2d`] does; the
/// values come out of a ReLU, so none is NaN.
pub(crate) fn slab_to_plane<T: Element>(slab: &[T], shape: &Shape, block: Block, pool: usize, plane: &mut [T]) {
    debug_assert!(TILE.is_multiple_of(pool), "slab_to_plane: pool {pool}");
    let (y_first, x_first) = (block.ty * TILE, block.tx0 * TILE);
    let rows = TILE.min(shape.out_h - y_first);
    let valid = (shape.out_w - x_first).min(block.count * TILE);
    let slab_w = TILE * block.padded;
    let pooled_w = shape.out_w / pool;
    for pooled_row in 0..rows / pool {
        let window_rows = &slab[pooled_row * pool * slab_w..][..pool * slab_w];
        let out = &mut plane[(y_first / pool + pooled_row) * pooled_w + x_first / pool..][..valid / pool];
        if pool == 1 {
            out.copy_from_slice(&window_rows[..valid]);
            continue;
        }
        for (column, value) in out.iter_mut().enumerate() {
            let mut best = window_rows[column * pool];
            for r in 0..pool {
                for &v in &window_rows[r * slab_w + column * pool..][..pool] {
                    if v > best {
                        best = v;
                    }
                }
            }
            *value = best;
        }
    }
}

/// `DY'[p][k][t] = (A dY A^T)[p]` for the 4x4 tiles of `dy` (one output
/// channel, zeros past its edge) in `block`, at `out[p * point_stride + t]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn transform_grad_plane<T: Element>(
    dy: &[T],
    shape: &Shape,
    block: Block,
    row_buf: &mut [T],
    phases: &mut [T],
    half: &mut [T],
    out: &mut [T],
    point_stride: usize,
) {
    let tb = block.padded;
    let (y_first, x_first) = (block.ty * TILE, block.tx0 * TILE);
    #[cfg(target_arch = "x86_64")]
    if simd_f32::<T>() {
        assert!(out.len() >= 35 * point_stride + tb);
        if y_first + TILE <= shape.out_h && x_first + TILE * tb <= shape.out_w {
            // the block's four rows lie inside dY: read them where they are
            let row = |r: usize| f32_ptr(&dy[(y_first + r) * shape.out_w + x_first..][..TILE * tb]);
            // SAFETY: AVX2 is present; each row holds 4 tb elements of dY (checked just above),
            // `out` the 36 points (asserted); T is f32.
            unsafe { grad_transform_f32([row(0), row(1), row(2), row(3)], tb, f32_mut_ptr(out), point_stride) };
            return;
        }
    }
    // phases g[r][s][t] = dY[y_first + r][x_first + 4t + s], at phases[(r * 4 + s) * tb + t]:
    // each row of the block's tiles copied (zeros past the edge and past the block), then split
    let valid = (block.count * TILE).min(shape.out_w - x_first);
    for r in 0..TILE {
        let y = y_first + r;
        let row = &mut row_buf[..TILE * tb];
        row.fill(T::zero());
        if y < shape.out_h {
            row[..valid].copy_from_slice(&dy[y * shape.out_w + x_first..][..valid]);
        }
        let row = &row_buf[..TILE * tb];
        #[cfg(target_arch = "x86_64")]
        if simd_f32::<T>() {
            let mut target = |s: usize| f32_mut_ptr(&mut phases[(r * TILE + s) * tb..][..tb]);
            let targets = [target(0), target(1), target(2), target(3)];
            // SAFETY: AVX2 is present; `row` holds 4 tb elements, each phase tb (inside
            // `phases`, distinct ranges); T is f32.
            unsafe { split_phases4_f32(f32_ptr(row), targets, tb) };
            continue;
        }
        for s in 0..TILE {
            let dst = &mut phases[(r * TILE + s) * tb..][..tb];
            for (t, value) in dst.iter_mut().enumerate() {
                *value = row[TILE * t + s];
            }
        }
    }
    // along y: half[j][s] = sum_r A[j][r] g[r][s], at half[(j * 4 + s) * tb]
    for s in 0..TILE {
        let at = |r: usize| &phases[(r * TILE + s) * tb..][..tb];
        let src = [at(0), at(1), at(2), at(3)];
        apply_a(src, six_mut(half, s * tb, TILE * tb, tb));
    }
    // along x: DY'[j*6 + i] = sum_s A[i][s] half[j][s]
    for j in 0..ALPHA {
        let at = |s: usize| &half[(j * TILE + s) * tb..][..tb];
        let src = [at(0), at(1), at(2), at(3)];
        apply_a(src, six_mut(out, j * ALPHA * point_stride, point_stride, tb));
    }
}
