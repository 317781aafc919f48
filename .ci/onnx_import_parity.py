"""ONNX import parity: torchvision's ResNet-18 exported by torch.onnx.export at opsets 13 and 17
(tests/fixtures/onnx, made by make_fixtures.py; its weights, external data, are written here from each tensor's
name as the fixture script's pattern() makes them) goes through `convnet import-onnx`, and `convnet predict` on
16 pictures must give onnxruntime's probabilities on the same pixels within 1e-4. The check proves it can fail:
one class's bias moved by 0.05 is seen.

    python onnx_import_parity.py CONVNET WORKDIR
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "onnx")
convnet, work = sys.argv[1], sys.argv[2]


def pattern(name, shape):
    """tests/fixtures/torch/make_fixtures.py's pattern(), in numpy."""
    count = int(np.prod(shape))
    seed = 0
    for byte in name.encode():
        seed = (seed * 31 + byte) % 1_000_003
    unit = ((seed + np.arange(count, dtype=np.int64) * 7919) % 2001 - 1000).astype(np.float64) / 1000.0
    if name.endswith("running_var"):
        values = 1.0 + 0.5 * np.abs(unit)
    elif name.endswith("running_mean") or name.endswith("bias"):
        values = 0.1 * unit
    elif len(shape) == 1:
        values = 1.0 + 0.2 * unit
    else:
        values = unit * (3.0 / np.prod(shape[1:])) ** 0.5
    return values.astype(np.float32).reshape(shape)


def write_weights(graph_path, folder, bump=0.0):
    model = onnx.load(graph_path, load_external_data=False)
    blob = bytearray()
    for tensor in model.graph.initializer:
        entries = {entry.key: entry.value for entry in tensor.external_data}
        values = pattern(tensor.name, tuple(tensor.dims))
        if tensor.name == "fc.bias":
            values[0] += np.float32(bump)  # one class's bias (a shift of all would not change a softmax)
        offset = int(entries["offset"])
        blob[offset:offset + values.nbytes] = values.astype("<f4").tobytes()
    with open(os.path.join(folder, entries["location"]), "wb") as out:
        out.write(bytes(blob))


images = os.path.join(work, "images")
os.makedirs(images, exist_ok=True)
rng = np.random.default_rng(17)
for i in range(16):
    pixels = np.clip(np.cumsum(rng.normal(0, 24, (64, 64, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(images, f"{i:02d}.png"))
files = sorted(os.listdir(images))
batch = np.stack([np.asarray(Image.open(os.path.join(images, f)), dtype=np.float32).transpose(2, 0, 1) / 255.0
                  for f in files]).astype(np.float32)


def compare(opset, bump):
    folder = os.path.join(work, f"opset{opset}-{bump}")
    os.makedirs(folder, exist_ok=True)
    graph = os.path.join(folder, "resnet18.onnx")
    shutil.copy(os.path.join(FIXTURES, f"resnet18_opset{opset}.onnx"), graph)
    write_weights(graph, folder, bump)
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": batch})[0]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    model, table = os.path.join(folder, "model.safetensors"), os.path.join(folder, "predictions.csv")
    # the model is imported once, with the true weights: the bumped file is only onnxruntime's
    if bump == 0.0:
        subprocess.run([convnet, "import-onnx", "--onnx", graph, "--out", model], check=True, stdout=subprocess.DEVNULL)
    else:
        model = os.path.join(work, f"opset{opset}-0.0", "model.safetensors")
    subprocess.run([convnet, "predict", "--model", model, "--images", images, "--top-k", "10", "--csv", table],
                   check=True, stdout=subprocess.DEVNULL)
    rows = {os.path.basename(r["file"]): r for r in csv.DictReader(open(table))}
    got = np.zeros_like(expected)
    for i, name in enumerate(files):
        for k in range(1, 11):
            got[i, int(rows[name][f"top{k}_class"])] = float(rows[name][f"top{k}_prob"])
    return np.abs(got - expected).max()


for opset in (13, 17):
    difference = compare(opset, 0.0)
    print(f"resnet18 opset {opset}: {len(files)} images, max |convnet predict - onnxruntime| = {difference:.2e}")
    assert difference <= 1e-4, f"opset {opset}: {difference}"
wrong = compare(13, 0.05)
print(f"  with class 0's bias moved by 0.05 on onnxruntime's side: {wrong:.2e} (must fail the check)")
assert wrong > 1e-3, "a wrong bias went unnoticed: the check cannot fail"
