"""actiontk.metrics against values computed by hand on small fixed predictions."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from actiontk import metrics as M

# 7 items, 4 classes; class 3 has no item (no positive), class 2 has three.
LABELS = np.array([0, 0, 1, 1, 2, 2, 2])
SCORES = np.array([
    [0.70, 0.10, 0.10, 0.10],  # -> 0, right
    [0.25, 0.50, 0.15, 0.10],  # -> 1, wrong
    [0.10, 0.60, 0.20, 0.10],  # -> 1, right
    [0.40, 0.15, 0.35, 0.10],  # -> 0, wrong
    [0.10, 0.10, 0.70, 0.10],  # -> 2, right
    [0.30, 0.25, 0.05, 0.40],  # -> 3, wrong; label 2 is not even in its top 3
    [0.10, 0.05, 0.25, 0.60],  # -> 3, wrong
])


def close(x: float, frac: F) -> bool:
    return abs(x - float(frac)) < 1e-12


def test_hand_computed_figures():
    r = M.classification(LABELS, SCORES.argmax(1), SCORES)
    assert close(r["accuracy"], F(3, 7))
    # per class: 1/2, 1/2, 1/3 (class 3 has no item and does not count)
    assert close(r["mean_class_accuracy"], F(4, 9))
    np.testing.assert_allclose(r["class_accuracy"][:3], [1 / 2, 1 / 2, 1 / 3])
    assert np.isnan(r["class_accuracy"][3])
    # AP, ranking each column: class 0 positives at ranks 1 and 4 -> (1 + 2/4) / 2; class 1 the same;
    # class 2 positives at ranks 1, 3 and 7 -> (1 + 2/3 + 3/7) / 3
    np.testing.assert_allclose(r["ap"][:3], [3 / 4, 3 / 4, 44 / 63])
    assert close(r["mAP"], (F(3, 4) + F(3, 4) + F(44, 63)) / 3)
    assert r["skipped"] == [3]  # no positive: left out of mAP, reported
    assert r["support"].tolist() == [2, 2, 3, 0]
    assert r["confusion"].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 0]]
    assert list(r["top_k"]) == [3]  # top-5 is not < 4 classes
    assert close(r["top_k"][3], F(6, 7))  # only item 5 misses


def test_most_confused_and_mean_std():
    cm = M.confusion(LABELS, SCORES.argmax(1), 4)
    assert M.most_confused(cm) == [(2, 3, 2), (0, 1, 1), (1, 0, 1)]
    assert M.most_confused(cm, 1) == [(2, 3, 2)]
    assert M.most_confused(np.eye(3, dtype=int)) == []
    mean, std = M.mean_std([0.5, 0.75, 1.0])
    assert mean == pytest.approx(0.75) and std == pytest.approx(0.25)  # sample std, ddof = 1
    assert M.mean_std([0.4]) == (0.4, 0.0)


def test_single_class_split():
    labels = np.zeros(4, int)
    scores = np.array([[.5, .3, .2], [.2, .5, .3], [.6, .2, .2], [.1, .1, .8]])
    r = M.classification(labels, scores.argmax(1), scores)
    assert r["accuracy"] == 0.5 and r["mean_class_accuracy"] == 0.5
    assert r["ap"][0] == 1.0  # every item positive: precision is 1 at every recall
    assert r["mAP"] == 1.0 and r["skipped"] == [1, 2]
    assert r["top_k"] == {}  # 3 classes: no k in (3, 5) below it
    assert r["confusion"].tolist() == [[2, 1, 1], [0, 0, 0], [0, 0, 0]]


def test_ap_ties_follow_the_step_definition():
    # scores 0.9 (+), 0.5 (+), 0.5 (-), 0.1 (-): at the tied threshold precision is 2/3 at recall 1
    ap = M.average_precisions(np.array([0, 0, 1, 1]), np.array([[.9, .1], [.5, .5], [.5, .5], [.1, .9]]))
    assert ap[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_voting_ties_and_the_mean_score_rule():
    clip_video = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    clip_scores = np.array([
        [0.6, 0.4, 0.0], [0.3, 0.7, 0.0],  # video 0: votes 0 and 1 tie; mean (0.45, 0.55) breaks it: 1
        [0.4, 0.1, 0.5], [0.4, 0.1, 0.5], [1.0, 0.0, 0.0],  # video 1: votes 2, 2, 0 -> 2; mean score -> 0
        [0.45, 0.35, 0.2], [0.1, 0.6, 0.3], [0.2, 0.35, 0.45],  # video 2: three-way tie; means (.25, .43, .32) -> 1
    ])
    voted, mean_pred, mean_scores = M.video_predictions(clip_video, clip_scores, 3)
    assert voted.tolist() == [1, 2, 1]
    assert mean_pred.tolist() == [1, 0, 1]
    np.testing.assert_allclose(mean_scores[1], [0.6, 0.2 / 3, 1 / 3])
    labels = np.array([1, 0, 1])
    assert M.accuracy(labels, voted) == pytest.approx(2 / 3)  # video 1 wrong by voting...
    assert M.accuracy(labels, mean_pred) == 1.0  # ...right by mean score


def test_vote_is_the_rule_train_lstm_applies():
    from actiontk.stages.train_lstm import vote as stage_vote

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k = rng.integers(1, 7), rng.integers(2, 5)
        scores = rng.dirichlet(np.ones(k), size=n)
        preds = rng.integers(0, k, size=n)  # any predictions, so that ties are frequent
        assert M.vote(preds, scores, k) == stage_vote(preds, scores, k)


def test_video_vote_counts_the_clip_labels_given():
    # The clip labels are the paper's hard votes, which can differ from the argmax of the mean clip softmax.
    clip_video = np.array([0, 0, 0])
    clip_scores = np.array([[0.4, 0.6], [0.45, 0.55], [0.9, 0.1]])  # argmax 1, 1, 0
    clip_preds = np.array([0, 0, 1])  # the hard votes
    voted, mean_pred, _ = M.video_predictions(clip_video, clip_scores, 1, clip_preds)
    assert voted.tolist() == [0] and mean_pred.tolist() == [0]
    assert M.video_predictions(clip_video, clip_scores, 1)[0].tolist() == [1]  # default: argmax of the scores
    with pytest.raises(ValueError, match="clip labels"):
        M.video_predictions(clip_video, clip_scores, 1, np.array([0, 1]))


def test_video_without_clips_is_refused():
    with pytest.raises(ValueError, match="videos without clips"):
        M.video_predictions(np.array([0, 0, 2]), np.full((3, 2), 0.5), 3)
