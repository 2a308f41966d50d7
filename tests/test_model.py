import pytest
import torch
import torchvision

from rn50.model import Bottleneck, resnet50


def test_parameter_count():
    assert sum(p.numel() for p in resnet50().parameters()) == 25_557_032


@pytest.mark.parametrize("direction", ["torchvision->rn50", "rn50->torchvision"])
def test_state_dict_loads_strict_both_ways_with_equal_outputs(direction):
    torch.manual_seed(0)
    ours, theirs = resnet50().eval(), torchvision.models.resnet50().eval()
    src, dst = (theirs, ours) if direction == "torchvision->rn50" else (ours, theirs)
    # Non-trivial BN statistics so a mis-mapped buffer would show in the outputs.
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    dst.load_state_dict(src.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (src(x) - dst(x)).abs().max().item() <= 1e-5


def test_v15_stride_on_conv2_of_first_block_in_stages_2_to_4():
    m = resnet50()
    assert m.layer1[0].conv2.stride == (1, 1)
    for stage in (m.layer2, m.layer3, m.layer4):
        first = stage[0]
        assert first.conv1.stride == (1, 1)
        assert first.conv2.stride == (2, 2)
        assert first.downsample[0].stride == (2, 2)
        assert all(b.conv2.stride == (1, 1) for b in list(stage)[1:])


def test_num_classes_and_output_shape():
    m = resnet50(num_classes=10).eval()
    assert m.fc.out_features == 10
    assert m(torch.randn(3, 3, 64, 64)).shape == (3, 10)
    with pytest.raises(ValueError):
        resnet50(num_classes=0)


def test_conv_init_modes_and_zero_init_last():
    torch.manual_seed(0)
    fan_in = resnet50(conv_init="fan_in")
    torch.manual_seed(0)
    fan_out = resnet50(conv_init="fan_out")
    # layer1[0].conv1: 64 -> 64 1x1, fan_in 64; layer1[0].conv3: 64 -> 256 1x1: fan_in 64, fan_out 256.
    w_in, w_out = fan_in.layer1[0].conv3.weight, fan_out.layer1[0].conv3.weight
    assert w_in.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.1)
    assert w_out.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.1)
    zero = resnet50(zero_init_last=True)
    blocks = [b for b in zero.modules() if isinstance(b, Bottleneck)]
    assert len(blocks) == 16
    assert all(b.bn3.weight.abs().sum() == 0 for b in blocks)
    assert all(b.bn2.weight.abs().sum() > 0 for b in blocks)
