//! Data-parallel training without MPI: a batch split into 2 or 4 parts, each
//! part's gradient computed alone (as a process would) and the parts added as
//! the top of the gradient tree, must give the bits of the whole batch in one
//! pass — gradients, loss and, after optimizer steps, the weights. This is
//! what makes `mpirun -n 1|2|4 convnet train` end with the same weights; the
//! MPI tests check it end to end.

use crate::common::{random_tensor, rng, with_threads};
use convnet::optim::{Adam, Optimizer};
use convnet::tensor::gradient_tree::{gradient_leaves, tree_sum, LeafPart};
use convnet::tensor::ndarray::{ArrayD, Axis};
use convnet::tensor::{ConvAlgo, Mode, ModelSpec, Sequential, SoftmaxCrossEntropy};

/// One step's gradient (flattened, layer order) and loss for `images` split
/// into `parts` equal parts, computed part by part.
fn step_in_parts(
    model: &mut Sequential<f32>,
    images: &ArrayD<f32>,
    labels: &[usize],
    parts: usize,
    seed: u64,
) -> (Vec<f32>, f32) {
    let batch = labels.len();
    let per_part = batch / parts;
    let leaves = gradient_leaves(batch);
    assert_eq!(leaves % parts, 0, "the test splits into whole blocks of leaves");
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let mut gradients: Vec<Vec<f32>> = Vec::new();
    let mut sample_losses = Vec::new();
    for part in 0..parts {
        let range = part * per_part..(part + 1) * per_part;
        let part_images = images.slice_axis(Axis(0), range.clone().into()).to_owned();
        model.set_gradient_leaves(leaves / parts);
        let logits = model.forward(part_images.view(), Mode::Train { seed, first_image: range.start }).unwrap();
        loss_fn.forward_part(logits, &labels[range], batch).unwrap();
        sample_losses.extend_from_slice(loss_fn.sample_losses());
        model.backward(loss_fn.grad_logits().view()).unwrap();
        gradients.push(model.params().iter().flat_map(|p| p.grad.iter().copied()).collect());
    }
    let mut items: Vec<&mut [f32]> = gradients.iter_mut().map(|g| g.as_mut_slice()).collect();
    tree_sum(&mut items);
    let loss = SoftmaxCrossEntropy::sum_in_order(&sample_losses) * (1.0 / batch as f32);
    (gradients.swap_remove(0), loss)
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn baseline_gradients_in_1_2_and_4_parts_are_bit_identical_by_im2col() {
    baseline_gradients_in_parts(ConvAlgo::Im2col);
}

#[test]
fn baseline_gradients_in_1_2_and_4_parts_are_bit_identical_by_winograd() {
    baseline_gradients_in_parts(ConvAlgo::Winograd);
}

fn baseline_gradients_in_parts(algo: ConvAlgo) {
    // the reference network with its dropout, batch 8 (4 leaves of 2 images)
    let mut model = ModelSpec::baseline().build::<f32>(&[3, 36, 44], 8, 5).unwrap();
    model.set_conv_algo(algo);
    let images = random_tensor(&mut rng(2), &[8, 3, 36, 44]).mapv(|v| v as f32);
    let labels = [0, 1, 2, 3, 4, 5, 6, 7];
    let (whole, whole_loss) = step_in_parts(&mut model, &images, &labels, 1, 11);
    // the whole batch through the plain API gives the same
    let mut loss_fn = SoftmaxCrossEntropy::new();
    model.set_gradient_leaves(gradient_leaves(8));
    let logits = model.forward(images.view(), Mode::train(11)).unwrap();
    let plain_loss = loss_fn.forward(logits, &labels).unwrap();
    model.backward(loss_fn.grad_logits().view()).unwrap();
    let plain: Vec<f32> = model.params().iter().flat_map(|p| p.grad.iter().copied()).collect();
    assert_eq!(bits(&plain), bits(&whole));
    assert_eq!(plain_loss.to_bits(), whole_loss.to_bits());
    for parts in [2, 4] {
        let (split, loss) = with_threads(parts - 1, || step_in_parts(&mut model, &images, &labels, parts, 11));
        let differing = whole.iter().zip(&split).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{parts} parts: {differing} of {} gradient values differ", whole.len());
        assert_eq!(loss.to_bits(), whole_loss.to_bits(), "{parts} parts: loss");
    }
    // the check can fail: summing the batch in one run of images (one leaf) differs
    model.set_gradient_leaves(1);
    let logits = model.forward(images.view(), Mode::train(11)).unwrap();
    loss_fn.forward(logits, &labels).unwrap();
    model.backward(loss_fn.grad_logits().view()).unwrap();
    let in_order: Vec<f32> = model.params().iter().flat_map(|p| p.grad.iter().copied()).collect();
    assert_ne!(bits(&in_order), bits(&whole), "one leaf and four leaves should round differently somewhere");
}

#[test]
fn training_in_parts_ends_with_the_same_weights() {
    let train = |parts: usize| {
        let mut model = ModelSpec::small().build::<f32>(&[1, 12, 12], 4, 3).unwrap();
        let mut adam = Adam::new(2e-3);
        for step in 0..5u64 {
            let images = random_tensor(&mut rng(step), &[16, 1, 12, 12]).mapv(|v| v as f32);
            let labels: Vec<usize> = (0..16).map(|n| (n + step as usize) % 4).collect();
            let (gradient, _) = step_in_parts(&mut model, &images, &labels, parts, step);
            // every part now holds the summed gradient, as every rank would
            let mut offset = 0;
            for param in model.params_mut() {
                let len = param.grad.len();
                param.grad.as_slice_mut().unwrap().copy_from_slice(&gradient[offset..offset + len]);
                offset += len;
            }
            adam.step(&mut model.params_mut()).unwrap();
        }
        bits(&model.params().iter().flat_map(|p| p.value.iter().copied()).collect::<Vec<_>>())
    };
    let one = train(1);
    assert_eq!(one, train(2), "2 parts");
    assert_eq!(one, train(4), "4 parts");
}

/// The gradient of one leaf of `images` run as passes of `per_pass` images,
/// each told its part of the leaf (or not, with `tell_parts` false: then
/// every pass restarts the sums and only the last pass's images count).
fn leaf_in_passes(
    model: &mut Sequential<f32>,
    images: &ArrayD<f32>,
    labels: &[usize],
    per_pass: usize,
    tell_parts: bool,
) -> Vec<f32> {
    let batch = labels.len();
    let mut loss_fn = SoftmaxCrossEntropy::new();
    model.set_gradient_leaves(1);
    for start in (0..batch).step_by(per_pass) {
        let range = start..(start + per_pass).min(batch);
        let part = LeafPart { first: start == 0, last: range.end == batch };
        model.set_leaf_part(if tell_parts { part } else { LeafPart::WHOLE });
        let pass_images = images.slice_axis(Axis(0), range.clone().into()).to_owned();
        let logits = model.forward(pass_images.view(), Mode::Train { seed: 4, first_image: start }).unwrap();
        loss_fn.forward_part(logits, &labels[range], batch).unwrap();
        model.backward(loss_fn.grad_logits().view()).unwrap();
    }
    model.set_leaf_part(LeafPart::WHOLE);
    model.params().iter().flat_map(|p| p.grad.iter().copied()).collect()
}

#[test]
fn a_leaf_run_as_several_passes_has_the_bits_of_one_pass() {
    for algo in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
        // baseline's convolutions, dense layers and dropout; a batch of 6 as one leaf
        let mut model = ModelSpec::baseline().build::<f32>(&[3, 36, 44], 8, 5).unwrap();
        model.set_conv_algo(algo);
        assert!(model.continues_leaves());
        let images = random_tensor(&mut rng(3), &[6, 3, 36, 44]).mapv(|v| v as f32);
        let labels = [0, 1, 2, 3, 4, 5];
        let whole = leaf_in_passes(&mut model, &images, &labels, 6, true);
        for per_pass in [1, 2, 4] {
            let passes = with_threads(2, || leaf_in_passes(&mut model, &images, &labels, per_pass, true));
            assert_eq!(bits(&passes), bits(&whole), "{algo:?}, passes of {per_pass}");
        }
        // the check can fail: passes not told their part restart the sums
        let untold = leaf_in_passes(&mut model, &images, &labels, 2, false);
        assert_ne!(bits(&untold), bits(&whole), "{algo:?}: passes that restart the sums");
    }
    // a layer with parameters that does not say it continues leaves: the model does not
    let model = ModelSpec::resnet_small().build::<f32>(&[1, 8, 8], 3, 1).unwrap();
    assert!(!model.continues_leaves(), "batchnorm does not continue leaves");
}
