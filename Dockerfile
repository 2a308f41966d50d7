# GPU image for rn50. Unverified here: this machine has no Docker engine. NGC PyTorch ships torch, DALI and TensorRT.
FROM nvcr.io/nvidia/pytorch:25.10-py3
WORKDIR /opt/rn50
COPY pyproject.toml README.md ./
COPY rn50 ./rn50
# --no-deps for torch/DALI/TensorRT: keep the container's own builds; install only what NGC lacks.
RUN pip install --no-cache-dir --no-deps -e . \
 && pip install --no-cache-dir "typer>=0.12" "rich>=13" "onnx>=1.16" "onnxscript>=0.2" "tritonclient>=2.40"
ENTRYPOINT ["rn50"]
