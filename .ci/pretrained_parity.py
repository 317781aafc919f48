"""The real pretrained SqueezeNet 1.1 (tests/fixtures/pretrained/squeezenet.py) through convnet: imported from
ONNX (`convnet import-onnx`, torch's export with its weights as external data) and from a torchvision state_dict
(`convnet import-torch --model squeezenet1_1`), both with `--preprocess imagenet`, `convnet predict` on the 100
real photos must give PyTorch's probabilities (tests/fixtures/pretrained/squeezenet_photos.safetensors, made by
make_fixtures.py with torchvision's Resize(256) + CenterCrop(224) + Normalize) within 1e-4 and its top-1 class on
every photo. The photos are JPEGs: Pillow decodes them with libjpeg-turbo, convnet with the `image` crate's
decoder (zune-jpeg), whose pixels differ by up to a few levels; so the check feeds both the same decoded pixels,
as lossless PNG copies, and reports the JPEGs' figures beside it. The check proves it can fail: the same network
imported without the preprocessing misses.

    python pretrained_parity.py CONVNET WORKDIR
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "pretrained")
sys.path.insert(0, FIXTURES)
import squeezenet  # noqa: E402

convnet, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
sdist, folder = squeezenet.download(os.path.join(work, "downloads"), [sys.executable, "-m", "pip"])
state = squeezenet.state_dict(sdist)
files = squeezenet.photos(folder)
pngs = os.path.join(work, "photos-png")
os.makedirs(pngs, exist_ok=True)
for path in files:
    Image.open(path).convert("RGB").save(os.path.join(pngs, os.path.basename(path)[:-4] + ".png"))
expected = load_file(os.path.join(FIXTURES, "squeezenet_photos.safetensors"))["probabilities"]
assert expected.shape == (len(files), 1000), (expected.shape, len(files))

onnx_path = os.path.join(work, "squeezenet1_1.onnx")
shutil.copy(os.path.join(FIXTURES, "squeezenet1_1.onnx"), onnx_path)
squeezenet.write_external_weights(onnx_path, state, os.path.join(work, "squeezenet1_1.weights"))
state_path = os.path.join(work, "squeezenet1_1_torchvision.safetensors")
save_file(state, state_path)


def run(*args):
    subprocess.run([convnet, *args], check=True, stdout=subprocess.DEVNULL)


def probabilities(model, images=pngs):
    table = os.path.join(work, os.path.basename(model) + ".csv")
    run("predict", "--model", model, "--images", images, "--top-k", "1000", "--csv", table)
    rows = {os.path.splitext(os.path.basename(row["file"]))[0]: row for row in csv.DictReader(open(table))}
    out = np.zeros((len(files), 1000))
    for i, path in enumerate(files):
        row = rows[os.path.splitext(os.path.basename(path))[0]]
        for k in range(1, 1001):
            out[i, int(row[f"top{k}_class"])] = float(row[f"top{k}_prob"])
    return out


imports = {
    "import-onnx": ["import-onnx", "--onnx", onnx_path],
    "import-torch": ["import-torch", "--state-dict", state_path, "--model", "squeezenet1_1"],
}
for name, command in imports.items():
    model = os.path.join(work, f"{name}.safetensors")
    run(*command, "--preprocess", "imagenet", "--out", model)
    got = probabilities(model)
    difference = np.abs(got - expected).max()
    same_top1 = int((got.argmax(1) == expected.argmax(1)).sum())
    print(f"{name}: {len(files)} photos, max |convnet - PyTorch| probability {difference:.2e}, "
          f"top-1 equal on {same_top1}/{len(files)}")
    assert difference <= 1e-4 and same_top1 == len(files), name
    got = probabilities(model, folder)
    print(f"  from the JPEGs themselves (another JPEG decoder than Pillow's): max difference "
          f"{np.abs(got - expected).max():.2e}, top-1 equal on {int((got.argmax(1) == expected.argmax(1)).sum())}")

# the negative control: without the preprocessing (0-1 pixels, a plain resize) the check must fail
model = os.path.join(work, "unprocessed.safetensors")
run("import-onnx", "--onnx", onnx_path, "--preprocess", "unit", "--out", model)
got = probabilities(model)
difference = np.abs(got - expected).max()
same_top1 = int((got.argmax(1) == expected.argmax(1)).sum())
print(f"  without the preprocessing: max difference {difference:.2e}, top-1 equal on {same_top1} (must fail)")
assert difference > 1e-2, "the preprocessing made no difference: the check cannot fail"
