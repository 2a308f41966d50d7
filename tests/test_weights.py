import pickle

import pytest
import torch
import torchvision

from rn50.errors import UserError
from rn50.model import resnet50
from rn50.weights import load_model, load_weights, save_weights


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return resnet50(num_classes=10).eval()


def same_outputs(a, b):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item() <= 1e-6


def test_torchvision_state_dict(tmp_path):
    tv = torchvision.models.resnet50().eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    m = load_model(tmp_path / "tv.pth")
    assert m.fc.out_features == 1000
    assert same_outputs(m, tv)


def test_rn50_checkpoint_roundtrip(tmp_path, reference):
    save_weights(tmp_path / "ours.pth", reference, recipe={"name": "sample-cpu"})
    assert same_outputs(load_model(tmp_path / "ours.pth", num_classes=10), reference)


def test_nvidia_layout_with_module_prefix_and_layers_names(tmp_path, reference):
    def nvidia_name(k):
        for i in range(4):
            k = k.replace(f"layer{i + 1}.", f"layers.{i}.")
        return "module." + k

    sd = {nvidia_name(k): v for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    assert any(k.startswith("module.layers.3.") for k in sd)
    torch.save({"state_dict": sd, "epoch": 90, "best_prec1": 77.2}, tmp_path / "ngc.pth.tar")
    assert same_outputs(load_model(tmp_path / "ngc.pth.tar"), reference)


def test_ema_weights(tmp_path, reference):
    other = resnet50(num_classes=10)
    torch.save({"state_dict": other.state_dict(), "state_dict_ema": reference.state_dict()}, tmp_path / "e.pth")
    assert same_outputs(load_model(tmp_path / "e.pth", ema=True), reference)
    assert same_outputs(load_model(tmp_path / "e.pth"), other)
    torch.save(reference.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(UserError, match="EMA"):
        load_weights(tmp_path / "plain.pth", ema=True)


def test_bad_inputs_give_one_line(tmp_path, reference):
    cases = {}
    cases["missing"] = tmp_path / "nope.pth"
    good = tmp_path / "good.pth"
    torch.save(reference.state_dict(), good)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = truncated
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    cases["garbage"] = garbage

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    torch.save({"model": Evil()}, tmp_path / "evil_zip.pth")
    cases["evil"] = evil
    cases["evil_zip"] = tmp_path / "evil_zip.pth"

    messages = {}
    for name, path in cases.items():
        with pytest.raises(UserError) as exc:
            load_weights(path)
        messages[name] = str(exc.value)
        assert "\n" not in messages[name]
    assert "not found" in messages["missing"]
    assert "truncated" in messages["truncated"] or "corrupt" in messages["truncated"]
    assert "arbitrary code" in messages["evil_zip"]


def test_wrong_architecture_and_classes(tmp_path, reference):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="missing keys|shape mismatch"):
        load_weights(tmp_path / "r18.pth")
    torch.save(reference.state_dict(), tmp_path / "ten.pth")
    with pytest.raises(UserError, match="10 classes.*1000"):
        load_weights(tmp_path / "ten.pth", num_classes=1000)


def test_tiny_checkpoint_fixture_learned_something(tiny_checkpoint, sample_dir):
    from rn50.data.transforms import load_labeled_images

    model = load_model(tiny_checkpoint, num_classes=10)
    images, labels = load_labeled_images(sample_dir / "train", 160, 64)
    with torch.no_grad():
        acc = (model(images).argmax(1) == labels).float().mean().item()
    assert acc > 0.2  # chance is 0.1
