"""MPII Human Pose, as an action dataset (Andriluka et al., CVPR 2014): still images, one activity per image.

The GAP paper (Girdhar & Ramanan, NIPS 2017) classifies the image's activity (``act_name``; the papers
report 393 classes) and uses the people's keypoints for its pose branch. This module reads both from the
official annotation file and the user's train/val image lists.

Files (``ROOT`` is ``--root``)::

    ROOT/mpii_human_pose_v1_u12_1.mat       annotations; also found at
                                            ROOT/mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat
                                            (where the official zip unpacks it), else at $ACTIONTK_MPII_MAT
    ROOT/images/<name>.jpg                  the images (mpii_human_pose_v1.tar.gz)
    ROOT/images_mpii_train.txt              train images, one name without .jpg per line
    ROOT/images_mpii_val.txt                test images (the "val" split of the published action results)

The annotation file is parsed with ``scipy.io.loadmat(squeeze_me=True, struct_as_record=False)``, where
the real file has every oddity squeezing can produce: a struct array of one element comes back as a lone
struct, an absent value as an empty array, ``is_visible`` as an int, a string ``'1'``/``'0'``, an empty
array or no field at all. :func:`load_annotations` turns it into plain Python: per image its name, action
and people, each person a ``(16, 3)`` array ``[x, y, visible]`` in MPII's joint order (:data:`JOINTS`).

Classes are the distinct non-empty ``act_name`` values of the labelled images of the whole file (not only
of the listed ones, so that the class order never depends on the lists), ordered by the smallest
``act_id`` that carries the name, ties broken by the name. Some names carry several ids in the real file;
an image is labelled when its ``act_name`` is not empty and its ``act_id`` is not negative (-1 marks an
unlabelled image).

Parsing the real file takes seconds, so the result is cached twice: in memory for the life of the
process (keyed by the file's path, size and mtime) and on disk as
``<cache root>/datasets/mpii-<sha256 of the .mat, 16 hex>-v<FORMAT>.npz`` (plain arrays, no pickle; the
cache root is ``$ACTIONTK_CACHE`` or the checkout's ``cache/``). A changed .mat has another hash, so a
stale parse is never read; an unwritable cache root only means parsing every time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actiontk.cache.runs import atomic_write, default_cache_root, file_sha256
from actiontk.datasets.base import (
    IMAGE_EXTENSIONS,
    Dataset,
    Sample,
    SplitIndex,
    escape_message,
    link_escape,
    read_lines,
)
from actiontk.errors import UserError

__all__ = [
    "ENV_MAT", "FLIP_PAIRS", "IMAGE_DIR", "JOINTS", "LIMBS", "MAT_NAME", "MPII", "NUM_JOINTS", "TRAIN_LIST",
    "VAL_LIST", "MPIIAnnotations", "MPIIImage", "MPIIIndex", "MPIIPerson", "find_mat", "load_annotations",
    "parse_mat",
]

MAT_NAME = "mpii_human_pose_v1_u12_1.mat"
MAT_DIR = "mpii_human_pose_v1_u12_2"  # the folder the official annotation zip unpacks to
ENV_MAT = "ACTIONTK_MPII_MAT"
IMAGE_DIR = "images"
TRAIN_LIST = "images_mpii_train.txt"
VAL_LIST = "images_mpii_val.txt"

# MPII's joint ids 0..15, in order (the README of the annotation release).
JOINTS: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax", "upper_neck", "head_top",
    "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
NUM_JOINTS = len(JOINTS)
# (right, left) joint ids: what a horizontal flip swaps.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
# The stick figure: pairs of joint ids joined by a limb.
LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15),
)

FORMAT = 1  # of the on-disk parse cache; bump when the parse or the arrays change


# -- what the parse gives -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MPIIPerson:
    """One annotated person (an element of ``annorect``)."""

    joints: np.ndarray
    """(16, 3) float64, row = MPII joint id: x, y exactly as the file gives them (MPII's, and the toy set's,
    are MATLAB 1-based pixel indices: ``actiontk.data.pose.from_pixel_indices`` makes them continuous),
    visible (1.0 visible, 0.0 annotated but occluded, NaN: the file gives no visibility). A joint the file
    does not annotate is NaN in all three columns."""
    scale: float | None
    """MPII's person scale (person height / 200 px), None when absent."""
    objpos: tuple[float, float] | None
    """Rough centre (x, y) of the person, None when absent."""
    head_box: tuple[float, float, float, float] | None
    """Head rectangle (x1, y1, x2, y2), None when absent."""
    single: bool
    """Listed in ``RELEASE.single_person`` (sufficiently separated from the other people)."""

    @property
    def annotated(self) -> np.ndarray:
        """(16,) bool: joints with a position."""
        return ~np.isnan(self.joints[:, 0])

    @property
    def visible(self) -> np.ndarray:
        """(16,) bool: joints marked visible (``is_visible`` 1)."""
        return self.joints[:, 2] == 1.0


@dataclass(frozen=True)
class MPIIImage:
    """One entry of ``RELEASE.annolist`` with its ``RELEASE.act`` entry."""

    index: int  # 0-based position in RELEASE.annolist (the file's image order)
    name: str  # file name as in the .mat, e.g. '015601864.jpg'
    act_id: int  # -1: unlabelled (or no id in the file)
    act_name: str  # '' when unlabelled
    cat_name: str  # '' when absent
    label: int | None  # index into MPIIAnnotations.classes; None when unlabelled
    img_train: bool | None  # RELEASE.img_train (True: MPII's own training set); None when the file has none
    people: tuple[MPIIPerson, ...]

    @property
    def labelled(self) -> bool:
        return self.label is not None

    @property
    def stem(self) -> str:
        """The name without its extension: how the image lists name it."""
        return os.path.splitext(self.name)[0]

    def keypoints(self) -> np.ndarray:
        """(P, 16, 3) float64: every person's joints (P may be 0)."""
        if not self.people:
            return np.zeros((0, NUM_JOINTS, 3))
        return np.stack([p.joints for p in self.people])


@dataclass
class MPIIAnnotations:
    """The parsed annotation file: images in file order, the class list, and counts of oddities."""

    path: Path  # the .mat file
    images: list[MPIIImage]
    classes: list[str]  # act_name per class index, ordered by smallest act_id, then name
    class_act_ids: list[tuple[int, ...]]  # the act_ids carrying each class name, ascending
    class_categories: list[str]  # cat_name of each class (that of its smallest act_id)
    anomalies: dict[str, int] = field(default_factory=dict)  # kind -> count of odd entries met while parsing
    _by_stem: dict[str, MPIIImage] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for image in self.images:
            if image.name:
                if image.stem in self._by_stem:  # the first one wins
                    self.anomalies["duplicate-image-name"] = self.anomalies.get("duplicate-image-name", 0) + 1
                self._by_stem.setdefault(image.stem, image)

    def __len__(self) -> int:
        return len(self.images)

    def get(self, name: str) -> MPIIImage | None:
        """The image called ``name`` (with or without its extension), or None."""
        stem = os.path.splitext(name)[0] if name.lower().endswith(tuple(IMAGE_EXTENSIONS)) else name
        return self._by_stem.get(stem)

    def __getitem__(self, name: str) -> MPIIImage:
        image = self.get(name)
        if image is None:
            raise KeyError(name)
        return image

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    @property
    def labelled(self) -> list[MPIIImage]:
        return [im for im in self.images if im.labelled]

    @property
    def unlabelled(self) -> list[MPIIImage]:
        return [im for im in self.images if not im.labelled]

    def counts(self) -> dict[str, int]:
        """Totals over the whole file: images, labelled, unlabelled, classes, people, joints, visible joints."""
        people = [p for im in self.images for p in im.people]
        return {
            "images": len(self.images),
            "labelled": sum(im.labelled for im in self.images),
            "unlabelled": sum(not im.labelled for im in self.images),
            "classes": len(self.classes),
            "people": len(people),
            "people_with_keypoints": sum(bool(p.annotated.any()) for p in people),
            "joints": int(sum(p.annotated.sum() for p in people)),
            "visible_joints": int(sum(p.visible.sum() for p in people)),
        }


# -- tolerant readers of squeezed MATLAB values ---------------------------------------------------------


def _is_struct(value) -> bool:
    from scipy.io.matlab import mat_struct

    return isinstance(value, mat_struct)


def _items(value) -> list:
    """A struct array or cell as a list: a lone (squeezed) element becomes [it], an empty array []."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel()) if value.size else []
    return [value]


def _text(value) -> str:
    """A MATLAB string as str: '' for an empty array or a missing value."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        if value.dtype.kind in "US":
            return "".join(_text(v) for v in value.ravel())
        if value.size == 1:
            return _text(value.ravel()[0])
        return ""
    if isinstance(value, (int, float, np.number)):
        return str(value)
    return ""


def _number(value) -> float | None:
    """A scalar as float: None for an empty array, a missing value, NaN or text that is not a number."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float, np.number)):
        f = float(value)
        return None if np.isnan(f) else f
    if isinstance(value, (str, bytes)):
        try:
            f = float(_text(value))
        except ValueError:
            return None
        return None if np.isnan(f) else f
    if isinstance(value, np.ndarray) and value.size == 1:
        return _number(value.ravel()[0])
    return None


def _visibility(value) -> float:
    """``is_visible`` as 1.0 / 0.0, or NaN when the file does not say (empty, missing, unreadable)."""
    v = _number(value)
    if v is None:
        return float("nan")
    return 1.0 if v > 0 else 0.0


def _point_xy(value) -> tuple[float, float] | None:
    if not _is_struct(value):
        return None
    x, y = _number(getattr(value, "x", None)), _number(getattr(value, "y", None))
    return None if x is None or y is None else (x, y)


# -- parsing ----------------------------------------------------------------------------------------------


@dataclass
class _Flat:
    """The parse as plain arrays: what the disk cache stores and what :func:`_assemble` builds objects from."""

    names: list[str]
    act_id: np.ndarray  # (N,) int64, -1 = none
    act_name: list[str]
    cat_name: list[str]
    img_train: np.ndarray  # (N,) int8: 1, 0, or -1 (unknown)
    person_image: np.ndarray  # (P,) int64: annolist index of each person
    joints: np.ndarray  # (P, 16, 3) float64
    scale: np.ndarray  # (P,) float64, NaN = none
    objpos: np.ndarray  # (P, 2) float64, NaN = none
    head_box: np.ndarray  # (P, 4) float64, NaN = none
    single: np.ndarray  # (P,) bool
    anomalies: dict[str, int]


def _load_release(path: Path):
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        raise UserError(f"{path}: a MATLAB v7.3 file, which scipy cannot read",
                        "use the official mpii_human_pose_v1_u12_1.mat (MATLAB v5 format)") from None
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... on a damaged or foreign file
        raise UserError(f"{path}: cannot read it as a MATLAB file ({type(e).__name__}: {e})",
                        "is this the MPII annotation file mpii_human_pose_v1_u12_1.mat?") from None
    release = mat.get("RELEASE")
    if not _is_struct(release):
        raise UserError(f"{path} holds no RELEASE struct (variables: {', '.join(k for k in mat if k[0] != '_')})",
                        "is this the MPII annotation file mpii_human_pose_v1_u12_1.mat?")
    return release


def parse_mat(path: str | Path) -> _Flat:
    """Parse the annotation file (slow for the real one: use :func:`load_annotations`, which caches)."""
    path = Path(path)
    release = _load_release(path)
    anomalies: Counter[str] = Counter()
    for required in ("annolist", "act"):
        if not hasattr(release, required):
            raise UserError(f"{path}: RELEASE has no field {required!r} (it has: {', '.join(release._fieldnames)})",
                            "is this the MPII annotation file mpii_human_pose_v1_u12_1.mat?")
    annolist = _items(release.annolist)
    acts = _items(release.act)
    if len(acts) != len(annolist):
        raise UserError(f"{path}: RELEASE.act has {len(acts)} entries but RELEASE.annolist has {len(annolist)}",
                        "the file is damaged or not the official one")
    n = len(annolist)

    img_train = np.full(n, -1, dtype=np.int8)
    if hasattr(release, "img_train"):
        flags = _items(release.img_train)
        if len(flags) == n:
            img_train[:] = [(-1 if (v := _number(f)) is None else int(v > 0)) for f in flags]
        else:
            anomalies["img_train-length-mismatch"] += 1
    singles: list[set[int]] = [set() for _ in range(n)]
    if hasattr(release, "single_person"):
        cells = _items(release.single_person)
        if len(cells) == n:
            for i, cell in enumerate(cells):
                singles[i] = {int(v) for v in (_number(c) for c in _items(cell)) if v is not None}
        else:
            anomalies["single_person-length-mismatch"] += 1

    names: list[str] = []
    act_id = np.full(n, -1, dtype=np.int64)
    act_name: list[str] = []
    cat_name: list[str] = []
    person_image: list[int] = []
    joints: list[np.ndarray] = []
    scale: list[float] = []
    objpos: list[tuple[float, float]] = []
    head_box: list[tuple[float, float, float, float]] = []
    single: list[bool] = []
    nan = float("nan")
    for i, (anno, act) in enumerate(zip(annolist, acts, strict=True)):
        name = _text(getattr(getattr(anno, "image", None), "name", None)) if _is_struct(anno) else ""
        if not name:
            anomalies["image-without-name"] += 1
        names.append(name)
        if _is_struct(act):
            aid = _number(getattr(act, "act_id", None))
            act_id[i] = -1 if aid is None else int(aid)
            act_name.append(_text(getattr(act, "act_name", None)))
            cat_name.append(_text(getattr(act, "cat_name", None)))
        else:
            anomalies["act-not-a-struct"] += 1
            act_name.append("")
            cat_name.append("")
        if act_name[-1] and act_id[i] < 0:
            anomalies["act-name-without-id"] += 1
        rects = _items(getattr(anno, "annorect", None)) if _is_struct(anno) else []
        for j, rect in enumerate(rects, start=1):
            if not _is_struct(rect):
                anomalies["annorect-not-a-struct"] += 1
                continue
            person = np.full((NUM_JOINTS, 3), nan)
            points = _items(getattr(getattr(rect, "annopoints", None), "point", None))
            if not points:
                anomalies["person-without-keypoints"] += 1
            for point in points:
                if not _is_struct(point):
                    anomalies["point-not-a-struct"] += 1
                    continue
                jid = _number(getattr(point, "id", None))
                if jid is None or not jid.is_integer() or not 0 <= jid < NUM_JOINTS:
                    anomalies["point-with-bad-id"] += 1
                    continue
                xy = _point_xy(point)
                if xy is None:
                    anomalies["point-without-coordinates"] += 1
                    continue
                jid = int(jid)
                if not np.isnan(person[jid, 0]):
                    anomalies["duplicate-joint"] += 1  # keep the first
                    continue
                vis = _visibility(getattr(point, "is_visible", None))
                if np.isnan(vis):
                    anomalies["visibility-not-recorded"] += 1
                person[jid] = (xy[0], xy[1], vis)
            person_image.append(i)
            joints.append(person)
            s = _number(getattr(rect, "scale", None))
            scale.append(nan if s is None else s)
            objpos.append(_point_xy(getattr(rect, "objpos", None)) or (nan, nan))
            box = [_number(getattr(rect, k, None)) for k in ("x1", "y1", "x2", "y2")]
            head_box.append(tuple(nan if v is None else v for v in box))  # type: ignore[arg-type]
            single.append(j in singles[i])
    return _Flat(
        names=names, act_id=act_id, act_name=act_name, cat_name=cat_name, img_train=img_train,
        person_image=np.asarray(person_image, dtype=np.int64),
        joints=np.stack(joints) if joints else np.zeros((0, NUM_JOINTS, 3)),
        scale=np.asarray(scale, dtype=np.float64), objpos=np.asarray(objpos, dtype=np.float64).reshape(-1, 2),
        head_box=np.asarray(head_box, dtype=np.float64).reshape(-1, 4), single=np.asarray(single, dtype=bool),
        anomalies=dict(sorted(anomalies.items())),
    )


def _assemble(flat: _Flat, path: Path) -> MPIIAnnotations:
    labelled = [bool(name) and aid >= 0 for name, aid in zip(flat.act_name, flat.act_id.tolist(), strict=True)]
    ids_of: dict[str, set[int]] = {}
    cat_of: dict[tuple[str, int], str] = {}
    for name, aid, cat, ok in zip(flat.act_name, flat.act_id.tolist(), flat.cat_name, labelled, strict=True):
        if ok:
            ids_of.setdefault(name, set()).add(aid)
            cat_of.setdefault((name, aid), cat)
    classes = sorted(ids_of, key=lambda c: (min(ids_of[c]), c))
    label_of = {c: k for k, c in enumerate(classes)}
    people: list[list[MPIIPerson]] = [[] for _ in flat.names]
    for p, i in enumerate(flat.person_image.tolist()):
        s = float(flat.scale[p])
        pos = flat.objpos[p]
        box = flat.head_box[p]
        people[i].append(MPIIPerson(
            joints=flat.joints[p],
            scale=None if np.isnan(s) else s,
            objpos=None if np.isnan(pos).any() else (float(pos[0]), float(pos[1])),
            head_box=None if np.isnan(box).any() else tuple(float(v) for v in box),  # type: ignore[arg-type]
            single=bool(flat.single[p]),
        ))
    images = []
    for i, name in enumerate(flat.names):
        train = int(flat.img_train[i])
        images.append(MPIIImage(
            index=i, name=name, act_id=int(flat.act_id[i]), act_name=flat.act_name[i] if labelled[i] else "",
            cat_name=flat.cat_name[i], label=label_of[flat.act_name[i]] if labelled[i] else None,
            img_train=None if train < 0 else bool(train), people=tuple(people[i]),
        ))
    return MPIIAnnotations(
        path=path, images=images, classes=classes,
        class_act_ids=[tuple(sorted(ids_of[c])) for c in classes],
        class_categories=[cat_of[(c, min(ids_of[c]))] for c in classes],
        anomalies=dict(flat.anomalies),
    )


# -- caching ----------------------------------------------------------------------------------------------

_MEMO: dict[tuple[str, int, int], MPIIAnnotations] = {}


def _disk_cache_path(digest: str) -> Path:
    return default_cache_root() / "datasets" / f"mpii-{digest[:16]}-v{FORMAT}.npz"


def _save_flat(flat: _Flat, target: Path, digest: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda f: np.savez_compressed(
        f, sha256=np.array(digest), names=np.array(flat.names, dtype=str), act_id=flat.act_id,
        act_name=np.array(flat.act_name, dtype=str), cat_name=np.array(flat.cat_name, dtype=str),
        img_train=flat.img_train, person_image=flat.person_image, joints=flat.joints, scale=flat.scale,
        objpos=flat.objpos, head_box=flat.head_box, single=flat.single,
        anomalies=np.array(json.dumps(flat.anomalies)),
    ))


def _load_flat(source: Path, digest: str) -> _Flat | None:
    try:
        with np.load(source, allow_pickle=False) as z:
            if str(z["sha256"]) != digest:
                return None
            return _Flat(
                names=z["names"].tolist(), act_id=z["act_id"], act_name=z["act_name"].tolist(),
                cat_name=z["cat_name"].tolist(), img_train=z["img_train"], person_image=z["person_image"],
                joints=z["joints"], scale=z["scale"], objpos=z["objpos"], head_box=z["head_box"],
                single=z["single"], anomalies=json.loads(str(z["anomalies"])),
            )
    except (OSError, ValueError, KeyError):
        return None


def find_mat(root: str | Path, mat: str | Path | None = None) -> Path:
    """The annotation file: ``mat`` if given, else ROOT/<MAT_NAME>, ROOT/<MAT_DIR>/<MAT_NAME>, $ACTIONTK_MPII_MAT."""
    root = Path(root).expanduser()
    if mat is not None:
        path = Path(mat).expanduser()
        if not path.is_file():
            raise UserError(f"MPII annotation file not found: {path}", "check the path given for the .mat file")
        return path.resolve()
    candidates = [root / MAT_NAME, root / MAT_DIR / MAT_NAME]
    for cand in candidates:
        if cand.is_file():
            return cand.resolve()
    env = os.environ.get(ENV_MAT)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise UserError(f"MPII annotation file not found: {path} (from ${ENV_MAT})", f"fix or unset ${ENV_MAT}")
        return path.resolve()
    raise UserError(
        f"MPII annotation file not found: looked for {candidates[0]} and {candidates[1]}",
        f"unpack mpii_human_pose_v1_u12_2.zip into ROOT, or set {ENV_MAT}=/path/to/{MAT_NAME}",
    )


def load_annotations(root: str | Path, mat: str | Path | None = None, *, disk_cache: bool = True) -> MPIIAnnotations:
    """The parsed annotation file of the MPII folder ``root`` (see :func:`find_mat`), cached.

    The in-memory cache returns the same object while the file's path, size and mtime are unchanged; the
    disk cache (``disk_cache=True``) is keyed by the file's sha256 (see the module docstring).
    """
    path = find_mat(root, mat)
    st = path.stat()
    memo_key = (str(path), st.st_size, st.st_mtime_ns)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    if not disk_cache:
        flat = parse_mat(path)
    else:
        digest = file_sha256(path)
        target = _disk_cache_path(digest)
        flat = _load_flat(target, digest) if target.is_file() else None
        if flat is None:
            flat = parse_mat(path)
            with contextlib.suppress(OSError):  # an unwritable cache only costs the next parse
                _save_flat(flat, target, digest)
    annotations = _assemble(flat, path)
    _MEMO[memo_key] = annotations
    return annotations


# -- the dataset ------------------------------------------------------------------------------------------


@dataclass
class MPIIIndex(SplitIndex):
    """A :class:`SplitIndex` that also keeps the listed images left out for having no action label."""

    unlabelled: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "test": []})
    annotations: MPIIAnnotations | None = field(default=None, repr=False)


class MPII(Dataset):
    name = "mpii"
    title = "MPII Human Pose (actions)"
    layout = (
        f"ROOT/{MAT_NAME} (or ROOT/{MAT_DIR}/, or ${ENV_MAT}), ROOT/{IMAGE_DIR}/<name>.jpg, "
        f"ROOT/{TRAIN_LIST} + ROOT/{VAL_LIST} (image names without .jpg)"
    )
    kind = "image"
    extensions = IMAGE_EXTENSIONS

    def __init__(self, root: str | Path, mat: str | Path | None = None):
        super().__init__(root)
        self._mat = mat

    @property
    def video_root(self) -> Path:
        """``ROOT/images``: sample ``rel`` paths are image file names relative to it."""
        return self.root / IMAGE_DIR

    def annotations(self) -> MPIIAnnotations:
        return load_annotations(self.root, self._mat)

    def classes(self) -> list[str]:
        return self.annotations().classes

    def disk_videos(self) -> dict[str, Path]:
        """Nothing: ROOT/images also holds MPII's test images, which no list names, so none is 'extra'."""
        return {}

    def index(self, split: int) -> MPIIIndex:
        if split != 1:
            raise UserError(
                f"MPII has one split, not split {split}",
                f"use --split 1: train = {TRAIN_LIST}, test = {VAL_LIST}",
            )
        ann = self.annotations()
        images = self.video_root
        if not images.is_dir():
            raise UserError(f"image folder not found: {images}", "unpack mpii_human_pose_v1.tar.gz into ROOT")
        idx = MPIIIndex(self.name, split, ann.classes, annotations=ann)
        seen: dict[str, str] = {}
        for subset, fname in (("train", TRAIN_LIST), ("test", VAL_LIST)):
            path = self.require_file(self.root / fname, f"MPII {subset} image list")
            for number, line in read_lines(path):
                entry = line.strip()
                stem = os.path.splitext(entry)[0] if entry.lower().endswith(tuple(IMAGE_EXTENSIONS)) else entry
                if any(c in stem for c in "/\\") or stem in (".", ".."):
                    idx.note("outside-root", f"entry {entry!r} is not a plain image name", path, number)
                    continue
                if any(c.isspace() for c in stem):
                    idx.note("malformed", f"expected one image name per line, got {line!r}", path, number)
                    continue
                if stem in seen:
                    idx.note("duplicate", f"{stem!r} is listed twice (first at {seen[stem]})", path, number, stem)
                    continue
                seen[stem] = f"{path.name}:{number}"
                image = ann.get(stem)
                if image is None:
                    idx.note("not-in-annotations", f"{stem!r} is not in {ann.path.name}", path, number, stem)
                    continue
                if not image.labelled:
                    idx.unlabelled[subset].append(image.name)
                    continue
                full = images / image.name
                if (real := link_escape(full, images)) is not None:
                    idx.note("outside-root", escape_message(image.name, real, images), path, number, image.name)
                    continue
                if not full.is_file():
                    idx.note("missing", f"image not found: {full}", path, number, image.name)
                    continue
                idx.subset(subset).append(Sample(image.name, full, image.label, ann.classes[image.label]))
        idx.remarks = self._remarks(idx, ann)
        return idx

    @staticmethod
    def _remarks(idx: MPIIIndex, ann: MPIIAnnotations) -> list[str]:
        c = ann.counts()
        unl = idx.unlabelled
        remarks = [
            f"{len(unl['train']) + len(unl['test'])} listed images have no action label (act_id -1) and are "
            f"excluded: {len(unl['train'])} train, {len(unl['test'])} test",
            f"{ann.path.name}: {c['images']} images ({c['labelled']} labelled, {c['unlabelled']} unlabelled), "
            f"{c['classes']} classes, {c['people']} people ({c['people_with_keypoints']} with keypoints), "
            f"{c['joints']} joints ({c['visible_joints']} visible)",
        ]
        if ann.anomalies:
            odd = ", ".join(f"{k} {v}" for k, v in ann.anomalies.items())
            remarks.append(f"tolerated in {ann.path.name}: {odd}")
        return remarks
