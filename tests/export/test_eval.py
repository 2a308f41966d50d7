"""`rn50 eval`: accuracy of checkpoints and exported artifacts on labelled images, beside their fp32 source."""

import json

import pytest
import torch

from rn50.data.loaders import make_loader
from rn50.recipes import get_recipe
from rn50.train.loop import evaluate
from rn50.weights import load_model
from tests.conftest import run_cli
from tests.export.conftest import SIZE


def eval_json(*args):
    res = run_cli(["eval", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_checkpoint_accuracy_matches_the_trainers_evaluation(tiny_checkpoint, sample_dir):
    r = eval_json(tiny_checkpoint, sample_dir, "--image-size", SIZE)
    assert r["images"] == 360 and r["split"] == "val" and len(r["rows"]) == 1
    # The trainer's own evaluate() (rn50 train --evaluate) on the same folder counts the same hits.
    recipe = get_recipe("sample-cpu").replace(image_size=SIZE, batch_size=32, memory_format="contiguous")
    loader = make_loader(sample_dir, "val", recipe, "pytorch", "cpu", workers=0)
    ref = evaluate(load_model(tiny_checkpoint), loader, torch.device("cpu"))
    assert ref["images"] == 360
    assert r["rows"][0]["top1"] == pytest.approx(ref["top1"], abs=1e-6)
    assert r["rows"][0]["top5"] == pytest.approx(ref["top5"], abs=1e-6)
    assert r["rows"][0]["top5"] >= r["rows"][0]["top1"] and r["rows"][0]["img_s"] > 0


def test_artifact_is_compared_with_its_source_checkpoint(onnx_fp32, onnx_int8, tiny_checkpoint, sample_dir):
    fp32 = eval_json(onnx_fp32, sample_dir)  # size and reference come from the sidecar
    assert fp32["image_size"] == SIZE
    model, ref = fp32["rows"]
    assert (model["format"], model["precision"], ref["format"]) == ("onnx", "fp32", "checkpoint")
    assert model["math"] == ref["math"] == "IEEE fp32 (TF32 off)"  # the precision vocabulary of export and bench
    assert ref["path"] == str(tiny_checkpoint.resolve())
    assert fp32["top1_agreement"] >= 0.995 and abs(fp32["top1_delta"]) <= 0.5  # the same function
    int8 = eval_json(onnx_int8, sample_dir / "val")  # a val/ folder itself works too
    assert int8["rows"][0]["precision"] == "int8" and int8["images"] == 360
    assert int8["rows"][1]["top1"] == ref["top1"]  # the same reference, the same images
    assert 0.9 <= int8["top1_agreement"] <= 1.0
    assert int8["top1_delta"] == pytest.approx(int8["rows"][0]["top1"] - ref["top1"])


def test_table_output(onnx_fp32, sample_dir):
    res = run_cli(["eval", onnx_fp32, sample_dir, "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "top-1 agreement with the reference" in res.stdout and "| model | onnx | fp32 |" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["{ckpt}", "/no/such/folder"], "data folder not found"),
        (["/no/such/model.onnx", "{data}"], "model not found"),
        (["{ckpt}", "{data}/val/digit0"], "no val/ folder"),
        (["{onnx}", "{data}", "--image-size", "96"], "takes 64 px images"),
        (["{onnx}", "{data}", "--reference", "/no/ref.pth"], "--reference"),
        (["{ckpt}", "{data}", "--batch", "0"], "batch"),
    ],
)
def test_bad_input_is_one_line(args, message, tiny_checkpoint, onnx_fp32, sample_dir):
    subs = {"ckpt": tiny_checkpoint, "onnx": onnx_fp32, "data": sample_dir}
    res = run_cli(["eval", *(a.format(**subs) for a in args)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
