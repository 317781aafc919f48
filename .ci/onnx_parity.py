"""ONNX export parity: `convnet export`'s file must pass onnx.checker (full check) and give,
in onnxruntime, the probabilities `convnet predict` gives, within 1e-5. Then the check proves
it can fail: the same graph with the first dense layer's columns permuted from our C,H,W
flatten order to Keras' H,W,C order must miss by far more (for a model with batchnorm: the
first batchnorm without its running mean; for a residual model also: the first block's
shortcut dropped).

    python onnx_parity.py CONVNET MODEL.safetensors WORKDIR

exports MODEL to WORKDIR/model.onnx, writes 24 random PNGs at the model's input size (so no
resizing is involved) and compares onnxruntime with `CONVNET predict` on them.
"""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper
from PIL import Image

convnet, weights, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
workdir.mkdir(parents=True, exist_ok=True)
model_path, csv_path = workdir / "model.onnx", workdir / "predictions.csv"
subprocess.run([convnet, "export", "--model", weights, "--out", model_path], check=True)
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
meta = {p.key: p.value for p in model.metadata_props}
class_names = json.loads(meta["class_names"])
factor = float(meta["pixel_factor"])
color = meta["color_mode"]
assert [o.name for o in model.graph.output] == ["probabilities", "logits"], model.graph.output
assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N", "symbolic batch"
height, width = map(int, meta["image_size"].split("x"))
rng = np.random.default_rng(7)
images = workdir / "images"
images.mkdir(exist_ok=True)
for i in range(24):
    shape = (height, width) if color == "grayscale" else (height, width, 3)
    # smooth random pictures (a random walk), not white noise, so the network sees structure
    pixels = np.clip(np.cumsum(rng.normal(0, 24, shape), axis=1) + 128, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(images / f"{i:02d}.png")
subprocess.run([convnet, "predict", "--model", weights, "--images", images, "--top-k", str(len(class_names)),
                "--csv", csv_path], check=True, stdout=subprocess.DEVNULL)

rows = [r for r in csv.DictReader(open(csv_path)) if not r["error"]]
files = [r["file"] for r in rows]
expected = np.zeros((len(rows), len(class_names)))
for i, row in enumerate(rows):
    k = 1
    while f"top{k}_class" in row:
        expected[i, class_names.index(row[f"top{k}_class"])] = float(row[f"top{k}_prob"])
        k += 1
    assert k - 1 == len(class_names), "predict with --top-k equal to the number of classes"


def load(path):
    image = Image.open(path)
    array = np.asarray(image, dtype=np.float32) * np.float32(factor)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


batch = np.stack([load(f) for f in files])


def run(onnx_model):
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, logits = session.run(None, {"input": batch})
    return probabilities


got = run(model)
difference = np.abs(got - expected).max()
print(f"{model_path}: {len(files)} images, max |onnxruntime - convnet predict| = {difference:.2e}")
assert difference <= 1e-5, f"ONNX export disagrees with convnet predict by {difference}"

adds = [n for n in model.graph.node if n.op_type == "Add"]
if adds:
    # the negative control of a residual model: the first block's Add reading its body twice
    # (the shortcut dropped) must miss by far more
    control = onnx.ModelProto()
    control.CopyFrom(model)
    first = next(n for n in control.graph.node if n.op_type == "Add")
    first.input[1] = first.input[0]
    wrong = np.abs(run(control) - expected).max()
    print(f"  without the first residual block's shortcut: max difference {wrong:.2e} (must fail the check)")
    assert wrong > 1e-3, "a dropped shortcut went unnoticed: the check cannot fail"

nodes = list(model.graph.node)
shapes = {init.name: init for init in model.graph.initializer}
batchnorms = [n for n in nodes if n.op_type == "BatchNormalization"]
if batchnorms:
    # the negative control of a model with batchnorm: evaluation without its running mean
    # (as if the export had taken fresh statistics) must miss by far more
    mean = batchnorms[0].input[3]
    values = numpy_helper.to_array(shapes[mean])
    assert np.abs(values).max() > 1e-3, "running means still zero: the control would prove nothing"
    shapes[mean].CopyFrom(numpy_helper.from_array(np.zeros_like(values), mean))
    wrong = np.abs(run(model) - expected).max()
    print(f"  without the first batchnorm's running mean: max difference {wrong:.2e} (must fail the check)")
    assert wrong > 1e-3, "a wrong batchnorm went unnoticed: the check cannot fail"
    sys.exit(0)

# the negative control: permute the first Gemm after a Flatten from C,H,W to H,W,C columns
flatten = next(i for i, n in enumerate(nodes) if n.op_type == "Flatten")
gemm = next(n for n in nodes[flatten:] if n.op_type == "Gemm")
weight = numpy_helper.to_array(shapes[gemm.input[1]])
# the flattened input's (C, H, W): from the graph's shape inference
inferred = onnx.shape_inference.infer_shapes(model)
value = next(v for v in inferred.graph.value_info if v.name == nodes[flatten].input[0])
c, h, w = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
permuted = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape)
shapes[gemm.input[1]].CopyFrom(numpy_helper.from_array(permuted, gemm.input[1]))
wrong = np.abs(run(model) - expected).max()
print(f"  with the flatten order of Keras instead: max difference {wrong:.2e} (must fail the check)")
assert wrong > 1e-3, "a wrong flatten order went unnoticed: the check cannot fail"
