#!/usr/bin/env bash
# Every peer in one sitting (BENCHMARKS.md, "Round 3 against the strongest runtimes"): `baseline` and
# ResNet-18 at 224x224x3, 2 threads, rounds alternating the frameworks, each line one measurement.
#
#   cargo build --release
#   convnet train --train SOME_FOLDER --model baseline --epochs 1 --out /tmp/bl   # any weights: speed only
#   convnet export --model /tmp/bl/model.safetensors --out baseline.onnx            # and resnet18.onnx likewise
#   BASELINE_ONNX=baseline.onnx RESNET_ONNX=resnet18.onnx TORCH_PYTHON=.venv-torch/bin/python \
#     TF_PYTHON=.venv-tf/bin/python ROUNDS=3 bash benches/sitting.sh
#
# The Python environments as in ../shared/reference/README.md (pip install torch onnx onnxruntime openvino;
# pip install tensorflow-cpu). TensorFlow runs with TF_ENABLE_ONEDNN_OPTS=1 (its oneDNN path).
set -u
cd "$(dirname "$0")/.."
REF=${REFERENCE:-../shared/reference}
ROUNDS=${ROUNDS:-3}
BASELINE_ONNX=${BASELINE_ONNX:?convnet export of a baseline model at 224}
RESNET_ONNX=${RESNET_ONNX:?convnet export of a resnet18 model at 224}
TORCH_PYTHON=${TORCH_PYTHON:-.venv-torch/bin/python}
TF_PYTHON=${TF_PYTHON:-.venv-tf/bin/python}
convnet() { target/release/convnet bench --image-size 224 --threads 2 --json "$@" | sed 's/.*"images_per_sec":\([0-9.]*\).*/images_per_sec=\1/'; }
onnx() { "$TORCH_PYTHON" "$REF/onnx_infer.py" "$@" --threads 2 2>/dev/null | tail -1; }
tf() { TF_ENABLE_ONEDNN_OPTS=1 "$TF_PYTHON" "$REF/$1" "${@:2}" 2>/dev/null | tail -1; }
torch() { "$TORCH_PYTHON" "$REF/$1" "${@:2}" 2>/dev/null | tail -1; }
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round baseline infer b32 convnet $(convnet --model baseline --inference --steps 8)"
  echo "round $round baseline infer b32 ort $(onnx "$BASELINE_ONNX" --runtime ort --steps 8)"
  echo "round $round baseline infer b32 openvino $(onnx "$BASELINE_ONNX" --runtime openvino --steps 8)"
  echo "round $round baseline infer b32 tf $(tf tf_baseline.py --mode infer --steps 8)"
  echo "round $round baseline infer b32 torch $(torch torch_baseline.py --mode infer --steps 8)"
  echo "round $round baseline infer b1 convnet $(convnet --model baseline --inference --steps 40 --batch-size 1)"
  echo "round $round baseline infer b1 ort $(onnx "$BASELINE_ONNX" --runtime ort --steps 40 --batch 1)"
  echo "round $round baseline infer b1 openvino $(onnx "$BASELINE_ONNX" --runtime openvino --steps 40 --batch 1)"
  echo "round $round baseline train convnet $(convnet --model baseline --steps 4)"
  echo "round $round baseline train tf $(tf tf_baseline.py --mode train --steps 4)"
  echo "round $round baseline train torch $(torch torch_baseline.py --mode train --steps 4)"
  echo "round $round resnet18 train convnet $(convnet --model resnet18 --steps 4)"
  echo "round $round resnet18 train torch $(torch torch_resnet.py --mode train --steps 4)"
  echo "round $round resnet18 train tf $(tf tf_resnet.py --mode train --steps 4)"
  echo "round $round resnet18 infer convnet $(convnet --model resnet18 --inference --steps 6)"
  echo "round $round resnet18 infer ort $(onnx "$RESNET_ONNX" --runtime ort --steps 6)"
  echo "round $round resnet18 infer openvino $(onnx "$RESNET_ONNX" --runtime openvino --steps 6)"
  echo "round $round resnet18 infer torch $(torch torch_resnet.py --mode infer --steps 6)"
  echo "round $round resnet18 infer tf $(tf tf_resnet.py --mode infer --steps 6)"
done
