//! What the kernels' twin tests share: random operands and the comparison.

use crate::element::Element;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `len` values uniform in [-1, 1).
pub(crate) fn random<T: Element>(rng: &mut ChaCha8Rng, len: usize) -> Vec<T> {
    (0..len).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect()
}

/// `fast` equals `slow` within `tolerance * (1 + sqrt(k))` per element (the
/// rounding of a `k`-term sum), or panics naming `case` and the element.
pub(crate) fn assert_close<T: Element>(fast: &[T], slow: &[T], k: usize, tolerance: f64, case: &str) {
    assert_eq!(fast.len(), slow.len(), "{case}: lengths");
    let scale = 1.0 + (k as f64).sqrt();
    for (index, (x, y)) in fast.iter().zip(slow).enumerate() {
        assert!(
            (Element::to_f64(*x) - Element::to_f64(*y)).abs() <= tolerance * scale,
            "{} {case} index {index}: {x} vs {y}",
            T::NAME
        );
    }
}
