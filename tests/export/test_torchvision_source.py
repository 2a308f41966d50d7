"""Exports from a plain torchvision state_dict match torchvision's own model (an outside reference)."""

from __future__ import annotations

import json

import pytest
import torch

from rn50.export import export_model, load_artifact
from rn50.export.sidecar import sha256_file
from tests.export.conftest import MAX_BATCH, SIZE


def torchvision_logits(path, x):
    import torchvision

    model = torchvision.models.resnet50(weights=None, num_classes=10)
    model.load_state_dict(torch.load(path, weights_only=True))
    with torch.inference_mode():
        return model.eval()(x)


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    # AOTInductor is proven from the tiny checkpoint too; its second compile (~30 s idle) is marked slow.
    [("onnx", ".onnx"), ("torchscript", ".ts"), pytest.param("aoti", ".pt2", marks=pytest.mark.slow)],
)
def test_torchvision_state_dict_exports_match_torchvision(fmt, suffix, torchvision_checkpoint, sample_dir, tmp_path):
    out = tmp_path / f"tv{suffix}"
    result = export_model(
        torchvision_checkpoint, fmt, out, image_size=SIZE, max_batch=MAX_BATCH, images_dir=sample_dir / "val"
    )
    assert result.path == out and out.exists()
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["source_sha256"] == sha256_file(torchvision_checkpoint) and meta["recipe"] is None
    assert meta["parity"]["passed"]
    runner = load_artifact(out)
    for batch in (1, 7):
        x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        ref = torchvision_logits(torchvision_checkpoint, x)
        got = runner(x)
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4
        assert torch.equal(got.argmax(1), ref.argmax(1))
