"""One small class per inference backend: eager, compile, torchscript, onnxruntime, tensorrt, aoti.

Each runtime turns an in-memory model (or a loaded artifact) into a zero-argument `step` per batch size that runs
one forward pass on an input already on the device. Compile, export and engine-build time is measured in `build()`
and `step_for()` (the first call at a new shape) and reported apart from the timed loop. Exported formats go only
through `rn50.export.export_model` / `load_artifact`: this module never re-implements an exporter or a loader.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rn50.env import synchronize
from rn50.errors import UserError
from rn50.export.formats import artifact_formats, get_format
from rn50.export.runner import DTYPES, math_mode
from rn50.export.sidecar import sidecar_max_batch

# Artifact backends are the export formats' runtimes (rn50.export.formats): onnxruntime, torchscript, aoti, tensorrt.
ARTIFACT_BACKENDS = tuple(f.runtime for f in artifact_formats())
# Another way to run one format's artifact: (its runtime, the loader's options).
VARIANTS = {"openvino-throughput": ("openvino", {"mode": "throughput"})}
RUNTIMES = ("eager", "compile", *ARTIFACT_BACKENDS, *VARIANTS)  # what `bench infer --backend` takes
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


class Skip(Exception):
    """This backend/precision/device combination cannot run here; the message says why."""


@dataclass
class Options:
    device: str = "cpu"
    image_size: int = 224
    max_batch: int = 256
    channels_last: bool = True
    cuda_graphs: bool = False
    include_h2d: bool = False
    compile_dynamic: bool = True
    workdir: Path = Path(".")
    calib_dir: Path | None = None
    images_dir: Path | None = None  # real images for the export's parity check (None: the built-in sample)
    verify: bool = True  # exports prove parity with eager PyTorch before they are timed
    threads: int | None = None  # CPU threads for ONNX Runtime (torch's are set by the caller)
    num_classes: int = 1000

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class Runtime:
    """Base: subclasses set `name`, implement `check`, `build` and `forward`."""

    model: nn.Module | None
    precision: str
    opts: Options
    build_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "base"
    graphs_supported: bool = False

    # -- what a subclass provides
    def check(self) -> None:
        """Raise Skip(reason) when this combination cannot run here (before any expensive work)."""

    def build(self) -> None:
        """Compile/export/load; time it into self.build_s."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # -- shared
    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def input_channels_last(self) -> bool:
        return False

    @property
    def layout(self) -> str:
        return "nhwc" if self.input_channels_last else "nchw"

    def make_input(self, batch: int, seed: int = 0) -> Tensor:
        """Random normal input (never zeros: they can run faster than real data), in the runtime's dtype/layout,
        on the device; pinned on the host instead when the host-to-device copy is part of what is timed."""
        # Drawn on the device itself: a batch that does not fit there fails here, inside the sweep's OOM handling.
        device = "cpu" if self.opts.include_h2d else self.opts.device
        g = torch.Generator(device=device).manual_seed(seed)
        size = (batch, 3, self.opts.image_size, self.opts.image_size)
        x = torch.randn(size, generator=g, device=device).to(self.input_dtype)
        if self.input_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.pin_memory() if self.opts.include_h2d else x

    def step_for(self, batch: int) -> tuple[Callable[[], Any], float]:
        """A zero-argument step running one batch, and the seconds its first call took (compile at a new shape,
        CUDA-graph capture): that first call is build time, never part of the timed samples."""
        x = self.make_input(batch)
        device = self.opts.device
        if self.opts.include_h2d:

            def step() -> Any:
                return self.forward(x.to(device, non_blocking=True))

        else:

            def step() -> Any:
                return self.forward(x)

        t0 = time.perf_counter()
        with torch.no_grad():
            step()
        synchronize(self.opts.device)
        return step, time.perf_counter() - t0

    def infer(self, x: Tensor) -> Tensor:
        """Float32 NCHW images -> float32 logits (for top-1 agreement), any batch up to max_batch."""
        x = x.to(self.opts.device).to(self.input_dtype)
        if self.input_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.forward(x).float().cpu()


class EagerRuntime(Runtime):
    def __init__(self, model: nn.Module, precision: str, opts: Options) -> None:
        super().__init__(model, precision, opts, name="eager", graphs_supported=True)
        self.module: nn.Module | None = None
        self._graphs: dict[int, Any] = {}

    def check(self) -> None:
        _check_torch_precision(self.precision, self.opts)

    @property
    def input_dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @property
    def input_channels_last(self) -> bool:
        return self.opts.channels_last

    def _prepared_module(self) -> nn.Module:
        assert self.model is not None
        fmt = torch.channels_last if self.opts.channels_last else torch.contiguous_format
        module = copy.deepcopy(self.model).eval()
        return module.to(device=self.opts.device, dtype=DTYPES[self.precision], memory_format=fmt)

    def build(self) -> None:
        t0 = time.perf_counter()
        self.module = self._prepared_module()
        synchronize(self.opts.device)
        self.build_s = time.perf_counter() - t0

    def forward(self, x: Tensor) -> Tensor:
        assert self.module is not None
        return self.module(x)

    def step_for(self, batch: int) -> tuple[Callable[[], Any], float]:
        if not (self.opts.cuda_graphs and self.opts.cuda):
            return super().step_for(batch)
        # Capture one forward pass into a CUDA graph (after a side-stream warmup, as the CUDA docs require) and
        # time its replays: the launch overhead per kernel disappears.
        t0 = time.perf_counter()
        static_in = self.make_input(batch)
        if self.opts.include_h2d:
            host, static_in = static_in, static_in.to(self.opts.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(3):
                self.forward(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            static_out = self.forward(static_in)
        self._graphs = {batch: (graph, static_in, static_out)}  # one at a time: each holds a memory pool
        synchronize(self.opts.device)
        capture_s = time.perf_counter() - t0

        if self.opts.include_h2d:

            def step() -> Any:
                static_in.copy_(host, non_blocking=True)
                graph.replay()
                return static_out

        else:

            def step() -> Any:
                graph.replay()
                return static_out

        return step, capture_s


STATIC_GRAPHS = 64  # --compile-static: graphs dynamo may keep per frame (9 batch sizes x 5 precisions fit)


class CompileRuntime(EagerRuntime):
    """torch.compile (Inductor) with weight freezing; `reduce-overhead` mode (CUDA graphs) with --cuda-graphs."""

    def __init__(self, model: nn.Module, precision: str, opts: Options) -> None:
        super().__init__(model, precision, opts)
        self.name = "compile"
        self._base: nn.Module | None = None

    def _compile(self) -> nn.Module:
        assert self._base is not None
        # freezing folds BN into the convs and treats weights as constants: the inference setting of PyTorch's
        # own benchmarks. triton.cudagraphs is what mode="reduce-overhead" sets (mode and options exclude each
        # other). dynamic=None: the first size compiles static, a second size recompiles once with a symbolic
        # batch that serves every later size (--compile-static compiles every size on its own, and keeps them all).
        options: dict[str, Any] = {"freezing": True}
        if self.opts.cuda_graphs and self.opts.cuda:
            options["triton.cudagraphs"] = True
        dynamic = None if self.opts.compile_dynamic else False
        return torch.compile(self._base, dynamic=dynamic, options=options)

    def build(self) -> None:
        t0 = time.perf_counter()
        torch._dynamo.reset()
        if not self.opts.compile_dynamic:
            # One static graph per batch size and series, all kept: a reset between sizes (or series) would throw
            # away the graphs of the series timed next, which would then recompile inside their timed rounds.
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, STATIC_GRAPHS)
        self._base = self._prepared_module()
        self.module = self._compile()
        self.build_s = time.perf_counter() - t0

    def step_for(self, batch: int) -> tuple[Callable[[], Any], float]:
        step, first_s = Runtime.step_for(self, batch)
        if self.opts.cuda_graphs and self.opts.cuda:
            # cudagraph trees record on the 2nd/3rd call at a new shape: count those as build time too.
            t0 = time.perf_counter()
            with torch.no_grad():
                step()
                step()
            synchronize(self.opts.device)
            first_s += time.perf_counter() - t0
        return step, first_s


def _check_torch_precision(precision: str, opts: Options) -> None:
    if precision == "int8":
        raise Skip("int8 runs as an exported model: use --backend onnxruntime or openvino (or tensorrt on a GPU)")
    if precision == "tf32" and not opts.cuda:
        raise Skip("tf32 is a CUDA math mode (Ampere or newer); on CPU fp32 is the full-precision setting")


class ArtifactRuntime(Runtime):
    """An artifact from rn50.export (exported here from the model, or given by the user), run by its own loader."""

    def __init__(
        self, model: nn.Module | None, precision: str, opts: Options, backend: str, artifact: Path | None = None
    ) -> None:
        super().__init__(model, precision, opts, name=backend, graphs_supported=False)
        self.artifact = artifact
        self.runner: Any = None
        self.runtime, self.load_options = VARIANTS.get(backend, (backend, {}))

    def check(self) -> None:
        if importlib.util.find_spec("rn50.export") is None:
            raise Skip("rn50.export is not available in this install")
        if self.artifact is not None:
            return
        fmt = get_format(self.runtime)
        if self.precision == "int8" and "int8" not in fmt.precisions:
            int8 = " or ".join(f.runtime for f in artifact_formats() if "int8" in f.precisions)
            raise Skip(f"int8 exists only as the Q/DQ ONNX model: use --backend {int8}")
        if self.precision == "tf32" and not self.opts.cuda:
            raise Skip("tf32 is a CUDA math mode (Ampere or newer); on CPU fp32 is the full-precision setting")
        if self.name == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            raise Skip("onnxruntime is not installed: pip install 'rn50[onnx]' (onnxruntime-gpu on a GPU machine)")
        if self.runtime == "openvino" and importlib.util.find_spec("openvino") is None:
            raise Skip("openvino is not installed: pip install 'rn50[openvino]' (NNCF int8: 'rn50[openvino-quant]')")
        if self.runtime == "openvino" and self.opts.cuda:
            raise Skip("OpenVINO runs on the CPU here (its GPU plugin is for Intel GPUs): use --device cpu")
        if fmt.needs_cuda and not self.opts.cuda:
            raise Skip(f"{self.name} needs an NVIDIA GPU (--device cuda)")
        if self.name == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
            raise Skip("tensorrt is not installed: pip install 'rn50[trt]'")
        if self.name == "aoti" and self.opts.cuda and not torch.cuda.is_available():
            raise Skip("CUDA is not available")

    def build(self) -> None:
        from rn50 import export

        t0 = time.perf_counter()
        path = self.artifact
        if path is None:
            fmt = get_format(self.runtime)
            out = self.opts.workdir / f"{self.name}-{self.precision}{fmt.suffix}"
            keys = ("device", "max_batch", "image_size", "verify", "images_dir", "calib_dir")
            kwargs = {k: getattr(self.opts, k) for k in keys}
            # The export proves parity with eager PyTorch on real images and refuses an artifact that fails it:
            # such a combination is reported as skipped with the export's reason, never timed.
            try:
                result = export.export_model(self.model, fmt.name, out, precision=self.precision, force=True, **kwargs)
            except UserError as e:
                raise Skip(str(e)) from None
            path = Path(result.path)
            self.info["export_s"] = round(time.perf_counter() - t0, 3)
            parity = (result.sidecar or {}).get("parity")
            if parity:
                self.info["parity"] = {k: v for k, v in parity.items() if isinstance(v, int | float | str | bool)}
        t1 = time.perf_counter()
        try:
            self.runner = export.load_artifact(path, self.opts.device, threads=self.opts.threads, **self.load_options)
        except UserError as e:
            if self.artifact is not None:
                raise  # the user's own file: bad input, one line
            raise Skip(str(e)) from None
        self.info["load_s"] = round(time.perf_counter() - t1, 3)
        self.info["artifact"] = str(path)
        sidecar = getattr(self.runner, "sidecar", None) or {}
        max_batch = sidecar_max_batch(sidecar)
        if max_batch:
            self.info["max_batch"] = max_batch
        profile = ((sidecar.get("export") or {}).get("engine") or {}).get("optimization_profile")
        if profile:  # TensorRT tunes its kernels for `opt`; other batch sizes run those kernels
            self.info["trt_profile"] = f"{profile['min']}/{profile['opt']}/{profile['max']}"
        for attr in ("format", "precision", "provider"):
            value = getattr(self.runner, attr, None)
            if value is not None:
                self.info[attr] = value if isinstance(value, str | int | float) else str(value)
        ran = getattr(self.runner, "node_providers", None)
        if ran:  # ONNX Runtime: which execution providers ran how many nodes (read back from a profiled run)
            self.info["node_providers"] = ", ".join(f"{p}: {n}" for p, n in ran.items())
        self.info.update(getattr(self.runner, "bench_info", None) or {})  # OpenVINO: streams, threads, kernels
        self.build_s = time.perf_counter() - t0

    def forward(self, x: Tensor) -> Tensor:
        # Runner.run: the zero-copy path (float32, contiguous, on the runner's device), which make_input provides.
        with math_mode(self.precision, self.opts.cuda):
            return self.runner.run(x)

    def infer(self, x: Tensor) -> Tensor:
        with math_mode(self.precision, self.opts.cuda), torch.no_grad():
            return self.runner(x).float().cpu()


def make_runtime(
    backend: str, model: nn.Module | None, precision: str, opts: Options, artifact: Path | None = None
) -> Runtime:
    if artifact is not None:
        return ArtifactRuntime(None, precision, opts, backend, artifact=artifact)
    if backend == "eager":
        assert model is not None
        return EagerRuntime(model, precision, opts)
    if backend == "compile":
        assert model is not None
        return CompileRuntime(model, precision, opts)
    if backend in ARTIFACT_BACKENDS or backend in VARIANTS:
        return ArtifactRuntime(model, precision, opts, backend, artifact=artifact)
    raise UserError(f"unknown backend {backend!r}; choose from {', '.join(RUNTIMES)}")


def is_oom(exc: BaseException) -> bool:
    """CUDA out-of-memory from torch, ONNX Runtime or TensorRT (each words it differently)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "failed to allocate memory", "cudaerrormemoryallocation"))
