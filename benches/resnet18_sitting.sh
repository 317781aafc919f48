#!/usr/bin/env bash
# ResNet-18 in one sitting: convnet, PyTorch and TensorFlow (oneDNN on), 224x224x3, batch 32,
# 2 threads, alternating rounds, training then inference (BENCHMARKS.md, "ResNet-18").
#
#   cargo build --release
#   TORCH_PYTHON=.venv-torch/bin/python TF_PYTHON=.venv-tf/bin/python bash benches/resnet18_sitting.sh
#
# The Python environments as in ../shared/reference/README.md (pip install torch; pip install tensorflow-cpu).
set -u
cd "$(dirname "$0")/.."
REF=${REFERENCE:-../shared/reference}
TORCH_PYTHON=${TORCH_PYTHON:-.venv-torch/bin/python}
TF_PYTHON=${TF_PYTHON:-.venv-tf/bin/python}
for round in 1 2; do
  for mode in train infer; do
    flag=""; [ "$mode" = infer ] && flag="--inference"
    echo "round $round $mode convnet: $(target/release/convnet bench --model resnet18 --image-size 224 --batch-size 32 --threads 2 --steps 4 $flag --json)"
    echo "round $round $mode torch: $("$TORCH_PYTHON" "$REF/torch_resnet.py" --mode "$mode" --steps 4 | tail -2 | tr '\n' ' ')"
    echo "round $round $mode tf: $(TF_ENABLE_ONEDNN_OPTS=1 "$TF_PYTHON" "$REF/tf_resnet.py" --mode "$mode" --steps 4 2>/dev/null | tail -2 | tr '\n' ' ')"
  done
done
