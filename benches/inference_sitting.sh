#!/usr/bin/env bash
# Inference in one sitting: convnet against ONNX Runtime and OpenVINO running convnet's own exported model,
# and TensorFlow with oneDNN on; 2 threads, alternating rounds (BENCHMARKS.md, "Inference against the
# strongest runtimes").
#
#   cargo build --release
#   MODEL=baseline SIZE=224 ONNX=baseline.onnx TORCH_PYTHON=.venv-torch/bin/python TF_PYTHON=.venv-tf/bin/python \
#     BATCH=32 ROUNDS=3 bash benches/inference_sitting.sh
#
# ONNX: `convnet export --model M.safetensors --out baseline.onnx` of a `baseline` (or resnet18) model at SIZE.
# The Python environments as in ../shared/reference/README.md (pip install torch onnx onnxruntime openvino;
# pip install tensorflow-cpu). TensorFlow runs `tf_baseline.py` for baseline and `tf_resnet.py` for resnet18.
set -u
cd "$(dirname "$0")/.."
REF=${REFERENCE:-../shared/reference}
MODEL=${MODEL:-baseline}
SIZE=${SIZE:-224}
BATCH=${BATCH:-32}
ROUNDS=${ROUNDS:-3}
ONNX=${ONNX:?the exported model: convnet export --model M.safetensors --out M.onnx}
TORCH_PYTHON=${TORCH_PYTHON:-.venv-torch/bin/python}
TF_PYTHON=${TF_PYTHON:-.venv-tf/bin/python}
steps=$(( BATCH == 1 ? 40 : 6 ))
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round convnet: $(target/release/convnet bench --model "$MODEL" --image-size "$SIZE" --batch-size "$BATCH" --threads 2 --steps $steps --inference --json)"
  for runtime in ort openvino; do
    echo "round $round $runtime: $("$TORCH_PYTHON" "$REF/onnx_infer.py" "$ONNX" --runtime $runtime --batch "$BATCH" --steps $steps --threads 2 2>/dev/null | tr '\n' ' ')"
  done
  if [ "$BATCH" != 1 ]; then
    script=tf_baseline.py; [ "$MODEL" = resnet18 ] && script=tf_resnet.py
    echo "round $round tf: $(TF_ENABLE_ONEDNN_OPTS=1 "$TF_PYTHON" "$REF/$script" --mode infer --steps $steps 2>/dev/null | tail -2 | tr '\n' ' ')"
  fi
done
