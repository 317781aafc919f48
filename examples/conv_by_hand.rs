//! One convolution, forward and backward, on a tensor small enough to check
//! with pencil and paper, printed step by step next to the formula.
//!
//!     cargo run --example conv_by_hand
//!
//! Input `x` (1 image, 1 channel, 3x3), one 2x2 filter, stride 1, no padding:
//! the output is 2x2, `y[i][j] = b + sum_{ki,kj} w[ki][kj] * x[i+ki][j+kj]`.
use convnet::tensor::kernels::im2col::im2col_naive;
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::{Conv2d, Layer, Mode, Padding, WindowGeometry};

fn show(name: &str, values: &[f64], rows: usize) {
    println!("{name}:");
    for row in values.chunks(values.len() / rows) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:6.1}")).collect();
        println!("  {}", cells.join(" "));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 3, 3]), vec![1., 2., 3., 4., 5., 6., 7., 8., 9.])?;
    let mut conv = Conv2d::<f64>::new(1, 1, (2, 2), (1, 1), Padding::Valid)?;
    // w = [[1, 0], [0, -1]]: every output is x[i][j] - x[i+1][j+1] (+ b)
    conv.weight_mut().as_slice_mut().unwrap().copy_from_slice(&[1., 0., 0., -1.]);
    conv.bias_mut().fill(0.5);
    show("x (3x3)", x.as_slice().unwrap(), 3);
    show("w (2x2)", conv.weight().as_slice().unwrap(), 2);

    // im2col: one column per output pixel, one row per filter tap
    let geom = WindowGeometry::new(1, 3, 3, (2, 2), (1, 1), Padding::Valid).unwrap();
    let mut col = vec![0.0; geom.col_rows() * geom.out_pixels()];
    im2col_naive(&geom, x.as_slice().unwrap(), 0, geom.out_h, &mut col);
    show("col = im2col(x) (taps x output pixels)", &col, 4);

    // forward: Y = W * col + b
    let mut y = ArrayD::zeros(IxDyn(&[1, 1, 2, 2]));
    conv.forward(x.view(), y.view_mut(), Mode::Eval);
    show("y = W col + b (2x2)", y.as_slice().unwrap(), 2);
    assert_eq!(y.as_slice().unwrap(), &[-3.5, -3.5, -3.5, -3.5]);

    // backward with dL/dy = 1 everywhere (L = sum of y)
    let dy = ArrayD::from_elem(IxDyn(&[1, 1, 2, 2]), 1.0);
    let mut dx = ArrayD::zeros(x.raw_dim());
    conv.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
    let params = conv.params();
    // dW = dY col^T: each tap's gradient is the sum of the inputs it saw
    show("dL/dw = dY col^T", params[0].grad.as_slice().unwrap(), 2);
    assert_eq!(params[0].grad.as_slice().unwrap(), &[12., 16., 24., 28.]);
    // db = sum of dY
    println!("dL/db = {}", params[1].grad[[0]]);
    // dx = col2im(W^T dY): each pixel gets the taps that read it
    show("dL/dx = col2im(W^T dY)", dx.as_slice().unwrap(), 3);
    assert_eq!(dx.as_slice().unwrap(), &[1., 1., 0., 1., 0., -1., 0., -1., -1.]);
    Ok(())
}
