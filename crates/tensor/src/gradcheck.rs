//! Numerical gradient checking, a public API for your own test suites.
//!
//! A hand-written backward pass is a claim: "these are the derivatives of the
//! forward pass". [`check_layer`] and [`check_model`] test the claim by central
//! differences in `f64`:
//!
//! ```text
//! numeric = (f(theta + h) - f(theta - h)) / (2h)        (error O(h^2))
//! ```
//!
//! for every element of the input and of every parameter (or a seeded random
//! sample of large tensors), compared with the analytic gradient from
//! `backward`. For a single layer the scalar function is
//! `f = sum(forward(x) * R)` with a fixed random tensor `R`, whose gradient with
//! respect to the output is exactly `R`: one backward pass with
//! `grad_output = R` gives all analytic gradients at once. For a whole model `f`
//! is the softmax cross-entropy of its logits.
//!
//! ## Pass/fail
//!
//! An element passes when `|analytic - numeric| <= atol + rtol * |numeric|`, as in
//! `torch.autograd.gradcheck`. Defaults: `h = 1e-6`, `atol = 1e-6`,
//! `rtol = 1e-5`. In `f64`, central differences at `h = 1e-6` are accurate to about
//! `1e-9` relative (truncation `~h^2`, rounding `~1e-16 * |f| / h`), so the
//! tolerances leave a wide margin while still catching a gradient that is off by
//! a part in 10^5. Each tensor also gets the largest cs231n relative error
//! `|a - n| / max(|a|, |n|)` over its elements larger than `atol`, and its [`Band`].
//!
//! A check can pass vacuously: if both gradients are zero (a dead layer, a
//! forgotten write), every comparison succeeds. So a tensor whose analytic and
//! numeric gradients are all below `1e-10` in magnitude **fails** as vacuous
//! unless [`GradCheckConfig::allow_zero_gradients`] is set, and a tensor where
//! no element could be checked fails too.
//!
//! ## Kinks
//!
//! ReLU is not differentiable at 0, max-pooling not where two window elements
//! tie. If `x + h` and `x - h` fall on different sides of such a kink, the
//! central difference averages two different slopes and disagrees with either
//! analytic one: a false failure. Layers report their discrete decisions
//! ([`Layer::record_kinks`]: the sign of every ReLU input, the winner of every
//! pooling window). The checker records them at `theta`, `theta + h` and
//! `theta - h`; if they differ, that element straddles a kink and is **skipped**
//! (not re-drawn) and counted in [`TensorReport::skipped_kinks`]. Tolerances are
//! never loosened for it.
//!
//! ## Validating a check: mutation testing
//!
//! A check is only worth something if it can fail. Wrap a correct layer in a
//! [`Mutant`] with a deliberate bug in its backward (a flipped sign, a dropped
//! bias gradient, a gradient routed to the wrong element) and require the check
//! to fail:
//!
//! ```
//! use convnet_tensor::gradcheck::{check_layer, GradCheckConfig, Mutant, Mutation};
//! use convnet_tensor::{Dense, Layer};
//! use convnet_tensor::ndarray::{ArrayD, IxDyn};
//! let input = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |d| (d[0] * 3 + d[1]) as f64 * 0.1 - 0.2);
//! let mut dense = Dense::<f64>::new(3, 2).unwrap();
//! convnet_tensor::init::glorot_uniform(dense.weight_mut(), 1, 0);
//! let config = GradCheckConfig::default();
//!
//! let report = check_layer(&mut dense, input.view(), &config).unwrap();
//! assert!(report.passed(), "{report}");
//!
//! let mut broken = Mutant::new(dense, Mutation::FlipInputGradSign);
//! let report = check_layer(&mut broken, input.view(), &config).unwrap();
//! assert!(!report.passed());
//! ```

use crate::error::{Result, TensorError};
use crate::layer::{KinkRecorder, Layer, Mode, Param, ParamMut};
use crate::loss::SoftmaxCrossEntropy;
use crate::model::sequential::Sequential;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use rand::Rng;
use std::fmt;

/// Settings of a gradient check.
#[derive(Clone, Debug)]
pub struct GradCheckConfig {
    /// Step `h` of the central difference.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (times `|numeric|`).
    pub rtol: f64,
    /// Check at most this many elements per tensor (a seeded random sample of
    /// larger tensors).
    pub max_elements_per_tensor: usize,
    /// Seed of the sample and of the random projection `R`.
    pub seed: u64,
    /// Accept tensors whose gradients are all (near) zero.
    pub allow_zero_gradients: bool,
    /// Run [`check_layer`]'s layer in evaluation mode ([`Mode::Eval`]:
    /// BatchNorm with its running statistics, dropout off) instead of training.
    pub eval_mode: bool,
}

impl Default for GradCheckConfig {
    fn default() -> Self {
        GradCheckConfig {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            max_elements_per_tensor: usize::MAX,
            seed: 0x5EED,
            allow_zero_gradients: false,
            eval_mode: false,
        }
    }
}

/// Gradient magnitude below which a whole tensor counts as "all zero".
pub const VACUOUS_THRESHOLD: f64 = 1e-10;

/// cs231n's reading of a relative error in f64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    /// `< 1e-7`: the gradient is right.
    Good,
    /// `1e-7 ..= 1e-4`: fine near kinks, otherwise worth a look.
    Acceptable,
    /// `1e-4 ..= 1e-2`: suspicious.
    Suspicious,
    /// `> 1e-2`: wrong.
    Wrong,
}

impl Band {
    /// Classifies a relative error.
    pub fn of(relative_error: f64) -> Band {
        if relative_error < 1e-7 {
            Band::Good
        } else if relative_error <= 1e-4 {
            Band::Acceptable
        } else if relative_error <= 1e-2 {
            Band::Suspicious
        } else {
            Band::Wrong
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Band::Good => "good",
            Band::Acceptable => "ok",
            Band::Suspicious => "suspicious",
            Band::Wrong => "WRONG",
        })
    }
}

/// The worst element of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    /// Multi-dimensional index.
    pub index: Vec<usize>,
    /// Gradient from `backward`.
    pub analytic: f64,
    /// Central-difference gradient.
    pub numeric: f64,
    /// `|analytic - numeric|`.
    pub abs_error: f64,
    /// `|analytic - numeric| / max(|analytic|, |numeric|)` (0 when both are 0).
    pub rel_error: f64,
}

/// The result for one tensor (the input, or one parameter).
#[derive(Clone, Debug)]
pub struct TensorReport {
    /// `"input"`, `"weight"`, `"bias"`, or `"{layer}.weight"` for models.
    pub name: String,
    /// Elements in the tensor.
    pub numel: usize,
    /// Elements compared.
    pub checked: usize,
    /// Elements skipped because `theta +- h` crossed a kink.
    pub skipped_kinks: usize,
    /// Elements outside the tolerance.
    pub failures: usize,
    /// Largest `|analytic|` over the checked elements.
    pub max_abs_analytic: f64,
    /// Largest `|numeric|` over the checked elements.
    pub max_abs_numeric: f64,
    /// The element with the largest `|a - n| - (atol + rtol |n|)` excess.
    pub worst: Option<Worst>,
    /// Largest relative error over the checked elements whose gradient exceeds
    /// `atol` in magnitude (below that, the rounding noise of the difference
    /// quotient, about `1e-16 * |f| / h`, dominates any relative measure).
    pub max_rel_error: f64,
    /// Largest absolute error over the checked elements.
    pub max_abs_error: f64,
    allow_zero: bool,
}

impl TensorReport {
    /// Both gradients are all (near) zero: a pass would mean nothing.
    pub fn vacuous(&self) -> bool {
        self.max_abs_analytic < VACUOUS_THRESHOLD && self.max_abs_numeric < VACUOUS_THRESHOLD
    }

    /// Every checked element within tolerance, at least one element checked,
    /// and (unless allowed) not vacuous.
    pub fn passed(&self) -> bool {
        self.failures == 0 && self.checked > 0 && (self.allow_zero || !self.vacuous())
    }

    /// cs231n band of the largest relative error.
    pub fn band(&self) -> Band {
        Band::of(self.max_rel_error)
    }
}

/// The result of a whole check: one [`TensorReport`] per tensor.
#[derive(Clone, Debug)]
pub struct GradCheckReport {
    /// Per-tensor results, input first.
    pub tensors: Vec<TensorReport>,
}

impl GradCheckReport {
    /// All tensors passed.
    pub fn passed(&self) -> bool {
        !self.tensors.is_empty() && self.tensors.iter().all(TensorReport::passed)
    }

    /// The report of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorReport> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

impl fmt::Display for GradCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>9} {:>8} {:>6} {:>11} {:>11} {:>11} {:<10} result",
            "tensor", "elements", "checked", "kinks", "max |grad|", "max rel err", "max abs err", "band"
        )?;
        for t in &self.tensors {
            let verdict = if t.passed() {
                "pass"
            } else if t.checked == 0 {
                "FAIL (nothing checked)"
            } else if t.failures > 0 {
                "FAIL"
            } else {
                "FAIL (all gradients zero)"
            };
            writeln!(
                f,
                "{:<14} {:>9} {:>8} {:>6} {:>11.3e} {:>11.3e} {:>11.3e} {:<10} {verdict}",
                t.name,
                t.numel,
                t.checked,
                t.skipped_kinks,
                t.max_abs_analytic.max(t.max_abs_numeric),
                t.max_rel_error,
                t.max_abs_error,
                t.band().to_string(),
            )?;
            if t.failures > 0 {
                if let Some(w) = &t.worst {
                    writeln!(
                        f,
                        "    worst at {:?}: analytic {:.9e}, numeric {:.9e} ({} of {} elements outside tolerance)",
                        w.index, w.analytic, w.numeric, t.failures, t.checked
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Something with a scalar value, perturbable tensors and analytic gradients:
/// a layer under a random projection, or a model under its loss.
trait Probe {
    /// Names and shapes of the tensors to check (input first).
    fn tensors(&self) -> Vec<(String, Vec<usize>)>;
    /// `f` at the current values, and the kink fingerprint of that evaluation.
    fn evaluate(&mut self) -> Result<(f64, (u64, u64))>;
    /// Runs forward + backward and returns the analytic gradient of each tensor.
    fn analytic(&mut self) -> Result<Vec<ArrayD<f64>>>;
    /// Adds `delta` to element `flat` of tensor `tensor`.
    fn nudge(&mut self, tensor: usize, flat: usize, delta: f64);
}

fn run_check(probe: &mut dyn Probe, config: &GradCheckConfig) -> Result<GradCheckReport> {
    let analytic = probe.analytic()?;
    let (_, base_kinks) = probe.evaluate()?;
    let mut rng = crate::rng::rng_at(config.seed, 0xC0FFEE);
    let mut reports = Vec::new();
    for (t, (name, shape)) in probe.tensors().into_iter().enumerate() {
        let numel: usize = shape.iter().product();
        let elements: Vec<usize> = if numel <= config.max_elements_per_tensor {
            (0..numel).collect()
        } else {
            let mut sample = rand::seq::index::sample(&mut rng, numel, config.max_elements_per_tensor).into_vec();
            sample.sort_unstable();
            sample
        };
        let grad = analytic[t].as_slice().expect("contiguous");
        let mut report = TensorReport {
            name,
            numel,
            checked: 0,
            skipped_kinks: 0,
            failures: 0,
            max_abs_analytic: 0.0,
            max_abs_numeric: 0.0,
            worst: None,
            max_rel_error: 0.0,
            max_abs_error: 0.0,
            allow_zero: config.allow_zero_gradients,
        };
        let mut worst_excess = f64::NEG_INFINITY;
        for flat in elements {
            probe.nudge(t, flat, config.eps);
            let (plus, plus_kinks) = probe.evaluate()?;
            probe.nudge(t, flat, -2.0 * config.eps);
            let (minus, minus_kinks) = probe.evaluate()?;
            probe.nudge(t, flat, config.eps);
            if plus_kinks != base_kinks || minus_kinks != base_kinks {
                report.skipped_kinks += 1;
                continue;
            }
            let numeric = (plus - minus) / (2.0 * config.eps);
            let analytic = grad[flat];
            let abs_error = (analytic - numeric).abs();
            let scale = analytic.abs().max(numeric.abs());
            let rel_error = if scale == 0.0 { 0.0 } else { abs_error / scale };
            let excess = abs_error - (config.atol + config.rtol * numeric.abs());
            report.checked += 1;
            report.max_abs_analytic = report.max_abs_analytic.max(analytic.abs());
            report.max_abs_numeric = report.max_abs_numeric.max(numeric.abs());
            if scale > config.atol {
                // below atol, rounding noise of the difference quotient dominates
                report.max_rel_error = report.max_rel_error.max(rel_error);
            }
            report.max_abs_error = report.max_abs_error.max(abs_error);
            // NaN counts as a failure
            if excess.is_nan() || excess > 0.0 {
                report.failures += 1;
            }
            if excess > worst_excess || report.worst.is_none() {
                worst_excess = excess;
                report.worst = Some(Worst { index: unravel(flat, &shape), analytic, numeric, abs_error, rel_error });
            }
        }
        reports.push(report);
    }
    Ok(GradCheckReport { tensors: reports })
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (axis, &dim) in shape.iter().enumerate().rev() {
        index[axis] = flat % dim.max(1);
        flat /= dim.max(1);
    }
    index
}

/// A single layer under `f = sum(forward(x) * R)`.
struct LayerProbe<'a> {
    layer: &'a mut dyn Layer<f64>,
    input: ArrayD<f64>,
    output: ArrayD<f64>,
    projection: ArrayD<f64>,
    mode: Mode,
}

impl LayerProbe<'_> {
    fn forward(&mut self) {
        self.layer.forward(self.input.view(), self.output.view_mut(), self.mode);
    }
}

impl Probe for LayerProbe<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        std::iter::once(("input".to_string(), self.input.shape().to_vec()))
            .chain(
                self.layer
                    .param_names()
                    .into_iter()
                    .zip(self.layer.params())
                    .map(|(name, p)| (name, p.value.shape().to_vec())),
            )
            .collect()
    }

    fn evaluate(&mut self) -> Result<(f64, (u64, u64))> {
        self.forward();
        let value = self.output.iter().zip(self.projection.iter()).map(|(y, r)| y * r).sum();
        let mut recorder = KinkRecorder::default();
        self.layer.record_kinks(self.input.view(), &mut recorder);
        Ok((value, recorder.fingerprint()))
    }

    fn analytic(&mut self) -> Result<Vec<ArrayD<f64>>> {
        self.forward();
        let mut grad_input = ArrayD::zeros(self.input.raw_dim());
        self.layer.backward(self.input.view(), self.output.view(), self.projection.view(), Some(grad_input.view_mut()));
        Ok(std::iter::once(grad_input).chain(self.layer.params().iter().map(|p| p.grad.clone())).collect())
    }

    fn nudge(&mut self, tensor: usize, flat: usize, delta: f64) {
        if tensor == 0 {
            self.input.as_slice_mut().expect("contiguous")[flat] += delta;
        } else {
            let mut params = self.layer.params_mut();
            params[tensor - 1].value.as_slice_mut().expect("contiguous")[flat] += delta;
        }
    }
}

/// Checks one layer's input and parameter gradients at `input` `(N, ...)`.
///
/// The layer runs in [`Mode::Train`] with a fixed seed, so a dropout layer
/// draws the same mask for every evaluation and is checked as the linear map it
/// is for that mask.
pub fn check_layer(
    layer: &mut dyn Layer<f64>,
    input: ArrayViewD<'_, f64>,
    config: &GradCheckConfig,
) -> Result<GradCheckReport> {
    let (batch, sample) =
        input.shape().split_first().ok_or_else(|| TensorError::Mismatch("gradcheck needs a batched input".into()))?;
    let out_sample = layer.output_shape(sample).map_err(|message| TensorError::Shape {
        index: 0,
        kind: layer.kind().into(),
        message,
    })?;
    let out_shape: Vec<usize> = std::iter::once(*batch).chain(out_sample).collect();
    let mut rng = crate::rng::rng_at(config.seed, 0xBEEF);
    let projection = ArrayD::from_shape_simple_fn(IxDyn(&out_shape), || rng.random_range(-1.0..1.0));
    let mut probe = LayerProbe {
        layer,
        input: input.as_standard_layout().into_owned(),
        output: ArrayD::zeros(IxDyn(&out_shape)),
        projection,
        mode: if config.eval_mode { Mode::Eval } else { Mode::train(config.seed) },
    };
    run_check(&mut probe, config)
}

/// A model under its softmax cross-entropy loss.
struct ModelProbe<'a> {
    model: &'a mut Sequential<f64>,
    input: ArrayD<f64>,
    labels: &'a [usize],
    loss: SoftmaxCrossEntropy<f64>,
    mode: Mode,
}

impl Probe for ModelProbe<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        std::iter::once(("input".to_string(), self.input.shape().to_vec()))
            .chain(
                self.model
                    .param_names()
                    .into_iter()
                    .zip(self.model.params())
                    .map(|(name, p)| (name, p.value.shape().to_vec())),
            )
            .collect()
    }

    fn evaluate(&mut self) -> Result<(f64, (u64, u64))> {
        let logits = self.model.forward(self.input.view(), self.mode)?;
        let value = self.loss.forward(logits, self.labels)?;
        let mut recorder = KinkRecorder::default();
        self.model.record_kinks(&mut recorder);
        Ok((value, recorder.fingerprint()))
    }

    fn analytic(&mut self) -> Result<Vec<ArrayD<f64>>> {
        self.evaluate()?;
        let grad_input = self.model.backward_with_input_grad(self.loss.grad_logits().view())?;
        Ok(std::iter::once(grad_input)
            .chain(self.model.params().iter().map(|p: &Param<'_, f64>| p.grad.clone()))
            .collect())
    }

    fn nudge(&mut self, tensor: usize, flat: usize, delta: f64) {
        if tensor == 0 {
            self.input.as_slice_mut().expect("contiguous")[flat] += delta;
        } else {
            let mut params: Vec<ParamMut<'_, f64>> = self.model.params_mut();
            params[tensor - 1].value.as_slice_mut().expect("contiguous")[flat] += delta;
        }
    }
}

/// Checks a whole model: the gradients of its softmax cross-entropy loss on
/// `(input, labels)` with respect to the input and every parameter (named
/// `"{layer}.weight"` / `"{layer}.bias"`). Dropout runs in training mode with a
/// fixed mask.
pub fn check_model(
    model: &mut Sequential<f64>,
    input: ArrayViewD<'_, f64>,
    labels: &[usize],
    config: &GradCheckConfig,
) -> Result<GradCheckReport> {
    let mut probe = ModelProbe {
        model,
        input: input.as_standard_layout().into_owned(),
        labels,
        loss: SoftmaxCrossEntropy::new(),
        mode: Mode::train(config.seed),
    };
    run_check(&mut probe, config)
}

/// A deliberate bug to put into a layer's backward pass (see [`Mutant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Negate the input gradient (a wrong sign).
    FlipInputGradSign,
    /// Zero the gradient of parameter `i` (a dropped term, e.g. the bias).
    DropParamGrad(usize),
    /// Scale parameter `i`'s gradient by 1.01 (a 1% error: subtle, still caught).
    ScaleParamGrad(usize),
    /// Move every input gradient one element further along the flat buffer,
    /// as an off-by-one in col2im or a gradient routed to the neighbouring
    /// pooling position would.
    ShiftInputGrad,
    /// Add the input gradient of each element also to its neighbour, as a
    /// backward that routes to two positions (e.g. both of a max-pool tie) would.
    DuplicateInputGrad,
}

/// Wraps a layer and corrupts its backward with a [`Mutation`]; the forward is
/// untouched. Feed it to [`check_layer`] and require the check to fail: that
/// is how to show a gradient check can catch a bug.
#[derive(Debug)]
pub struct Mutant<L> {
    inner: L,
    mutation: Mutation,
}

impl<L> Mutant<L> {
    /// `inner` with `mutation` in its backward.
    pub fn new(inner: L, mutation: Mutation) -> Self {
        Mutant { inner, mutation }
    }

    /// The wrapped layer.
    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl<L: Layer<f64>> Layer<f64> for Mutant<L> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn output_shape(&self, input_shape: &[usize]) -> std::result::Result<Vec<usize>, String> {
        self.inner.output_shape(input_shape)
    }

    fn set_input_shape(&mut self, input_shape: &[usize]) {
        self.inner.set_input_shape(input_shape);
    }

    fn forward(&mut self, input: ArrayViewD<'_, f64>, output: ArrayViewMutD<'_, f64>, mode: Mode) {
        self.inner.forward(input, output, mode)
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, f64>,
        output: ArrayViewD<'_, f64>,
        grad_output: ArrayViewD<'_, f64>,
        mut grad_input: Option<ArrayViewMutD<'_, f64>>,
    ) {
        self.inner.backward(input, output, grad_output, grad_input.as_mut().map(|g| g.view_mut()));
        match self.mutation {
            Mutation::FlipInputGradSign => {
                if let Some(g) = grad_input.as_mut() {
                    g.mapv_inplace(|v| -v);
                }
            }
            Mutation::DropParamGrad(i) => {
                if let Some(p) = self.inner.params_mut().get_mut(i) {
                    p.grad.fill(0.0);
                }
            }
            Mutation::ScaleParamGrad(i) => {
                if let Some(p) = self.inner.params_mut().get_mut(i) {
                    p.grad.mapv_inplace(|v| v * 1.01);
                }
            }
            Mutation::ShiftInputGrad => {
                if let Some(g) = grad_input.as_mut().and_then(|g| g.as_slice_mut()) {
                    g.rotate_right(1);
                }
            }
            Mutation::DuplicateInputGrad => {
                if let Some(g) = grad_input.as_mut().and_then(|g| g.as_slice_mut()) {
                    for i in (1..g.len()).rev() {
                        g[i] += g[i - 1];
                    }
                }
            }
        }
    }

    fn params(&self) -> Vec<Param<'_, f64>> {
        self.inner.params()
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, f64>> {
        self.inner.params_mut()
    }

    fn record_kinks(&self, input: ArrayViewD<'_, f64>, recorder: &mut KinkRecorder) {
        self.inner.record_kinks(input, recorder)
    }
}
