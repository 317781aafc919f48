//! Grad-CAM's channel weights are the spatial mean of the class score's
//! gradient with respect to the feature maps: checked against finite
//! differences of that score in f64, through the model's real layers.

use crate::common::{random_tensor, rng};
use convnet::tensor::explain::{default_activation, grad_cam};
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::{LayerSpec, Mode, ModelSpec, Padding, Sequential};

fn model() -> Sequential<f64> {
    let text = r#"
        [[layers]]
        type = "conv2d"
        filters = 3
        kernel = 3
        padding = "same"
        [[layers]]
        type = "relu"
        [[layers]]
        type = "maxpool2d"
        pool = 2
        [[layers]]
        type = "conv2d"
        filters = 4
        kernel = 3
        [[layers]]
        type = "relu"
        [[layers]]
        type = "flatten"
        [[layers]]
        type = "dense"
        units = 6
        [[layers]]
        type = "relu"
        [[layers]]
        type = "dense"
    "#;
    let spec = ModelSpec::from_toml(text).unwrap();
    assert!(matches!(spec.layers[0], LayerSpec::Conv2d { padding: Padding::Same, .. }));
    spec.build::<f64>(&[2, 10, 10], 3, 11).unwrap()
}

/// The class score (logit) when activation `activation` is replaced by `features`.
fn score_from(model: &mut Sequential<f64>, activation: usize, features: &ArrayD<f64>, class: usize) -> f64 {
    let shapes = model.shapes().to_vec();
    let mut current = features.clone();
    for (i, layer) in model.layers_mut().iter_mut().enumerate().skip(activation) {
        let shape: Vec<usize> = std::iter::once(1).chain(shapes[i + 1].iter().copied()).collect();
        let mut output = ArrayD::zeros(IxDyn(&shape));
        layer.forward(current.view(), output.view_mut(), Mode::Eval);
        current = output;
    }
    current[[0, class]]
}

#[test]
fn grad_cam_weights_equal_finite_differences_of_the_class_score() {
    let mut model = model();
    let activation = default_activation(&model).unwrap();
    assert_eq!(activation, 5, "the output of the ReLU after the last convolution");
    let image = random_tensor(&mut rng(4), &[1, 2, 10, 10]);
    let mut weights_by_class = Vec::new();
    for class in 0..3 {
        let cam = grad_cam(&mut model, image.view(), Some(class), activation).unwrap();
        model.forward(image.view(), Mode::Eval).unwrap();
        let features = model.layer_output(activation - 1).unwrap().to_owned();
        let [channels, h, w] = [features.shape()[1], features.shape()[2], features.shape()[3]];
        assert_eq!(cam.map_shape, [h, w]);
        let eps = 1e-6;
        let mut numeric = vec![0.0; channels];
        for k in 0..channels {
            for i in 0..h {
                for j in 0..w {
                    let mut plus = features.clone();
                    plus[[0, k, i, j]] += eps;
                    let mut minus = features.clone();
                    minus[[0, k, i, j]] -= eps;
                    let slope = (score_from(&mut model, activation, &plus, class)
                        - score_from(&mut model, activation, &minus, class))
                        / (2.0 * eps);
                    numeric[k] += slope / (h * w) as f64;
                }
            }
        }
        for (k, (&analytic, &numeric)) in cam.weights.iter().zip(&numeric).enumerate() {
            assert!(
                (analytic - numeric).abs() <= 1e-7 + 1e-5 * numeric.abs(),
                "class {class}, channel {k}: analytic {analytic} vs numeric {numeric}"
            );
        }
        // the map is ReLU(sum_k alpha_k A_k)
        let expected: Vec<f64> = (0..h * w)
            .map(|p| (0..channels).map(|k| cam.weights[k] * features[[0, k, p / w, p % w]]).sum::<f64>().max(0.0))
            .collect();
        assert_eq!(cam.map, expected);
        assert!((cam.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        weights_by_class.push(cam.weights);
    }
    // the check can fail: another class's weights are not these
    assert!(weights_by_class[0].iter().zip(&weights_by_class[1]).any(|(a, b)| (a - b).abs() > 1e-3));
    assert!(grad_cam(&mut model, image.view(), None, 7).unwrap_err().to_string().contains("not feature maps"));
}
