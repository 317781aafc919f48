//! torchvision's tensor names for a ResNet or a SqueezeNet, so that a
//! torchvision `state_dict` saved as safetensors initialises convnet's
//! `resnet18`, `resnet34`, `resnet-small` or `squeezenet1_1` (`--init-weights`).
//!
//! ```text
//! torchvision                     convnet (resnet18)
//! conv1.weight                    0.weight                 the stem
//! bn1.{weight,bias,running_*}     1.*
//! layer1.0.conv1.weight           4.body.0.weight          block 0 of stage 1
//! layer1.0.bn1.*                  4.body.1.*
//! layer1.0.conv2.weight           4.body.3.weight
//! layer1.0.bn2.*                  4.body.4.*
//! layer2.0.downsample.0.weight    8.shortcut.0.weight      the projection shortcut
//! layer2.0.downsample.1.*         8.shortcut.1.*
//! fc.{weight,bias}                21.*                     the classifier
//! ```
//!
//! The correspondence is read off the model itself: the top-level
//! convolution and batchnorm before the first block are `conv1` and `bn1`, the
//! residual blocks in order are `layer{stage}.{block}` (a block with a
//! projection shortcut starts a new stage, but the first stage may start
//! without one, as torchvision's `layer1` does), and the last dense layer is
//! `fc`. BatchNorm's `num_batches_tracked` has no counterpart and is ignored.
//! Layouts agree (NCHW, weights `[out, in, kh, kw]`, dense `[out, in]`), so
//! tensors are copied unchanged.
//!
//! SqueezeNet's names count torchvision's `features` modules: each
//! convolution, ReLU and max-pool is one, and a fire module (our squeeze
//! convolution, its ReLU and the concat block) is one, whose squeeze is
//! `features.{i}.squeeze` and whose branches are `expand1x1` and `expand3x3`;
//! after the features, the dropout and the classifying convolution are
//! `classifier.0` and `classifier.1`:
//!
//! ```text
//! features.0.weight              0.weight          the stem convolution
//! features.3.squeeze.weight      3.weight          the first fire module
//! features.3.expand1x1.weight    5.branches.0.0.weight
//! features.3.expand3x3.bias      5.branches.1.0.bias
//! classifier.1.weight            30.weight
//! ```
//!
//! To write such a file from PyTorch:
//!
//! ```text
//! import torchvision, safetensors.torch
//! model = torchvision.models.resnet18(weights="IMAGENET1K_V1")
//! state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
//! safetensors.torch.save_file(state, "resnet18.safetensors")
//! ```

use convnet_tensor::{Element, Residual, Sequential};
use std::collections::HashMap;

/// Whether `tensors` are named the torchvision way: a ResNet's (a
/// `conv1.weight` and a `layer1.` tensor) or a SqueezeNet's (`features.0.weight`
/// and a `classifier.` tensor).
pub fn has_torchvision_names<V>(tensors: &HashMap<String, V>) -> bool {
    let resnet = tensors.contains_key("conv1.weight") && tensors.keys().any(|name| name.starts_with("layer1."));
    let squeezenet =
        tensors.contains_key("features.0.weight") && tensors.keys().any(|name| name.starts_with("classifier."));
    resnet || squeezenet
}

/// For each of a SqueezeNet-shaped `model`'s parameter names, its torchvision
/// name (see the module docs), or `None` if the model has no concat block.
pub fn squeezenet_names<T: Element>(model: &Sequential<T>) -> Option<HashMap<String, String>> {
    let layers = model.layers();
    let classifier = layers.iter().position(|layer| layer.kind() == "dropout")?;
    layers.iter().position(|layer| layer.kind() == "concat")?;
    let mut prefixes: HashMap<usize, String> = HashMap::new();
    let mut feature = 0;
    // a normalisation put before the network (the preprocessing) is not one of its modules
    let mut index = layers.iter().take_while(|layer| layer.kind() == "normalize").count();
    while index < classifier {
        let is_fire = layers[index].kind() == "conv2d" && layers.get(index + 2).is_some_and(|l| l.kind() == "concat");
        if is_fire {
            // squeeze conv, its ReLU, then the expand branches: one torchvision module
            prefixes.insert(index, format!("features.{feature}.squeeze"));
            prefixes.insert(index + 2, format!("features.{feature}"));
            index += 3;
        } else {
            prefixes.insert(index, format!("features.{feature}"));
            index += 1;
        }
        feature += 1;
    }
    for (offset, index) in (classifier..layers.len()).enumerate() {
        prefixes.insert(index, format!("classifier.{offset}"));
    }
    let rename = |name: &str| -> Option<String> {
        let (index, rest) = name.split_once('.')?;
        let prefix = prefixes.get(&index.parse::<usize>().ok()?)?;
        Some(match rest.strip_prefix("branches.") {
            // branches.{b}.0.{tensor}: the branch's convolution
            Some(inside) => {
                let (branch, inside) = inside.split_once('.')?;
                let tensor = inside.strip_prefix("0.")?;
                format!("{prefix}.{}.{tensor}", ["expand1x1", "expand3x3"].get(branch.parse::<usize>().ok()?)?)
            }
            None => format!("{prefix}.{rest}"),
        })
    };
    model.param_names().into_iter().map(|name| Some((name.clone(), rename(&name)?))).collect()
}

/// For each of `model`'s parameter and buffer names (as
/// [`Sequential::param_names`] and [`Sequential::buffers`] give them), its
/// torchvision name, or `None` where the model is not a torchvision-style
/// ResNet (see the module docs).
pub fn torchvision_names<T: Element>(model: &Sequential<T>) -> Option<HashMap<String, String>> {
    let layers = model.layers();
    let first_block = layers.iter().position(|layer| layer.kind() == "residual")?;
    let mut prefixes: HashMap<usize, String> = HashMap::new();
    // the stem: one convolution (conv1) and one batchnorm (bn1), besides layers without parameters
    for (index, layer) in layers[..first_block].iter().enumerate() {
        let name = match layer.kind() {
            "conv2d" => "conv1",
            "batchnorm" => "bn1",
            _ if layer.params().is_empty() => continue,
            _ => return None,
        };
        if prefixes.values().any(|taken| taken == name) {
            return None;
        }
        prefixes.insert(index, name.to_string());
    }
    let (mut stage, mut block) = (1, 0);
    for (index, layer) in layers.iter().enumerate().skip(first_block) {
        if let Some(residual) = layer.as_any().and_then(|any| any.downcast_ref::<Residual<T>>()) {
            if residual.shortcut().is_some() && index != first_block {
                (stage, block) = (stage + 1, 0);
            }
            prefixes.insert(index, format!("layer{stage}.{block}"));
            block += 1;
        }
    }
    let fc = layers.iter().rposition(|layer| layer.kind() == "dense")?;
    prefixes.insert(fc, "fc".to_string());
    let ours = model.param_names().into_iter().chain(model.buffers().into_iter().map(|(name, _)| name));
    ours.map(|name| Some((name.clone(), torchvision_name(&name, &prefixes)?))).collect()
}

/// One name: `"4.body.3.weight"` -> `"layer1.0.conv2.weight"`.
fn torchvision_name(name: &str, prefixes: &HashMap<usize, String>) -> Option<String> {
    let (index, rest) = name.split_once('.')?;
    let prefix = prefixes.get(&index.parse::<usize>().ok()?)?;
    let inside = match rest.split_once('.') {
        // a block: body.{0,1,3,4} and shortcut.{0,1}
        Some(("body", rest)) => {
            let (position, tensor) = rest.split_once('.')?;
            let module = ["conv1", "bn1", "", "conv2", "bn2"].get(position.parse::<usize>().ok()?)?;
            format!("{module}.{tensor}")
        }
        Some(("shortcut", rest)) => format!("downsample.{rest}"),
        _ => return Some(format!("{prefix}.{rest}")),
    };
    Some(format!("{prefix}.{inside}"))
}

/// `tensors` renamed from torchvision's names to the model's, when they are
/// torchvision's ([`has_torchvision_names`]) and the model is a ResNet or a
/// SqueezeNet; otherwise unchanged. Tensors without a counterpart are dropped.
pub fn to_convnet_names<T: Element, V>(model: &Sequential<T>, mut tensors: HashMap<String, V>) -> HashMap<String, V> {
    if !has_torchvision_names(&tensors) {
        return tensors;
    }
    let Some(names) = torchvision_names(model).or_else(|| squeezenet_names(model)) else { return tensors };
    names.into_iter().filter_map(|(ours, theirs)| Some((ours, tensors.remove(&theirs)?))).collect()
}
