"""Tests for actiontk.models.joint_lstm: shapes and gradients for every option, the pyramid, and the fused cell
checked against a step-by-step implementation of the equations and, in its degenerate case, against nn.LSTMCell."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import max_diff

from actiontk.models.joint_lstm import (
    JointAttentionCell,
    JointAttentionLSTM,
    JointLSTMConfig,
    clip_scores,
    clip_vote,
    pyramid_regions,
    spatial_pyramid_pool,
)

B, T, HID, NCLS = 3, 6, 32, 5
CHANNELS = [8, 6]  # two levels with different channel counts, so per-input blocks cannot be confused


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_inputs(grid: tuple[int, int], channels=CHANNELS, dtype=torch.float32, steps: int = T) -> list[torch.Tensor]:
    return [torch.rand(B, steps, c, *grid, dtype=dtype) for c in channels]


def _parts(kw: dict) -> tuple[JointLSTMConfig, list[int], dict]:
    """(architecture, input channels, the modules' switches) from one set of keywords."""
    kw = {"hidden": HID, "layers": 1, "dropout": 0.0, **kw}
    channels = kw.pop("in_channels", list(CHANNELS))
    switches = {k: kw.pop(k) for k in ("subgate_activation", "batched_weight_grad") if k in kw}
    return JointLSTMConfig(**kw), channels, switches


def make_config(grid=(4, 4), **kw) -> JointLSTMConfig:
    return _parts(kw)[0]


def make_cell(grid=(4, 4), **kw) -> JointAttentionCell:
    cfg, channels, switches = _parts(kw)
    return JointAttentionCell(cfg, channels, grid, **switches)


def make_lstm(grid=(4, 4), **kw) -> JointAttentionLSTM:
    cfg, channels, switches = _parts(kw)
    return JointAttentionLSTM(cfg, channels, grid, NCLS, **switches)


# --------------------------------------------------------------------------------------------------------------
# Shapes, NaNs, gradients

GRIDS = [(4, 4), (5, 5), (5, 4), (1, 5), (4, 1)]


@pytest.mark.parametrize(
    "fusion, layers, pyramid, grid",
    [(f, n, p, g) for f, n, p, g in itertools.product(["early", "late"], [1, 2, 3], [True, False], GRIDS)],
)
def test_shapes_no_nan_and_every_parameter_gets_a_gradient(fusion, layers, pyramid, grid) -> None:
    torch.manual_seed(0)
    model = make_lstm(grid, fusion=fusion, layers=layers, pyramid=pyramid, dropout=0.5)
    model.train()
    logits, att = model(make_inputs(grid))
    assert logits.shape == (B, T, NCLS)
    assert att.shape == (B, T, grid[0] * grid[1])
    assert torch.isfinite(logits).all() and torch.isfinite(att).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(B, T))
    loss = F.cross_entropy(logits.reshape(-1, NCLS), torch.arange(B * T) % NCLS) + att.square().sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_first_attention_is_uniform() -> None:
    torch.manual_seed(0)
    model = make_lstm((5, 4))
    _, att = model(make_inputs((5, 4)))
    torch.testing.assert_close(att[:, 0], torch.full((B, 20), 1 / 20))
    assert max_diff(att[:, 1], att[:, 0]) > 1e-4, "later steps should attend non-uniformly"


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_batched_weight_gradients_equal_plain_autograd(fusion: str) -> None:
    torch.manual_seed(0)
    batched = make_lstm((5, 4), fusion=fusion, layers=2).double()
    plain = make_lstm((5, 4), fusion=fusion, layers=2, batched_weight_grad=False).double()
    plain.load_state_dict(batched.state_dict())
    xs = [x.requires_grad_(True) for x in make_inputs((5, 4), dtype=torch.float64)]
    grads = []
    for model in (batched, plain):
        logits, att = model(xs)
        # A loss on a few steps only: steps that get no gradient must not disturb the batched gradient.
        (logits[:, :4].square().sum() + att[:, 2].square().sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        grads[-1]["inputs"] = torch.cat([x.grad.flatten() for x in xs])
        for x in xs:
            x.grad = None
    for name, g in grads[0].items():
        diff = max_diff(g, grads[1][name])
        assert diff < 1e-12, f"{name}: max abs diff {diff:g}"


def test_batched_weight_gradients_with_retain_graph_accumulate() -> None:
    torch.manual_seed(0)
    model = make_lstm((4, 4)).double()
    logits, _ = model(make_inputs((4, 4), dtype=torch.float64))
    loss = logits.square().sum()
    loss.backward(retain_graph=True)
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name], msg=name)


def test_inference_without_grad() -> None:
    torch.manual_seed(0)
    model = make_lstm((4, 4), layers=3).eval()
    xs = make_inputs((4, 4))
    with torch.no_grad():
        a = model(xs)[0]
    b = model(xs)[0]
    torch.testing.assert_close(a, b.detach())


def test_bad_inputs_and_options_are_rejected() -> None:
    model = make_lstm((4, 4))
    with pytest.raises(ValueError, match="grid"):
        model(make_inputs((5, 4)))
    with pytest.raises(ValueError, match="input 1"):
        model([torch.rand(B, T, 8, 4, 4), torch.rand(B, T, 6, 4, 5)])
    with pytest.raises(ValueError, match="2 inputs"):
        model(make_inputs((4, 4))[:1])
    with pytest.raises(ValueError, match="fusion"):
        make_config(fusion="middle")
    with pytest.raises(ValueError, match="subgate_activation"):
        make_cell(subgate_activation="relu")


# --------------------------------------------------------------------------------------------------------------
# Spatial pyramid


def quadrant_bounds(h: int, w: int) -> list[tuple[range, range]]:
    top, left = math.ceil(h / 2), math.ceil(w / 2)
    return [(rows, cols) for rows in (range(0, top), range(top, h)) for cols in (range(0, left), range(left, w))]


def reference_pool(x: torch.Tensor, att: torch.Tensor, pyramid: bool = True) -> torch.Tensor:
    """Pyramid pooling with explicit loops over pixels: x (B, C, H, W), att (B, H*W) -> (B, R*C)."""
    b, c, h, w = x.shape
    a = att.reshape(b, h, w)
    full = sum(a[:, r, q, None] * x[:, :, r, q] for r in range(h) for q in range(w))
    if not pyramid:
        return full
    vectors = [full]
    for rows, cols in quadrant_bounds(h, w):
        if len(rows) == 0 or len(cols) == 0:
            vectors.append(full)  # the documented rule for an empty quadrant
            continue
        mass = sum(a[:, r, q] for r in rows for q in cols)
        vectors.append(sum((a[:, r, q] / mass)[:, None] * x[:, :, r, q] for r in rows for q in cols))
    return torch.cat(vectors, dim=1)


@pytest.mark.parametrize("grid", [(4, 4), (5, 5), (5, 3), (3, 4), (1, 5), (4, 1), (1, 1)])
def test_pyramid_regions(grid: tuple[int, int]) -> None:
    h, w = grid
    regions = pyramid_regions(h, w)
    assert regions.shape == (5, h * w) and regions.dtype == torch.bool
    assert regions[0].all()
    for region, (rows, cols) in zip(regions[1:], quadrant_bounds(h, w), strict=True):
        expected = torch.zeros(h, w, dtype=torch.bool)
        if len(rows) and len(cols):
            expected[rows.start : rows.stop, cols.start : cols.stop] = True
        else:
            expected[:] = True  # empty quadrant -> the whole map
        assert torch.equal(region, expected.flatten()), f"grid {grid}"
    if h > 1 and w > 1:
        assert torch.equal(regions[1:].sum(0), torch.ones(h * w, dtype=torch.long)), "quadrants partition the map"
    assert pyramid_regions(h, w, pyramid=False).shape == (1, h * w)


@pytest.mark.parametrize("grid", [(4, 4), (5, 5), (5, 3), (1, 5), (4, 1), (1, 1)])
def test_spatial_pyramid_pool_matches_loops(grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.rand(B, 8, *grid, dtype=torch.float64)
    att = torch.softmax(torch.randn(B, grid[0] * grid[1], dtype=torch.float64) * 2, dim=1)
    pooled = spatial_pyramid_pool(x, att)
    assert pooled.shape == (B, 5 * 8)
    diff = max_diff(pooled, reference_pool(x, att))
    assert diff < 1e-12, f"max abs diff {diff:g}"
    if grid[0] == 1 or grid[1] == 1:
        whole = pooled[:, :8]
        for q, (rows, cols) in enumerate(quadrant_bounds(*grid), 1):
            if not (len(rows) and len(cols)):
                torch.testing.assert_close(pooled[:, 8 * q : 8 * (q + 1)], whole)


def test_spatial_pyramid_pool_quadrant_without_mass_is_uniform() -> None:
    x = torch.rand(1, 3, 4, 4)
    att = torch.zeros(1, 16)
    att[0, 0] = 1.0  # all mass in the top-left pixel
    pooled = spatial_pyramid_pool(x, att).reshape(5, 3)
    torch.testing.assert_close(pooled[0], x[0, :, 0, 0])
    torch.testing.assert_close(pooled[1], x[0, :, 0, 0])
    torch.testing.assert_close(pooled[4], x[0, :, 2:, 2:].mean(dim=(1, 2)))


@pytest.mark.parametrize("grid", [(4, 4), (5, 3), (1, 5)])
def test_region_attention_sums_to_one_inside_each_region(grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cell = make_cell(grid)
    logits = torch.randn(B, grid[0] * grid[1]) * 3
    weights = torch.softmax(logits.unsqueeze(1) + cell.region_logmask, dim=-1)  # what the cell computes
    regions = pyramid_regions(*grid)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 5))
    assert (weights[:, ~regions] == 0).all() if (~regions).any() else True
    att = torch.softmax(logits, -1)
    for r, inside in enumerate(regions):
        torch.testing.assert_close(weights[:, r, inside], att[:, inside] / att[:, inside].sum(1, keepdim=True))


# --------------------------------------------------------------------------------------------------------------
# The fused cell against the equations


def split_paper_weights(cell: JointAttentionCell) -> dict[str, torch.Tensor]:
    """The paper's matrices cut out of the fused parameters by the layout the class docstring documents."""
    cfg = cell.config
    hid, k_in, sizes, late = cfg.hidden, len(cell.in_channels), cell.input_sizes, cfg.fusion == "late"
    w: dict[str, torch.Tensor] = {}
    row = 0
    for k in range(1, k_in + 1):
        for g in "ifo":
            w[f"W_h{g}{k}"] = cell.w_h[row : row + hid]
            row += hid
    w["W_hc"] = cell.w_h[row : row + hid]
    row += hid
    if late:
        for k, d in enumerate(sizes, 1):
            w[f"U'_{k}"] = cell.w_h[row : row + d]
            row += d
    w["W_att"] = cell.w_h[row:]
    assert w["W_att"].shape[0] == cell.grid[0] * cell.grid[1]
    w["b_c"] = cell.b_c
    col = 0
    for k, d in enumerate(sizes, 1):
        wx = cell.w_x[k - 1]
        for g_idx, g in enumerate("ifo"):
            w[f"W_x{g}{k}"] = wx[g_idx * hid : (g_idx + 1) * hid]
            w[f"b_{g}{k}"] = cell.b_sub[k - 1, g_idx]
            w[f"W_{g}{g}{k}"] = cell.w_gate[g_idx][:, (k - 1) * hid : k * hid]
        if late:
            w[f"W'_{k}"] = wx[3 * hid :]
            w[f"b'_{k}"] = cell.b_in[col : col + d]
            w[f"W_xc{k}"] = cell.w_xc[:, col : col + d]
        else:
            w[f"W_xc{k}"] = wx[3 * hid :]
        col += d
    return w


def reference_sequence(cell: JointAttentionCell, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint cell step by step, straight from the equations, one matrix per input and gate."""
    cfg = cell.config
    w = split_paper_weights(cell)
    k_in = len(xs)
    batch, steps = xs[0].shape[:2]
    h = torch.zeros(batch, cfg.hidden, dtype=xs[0].dtype)
    c = torch.zeros_like(h)
    act = torch.tanh if cell.subgate_activation == "tanh" else (lambda v: v)

    def lin(name: str, v: torch.Tensor) -> torch.Tensor:
        return v @ w[name].T

    hs, atts = [], []
    for t in range(steps):
        att = torch.softmax(lin("W_att", h), dim=1)  # from h_{t-1}
        x = [reference_pool(xs[k][:, t], att, cfg.pyramid) for k in range(k_in)]
        gate = {}
        for g in "ifo":
            subs = [
                act(lin(f"W_x{g}{k + 1}", x[k]) + lin(f"W_h{g}{k + 1}", h) + w[f"b_{g}{k + 1}"]) for k in range(k_in)
            ]
            gate[g] = torch.sigmoid(sum(lin(f"W_{g}{g}{k + 1}", subs[k]) for k in range(k_in)))
        if cfg.fusion == "early":
            inner = [x[k] for k in range(k_in)]
        else:
            inner = [
                x[k] * torch.sigmoid(lin(f"W'_{k + 1}", x[k]) + lin(f"U'_{k + 1}", h) + w[f"b'_{k + 1}"])
                for k in range(k_in)
            ]
        cand = torch.tanh(sum(lin(f"W_xc{k + 1}", inner[k]) for k in range(k_in)) + lin("W_hc", h) + w["b_c"])
        c = gate["f"] * c + gate["i"] * cand
        h = gate["o"] * torch.tanh(c)
        hs.append(h)
        atts.append(att)
    return torch.stack(hs, 1), torch.stack(atts, 1)


@pytest.mark.parametrize(
    "fusion, pyramid, grid",
    [("early", True, (5, 4)), ("late", True, (5, 4)), ("early", False, (4, 4)), ("late", False, (4, 4)),
     ("early", True, (1, 5)), ("late", True, (4, 1))],
)
def test_fused_cell_matches_reference(fusion: str, pyramid: bool, grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cell = make_cell(grid, fusion=fusion, pyramid=pyramid).double()
    xs = make_inputs(grid, dtype=torch.float64)
    h, att = cell.forward_sequence(xs)
    h_ref, att_ref = reference_sequence(cell, xs)
    diff_h, diff_att = max_diff(h, h_ref), max_diff(att, att_ref)
    assert diff_h < 1e-12, f"hidden states: max abs diff {diff_h:g}"
    assert diff_att < 1e-12, f"attention: max abs diff {diff_att:g}"


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_paper_weights_agree_with_the_documented_layout(fusion: str) -> None:
    cell = make_cell((5, 4), fusion=fusion)
    ours, theirs = split_paper_weights(cell), cell.paper_weights()
    assert set(ours) == set(theirs)
    for name, t in ours.items():
        assert torch.equal(t, theirs[name]), name


def shared_early_late() -> tuple[JointAttentionCell, JointAttentionCell]:
    """An early- and a late-fusion cell holding the same values in every matrix they share."""
    torch.manual_seed(0)
    early = make_cell((4, 4), fusion="early").double()
    late = make_cell((4, 4), fusion="late").double()
    we, wl = early.paper_weights(), late.paper_weights()
    with torch.no_grad():
        for name, t in we.items():
            wl[name].copy_(t)
    return early, late


def test_early_and_late_fusion_differ_with_shared_weights() -> None:
    early, late = shared_early_late()
    xs = make_inputs((4, 4), dtype=torch.float64)
    h_early, _ = early.forward_sequence(xs)
    h_late, _ = late.forward_sequence(xs)
    assert max_diff(h_early, h_late) > 1e-3


def test_late_fusion_with_open_input_gates_is_early_fusion() -> None:
    early, late = shared_early_late()
    wl = late.paper_weights()
    with torch.no_grad():
        for k in (1, 2):
            wl[f"W'_{k}"].zero_()
            wl[f"U'_{k}"].zero_()
            wl[f"b'_{k}"].fill_(40.0)  # sigmoid(40) == 1.0 in float64
    xs = make_inputs((4, 4), dtype=torch.float64)
    diff = max_diff(early.forward_sequence(xs)[0], late.forward_sequence(xs)[0])
    assert diff < 1e-12, f"max abs diff {diff:g}"


@pytest.mark.parametrize("pyramid", [True, False])
def test_degenerate_cell_is_an_lstm_cell(pyramid: bool) -> None:
    # With one input, no sub-gate nonlinearity ("identity", a test-only option) and W_ii = W_ff = W_oo = I, the
    # gates are sigma(W_x x + W_h h + b): exactly nn.LSTMCell on the pooled input, given its weights (gate order
    # i, f, g, o, with bias_ih = the cell's biases and bias_hh = 0). The attention still comes from W_att h_{t-1},
    # so the reference recomputes it from its own h, and the pooled input with spatial_pyramid_pool.
    torch.manual_seed(0)
    grid = (5, 4)
    cell = make_cell(grid, in_channels=[8], subgate_activation="identity", pyramid=pyramid).double()
    w = cell.paper_weights()
    with torch.no_grad():
        for g in "ifo":
            w[f"W_{g}{g}1"].copy_(torch.eye(HID))
    ref = torch.nn.LSTMCell(cell.input_sizes[0], HID).double()
    with torch.no_grad():
        ref.weight_ih.copy_(torch.cat([w["W_xi1"], w["W_xf1"], w["W_xc1"], w["W_xo1"]]))
        ref.weight_hh.copy_(torch.cat([w["W_hi1"], w["W_hf1"], w["W_hc"], w["W_ho1"]]))
        ref.bias_ih.copy_(torch.cat([w["b_i1"], w["b_f1"], w["b_c"], w["b_o1"]]))
        ref.bias_hh.zero_()
    (x,) = make_inputs(grid, channels=[8], dtype=torch.float64)
    h_seq, _ = cell.forward_sequence([x])
    h = c = torch.zeros(B, HID, dtype=torch.float64)
    for t in range(T):
        att = torch.softmax(h @ w["W_att"].T, dim=1)
        pooled = spatial_pyramid_pool(x[:, t], att) if pyramid else x[:, t].flatten(2) @ att.unsqueeze(-1)
        h, c = ref(pooled.reshape(B, -1), (h, c))
        diff = max_diff(h_seq[:, t], h)
        assert diff < 1e-12, f"step {t}: max abs diff {diff:g}"


# --------------------------------------------------------------------------------------------------------------
# Clip scores


def test_clip_scores() -> None:
    torch.manual_seed(0)
    logits = torch.randn(B, T, NCLS)
    scores = clip_scores(logits, last=4)
    assert scores.shape == (B, NCLS)
    torch.testing.assert_close(scores, torch.softmax(logits[:, 2:], -1).mean(1))
    torch.testing.assert_close(scores.sum(-1), torch.ones(B))
    torch.testing.assert_close(clip_scores(logits, last=16), torch.softmax(logits, -1).mean(1))
    with pytest.raises(ValueError):
        clip_scores(logits, last=0)


def test_clip_vote_is_the_papers_hard_vote_not_the_mean_softmax() -> None:
    # Sec. 3.5: pred(t) = argmax_i prob_t(i); the clip's label has the most votes among the last L2 steps.
    # Crafted so the two rules disagree: class 0 wins 2 of the last 3 steps narrowly, class 1 wins one step
    # by a landslide, so class 1 has the larger mean softmax.
    lo, hi = torch.tensor([0.2, 0.0, 0.0]), torch.tensor([0.0, 8.0, 0.0])
    first = torch.tensor([0.0, 0.0, 9.0])  # outside the last 3 steps: must not count
    logits = torch.stack([first, lo, lo, hi])[None]  # (1, T=4, K=3)
    labels, votes = clip_vote(logits, last=3)
    assert votes.tolist() == [[2, 1, 0]]
    assert labels.tolist() == [0]
    assert clip_scores(logits, last=3).argmax(-1).tolist() == [1]  # the mean rule says 1
    # direct computation from the printed rule, on random logits
    torch.manual_seed(0)
    logits = torch.randn(64, 7, 4)
    labels, _ = clip_vote(logits, last=5)
    for b in range(64):
        preds = [int(torch.softmax(logits[b, t], -1).argmax()) for t in range(2, 7)]
        counts = [preds.count(k) for k in range(4)]
        tied = [k for k in range(4) if counts[k] == max(counts)]
        summed = torch.softmax(logits[b, 2:], -1).sum(0)
        assert labels[b].item() == max(tied, key=lambda k: (summed[k].item(), -k))


def test_clip_vote_tie_goes_to_the_larger_summed_softmax() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    labels, votes = clip_vote(torch.stack([a, b])[None], last=2)  # one vote each
    assert votes.tolist() == [[1, 1]] and labels.tolist() == [1]
    with pytest.raises(ValueError):
        clip_vote(torch.zeros(1, 2, 2), last=0)
