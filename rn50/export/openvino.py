"""OpenVINO IR artifacts and their CPU runner.

The artifact is a folder, `model-fp32.ov/` holding `model.xml` + `model.bin` (sidecar `model-fp32.ov.json` beside
it): one rename publishes both files atomically, and the folder is what Triton's OpenVINO backend reads from a
version folder. It is converted from the ONNX model rn50 already exports and verifies (same graph, same tensor names):

- fp32: weights stored in fp32 (`save_model` stores fp16 unless `compress_to_fp16=False`) and run with
  INFERENCE_PRECISION_HINT=f32: OpenVINO's own default on a CPU with avx512_bf16 or AMX is bf16.
- bf16: the same IR run with the bf16 hint, refused on a CPU without native bf16 (OpenVINO would run f32).
- int8: `--quantizer nncf` (NNCF post-training quantisation of the fp32 IR, rn50.export.nncf_quant) or `ort` (the
  onnx format's verified CPU Q/DQ model, converted as is); float leftovers run f32.

The effective precision, streams, threads and the kernels OpenVINO chose (its execution graph's primitive types,
e.g. `brgconv_avx512_1x1_I8`) are read back from the compiled model into the sidecar and bench's tables.

Telemetry: `import openvino` itself sends a usage event and writes ~/intel/ unless a consent file says no; NNCF
sends its own. rn50 imports both only through `openvino()`, which hides the `openvino_telemetry` package from the
process first: both libraries then use their built-in no-op stubs (their path when it is not installed). Nothing
is sent, nothing is written, no consent file is needed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rn50.errors import UserError, first_line, need
from rn50.export.runner import Runner, require

if TYPE_CHECKING:
    from rn50.export.formats import ExportOptions

XML, BIN = "model.xml", "model.bin"
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: what is not quantised runs f32
QUANTIZERS = ("nncf", "ort")  # the first is the default: see README, "OpenVINO"
MODES = ("latency", "throughput")
_CORE: Any = None


def openvino() -> Any:
    """`import openvino`, with OpenVINO's and NNCF's telemetry off (see the module docstring)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: importing it raises ImportError
    return require("openvino", "openvino")


def core() -> Any:
    global _CORE
    if _CORE is None:
        _CORE = openvino().Core()
    return _CORE


def model_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(model.xml, model.bin) of an artifact folder, or of an .xml file and the .bin beside it."""
    path = Path(path)
    xml = path / XML if path.is_dir() else path
    return xml, xml.with_suffix(".bin")


def _quantizer(opts: ExportOptions) -> str:
    """The INT8 quantiser `opts` asks for, every option checked before any work (one line each)."""
    quantizer = opts.extra.get("quantizer") or QUANTIZERS[0]
    need(quantizer in QUANTIZERS, f"unknown --quantizer {quantizer!r}; valid: {', '.join(QUANTIZERS)}")
    need(opts.precision == "int8" or not opts.extra.get("quantizer"), "--quantizer applies to --precision int8 only")
    if opts.precision == "int8" and quantizer == "nncf":
        require("nncf", "openvino-quant", "nncf (the NNCF quantizer)")
        if opts.calib_method != "minmax":
            raise UserError(
                f"--calib-method {opts.calib_method} is an ONNX Runtime calibrator: use --quantizer ort, or leave "
                "--calib-method out (NNCF uses its own range estimators)"
            )
    if opts.precision == "bf16" and "BF16" not in cpu_capabilities():
        raise UserError(
            "bf16: this CPU has no native bf16 (OpenVINO lists "
            f"{', '.join(cpu_capabilities())}), so OpenVINO would quietly run f32; export fp32 or int8"
        )
    return quantizer


def export(model: nn.Module, path: str | os.PathLike, opts: ExportOptions) -> dict[str, Any]:
    """The openvino format's exporter: the IR folder at `path`, converted from rn50's verified ONNX export."""
    from rn50.export.quant import export as export_onnx_format

    ov = openvino()  # before any work: a missing extra is one line, not a failure after the ONNX export
    quantizer = _quantizer(opts)
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rn50-ov-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        if opts.precision == "int8" and quantizer == "ort":
            onnx_opts = replace(opts, precision="int8", int8_target="cpu")
        else:
            onnx_opts = replace(opts, precision="fp32")
        details["onnx"] = export_onnx_format(model, onnx_path, onnx_opts)
        ir = core().read_model(os.fspath(onnx_path))
        if opts.precision == "int8" and quantizer == "nncf":
            from rn50.export.nncf_quant import quantize

            ir, details["quantization"] = quantize(ir, opts)
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        ov.save_model(ir, os.fspath(folder / XML), compress_to_fp16=False)
    from rn50.env import cpu_flags, cpu_model, cpu_signature
    from rn50.export.sidecar import sha256_file

    runner = OpenVinoRunner(folder, opts.precision or "fp32", {}, torch.device("cpu"))
    if opts.precision == "int8" and not runner.int8_convolutions:
        raise UserError(
            f"OpenVINO runs no convolution in INT8 on this CPU ({runner.kernels.get('Convolution')}); "
            "use --format onnx --precision int8"
        )
    details["openvino"] = {
        "version": ov.get_version(),
        "files": {f.name: sha256_file(f) for f in model_files(folder)},
        "weights": "fp32 (compress_to_fp16=False)",
        "quantizer": quantizer if opts.precision == "int8" else None,
        # The kernels below are this CPU's: OpenVINO picks them by its instruction set at compile time.
        "cpu": {"model": cpu_model(), "signature": cpu_signature(), "flags": cpu_flags()},
        **runner.compiled_info(),
    }
    return details


def cpu_capabilities() -> list[str]:
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def kernel_counts(compiled: Any) -> dict[str, dict[str, int]]:
    """{layer type: {primitive: count}} of the convolutions and fully connected layers in the execution graph
    OpenVINO built: which kernels (ISA and precision) it chose, e.g. brgconv_avx512_1x1_I8."""
    counts: dict[str, Counter[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in ("Convolution", "FullyConnected", "MatMul"):
            counts.setdefault(layer, Counter())[info["primitiveType"].astype(str)] += 1
    return {layer: dict(sorted(c.items())) for layer, c in sorted(counts.items())}


class OpenVinoRunner(Runner):
    """An IR compiled for the CPU. latency mode: one stream, one infer request, all threads (LATENCY hint);
    throughput mode: the THROUGHPUT hint's streams, as many requests as the compiled model's optimal number
    (AsyncInferQueue), each batch split across them."""

    format = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        precision: str,
        sidecar: dict[str, Any],
        device: torch.device,
        threads: int | None = None,
        mode: str = "latency",
    ) -> None:
        if device.type != "cpu":
            raise UserError("OpenVINO artifacts run on the CPU (its GPU plugin is for Intel GPUs): use device cpu")
        if mode not in MODES:
            raise ValueError(f"unknown OpenVINO mode {mode!r}; valid: {', '.join(MODES)}")
        need(precision in HINTS, f"{path}: unsupported OpenVINO precision {precision!r}; valid: {', '.join(HINTS)}")
        self.xml, self.bin = model_files(path)
        self.hint, self.mode, self.threads = HINTS[precision], mode, threads
        self.model = read_ir(self.xml, self.bin, (sidecar.get("export") or {}).get("openvino", {}).get("files"))
        super().__init__(os.fspath(path), precision, sidecar, device, "")
        self.compile()

    def compile(self) -> None:
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": self.mode.upper()}
        if self.mode == "latency":
            config["NUM_STREAMS"] = 1
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            self.compiled = core().compile_model(self.model, "CPU", config)
        except RuntimeError as e:
            raise UserError(f"OpenVINO cannot compile {self.path}: {first_line(e, 300)}") from None
        get = self.compiled.get_property
        self.inference_precision = str(get("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")
        if self.inference_precision != {"f32": "float32", "bf16": "bfloat16"}[self.hint]:
            raise UserError(
                f"OpenVINO compiled {self.path} in {self.inference_precision}, not {self.hint} as asked; use fp32"
            )
        self.streams, self.requests = int(get("NUM_STREAMS")), int(get("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.num_threads, self.pinning = int(get("INFERENCE_NUM_THREADS")), bool(get("ENABLE_CPU_PINNING"))
        self.kernels = kernel_counts(self.compiled)
        self._request = self.compiled.create_infer_request()
        self._queue = None
        if self.mode == "throughput":
            self._queue = openvino().AsyncInferQueue(self.compiled, self.requests)
            self._queue.set_callback(self._collect)
        self._outputs: dict[int, Any] = {}
        self.provider = (
            f"OpenVINO CPU, {self.mode}: {self.streams} stream(s), {self.requests if self._queue else 1} "
            f"request(s), {self.num_threads} threads, float layers {self.inference_precision}"
        )

    @property
    def int8_convolutions(self) -> int:
        return sum(n for k, n in self.kernels.get("Convolution", {}).items() if k.endswith("_I8"))

    def compiled_info(self) -> dict[str, Any]:
        """What the compiled model really does, for the sidecar and bench's series."""
        return {
            "inference_precision_hint": self.hint,
            "inference_precision": self.inference_precision,
            "mode": self.mode,
            "streams": self.streams,
            "infer_requests": self.requests if self._queue else 1,
            "threads": self.num_threads,
            "cpu_pinning": self.pinning,
            "int8_convolutions": self.int8_convolutions,
            "kernels": self.kernels,
            "device": core().get_property("CPU", "FULL_DEVICE_NAME"),
            "runtime_requirements": self.compiled.get_property("RUNTIME_REQUIREMENTS"),
        }

    @property
    def bench_info(self) -> dict[str, Any]:
        info = self.compiled_info()
        keys = ("inference_precision", "mode", "streams", "infer_requests", "threads", "cpu_pinning")
        kernels = ", ".join(f"{k} x{n}" for layer in info["kernels"].values() for k, n in layer.items())
        return {**{f"ov_{k}": info[k] for k in keys}, "ov_kernels": kernels}

    def _collect(self, request: Any, index: int) -> None:
        self._outputs[index] = request.get_output_tensor(0).data.copy()

    def run(self, x: Tensor) -> Tensor:
        if self._queue is None or x.shape[0] == 1:
            self._request.infer({0: x.numpy()}, share_inputs=True)
            # The request reuses its output buffer: copy before the next call overwrites it.
            return torch.from_numpy(self._request.get_output_tensor(0).data.copy())
        chunks = torch.tensor_split(x, min(self.requests, x.shape[0]))
        self._outputs.clear()
        for i, chunk in enumerate(chunks):
            self._queue.start_async({0: chunk.numpy()}, i, share_inputs=True)
        self._queue.wait_all()
        return torch.from_numpy(np.concatenate([self._outputs[i] for i in range(len(chunks))]))


def read_ir(xml: Path, bin_path: Path, hashes: dict[str, str] | None = None) -> Any:
    """The IR model, or one line saying what is wrong with its files."""
    import xml.etree.ElementTree as ET

    for f in (xml, bin_path):
        need(f.is_file(), f"OpenVINO IR file missing: {f} (an IR is model.xml + model.bin; re-export it)")
    try:  # checked here: OpenVINO hands a file no frontend claims to all of them, and TensorFlow's logs to stderr
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise UserError(f"{xml} is not a readable OpenVINO IR ({e}); re-export it") from None
    need(root.tag == "net", f"{xml} is not an OpenVINO IR (its root element is <{root.tag}>, not <net>); re-export it")
    if hashes:
        from rn50.export.sidecar import sha256_file

        for f in (xml, bin_path):
            if f.name in hashes and sha256_file(f) != hashes[f.name]:
                raise UserError(f"{f} does not match the sha256 its sidecar records (corrupt or replaced); re-export")
    try:
        model = core().read_model(os.fspath(xml), os.fspath(bin_path))
    except RuntimeError as e:
        reason = next((line for line in str(e).splitlines()[::-1] if line.strip()), str(e))
        raise UserError(f"OpenVINO cannot read {xml}: {reason.strip()}; re-export it") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1 or model.inputs[0].get_partial_shape().rank.get_length() != 4:
        raise UserError(
            f"{xml} is not an image classifier rn50 can run: rn50 expects one input [N, 3, H, W] and logits out"
        )
    return model


def load_openvino(
    path: str | os.PathLike, device: torch.device, sidecar: dict, threads: int | None = None, mode: str = "latency"
) -> OpenVinoRunner:
    return OpenVinoRunner(path, sidecar.get("precision", "fp32"), sidecar, device, threads=threads, mode=mode)
