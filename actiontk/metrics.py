"""Evaluation metrics on a training run's test predictions, as plain functions of numpy arrays.

Everything here takes integer labels ``(N,)`` in ``[0, K)``, predictions ``(N,)`` and softmax scores
``(N, K)``; scikit-learn computes what it has (accuracy, balanced accuracy, average precision, top-k
accuracy, the confusion matrix), the rest is a few lines of numpy. The definitions (see docs/evaluate.md):

- **top-1 accuracy**: the fraction of items whose prediction is their label. A clip's label is the joint
  attention paper's hard vote over its last L2 steps (Sec. 3.5, computed by ``train-lstm``). The paper does
  not say how clips make a video's label; ours are the majority over its clips' labels (:func:`vote`) and,
  beside it, the argmax of its clips' mean softmax (:func:`video_predictions` returns both).
- **per-class accuracy**: the fraction of a class's items predicted as that class (recall); undefined
  (NaN) for a class with no item in the split. **Mean class accuracy** averages it over the classes that
  have items (scikit-learn's balanced accuracy).
- **average precision (AP)** of class k: one-vs-rest, items of class k positive, ranked by their softmax
  score for k (scikit-learn's step-wise definition, ``Σ_n (R_n − R_{n−1}) P_n``); undefined (NaN) for a
  class with no positive in the split. **mAP** averages AP over the classes that have a positive; the
  others are returned as skipped so that a report can say how many and why.
- **top-k accuracy**: the label is among the k highest scores; only for k smaller than the number of
  classes (at k = K it is 1 by construction).
"""

from __future__ import annotations

import warnings

import numpy as np

TOP_KS = (3, 5)  # the top-k accuracies reported, where k < number of classes


def vote(clip_preds: np.ndarray, clip_scores: np.ndarray, num_classes: int) -> int:
    """Majority vote over one video's clip labels (ours: the paper is silent on clips -> video).

    A tie goes to the tied class with the highest summed (equivalently mean) clip softmax; a tie in that too
    goes to the smallest class index. This is the rule ``train-lstm`` applies when it writes ``video_vote``.
    """
    counts = np.bincount(np.asarray(clip_preds, np.int64), minlength=num_classes)
    tied = np.flatnonzero(counts == counts.max())
    if len(tied) == 1:
        return int(tied[0])
    mean = np.asarray(clip_scores, np.float64).mean(0)
    return int(tied[np.argmax(mean[tied])])


def video_predictions(clip_video: np.ndarray, clip_scores: np.ndarray, num_videos: int,
                      clip_preds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video from its clips: (vote prediction, mean-score prediction, mean clip softmax (V, K)).

    ``clip_video[i]`` is the video index of clip i, ``clip_preds[i]`` its label (the paper's hard vote over
    its last steps; default: the argmax of its score). Every video must have at least one clip.
    """
    clip_video = np.asarray(clip_video, np.int64)
    clip_scores = np.asarray(clip_scores, np.float64)
    clip_preds = clip_scores.argmax(1) if clip_preds is None else np.asarray(clip_preds, np.int64)
    if clip_preds.shape != clip_video.shape:
        raise ValueError(f"{len(clip_preds)} clip labels for {len(clip_video)} clips")
    K = clip_scores.shape[1]
    counts = np.bincount(clip_video, minlength=num_videos)
    if len(counts) > num_videos or (counts[:num_videos] == 0).any():
        missing = np.flatnonzero(counts[:num_videos] == 0).tolist()
        raise ValueError(f"clip_video does not match {num_videos} videos (videos without clips: {missing[:5]})")
    order = np.argsort(clip_video, kind="stable")  # clips grouped by video, in file order within a video
    ends = np.cumsum(counts)
    voted = np.zeros(num_videos, np.int64)
    mean_scores = np.zeros((num_videos, K), np.float64)
    for v in range(num_videos):
        mine = order[ends[v] - counts[v]:ends[v]]
        scores = clip_scores[mine]  # (clips of v, K)
        mean_scores[v] = scores.mean(0)
        voted[v] = vote(clip_preds[mine], scores, K)
    return voted, mean_scores.argmax(1), mean_scores


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, preds, labels=np.arange(num_classes)).astype(np.int64)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for a class with no item."""
    support = cm.sum(1)
    out = np.full(len(cm), np.nan)
    has = support > 0
    out[has] = np.diag(cm)[has] / support[has]
    return out


def mean_class_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean of the per-class accuracies over the classes that have items in ``labels``."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": those classes are left out
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(labels, preds))


def average_precisions(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One-vs-rest average precision of each class on ``scores[:, k]``; NaN where class k has no positive."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels)
    out = np.full(scores.shape[1], np.nan)
    for k in range(scores.shape[1]):
        positive = labels == k
        if positive.any():
            out[k] = average_precision_score(positive, scores[:, k])
    return out


def mean_average_precision(ap: np.ndarray) -> tuple[float | None, list[int]]:
    """(mean of the defined APs, indices of the classes skipped because they have no positive)."""
    skipped = np.flatnonzero(np.isnan(ap)).tolist()
    defined = ap[~np.isnan(ap)]
    return (float(defined.mean()) if len(defined) else None), skipped


def top_k_accuracy(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    from sklearn.metrics import top_k_accuracy_score

    return float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(scores.shape[1])))


def top_k_values(num_classes: int, ks: tuple[int, ...] = TOP_KS) -> list[int]:
    """The k of :data:`TOP_KS` below the number of classes (top-K accuracy is always 1)."""
    return [k for k in ks if k < num_classes]


def most_confused(cm: np.ndarray, n: int = 10) -> list[tuple[int, int, int]]:
    """The ``n`` largest off-diagonal cells as (true, predicted, count), largest first (ties by index)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(flat, off.shape), strict=True)]
    return [p for p in pairs if p[2] > 0]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of per-split figures."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def classification(labels: np.ndarray, preds: np.ndarray, scores: np.ndarray) -> dict:
    """Every per-class figure of one set of predictions.

    Returns ``accuracy``, ``mean_class_accuracy``, ``mAP`` (None when no class has a positive), ``ap`` and
    ``class_accuracy`` (K arrays, NaN where undefined), ``support``, ``confusion``, ``skipped`` (class
    indices left out of mAP) and ``top_k`` ({k: accuracy}).
    """
    labels = np.asarray(labels, np.int64)
    preds = np.asarray(preds, np.int64)
    scores = np.asarray(scores, np.float64)
    K = scores.shape[1]
    cm = confusion(labels, preds, K)
    ap = average_precisions(labels, scores)
    m_ap, skipped = mean_average_precision(ap)
    return {
        "accuracy": accuracy(labels, preds),
        "mean_class_accuracy": mean_class_accuracy(labels, preds),
        "mAP": m_ap,
        "ap": ap,
        "class_accuracy": per_class_accuracy(cm),
        "support": cm.sum(1),
        "confusion": cm,
        "skipped": skipped,
        "top_k": {k: top_k_accuracy(labels, scores, k) for k in top_k_values(K)},
    }
