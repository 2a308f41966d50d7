"""ONNX export (dynamo exporter, dynamic batch, `input` -> `logits`) and an ONNX Runtime runner."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rn50.errors import UserError, first_line, need
from rn50.export.runner import Runner, require, with_precision
from rn50.export.sidecar import sidecar_image_size, sidecar_max_batch

OPSET = 18  # >= 17; 18 is what the dynamo exporter targets natively (no version conversion pass)
BF16_OPSET = 22  # Conv, MaxPool and GlobalAveragePool take tensor(bfloat16) from opset 22 (onnx.defs.get_schema)
INPUT, OUTPUT = "input", "logits"


def default_opset(precision: str) -> int:
    return BF16_OPSET if precision == "bf16" else OPSET


def to_onnx_proto(model: nn.Module, precision: str, image_size: int, max_batch: int, opset: int | None = None):
    """The ModelProto of `model` with a dynamic batch axis in [1, max_batch] and a float32 interface."""
    require("onnx", "onnx")
    require("onnxscript", "onnx", "onnxscript (the dynamo ONNX exporter)")
    opset = opset or default_opset(precision)
    if precision == "bf16":
        # BN folded here in fp32: the exporter's own folding computes in numpy float32 and leaves float32 weights
        # in a bf16 graph, which onnx.checker rejects.
        from torch.fx.experimental.optimization import fuse

        model = fuse(model.eval())
    wrapped = with_precision(model, precision)
    # The example batch must not be 1: torch.export specialises size-1 dims; the range still starts at 1.
    example = torch.randn(2, 3, image_size, image_size)
    # Newer torch defaults to the dynamo exporter, whose batch stays fixed unless dynamic_shapes says otherwise.
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            (example,),
            None,
            input_names=[INPUT],
            output_names=[OUTPUT],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    proto = program.model_proto
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


def simplify_proto(proto):
    onnxsim = require("onnxsim", "onnx", "onnxsim (ONNX graph simplification)")
    simplified, ok = onnxsim.simplify(proto)
    need(bool(ok), "onnxsim could not validate the simplified graph; export again with --no-simplify")
    return simplified


def save_proto(proto, path: str | os.PathLike) -> None:
    """Check and save as one self-contained file (ResNet-50 is far below protobuf's 2 GiB limit)."""
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, os.fspath(path), save_as_external_data=False)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    precision: str = "fp32",
    image_size: int = 224,
    max_batch: int = 256,
    simplify: bool = False,
    opset: int | None = None,
) -> dict[str, Any]:
    opset = opset or default_opset(precision)
    proto = to_onnx_proto(model, precision, image_size, max_batch, opset)
    if simplify:
        proto = simplify_proto(proto)
    save_proto(proto, path)
    return {"opset": opset, "simplified": simplify, "nodes": len(proto.graph.node)}


PROVIDER_RANK = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def cuda_provider_available() -> bool:
    """Whether this ONNX Runtime has the CUDA execution provider (onnxruntime-gpu; the `onnx` extra's onnxruntime
    has the CPU one only)."""
    ort = require("onnxruntime", "onnx")
    return "CUDAExecutionProvider" in ort.get_available_providers()


def trt_weak_typing() -> bool:
    """Whether the TensorRT that ONNX Runtime's TensorRT provider loads is 10.x or older, where a network is weakly
    typed unless told otherwise and the provider's FP16/INT8 switches choose its kernels. TensorRT 11 removed weak
    typing with the builder flags behind those switches: the precision is the ONNX's own types and Q/DQ nodes."""
    from importlib import metadata

    try:
        return int(metadata.version("tensorrt").split(".")[0]) < 11
    except (metadata.PackageNotFoundError, ValueError):
        return True  # not known here: the 10.x switches are passed


def ort_providers(
    device: torch.device, precision: str = "fp32", sidecar: dict | None = None, trt_cache: str | None = None
) -> list:
    """Execution providers to ask for, best first. On a GPU: TensorRT's (when onnxruntime-gpu has it; one
    optimisation profile over the model's batch range, engines cached beside the model), then CUDA's, then the
    CPU's; ONNX Runtime falls back down this list for whatever a provider cannot take. Which ones actually ran is
    read back after loading (`OnnxRunner.node_providers`).

    fp32 is IEEE fp32: the CUDA provider gets use_tf32=0 (its default is 1), and TensorRT's provider, which builds
    with TF32 on and has no option to turn it off (microsoft/onnxruntime#28177), is not asked for. tf32 turns both on.
    """
    ort = require("onnxruntime", "onnx")
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if not cuda_provider_available():
        raise UserError(
            "this ONNX Runtime has no CUDA execution provider: "
            "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (or load with device='cpu')"
        )
    providers: list = []
    if "TensorrtExecutionProvider" in ort.get_available_providers() and precision != "fp32":
        sidecar = sidecar or {}
        size, max_batch = sidecar_image_size(sidecar) or 224, sidecar_max_batch(sidecar) or 256
        trt_options: dict[str, Any] = {
            "device_id": device.index or 0,
            "trt_profile_min_shapes": f"{INPUT}:1x3x{size}x{size}",
            "trt_profile_opt_shapes": f"{INPUT}:{max(1, max_batch // 2)}x3x{size}x{size}",
            "trt_profile_max_shapes": f"{INPUT}:{max_batch}x3x{size}x{size}",
        }
        if trt_weak_typing():
            # TensorRT 10.x: a weakly typed network runs fp16 layers and Q/DQ INT8 kernels only with these on.
            trt_options.update(trt_fp16_enable=precision == "fp16", trt_int8_enable=precision == "int8")
        if trt_cache:
            trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache))
        providers.append(("TensorrtExecutionProvider", trt_options))
    providers.append(("CUDAExecutionProvider", {"device_id": device.index or 0, "use_tf32": int(precision == "tf32")}))
    providers.append("CPUExecutionProvider")
    return providers


def providers_that_ran(session, feed: dict) -> dict[str, int]:
    """{execution provider: nodes it ran} for one profiled run of `session` (built with profiling enabled);
    ends the profiling, so later runs are not slowed by it."""
    import json

    session.run(None, feed)
    trace = session.end_profiling()
    try:
        events = json.loads(Path(trace).read_text())
    finally:
        Path(trace).unlink(missing_ok=True)
    ran: dict[str, set] = {}
    for event in events:
        provider = (event.get("args") or {}).get("provider")
        if event.get("cat") == "Node" and provider:
            ran.setdefault(provider, set()).add(event.get("name", "").removesuffix("_kernel_time"))
    return {
        p: len(nodes)
        for p, nodes in sorted(
            ran.items(), key=lambda kv: PROVIDER_RANK.index(kv[0]) if kv[0] in PROVIDER_RANK else len(PROVIDER_RANK)
        )
    }


def _remove_profiles(prefix: str) -> None:
    import glob

    for leftover in glob.glob(glob.escape(prefix) + "*.json"):
        Path(leftover).unlink(missing_ok=True)


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: str, precision: str, sidecar: dict, device: torch.device, threads: int | None = None):
        import tempfile

        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Profile the first run only, to read back which execution provider ran each node.
        options.enable_profiling = True
        prefix = os.path.join(tempfile.gettempdir(), f"rn50-ort-{os.getpid()}-{id(self)}")
        options.profile_file_prefix = prefix
        trt_cache = str(Path(path).with_name(Path(path).name + ".trt-cache"))  # used on a GPU only
        try:
            providers = ort_providers(device, precision, sidecar, trt_cache)
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable or invalid models
            _remove_profiles(prefix)  # a session that failed to load may have opened its profile file already
            raise UserError(f"ONNX Runtime cannot load {path}: {first_line(e)}") from None
        super().__init__(path, precision, sidecar, device, self.session.get_providers()[0])
        try:
            self._check_signature(path)
            outputs = self.session.get_outputs()
            self.output_name = outputs[0].name
            self.input_name = self.session.get_inputs()[0].name
            num_classes = outputs[0].shape[1]
            self.num_classes = int(num_classes) if isinstance(num_classes, int) else int(sidecar.get("num_classes", 0))
            shape = self.session.get_inputs()[0].shape
            size = shape[2] if isinstance(shape[2], int) else sidecar_image_size(sidecar) or 224
            import numpy as np

            self.node_providers = providers_that_ran(
                self.session, {self.input_name: np.zeros((1, 3, size, size), np.float32)}
            )
        except BaseException:
            # The session writes its profile when profiling ends (or when it is destroyed): end it here and delete
            # the file, so a model that fails these checks leaves nothing in the temp folder.
            with contextlib.suppress(Exception):
                Path(self.session.end_profiling()).unlink(missing_ok=True)
            _remove_profiles(prefix)
            raise
        # The provider that did the work: the most capable one that ran any node.
        self.provider = next(iter(self.node_providers), self.provider)
        # The CUDA path binds device memory; a session that ended up on the CPU alone takes host arrays.
        self._host = self.provider == "CPUExecutionProvider"

    def _check_signature(self, path: str) -> None:
        """One float image input [N, 3, H, W] and logits [N, classes] out, or one line saying what the model has."""

        def dims(shape) -> str:
            return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if inputs else []
        out_shape = outputs[0].shape if outputs else []
        if len(inputs) != 1 or len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3) or len(out_shape) != 2:
            have = ", ".join(f"input {i.name} of shape {dims(i.shape)}" for i in inputs) or "no inputs"
            raise UserError(
                f"{path} is not an image classifier rn50 can run: it takes {have} and gives "
                f"{dims(out_shape) if outputs else 'nothing'}; rn50 expects one input of shape [N, 3, H, W] (images) "
                "and logits [N, classes] (export one with `rn50 export`)"
            )

    def run(self, x: Tensor) -> Tensor:
        if self._host:
            # torch CPU tensor -> numpy is a view, no copy.
            return torch.from_numpy(self.session.run([self.output_name], {self.input_name: x.cpu().numpy()})[0]).to(
                self.device
            )
        # CUDA: bind the torch buffers directly so nothing goes through the host.
        import numpy as np

        out = torch.empty((x.shape[0], self.num_classes), dtype=torch.float32, device=x.device)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", x.device.index or 0, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", x.device.index or 0, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(x.device).synchronize()  # ORT runs on its own stream
        self.session.run_with_iobinding(binding)
        return out


def load_onnx(path: str | os.PathLike, device: torch.device, sidecar: dict, threads: int | None = None) -> OnnxRunner:
    return OnnxRunner(os.fspath(Path(path)), sidecar.get("precision", "fp32"), sidecar, device, threads=threads)
