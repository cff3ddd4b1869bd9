"""Tests for actiontk.models.conv3d: shapes, gradients, chunked cubes, deep supervision, energy and regularizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import max_diff

from actiontk.models.conv3d import (
    Conv3DConfig,
    LevelConv3D,
    MultiLevel3D,
    attention_regularization,
    channel_energy,
    deep_supervision_loss,
)

B, T, C, K = 2, 6, 8, 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_level(in_channels: int = C, dropout: float = 0.5) -> LevelConv3D:
    return LevelConv3D(Conv3DConfig(channels=16, hidden=32, dropout=dropout), in_channels, K)


@pytest.mark.parametrize("hw", [(4, 4), (5, 5), (5, 4), (1, 5)])
def test_level_shapes_no_nan_and_every_parameter_gets_a_gradient(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    level = tiny_level()
    x = torch.rand(B, T, C, *hw)
    cube, logits = level(x)
    assert cube.shape == (B, T, 16, *hw)
    assert logits.shape == (B, T, K)  # deep supervision predicts at every time step
    assert torch.isfinite(cube).all() and torch.isfinite(logits).all()
    assert (cube >= 0).all(), "cubes are post-ReLU"
    (F.cross_entropy(logits.flatten(0, 1), torch.tensor([1, 3]).repeat_interleave(T)) + cube.mean()).backward()
    for name, p in level.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_cubes_equal_the_forward_cube() -> None:
    torch.manual_seed(0)
    level = tiny_level().eval()
    x = torch.rand(B, T, C, 4, 4)
    torch.testing.assert_close(level.cubes(x), level(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 10, 64])
def test_chunked_cubes_equal_one_shot(chunk: int) -> None:
    torch.manual_seed(0)
    level = tiny_level().double().eval()
    x = torch.rand(1, 11, C, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        full, chunked = level.cubes(x), level.cubes_chunked(x, chunk=chunk)
    diff = max_diff(full, chunked)
    assert diff < 1e-12, f"chunk {chunk}: max abs diff {diff:g}"


def test_chunked_cubes_float32() -> None:
    torch.manual_seed(0)
    level = tiny_level().eval()
    x = torch.rand(2, 9, C, 4, 4)
    with torch.no_grad():
        diff = max_diff(level.cubes(x), level.cubes_chunked(x, chunk=4))
    assert diff < 1e-5, f"max abs diff {diff:g}"


def test_bad_inputs_are_rejected() -> None:
    level = tiny_level()
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        level(torch.rand(T, C, 4, 4))
    with pytest.raises(ValueError, match="chunk"):
        level.cubes_chunked(torch.rand(1, T, C, 4, 4), chunk=0)
    with pytest.raises(ValueError, match="dropout"):
        Conv3DConfig(dropout=1.0)


def test_multilevel_forward_and_loss() -> None:
    torch.manual_seed(0)
    model = MultiLevel3D(Conv3DConfig(channels=16, hidden=32), {"pool4": 8, "conv5_3": 6}, K)
    xs = {"pool4": torch.rand(B, T, 8, 4, 4), "conv5_3": torch.rand(B, T, 6, 4, 4)}
    cubes, logits = model(xs)
    assert {k: tuple(v.shape) for k, v in cubes.items()} == {"pool4": (B, T, 16, 4, 4), "conv5_3": (B, T, 16, 4, 4)}
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"pool4": (B, T, K), "conv5_3": (B, T, K)}
    target = torch.tensor([0, 4])
    # - sum_t y log yhat_t per clip, averaged over the batch, summed over the levels
    expected = sum(F.cross_entropy(lg.flatten(0, 1), target.repeat_interleave(T), reduction="sum") / B
                   for lg in logits.values())
    torch.testing.assert_close(model.loss(logits, target)[0], expected)
    torch.testing.assert_close(deep_supervision_loss(logits, target)[0], expected)
    with pytest.raises(KeyError, match="conv5_3"):
        model({"pool4": xs["pool4"]})


def test_deep_supervision_loss_decreases_when_overfitting_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = MultiLevel3D(Conv3DConfig(channels=16, hidden=32, dropout=0.0), {"pool4": 8, "conv5_3": 6}, K)
    # Each clip gets its own per-channel offset, so that the head's spatio-temporal average can tell them apart.
    levels = {"pool4": 8, "conv5_3": 6}
    xs = {name: torch.randn(4, 1, c, 1, 1) + 0.3 * torch.randn(4, 4, c, 4, 4) for name, c in levels.items()}
    target = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model.loss(model(xs)[1], target)[0]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"losses {losses}"


def test_channel_energy_is_a_distribution_per_frame() -> None:
    torch.manual_seed(0)
    x = torch.rand(B, T, C, 5, 4)
    e = channel_energy(x)
    assert e.shape == (B, T, 20)
    torch.testing.assert_close(e.sum(-1), torch.ones(B, T))
    # Hand-computed on one frame: location i's channel sum over the frame's total.
    s = x[1, 2].sum(0).flatten()  # (H*W,) row-major
    torch.testing.assert_close(e[1, 2], s / s.sum())


def test_channel_energy_handles_all_zero_frames() -> None:
    x = torch.rand(1, 3, C, 2, 2)
    x[0, 1] = 0.0
    x.requires_grad_(True)
    e = channel_energy(x)
    assert torch.isfinite(e).all()
    torch.testing.assert_close(e[0, 1], torch.full((4,), 0.25))
    torch.testing.assert_close(e.sum(-1), torch.ones(1, 3))
    (e * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(x.grad).all(), "a zero frame must not give NaN gradients"


def test_attention_regularization() -> None:
    torch.manual_seed(0)
    e = channel_energy(torch.rand(B, T, C, 2, 2))
    assert attention_regularization(e, e.clone(), lam=1000.0).item() == 0.0
    att = torch.softmax(torch.randn(B, T, 4), -1)
    # By hand: lam * sum over t and i of the squared differences, per video, then the mean over the batch.
    per_video = [sum((e[b, t, i] - att[b, t, i]).item() ** 2 for t in range(T) for i in range(4)) for b in range(B)]
    expected = 1000.0 * sum(per_video) / B
    assert attention_regularization(e, att, lam=1000.0).item() == pytest.approx(expected, rel=1e-5)
    mean_over_t = attention_regularization(e, att, lam=1000.0, over_time="mean").item()
    assert mean_over_t == pytest.approx(expected / T, rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        attention_regularization(e, att[:, :-1])


def _printed_loss_by_hand(logits: dict, cubes: dict, att: torch.Tensor, y: torch.Tensor, lam: float) -> float:
    """Sec. 3.2's loss without the weight decay, term by term in plain Python, per clip then averaged over the
    batch, summed over levels: - sum_t log softmax(logits_t)[y] + lam * sum_t sum_i (E_ti - att_ti)^2 with
    E_ti = sum_k x_tik / sum_j sum_k x_tjk."""
    total = 0.0
    for name, lg in logits.items():
        x = cubes[name].double()
        for b in range(lg.shape[0]):
            clip = 0.0
            for t in range(lg.shape[1]):
                z = lg[b, t].double()
                clip -= (z[y[b]] - z.exp().sum().log()).item()
                h, w = x.shape[-2:]
                sums = [x[b, t, :, i // w, i % w].sum().item() for i in range(h * w)]
                energy = [v / sum(sums) for v in sums]
                clip += lam * sum((energy[i] - att[b, t, i].item()) ** 2 for i in range(len(energy)))
            total += clip / lg.shape[0]
    return total


@pytest.mark.parametrize("lam", [0.0, 1000.0])
def test_printed_3d_loss_equals_a_direct_computation(lam: float) -> None:
    torch.manual_seed(1)
    model = MultiLevel3D(Conv3DConfig(channels=16, hidden=32, dropout=0.0), {"pool4": 8, "conv5_3": 6}, K)
    xs = {"pool4": torch.rand(B, T, 8, 3, 2), "conv5_3": torch.rand(B, T, 6, 3, 2)}
    cubes, logits = model(xs)
    att = torch.softmax(torch.randn(B, T, 6), -1)
    y = torch.tensor([2, 4])
    loss, parts = model.loss(logits, y, cubes=cubes, att=att, lam=lam)
    expected = _printed_loss_by_hand(logits, cubes, att, y, lam)
    assert loss.item() == pytest.approx(expected, rel=1e-5), f"loss {loss.item()} vs by hand {expected}"
    assert ("att_reg" in parts) == (lam > 0)
    # mean over time divides both terms by T: the same lambda keeps the same balance
    mean_loss, _ = model.loss(logits, y, cubes=cubes, att=att, lam=lam, over_time="mean")
    assert mean_loss.item() == pytest.approx(expected / T, rel=1e-5)


def test_two_d_convnet_sees_one_frame_at_a_time() -> None:
    # temporal_kernel=1 (the paper's 2D-convnet ablation): changing frame 0 leaves the other frames' cubes alone
    torch.manual_seed(0)
    level = LevelConv3D(Conv3DConfig(channels=8, hidden=8, temporal_kernel=1), C, K).eval()
    x = torch.rand(1, T, C, 3, 3)
    y = x.clone()
    y[:, 0] += 1.0
    a, b = level.cubes(x), level.cubes(y)
    assert max_diff(a[:, 1:], b[:, 1:]) == 0.0
    assert max_diff(a[:, :1], b[:, :1]) > 0.0
    three_d = LevelConv3D(Conv3DConfig(channels=8, hidden=8), C, K).eval()
    assert max_diff(three_d.cubes(x)[:, 1], three_d.cubes(y)[:, 1]) > 0.0  # the 3D kernel does see frame 0
