//! A layer of your own, proven by the same gradient check as the built-in ones.
//!
//!     cargo run --example custom_layer
//!
//! The layer is a "leaky ReLU": `y = x` for `x > 0`, `y = 0.1 x` otherwise, so
//! `dx = dy` or `0.1 dy`. Implement [`Layer`] (the math only: shapes, forward,
//! backward, and the kink at 0 for the checker), then run
//! [`check_layer`]: it compares your backward with central differences of your
//! forward in f64, element by element. A wrong backward fails, as the second
//! half of this example shows.
use convnet::tensor::gradcheck::{check_layer, GradCheckConfig};
use convnet::tensor::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use convnet::tensor::{Element, KinkRecorder, Layer, Mode};

struct LeakyRelu {
    slope: f64,
    /// A deliberate bug switch, to show the check failing.
    wrong_backward: bool,
}

impl<T: Element> Layer<T> for LeakyRelu {
    fn kind(&self) -> &'static str {
        "leaky_relu"
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input_shape.to_vec())
    }

    // y = x if x > 0 else slope * x            x, y: (N, ...) the same shape
    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let slope = T::from_f64(self.slope);
        output.zip_mut_with(&input, |y, &x| *y = if x > T::zero() { x } else { slope * x });
    }

    // forward was `y = x or slope * x`, so `dx = dy or slope * dy`
    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        let slope = T::from_f64(if self.wrong_backward { 1.0 } else { self.slope });
        for ((dx, &x), &dy) in grad_input.iter_mut().zip(&input).zip(&grad_output) {
            *dx = if x > T::zero() { dy } else { slope * dy };
        }
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    // the sign of every input is a decision: the checker skips elements whose
    // perturbation crosses 0 instead of reporting a false failure
    fn record_kinks(&self, input: ArrayViewD<'_, T>, recorder: &mut KinkRecorder) {
        for &x in input.iter() {
            recorder.record((x > T::zero()) as u64);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |i| (i[0] * 12 + i[1] * 4 + i[2]) as f64 * 0.37 - 4.1);
    let config = GradCheckConfig::default();

    let mut layer = LeakyRelu { slope: 0.1, wrong_backward: false };
    let report = check_layer(&mut layer, input.view(), &config)?;
    println!("leaky ReLU, correct backward: {}\n{report}", if report.passed() { "pass" } else { "FAIL" });
    assert!(report.passed());

    let mut broken = LeakyRelu { slope: 0.1, wrong_backward: true };
    let report = check_layer(&mut broken, input.view(), &config)?;
    println!("leaky ReLU, backward with the wrong slope: {}\n{report}", if report.passed() { "pass" } else { "FAIL" });
    assert!(!report.passed(), "the gradient check must catch a wrong backward");
    Ok(())
}
