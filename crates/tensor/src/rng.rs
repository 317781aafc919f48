//! Seed derivation: every random draw in the engine comes from a generator
//! seeded by a hash of *where* it happens (run seed, step, layer, image), never
//! from a shared stream whose order would depend on thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64's finaliser: a cheap, well-mixing bijection on `u64`.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combines a seed with a coordinate into a new, independent-looking seed.
pub fn derive(seed: u64, coordinate: u64) -> u64 {
    mix(seed ^ mix(coordinate))
}

/// A ChaCha8 generator (portable and stable across platforms and rand versions)
/// for `seed` at `coordinate`.
pub fn rng_at(seed: u64, coordinate: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, coordinate))
}
