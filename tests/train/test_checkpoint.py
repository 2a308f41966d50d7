import torch

from rn50.io import atomic_link
from rn50.recipes import get_recipe
from rn50.train.checkpoint import load_checkpoint, prune_epoch_checkpoints, save_checkpoint
from rn50.train.step import build_state, train_step
from rn50.weights import load_model


def test_checkpoint_round_trip_with_ema_and_mixup(tmp_path):
    recipe = get_recipe("sample-cpu").replace(batch_size=2, image_size=32, ema=0.9, mixup=0.2, zero_init_last=False)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    a = build_state(recipe, "cpu", False, steps_per_epoch=10, seed=3)
    for _ in range(2):
        train_step(a, x, y)
    path = tmp_path / "c.pth"
    save_checkpoint(path, a, epoch=0, iteration=2, epoch_complete=False, best_top1=None)
    b = build_state(recipe, "cpu", False, steps_per_epoch=10, seed=99)
    meta = load_checkpoint(path, b)
    assert (meta["epoch"], meta["iteration"], meta["epoch_complete"]) == (0, 2, False)
    assert (b.opt_step, b.micro_step) == (2, 2)
    for sa, sb in ((a.module, b.module), (a.ema.module, b.ema.module)):
        for (ka, va), (kb, vb) in zip(sa.state_dict().items(), sb.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb), ka
    # the same next step (optimizer momentum, mixup draw, schedule position all restored)
    rng = torch.get_rng_state()
    la = train_step(a, x, y)
    torch.set_rng_state(rng)
    lb = train_step(b, x, y)
    assert torch.equal(la, lb)
    assert all(torch.equal(p, q) for p, q in zip(a.module.parameters(), b.module.parameters(), strict=True))
    # the EMA weights differ from the raw ones, and the file loads as plain weights too
    assert not torch.equal(a.ema.module.fc.weight, a.module.fc.weight)
    assert load_model(path).fc.out_features == 10
    assert load_model(path, ema=True).fc.out_features == 10


def test_prune_keeps_the_newest_epochs_and_linked_last(tmp_path):
    for n in range(1, 6):
        (tmp_path / f"epoch-{n:03d}.pth").write_bytes(bytes([n]))
    (tmp_path / "epoch-notes.pth").write_text("a user's file")
    atomic_link(tmp_path / "epoch-005.pth", tmp_path / "last.pth")
    atomic_link(tmp_path / "epoch-002.pth", tmp_path / "best.pth")
    atomic_link(tmp_path / "epoch-003.pth", tmp_path / "best.pth")  # replaces the old link
    removed = prune_epoch_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == ["epoch-001.pth", "epoch-002.pth", "epoch-003.pth"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["best.pth", "epoch-004.pth", "epoch-005.pth", "epoch-notes.pth", "last.pth"]
    assert (tmp_path / "best.pth").read_bytes() == bytes([3])  # its epoch name is gone, the data is not
    assert (tmp_path / "last.pth").samefile(tmp_path / "epoch-005.pth")
    assert prune_epoch_checkpoints(tmp_path, keep=0) == [] and len(list(tmp_path.iterdir())) == 5
