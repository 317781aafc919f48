//! The Winograd path's plain (non-SIMD) f32 bodies, what runs on CPUs without
//! AVX2, against the direct convolution: the same error budget as the SIMD
//! bodies of `tests/suite/winograd.rs`. A test binary of its own, because the switch
//! is process-wide.

mod common;
mod winograd_support;

use common::rng;
use convnet::tensor::kernels::cpu::use_portable_bodies;
use rand::Rng;
use winograd_support::*;

#[test]
fn portable_f32_bodies_meet_the_same_budget_and_agree_across_threads() {
    use_portable_bodies(true);
    let mut rng = rng(45);
    for _ in 0..8 {
        let case = random_case(&mut rng);
        let values = values(&mut rng, &case);
        let relu = rng.random_bool(0.5);
        let portable = run::<f32>(&case, &values, relu, 1);
        let reference = direct(&case, &values, relu);
        assert_within(&portable, &reference, 2e-5, &describe(&case));
        let three = run::<f32>(&case, &values, relu, 3);
        assert_eq!(bits(&three.output), bits(&portable.output));
        assert_eq!(bits(&three.grad_weight), bits(&portable.grad_weight));
        // inference's fused convolution + ReLU + max-pool, through the slab
        for pool in [2, 4] {
            let fused = fused_maxpool::<f32>(&case, &values, pool, 1);
            assert_eq!(bits(&fused), bits(&unfused_maxpool::<f32>(&case, &values, pool)), "pool {pool}");
        }
    }
}
