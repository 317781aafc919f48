//! The window operators of an ONNX graph for [`crate::onnx_import`]:
//! Conv's and the pools' attributes (`kernel_shape`, `strides`, `pads`,
//! `auto_pad`, `ceil_mode`, `dilations`) as convnet's window geometry, with
//! the tensor's height and width followed from layer to layer, since whether
//! a file's pads mean convnet's symmetric padding or `same` depends on them.

use crate::onnx_proto::NodeProto;
use convnet_tensor::model::spec::Size2;
use convnet_tensor::{LayerSpec, Padding};

/// The form of the tensor the walk is at: still an image `(N, C, H, W)` for
/// convnet (`spatial`, with its height and width), or flat `(N, features)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flow {
    pub(crate) spatial: bool,
    pub(crate) hw: [usize; 2],
}

/// An integer attribute, or `default`.
pub(crate) fn int_attr(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attributes.get(name).and_then(|a| a.int).unwrap_or(default)
}

/// A list attribute's values as sizes, or `default`.
pub(crate) fn ints_attr(node: &NodeProto, name: &str, default: &[i64]) -> Vec<i64> {
    node.attributes.get(name).filter(|a| !a.ints.is_empty()).map_or_else(|| default.to_vec(), |a| a.ints.clone())
}

pub(crate) fn size2(values: &[i64], node: &NodeProto, what: &str) -> std::result::Result<Size2, String> {
    match values {
        [h, w] if *h > 0 && *w > 0 => {
            Ok(if h == w { Size2::Square(*h as usize) } else { Size2::Rect([*h as usize, *w as usize]) })
        }
        _ => Err(format!("node {} ({}): {what} {values:?} is not two positive sizes", node.name, node.op_type)),
    }
}

/// A window's padding, from `pads = [top, left, bottom, right]` or
/// `auto_pad`, as convnet's: symmetric padding, `same`, or pads whose extra
/// end rows no window reaches (exporters write the padding a geometry uses);
/// moves `flow`'s height and width to the window's output.
pub(crate) fn window_padding(
    node: &NodeProto,
    flow: &mut Flow,
    kernel: Size2,
    stride: Size2,
    ceil_mode: bool,
) -> std::result::Result<Padding, String> {
    let auto = node.attributes.get("auto_pad").and_then(|a| a.string.clone()).unwrap_or_default();
    let (kernel, stride) = ([kernel.pair().0, kernel.pair().1], [stride.pair().0, stride.pair().1]);
    let same = |axis: usize| {
        let out = flow.hw[axis].div_ceil(stride[axis]);
        let total = ((out - 1) * stride[axis] + kernel[axis]).saturating_sub(flow.hw[axis]);
        [total / 2, total - total / 2]
    };
    let pads: Vec<i64> = match auto.as_str() {
        "" | "NOTSET" => ints_attr(node, "pads", &[0, 0, 0, 0]),
        "VALID" => vec![0, 0, 0, 0],
        // SAME_UPPER puts the odd extra row at the end, as convnet's (Keras') `same`
        "SAME_UPPER" => {
            let ([top, bottom], [left, right]) = (same(0), same(1));
            [top, left, bottom, right].map(|p| p as i64).to_vec()
        }
        other => return Err(format!("node {} ({}): auto_pad {other} is not supported", node.name, node.op_type)),
    };
    let refuse = || {
        format!(
            "node {} ({}): pads {pads:?} on a {:?} input; convnet pads symmetrically or as `same`",
            node.name, node.op_type, flow.hw
        )
    };
    let [top, left, bottom, right] = pads[..] else { return Err(refuse()) };
    if pads.iter().any(|p| !(0..=1 << 16).contains(p)) {
        return Err(refuse());
    }
    let window_out = |size: usize, begin: usize, end: usize, axis: usize| -> Option<usize> {
        let span = (size + begin + end).checked_sub(kernel[axis])?;
        let out = if ceil_mode { span.div_ceil(stride[axis]) } else { span / stride[axis] } + 1;
        // ceil mode's last window must start inside the input or its begin padding (PyTorch's rule)
        Some(if ceil_mode && (out - 1) * stride[axis] >= size + begin { out - 1 } else { out })
    };
    let mut out = [0; 2];
    let mut symmetric = [0; 2];
    let mut is_symmetric = true;
    for (axis, (begin, end)) in
        [(top as usize, bottom as usize), (left as usize, right as usize)].into_iter().enumerate()
    {
        out[axis] = window_out(flow.hw[axis], begin, end, axis).ok_or_else(refuse)?;
        symmetric[axis] = begin;
        // the end pads differ from the begin pads only where no window reaches them
        is_symmetric &= begin == end
            || (!ceil_mode && end < begin && window_out(flow.hw[axis], begin, begin, axis) == Some(out[axis]));
    }
    let padding = if is_symmetric {
        if symmetric == [0, 0] {
            Padding::Valid
        } else {
            Padding::Explicit(symmetric[0], symmetric[1])
        }
    } else if !ceil_mode && same(0) == [top as usize, bottom as usize] && same(1) == [left as usize, right as usize] {
        Padding::Same
    } else {
        return Err(refuse());
    };
    flow.hw = out;
    Ok(padding)
}

/// Refuses dilated windows.
pub(crate) fn no_dilation(node: &NodeProto) -> std::result::Result<(), String> {
    if ints_attr(node, "dilations", &[1, 1]).iter().any(|&d| d != 1) {
        return Err(format!("node {} ({}): dilated windows are not supported", node.name, node.op_type));
    }
    Ok(())
}

/// MaxPool or AveragePool.
pub(crate) fn pool(node: &NodeProto, flow: &mut Flow) -> std::result::Result<LayerSpec, String> {
    no_dilation(node)?;
    let pool = size2(&ints_attr(node, "kernel_shape", &[]), node, "kernel_shape")?;
    let stride = size2(&ints_attr(node, "strides", &[1, 1]), node, "strides")?;
    let ceil_mode = int_attr(node, "ceil_mode", 0) == 1;
    let padding = window_padding(node, flow, pool, stride, ceil_mode)?;
    let stride = Some(stride);
    Ok(if node.op_type == "MaxPool" {
        if node.outputs.iter().skip(1).any(|name| !name.is_empty()) {
            return Err(format!("node {} (MaxPool) also outputs its indices, which convnet does not", node.name));
        }
        LayerSpec::Maxpool2d { pool, stride, padding, ceil_mode }
    } else {
        LayerSpec::Avgpool2d {
            pool,
            stride,
            padding,
            ceil_mode,
            count_include_pad: int_attr(node, "count_include_pad", 0) == 1,
        }
    })
}
