"""Tests for actiontk.models.gap: shapes and gradients for every head option, the rank-1 head against second-order
pooling computed from X^T X, the bottom-up depth rule, the heads against hand-written references, the pose loss's
masking, dropout placement, and a small training run."""

from __future__ import annotations

import itertools
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import max_diff

from actiontk.models.gap import (
    BOTTOMUP_BIAS_INIT,
    PAPER_POSE_WEIGHT,
    GAPConfig,
    GAPHead,
    pose_loss,
    second_order_pool,
    second_order_scores,
)

B, F_IN, K, J = 3, 8, 5, 16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_head(head: str = "gap", **kw) -> GAPHead:
    kw = {"width": 16, "pose_width": 6, "dropout": 0.0, **kw}
    return GAPHead(GAPConfig(head=head, **kw), F_IN, K)


# (head, depth, pose, pose_attention): every head, every depth 0..3 of gap, pose on/off, both pose attentions.
VARIANTS = (
    [("mean", None, pose, True) for pose in (False, True)]
    + [("attn", None, pose, att) for pose, att in ((False, True), (True, True), (True, False))]
    + [("gap", d, pose, att) for d in range(4) for pose, att in ((False, True), (True, True), (True, False))]
)


@pytest.mark.parametrize("head, depth, pose, pose_attention", VARIANTS)
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (1, 1)])
def test_shapes_no_nan_and_every_parameter_gets_a_gradient(head, depth, pose, pose_attention, dropout, grid) -> None:
    torch.manual_seed(0)
    model = make_head(head, depth=depth, pose=pose, pose_attention=pose_attention, dropout=dropout).train()
    out = model(torch.rand(B, F_IN, *grid))
    assert out.logits.shape == (B, K)
    assert out.topdown.shape == (B, K, *grid)
    if head == "mean":
        assert out.bottomup is None
    else:
        assert out.bottomup.shape == (B, *grid)
    if pose:
        assert out.heatmaps.shape == (B, J, *grid)
    else:
        assert out.heatmaps is None
    for name in ("logits", "topdown", "bottomup", "heatmaps"):
        value = getattr(out, name)
        assert value is None or torch.isfinite(value).all(), f"{name} has non-finite values"
    loss = F.cross_entropy(out.logits, torch.arange(B) % K)
    if pose:
        mask = torch.ones(B, J, dtype=torch.bool)
        mask[0, :4] = False
        loss = loss + pose_loss(out.heatmaps, torch.rand(B, J, *grid), mask)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


# --------------------------------------------------------------------------------------------------------------
# The bottom-up depth rule


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4])
def test_depth_is_the_number_of_hidden_bottomup_layers(depth: int) -> None:
    width = 64
    model = make_head("gap", depth=depth, width=width)
    convs = [m for m in model.bottomup if isinstance(m, nn.Conv2d)]
    relus = [m for m in model.bottomup if isinstance(m, nn.ReLU)]
    assert len(convs) == depth + 1, f"depth {depth}: {len(convs)} bottom-up convs"
    assert len(relus) == depth
    assert len(model.bottomup) == 2 * depth + 1
    # Widths f -> 64 -> 32 -> ... -> 1, all 1x1; a ReLU after every conv but the last.
    chain = [F_IN] + [width // 2**i for i in range(depth)] + [1]
    assert [(c.in_channels, c.out_channels) for c in convs] == list(itertools.pairwise(chain))
    assert all(c.kernel_size == (1, 1) for c in convs)
    assert not isinstance(model.bottomup[-1], nn.ReLU), "the attention map is not passed through a ReLU"
    assert model.config.bottomup_widths == chain[1:-1]


def test_default_depths_and_rejected_configs() -> None:
    # depth stays as given (it keys the run); the depth built is bottomup_depth
    assert GAPConfig().depth is None and GAPConfig().bottomup_depth == 3
    assert GAPConfig(head="attn").bottomup_depth == 0
    assert GAPConfig(head="mean").bottomup_depth is None
    assert GAPConfig().bottomup_widths == [4096, 2048, 1024]
    assert GAPConfig().dropout == 0.8
    assert PAPER_POSE_WEIGHT == 1e-6
    with pytest.raises(ValueError, match="depth must be 0 for head 'attn'"):
        GAPConfig(head="attn", depth=2)
    with pytest.raises(ValueError, match="depth must be None for head 'mean'"):
        GAPConfig(head="mean", depth=0)
    with pytest.raises(ValueError, match="head must be mean, attn or gap"):
        GAPConfig(head="max")
    with pytest.raises(ValueError, match="width 2 is too small for depth 3"):
        GAPConfig(depth=3, width=2)
    with pytest.raises(ValueError, match="dropout"):
        GAPConfig(dropout=1.0)
    with pytest.raises(ValueError, match="depth must be an integer >= 0"):
        GAPConfig(depth=-1)
    assert make_head("mean").bottomup is None


def test_bad_inputs_are_rejected() -> None:
    model = make_head("attn")
    with pytest.raises(ValueError, match=f"\\(B, {F_IN}, H, W\\)"):
        model(torch.rand(B, F_IN + 1, 4, 4))
    with pytest.raises(ValueError, match=f"\\(B, {F_IN}, H, W\\)"):
        model(torch.rand(F_IN, 4, 4))
    with pytest.raises(ValueError, match="rank-1 heads only"):
        make_head("gap", depth=1).rank1_factors()
    with pytest.raises(ValueError, match="rank-1 heads only"):
        make_head("mean").second_order_logits(torch.rand(B, F_IN, 2, 2))


# --------------------------------------------------------------------------------------------------------------
# The heads against references


def augmented(maps: torch.Tensor) -> torch.Tensor:
    """The (n, c+1) matrix of one image's map (c, H, W): locations as rows, row-major, with a column of ones."""
    rows = maps.reshape(maps.shape[0], -1).T  # (n, c)
    return torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], dim=1)


@pytest.mark.parametrize("head, depth, pose", [("attn", None, False), ("gap", 0, False), ("attn", None, True)])
def test_rank1_head_is_second_order_pooling(head: str, depth: int | None, pose: bool) -> None:
    """score_k = Tr(X~^T Z~ W_k^T) / n with W_k = a~_k b~^T, built here from the modules' weights and X^T X."""
    torch.manual_seed(0)
    model = make_head(head, depth=depth, pose=pose, pose_attention=pose, dropout=0.5).double().eval()
    with torch.no_grad():  # non-zero biases everywhere, so the appended ones column is exercised
        model.topdown.bias.uniform_(-1, 1)
        model.bottomup[-1].bias.fill_(0.7)
    x = torch.rand(B, F_IN, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x).logits
        z = model.pose_features(x) if pose else x  # the bottom-up input: pose features with pose attention
    a = torch.cat([model.topdown.weight[:, :, 0, 0], model.topdown.bias[:, None]], dim=1).detach()  # (K, f+1)
    conv = model.bottomup[-1]
    b = torch.cat([conv.weight[0, :, 0, 0], conv.bias]).detach()  # (g+1,)
    n = 12
    expected = torch.empty(B, K, dtype=torch.float64)
    for i in range(B):
        gram = augmented(x[i]).T @ augmented(z[i])  # X~^T Z~ (= X~^T X~ without pose), (f+1, g+1)
        for k in range(K):
            w_k = torch.outer(a[k], b)  # the rank-1 bilinear weight W_k = a~_k b~^T
            expected[i, k] = torch.trace(gram @ w_k.T) / n
    diff = max_diff(logits, expected)
    assert diff < 1e-12, f"forward vs Tr(X^T X W^T)/n: max abs diff {diff:g}"
    with torch.no_grad():
        helper = model.second_order_logits(x)
        pooled = second_order_pool(x, z)
    diff = max_diff(helper, expected)
    assert diff < 1e-12, f"second_order_logits vs Tr(X^T X W^T)/n: max abs diff {diff:g}"
    diff = max_diff(pooled[1], augmented(x[1]).T @ augmented(z[1]) / n)
    assert diff < 1e-12, f"second_order_pool vs X~^T Z~ / n: max abs diff {diff:g}"
    fa, fb = model.rank1_factors()
    torch.testing.assert_close(second_order_scores(pooled, fa, fb), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("pose", [False, True])
def test_gap_with_depth_0_equals_attn(pose: bool) -> None:
    torch.manual_seed(0)
    attn = make_head("attn", pose=pose).eval()
    gap = make_head("gap", depth=0, pose=pose).eval()
    gap.load_state_dict(attn.state_dict())  # same modules and names, so the weights load one to one
    x = torch.rand(B, F_IN, 4, 3)
    with torch.no_grad():
        a, g = attn(x), gap(x)
    for name in ("logits", "topdown", "bottomup", "heatmaps"):
        if getattr(a, name) is not None:
            torch.testing.assert_close(getattr(g, name), getattr(a, name), rtol=0, atol=0, msg=name)


def test_gap_head_matches_a_hand_written_reference() -> None:
    """h = c(ReLU(W2 ReLU(W1 x + b1) + b2)) + beta per location, score_k = mean_i (a_k x_i + alpha_k) h_i."""
    torch.manual_seed(0)
    model = make_head("gap", depth=2, width=16).double().eval()
    x = torch.randn(B, F_IN, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        c1, c2, c3 = (m for m in model.bottomup if isinstance(m, nn.Conv2d))
        rows = x.flatten(2).transpose(1, 2)  # (B, n, f)
        hid = torch.relu(rows @ c1.weight[:, :, 0, 0].T + c1.bias)
        hid = torch.relu(hid @ c2.weight[:, :, 0, 0].T + c2.bias)
        h = (hid @ c3.weight[:, :, 0, 0].T + c3.bias)[..., 0]  # (B, n)
        t = rows @ model.topdown.weight[:, :, 0, 0].T + model.topdown.bias  # (B, n, K)
        expected = (t * h[..., None]).mean(dim=1)
    diff = max_diff(out.logits, expected)
    assert diff < 1e-12, f"max abs diff {diff:g}"
    torch.testing.assert_close(out.bottomup.flatten(1), h, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.topdown.flatten(2).transpose(1, 2), t, rtol=0, atol=1e-12)


def test_mean_head_is_mean_pool_then_linear_and_attn_with_a_constant_map() -> None:
    torch.manual_seed(0)
    mean = make_head("mean").double().eval()
    x = torch.rand(B, F_IN, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        logits = mean(x).logits
        expected = x.mean(dim=(2, 3)) @ mean.topdown.weight[:, :, 0, 0].T + mean.topdown.bias
    diff = max_diff(logits, expected)
    assert diff < 1e-12, f"mean head vs linear(mean(X)): max abs diff {diff:g}"
    # The rank-1 head with a bottom-up map of constant 1 is the mean-pool head.
    attn = make_head("attn").double().eval()
    attn.topdown.load_state_dict(mean.topdown.state_dict())
    with torch.no_grad():
        attn.bottomup[0].weight.zero_()
        attn.bottomup[0].bias.fill_(1.0)
        diff = max_diff(attn(x).logits, logits)
    assert diff < 1e-12, f"attn with h = 1 vs mean head: max abs diff {diff:g}"


def test_untrained_attention_starts_near_the_mean_pool_head() -> None:
    torch.manual_seed(0)
    for head in ("attn", "gap"):
        model = make_head(head)
        assert model.bottomup[-1].bias.item() == BOTTOMUP_BIAS_INIT == 1.0


@pytest.mark.parametrize("pose, pose_attention", [(False, True), (True, True), (True, False)])
def test_dropout_acts_on_the_topdown_input_only(pose: bool, pose_attention: bool) -> None:
    torch.manual_seed(0)
    model = make_head("gap", depth=1, pose=pose, pose_attention=pose_attention, dropout=0.5)
    x = torch.rand(B, F_IN, 4, 4)
    model.train()
    train = model(x)
    model.eval()
    with torch.no_grad():
        evaluated, again = model(x), model(x)
    assert max_diff(train.topdown, evaluated.topdown) > 1e-3, "dropout should change the top-down maps in training"
    # Bottom-up and pose branches read X undropped: identical in train and eval mode.
    torch.testing.assert_close(train.bottomup, evaluated.bottomup, rtol=0, atol=0)
    if pose:
        torch.testing.assert_close(train.heatmaps, evaluated.heatmaps, rtol=0, atol=0)
    torch.testing.assert_close(evaluated.logits, again.logits, rtol=0, atol=0)


def test_pose_attention_switches_the_bottomup_input() -> None:
    torch.manual_seed(0)
    on = make_head("attn", pose=True, pose_attention=True)
    off = make_head("attn", pose=True, pose_attention=False)
    assert on.bottomup[0].in_channels == 6 and off.bottomup[0].in_channels == F_IN
    x = torch.rand(B, F_IN, 4, 4)
    with torch.no_grad():
        expected = on.bottomup(on.pose_features(x)).squeeze(1)
        torch.testing.assert_close(on(x).bottomup, expected, rtol=0, atol=0)
        torch.testing.assert_close(off(x).bottomup, off.bottomup(x).squeeze(1), rtol=0, atol=0)
    # Without pose attention the action scores do not depend on the pose branch at all.
    out = off(x)
    out.logits.sum().backward()
    assert all(p.grad is None for p in off.pose_features.parameters())


# --------------------------------------------------------------------------------------------------------------
# Pose loss


def test_pose_loss_value_by_hand() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, J, 3, 3, dtype=torch.float64), torch.rand(2, J, 3, 3, dtype=torch.float64)
    mask = torch.zeros(2, J, dtype=torch.bool)
    mask[0, [1, 5]] = True
    mask[1, 9] = True
    expected = sum(((pred[b, j] - target[b, j]) ** 2).sum().item() for b, j in [(0, 1), (0, 5), (1, 9)]) / 2
    assert pose_loss(pred, target, mask).item() == pytest.approx(expected, rel=1e-12)
    full = torch.ones(2, J, dtype=torch.bool)
    assert pose_loss(pred, target, full).item() == pytest.approx(((pred - target) ** 2).sum().item() / 2, rel=1e-12)
    # A per-cell mask, and a 0/1 float mask, select the same way.
    cells = mask[:, :, None, None].expand(2, J, 3, 3).clone()
    cells[0, 1, 0, 0] = False
    expected_cells = expected - (pred[0, 1, 0, 0] - target[0, 1, 0, 0]).item() ** 2 / 2
    assert pose_loss(pred, target, cells).item() == pytest.approx(expected_cells, rel=1e-12)
    assert pose_loss(pred, target, mask.double()).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="mask"):
        pose_loss(pred, target, mask[:, :4])
    with pytest.raises(ValueError, match="pred"):
        pose_loss(pred, target[:, :4], mask)


@pytest.mark.parametrize("per_cell", [False, True])
def test_pose_loss_is_exactly_zero_where_every_joint_is_masked(per_cell: bool) -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, J, 4, 4, requires_grad=True)
    target = torch.rand(2, J, 4, 4)
    target[0, 3] = float("nan")  # garbage under the mask must not leak into the value or the gradient
    target[1, 7, 2, 2] = float("inf")
    mask = torch.zeros(2, J, 4, 4, dtype=torch.bool) if per_cell else torch.zeros(2, J, dtype=torch.bool)
    loss = pose_loss(pred, target, mask)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred)), "masked joints must get an exactly zero gradient"
    # Partially masked: the masked channels (with their NaN and inf) get zero gradient, the others do not.
    pred.grad = None
    keep = torch.ones(2, J, dtype=torch.bool)
    keep[0, 3] = keep[1, 7] = False
    loss = pose_loss(pred, target, keep)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.equal(pred.grad[0, 3], torch.zeros(4, 4)) and torch.equal(pred.grad[1, 7], torch.zeros(4, 4))
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 4].abs().sum() > 0


# --------------------------------------------------------------------------------------------------------------
# Training sanity


def class_blob_maps(n: int, classes: int, channels: int, grid: int, gen: torch.Generator) -> tuple:
    """Maps whose class is told by which channels light up in a small blob at a random place, on noise whose
    per-image channel offsets are nuisance (so the whole-map average is a weak cue, the blob a strong one)."""
    labels = torch.arange(n) % classes
    x = torch.rand(n, channels, grid, grid, generator=gen) * 0.5 + torch.rand(n, channels, 1, 1, generator=gen)
    pattern = torch.rand(classes, channels, generator=gen) < 0.3
    for i in range(n):
        r, c = torch.randint(0, grid - 1, (2,), generator=gen).tolist()
        x[i, :, r : r + 2, c : c + 2] += 3.0 * pattern[labels[i], :, None, None]
    return x, labels


def test_gap_head_fits_class_dependent_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, labels = class_blob_maps(96, 6, 16, 6, gen)
    model = GAPHead(GAPConfig(head="gap", depth=2, width=32, dropout=0.1), 16, 6).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x).logits, labels).backward()
        opt.step()
    elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).logits.argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.97, f"train accuracy {accuracy:.3f} after 300 steps"
    assert elapsed < 10, f"training took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------------------------------
# The paper's defaults and the printed form of Eqs. 4-5


def test_pose_is_a_loss_term_only_by_default() -> None:
    # Sec. III: the default head with pose has no pose input to its scores; the pose loss still trains the branch.
    torch.manual_seed(0)
    model = GAPHead(GAPConfig(head="gap", depth=2, width=16, pose=True, pose_width=6, dropout=0.0), F_IN, K)
    assert model.config.pose_attention is False
    assert model.bottomup[0].in_channels == F_IN  # the bottom-up stack reads X, not pose features
    x = torch.rand(B, F_IN, 4, 4)
    out = model(x)
    out.logits.sum().backward()
    assert all(p.grad is None for p in model.pose_features.parameters())
    model.zero_grad()
    pose_loss(model(x).heatmaps, torch.rand(B, J, 4, 4), torch.ones(B, J)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pose_features.parameters())


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_printed_form_is_a_rank1_head_with_b_relu_vc(depth: int) -> None:
    # Eqs. 4-5 as printed: W_k = a_k f(V c)^T with V = f(U_1) ... f(U_T), f = ReLU on the *weights*. The head must equal
    # a rank-1 (attn) head whose bottom-up 1x1 conv has the weights b = f(Vc), computed here from the equation.
    torch.manual_seed(depth)
    printed = make_head("gap", depth=depth, form="weights").double().eval()
    with torch.no_grad():
        for u in printed.bottomup.factors:  # some negative entries, so that f on the weights matters
            u.add_(-0.5 * u.mean())
        printed.bottomup.c.copy_(torch.rand_like(printed.bottomup.c) - 0.2)  # mixed signs, Vc mostly > 0
    us, c = [u.detach() for u in printed.bottomup.factors], printed.bottomup.c.detach()
    v = torch.eye(F_IN, dtype=torch.float64)
    for u in us:
        v = v @ u.clamp_min(0)  # V = prod_t f(U_t)
    b = (v @ c).clamp_min(0)  # f(Vc)
    assert (b >= 0).all() and (b > 0).any()
    rank1 = make_head("attn").double().eval()
    with torch.no_grad():
        rank1.topdown.load_state_dict(printed.topdown.state_dict())
        rank1.bottomup[0].weight.copy_(b.view(1, F_IN, 1, 1))
        rank1.bottomup[0].bias.copy_(printed.bottomup.bias)
    x = torch.rand(B, F_IN, 3, 4, dtype=torch.float64)
    diff = max_diff(printed(x).logits, rank1(x).logits)
    assert diff < 1e-12, f"max abs diff {diff:g}"
    # and as second-order pooling: score_k = Tr(X~^T X~ W_k^T) with W_k = a~_k b~^T
    diff2 = max_diff(printed.second_order_logits(x), printed(x).logits)
    assert diff2 < 1e-12, f"max abs diff {diff2:g}"
    out = printed(x)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in printed.parameters())


def test_printed_form_needs_gap_with_hidden_layers() -> None:
    with pytest.raises(ValueError, match="form 'weights'"):
        make_head("attn", form="weights")
    with pytest.raises(ValueError, match="form 'weights'"):
        make_head("gap", depth=0, form="weights")
    with pytest.raises(ValueError, match="form must be"):
        make_head("gap", form="both")


# The state-dict keys of the network train-gap checkpoints (once a class nested in the stage): a resumed run loads
# its checkpoint by these names, so they must not change.
GAPNET_KEYS = {
    (("head", "gap"), ("depth", 1), ("pose", True)): [
        "mean", "std", "head.topdown.weight", "head.topdown.bias", "head.bottomup.0.weight", "head.bottomup.0.bias",
        "head.bottomup.2.weight", "head.bottomup.2.bias", "head.pose_features.0.weight", "head.pose_features.0.bias",
        "head.pose_features.2.weight", "head.pose_features.2.bias", "head.pose_heatmaps.weight",
        "head.pose_heatmaps.bias",
    ],
    (("head", "mean"),): ["mean", "std", "head.topdown.weight", "head.topdown.bias"],
    (("head", "gap"), ("depth", 2), ("form", "weights")): [
        "mean", "std", "head.topdown.weight", "head.topdown.bias", "head.bottomup.c", "head.bottomup.bias",
        "head.bottomup.factors.0", "head.bottomup.factors.1",
    ],
}


@pytest.mark.parametrize("options", list(GAPNET_KEYS))
def test_gapnet_state_dict_keys_are_the_checkpoints(options) -> None:
    from actiontk.models.gap import GAPNet

    net = GAPNet(make_head(**dict(options)))
    assert list(net.state_dict()) == GAPNET_KEYS[options]


class _Body(nn.Module):
    """A stand-in backbone: a dict of named maps, with a BatchNorm that fine-tuning must keep in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, F_IN, kernel_size=3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(F_IN)

    def forward(self, x):
        return {"layer4": self.bn(self.conv(x))}


def test_gapnet_with_a_backbone_standardizes_its_maps_and_freezes_batchnorm() -> None:
    from actiontk.models.gap import GAPNet, fit_standardization

    torch.manual_seed(0)
    net = GAPNet(make_head("attn"), _Body(), "layer4")
    assert list(net.state_dict()) == ["mean", "std", *("body." + k for k in net.body.state_dict()),
                                      *("head." + k for k in net.head.state_dict())]
    net.train()
    assert net.training and net.head.training and not net.body.bn.training
    images = [{"x": torch.rand(3, 12, 10) * 5 + 2} for _ in range(7)]
    fit_standardization(net, images, device="cpu", batch_size=3)
    assert net.training and not net.body.bn.training  # the mode it had, BatchNorm still frozen
    with torch.no_grad():
        maps = net.features(torch.stack([d["x"] for d in images]))  # (7, f, 6, 5)
    z = (maps - net.mean) / net.std
    assert max_diff(z.mean(dim=(0, 2, 3)), torch.zeros(F_IN)) < 1e-4
    assert max_diff(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(F_IN)) < 1e-3
    net.eval()
    with torch.no_grad():
        want = net.head(z)
        got = net(torch.stack([d["x"] for d in images]))
    assert max_diff(got.logits, want.logits) == 0
