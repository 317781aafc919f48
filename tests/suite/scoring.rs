//! Prediction-time scoring (`convnet_io::scoring`): an ensemble's
//! probabilities are the mean of its models', test-time flips the mean over
//! the mirrored views, and a temperature divides the logits first.

use convnet::data::ColorMode;
use convnet::io::model_file::ModelMeta;
use convnet::io::scoring::{mirrored, Scorer, Tta};
use convnet::tensor::layers::softmax::softmax_row;
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::{Mode, ModelSpec, Sequential};

fn model(seed: u64) -> (Sequential<f32>, ModelMeta) {
    let names = ["a", "b", "c", "d"].map(String::from).to_vec();
    let meta = ModelMeta::new(ModelSpec::small(), names, [12, 10], ColorMode::Grayscale);
    (meta.architecture.build::<f32>(&meta.input_shape(), 4, seed).unwrap(), meta)
}

/// Softmax probabilities of `model` on `images`, each logit divided by `t`.
fn probabilities(model: &mut Sequential<f32>, images: &ArrayD<f32>, t: f32) -> Vec<f32> {
    let logits = model.forward(images.view(), Mode::Eval).unwrap().to_owned();
    let mut out = Vec::new();
    for row in logits.as_slice().unwrap().chunks(4) {
        let scaled: Vec<f32> = row.iter().map(|z| z / t).collect();
        let mut p = vec![0.0; 4];
        softmax_row(&scaled, &mut p);
        out.extend(p);
    }
    out
}

fn images() -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[3, 1, 12, 10]), |i| ((i[0] * 31 + i[2] * 7 + i[3] * 3) % 17) as f32 / 16.0)
}

fn close(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn an_ensemble_is_the_mean_of_its_models_probabilities() {
    let x = images();
    let (mut first, mut second) = (model(1).0, model(2).0);
    let (p1, p2) = (probabilities(&mut first, &x, 1.0), probabilities(&mut second, &x, 1.0));
    assert!(close(&p1, &p2) > 1e-3, "two seeds must give two different models");
    let (mut scorer, _) = Scorer::new(vec![model(1), model(2)], Tta::None).unwrap();
    let ensemble = scorer.probabilities(x.view()).unwrap();
    let mean: Vec<f32> = p1.iter().zip(&p2).map(|(a, b)| (a + b) / 2.0).collect();
    assert!(close(&ensemble, &mean) < 1e-6, "{}", close(&ensemble, &mean));
    // and each member's temperature divides its own logits
    let (mut model_t, mut meta_t) = model(2);
    meta_t.temperature = Some(2.0);
    let p2_t = probabilities(&mut model_t, &x, 2.0);
    let (mut scorer, _) = Scorer::new(vec![model(1), (model_t, meta_t)], Tta::None).unwrap();
    let mean: Vec<f32> = p1.iter().zip(&p2_t).map(|(a, b)| (a + b) / 2.0).collect();
    assert!(close(&scorer.probabilities(x.view()).unwrap(), &mean) < 1e-6);
    // models of other classes do not make an ensemble
    let (other, mut meta) = model(3);
    meta.class_names[0] = "z".into();
    assert!(Scorer::new(vec![model(1), (other, meta)], Tta::None).is_err());
}

#[test]
fn flip_tta_is_the_mean_over_the_image_and_its_mirror() {
    let x = images();
    let mirror = mirrored(x.view(), true, false);
    assert_eq!(mirror[[1, 0, 4, 0]], x[[1, 0, 4, 9]], "left-right: column w becomes W - 1 - w");
    let (mut plain, _) = model(5);
    let (p, q) = (probabilities(&mut plain, &x, 1.0), probabilities(&mut plain, &mirror, 1.0));
    assert!(close(&p, &q) > 1e-4, "the mirror must change the model's answer, or the test proves nothing");
    let (mut scorer, _) = Scorer::new(vec![model(5)], Tta::Flip).unwrap();
    let tta = scorer.probabilities(x.view()).unwrap();
    let mean: Vec<f32> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    assert!(close(&tta, &mean) < 1e-6);
    // flip4: also upside down and both
    let (mut scorer, _) = Scorer::new(vec![model(5)], Tta::Flip4).unwrap();
    let tta4 = scorer.probabilities(x.view()).unwrap();
    let views: Vec<Vec<f32>> = [(false, false), (true, false), (false, true), (true, true)]
        .iter()
        .map(|&(lr, ud)| probabilities(&mut plain, &mirrored(x.view(), lr, ud), 1.0))
        .collect();
    let mean: Vec<f32> = (0..tta4.len()).map(|i| views.iter().map(|v| v[i]).sum::<f32>() / 4.0).collect();
    assert!(close(&tta4, &mean) < 1e-6);
    // deterministic
    assert_eq!(scorer.probabilities(x.view()).unwrap(), tta4);
}
