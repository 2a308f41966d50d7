# GPU image for rn50. UNVERIFIED: the development machines have no Docker engine (and no GPU); it was never built.
#
# NGC PyTorch 26.05: torch 2.12.0a0 (its nv26.05 build, CUDA 13.2) and TensorRT 10.16, as public builds on that tag
# report them. That torch satisfies pyproject.toml's torch>=2.11,<2.15 (26.02's 2.11.0a0 is a pre-release of 2.11,
# below the pin; 25.10, the tag before this one, ships 2.9) and that TensorRT takes the opset-22 ONNX of bf16 engines
# (10.15 or later). Its torchvision and DALI versions were not found in any public source: the pin check at the end
# of the build stops it, naming the package, if they do not satisfy pyproject.toml.
FROM nvcr.io/nvidia/pytorch:26.05-py3
WORKDIR /opt/rn50
COPY pyproject.toml README.md ./
COPY rn50 ./rn50
COPY docker/check_pins.py ./docker/
# --no-deps where a pip resolve would replace NGC's own builds (rn50 itself: torch, torchvision, DALI, TensorRT) or
# pull the CUDA 12 onnxruntime-gpu from PyPI; `pip check` and check_pins.py then prove nothing is missing or off its
# pin. onnxruntime-gpu for CUDA 13 comes from ONNX Runtime's own feed (microsoft/onnxruntime#27944): its CUDA and
# TensorRT providers run the onnxruntime backend and INT8 needs its quantize_static. scikit-learn makes the built-in
# sample (default parity and calibration images); tritonclient[grpc] writes Triton model repositories. TorchCodec's
# wheel is built for a released torch: if it cannot load with NGC's, rn50 decodes with torchvision.io instead.
RUN pip install --no-cache-dir --no-deps -e . \
 && pip install --no-cache-dir "typer>=0.12" "rich>=13" "numpy>=1.24" "pillow>=10" "matplotlib>=3.7" \
      "onnx>=1.16" "onnxscript>=0.2" "onnxsim>=0.4" "scikit-learn>=1.3" "tritonclient[grpc]>=2.40" "protobuf>=4" \
      coloredlogs flatbuffers packaging sympy \
 && pip install --no-cache-dir --no-deps "torchcodec>=0.16" \
 && pip install --no-cache-dir --no-deps --pre \
      --index-url https://aiinfra.pkgs.visualstudio.com/PublicPackages/_packaging/onnxruntime-cuda-13/pypi/simple/ \
      onnxruntime-gpu \
 && pip check \
 && python docker/check_pins.py dali trt onnx sample triton
ENTRYPOINT ["rn50"]
