//! One image on several threads. The passes split a batch across threads an
//! image per task, which leaves a second thread idle when the batch holds a
//! single image (a `predict` of one picture). [`in_parts`] cuts each image's
//! output rows into parts instead, computes each part into planes of its own
//! rows and copies them into place. A part changes which values a task
//! computes, never how, so the bits are those of whole images
//! (`tests/suite/engine.rs` holds one image alone to its row of a batch).

use crate::element::Element;
use rayon::prelude::*;

/// Parts per image: enough for every thread, at most `units` (the smallest
/// piece a part can be: an output row, a Winograd tile row). 1: no parts.
pub(crate) fn parts_per_image(batch: usize, units: usize) -> usize {
    rayon::current_num_threads().div_ceil(batch.max(1)).min(units).max(1)
}

/// Runs `compute(image, (first, end), part_out)` for units `first..end` of
/// every image, `parts` parts per image, in parallel, then copies each part
/// into `output` `(N, planes, rows, row_len)`. `rows_of((first, end))` gives
/// the output rows `(from, to)` those units produce; `part_out` is
/// `(planes, to - from, row_len)`, zeroed.
pub(crate) fn in_parts<T: Element>(
    output: &mut [T],
    (batch, units, parts): (usize, usize, usize),
    (planes, row_len): (usize, usize),
    rows_of: impl Fn((usize, usize)) -> (usize, usize) + Sync,
    compute: impl Fn(usize, (usize, usize), &mut [T]) + Sync,
) {
    let tasks: Vec<(usize, (usize, usize))> = (0..batch)
        .flat_map(|image| (0..parts).map(move |part| (image, (part * units / parts, (part + 1) * units / parts))))
        .collect();
    let results: Vec<Vec<T>> = tasks
        .par_iter()
        .map(|&(image, part)| {
            let (from, to) = rows_of(part);
            let mut part_out = vec![T::zero(); planes * (to - from) * row_len];
            compute(image, part, &mut part_out);
            part_out
        })
        .collect();
    let image_len = output.len() / batch.max(1);
    let plane_len = image_len / planes.max(1);
    for (&(image, part), part_out) in tasks.iter().zip(&results) {
        let (from, to) = rows_of(part);
        let part_plane = (to - from) * row_len;
        if part_plane == 0 {
            continue;
        }
        for (plane, rows) in part_out.chunks_exact(part_plane).enumerate() {
            output[image * image_len + plane * plane_len + from * row_len..][..part_plane].copy_from_slice(rows);
        }
    }
}
