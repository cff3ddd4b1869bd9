"""MPII (actions): the annotation parser on the toy set and on hand-written odd .mat files, the split lists,
the parse cache, the toy MPII generator (layout, determinism, learnability) and the CLI end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from actiontk.cli import run
from actiontk.datasets import DATASETS, get_dataset
from actiontk.datasets import mpii
from actiontk.datasets.mpii import MAT_NAME, MPII, TRAIN_LIST, VAL_LIST, find_mat, load_annotations
from actiontk.datasets.toy_mpii import ACTIONS, MARKER, QUIRK_IMAGES, ToyMPIIConfig, generate_toy_mpii, render_image
from actiontk.errors import UserError

SMALL = ToyMPIIConfig(seed=0, classes=3, per_class=6, size=64)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test parses afresh into its own cache root (the parse cache lives there), never the checkout's."""
    monkeypatch.setenv("ACTIONTK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mpii, "_MEMO", {})
    monkeypatch.delenv(mpii.ENV_MAT, raising=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "small"
    calls: list[tuple[int, int]] = []
    info = generate_toy_mpii(root, SMALL, progress=lambda done, total: calls.append((done, total)))
    return root, info, calls


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- an independent reading of the raw .mat ---------------------------------------------------------------


def raw_counts(mat: Path) -> dict[str, int]:
    """People, points and visible points counted from the unsqueezed record arrays: a second parse that
    shares no code (and no squeezing rules) with the loader."""
    release = sio.loadmat(str(mat), squeeze_me=False, struct_as_record=True)["RELEASE"][0, 0]
    people = points = visible = with_points = 0
    for anno in release["annolist"].ravel():
        rects = anno["annorect"]
        if rects.size == 0:
            continue
        for rect in rects.ravel():
            people += 1
            if "annopoints" not in rect.dtype.names or rect["annopoints"].size == 0:
                continue
            pts = rect["annopoints"][0, 0]["point"].ravel()
            with_points += bool(pts.size)
            points += pts.size
            for p in pts:
                if "is_visible" not in p.dtype.names:  # a point struct array without the field
                    continue
                v = p["is_visible"]
                visible += v.size > 0 and str(v.ravel()[0]) in ("1", "1.0")
    acts = release["act"].ravel()
    labelled = sum(a["act_id"].size > 0 and int(a["act_id"].ravel()[0]) >= 0 for a in acts)
    return {"images": release["annolist"].size, "labelled": labelled, "people": people,
            "people_with_keypoints": with_points, "joints": points, "visible_joints": visible}


# -- the toy set through the loader -----------------------------------------------------------------------


def test_layout_is_mpiis(small):
    root, info, calls = small
    n = 3 * 6 + 1 + 2 + QUIRK_IMAGES  # labelled + unlabelled listed (5% of 18, at least 1) + 2 unlisted test images
    # + the unlisted images whose annotations carry the real file's rarer oddities
    files = digests(root)
    jpgs = [f for f in files if f.startswith("images/")]
    assert len(jpgs) == n and all(len(Path(f).stem) == 9 and f.endswith(".jpg") for f in jpgs)
    assert sorted(set(files) - set(jpgs)) == sorted([MARKER, MAT_NAME, TRAIN_LIST, VAL_LIST])  # no temp files
    for fname in (TRAIN_LIST, VAL_LIST):
        lines = (root / fname).read_text().splitlines()
        assert lines == sorted(lines) and all(len(s) == 9 and s.isdigit() for s in lines)
    assert info["images"] == n and info["labelled"] == 18 and info["unlabelled"] == 3 + QUIRK_IMAGES
    assert json.loads((root / MARKER).read_text())["config"] == {"seed": 0, "classes": 3, "per_class": 6, "size": 64,
                                                                 "difficulty": "easy"}
    assert calls[0] == (0, n) and calls[-1] == (n, n)


def test_loader_counts_are_exact(small):
    root, _, _ = small
    ann = load_annotations(root)
    counts = ann.counts()
    raw = raw_counts(root / MAT_NAME)
    assert counts["images"] == raw["images"] == 21 + QUIRK_IMAGES
    assert counts["labelled"] == raw["labelled"] == 18 and counts["unlabelled"] == 3 + QUIRK_IMAGES
    assert counts["classes"] == 3
    for key in ("people", "people_with_keypoints", "joints", "visible_joints"):
        assert counts[key] == raw[key], key
    # the 2 unlisted "MPII test set" images have people without keypoints, and so has the one person annotated
    # with an empty annopoints; everyone else has some
    test_people = sum(len(im.people) for im in ann.images if im.img_train is False)
    assert test_people >= 2 and counts["people"] - counts["people_with_keypoints"] == test_people + 1
    assert ann.anomalies["person-without-keypoints"] == test_people + 1
    # head joints of every third image carry an empty is_visible
    assert ann.anomalies["visibility-not-recorded"] > 0
    assert sum(im.img_train is False for im in ann.images) == 2
    # easy: labelled images show the actor alone; every other unlabelled or unlisted image adds a bystander
    assert all(len(im.people) == 1 for im in ann.images if im.labelled)
    # k = 0 of both groups, and the bystander of the quirk image whose actor's points have no is_visible field
    assert sum(len(im.people) == 2 for im in ann.images if not im.labelled) == 3


def test_hard_images_have_bystanders_and_clutter(tmp_path: Path):
    hard = ToyMPIIConfig(seed=0, classes=3, per_class=6, size=64, difficulty="hard")
    root = tmp_path / "hard"
    generate_toy_mpii(root, hard)
    ann = load_annotations(root)
    counts = ann.counts()
    raw = raw_counts(root / MAT_NAME)
    for key in ("people", "people_with_keypoints", "joints", "visible_joints"):
        assert counts[key] == raw[key], key
    assert sum(len(im.people) == 2 for im in ann.images if im.labelled) >= 3  # a third of 18, give or take
    assert MPII(root).load(1).problems == []
    # the same image drawn easy and hard: one pose (same names, same actor joints up to placement), but the
    # hard background is busy where the easy one is a smooth gradient
    easy_img, _ = render_image(SMALL, "squatting", 0)
    hard_img, _ = render_image(hard, "squatting", 0)
    assert not np.array_equal(easy_img, hard_img)

    def busy(img):  # mean absolute difference between horizontal neighbours
        g = img.astype(np.float32).mean(2)
        return float(np.abs(np.diff(g, axis=1)).mean())
    assert busy(hard_img) > busy(easy_img)


def test_class_order_is_by_smallest_act_id(small):
    root, _, _ = small
    ann = load_annotations(root)
    # ACTIONS[:3] are arms raised (41), squatting (17), running (5 and 205)
    assert ann.classes == ["running", "squatting", "arms raised"]
    assert ann.class_act_ids == [(5, 205), (17,), (41,)]
    assert ann.class_categories == ["toy running", "toy exercise", "toy exercise"]
    running = [im for im in ann.images if im.act_name == "running"]
    assert {im.act_id for im in running} == {5, 205} and all(im.label == 0 for im in running)


def test_split_samples_and_unlabelled(small):
    root, _, _ = small
    idx = MPII(root).load(1)
    assert idx.problems == []
    assert len(idx.train) == 12 and len(idx.test) == 6  # k % 3 == 2 -> val
    assert idx.unlabelled == {"train": [idx.unlabelled["train"][0]], "test": []}
    ann = idx.annotations
    for s in idx.train + idx.test:
        assert s.path == root.resolve() / "images" / s.rel and s.path.is_file()
        assert s.rel == ann[s.rel].name and s.label == ann[s.rel].label
        assert s.class_name == ann.classes[s.label]
    assert not ann[idx.unlabelled["train"][0]].labelled
    assert any("1 listed images have no action label" in n for n in idx.remarks)
    assert MPII(root).video_root == root.resolve() / "images"
    assert MPII.kind == "image" and DATASETS["mpii"] is MPII


def test_keypoints_match_the_drawn_figures(small):
    root, _, _ = small
    ann = load_annotations(root)
    name = ACTIONS[2].name  # running: a profile view, so its far side is marked occluded
    k = 0
    image, joints = render_image(SMALL, name, k)
    from PIL import Image

    # find image k of the class by its pixels: the JPEG of the rendered array (JPEG of noise at 64 px: ~6 apart)
    diffs = sorted((float(np.abs(np.asarray(Image.open(root / "images" / im.name), np.float32) - image).mean()), i)
                   for i, im in enumerate(ann.images) if im.act_name == name)
    assert diffs[0][0] < 10 and diffs[1][0] > 20, diffs
    person = ann.images[diffs[0][1]].people[0]
    got = person.joints
    ok = person.annotated
    assert ok.sum() >= 12
    assert np.allclose(got[ok, :2], joints[0][ok], atol=0.006)  # stored with 2 decimals
    # visibility: the far (left) side of a right-facing runner is 0, or NaN where the file does not say
    vis = got[ok, 2]
    assert set(np.unique(vis[~np.isnan(vis)])) <= {0.0, 1.0} and (vis == 0).sum() >= 3
    assert person.head_box is not None and person.objpos is not None and person.scale > 0


# -- the real file's rarer oddities, as the toy generator writes them ------------------------------------


def squeezed_release(mat: Path):
    return sio.loadmat(str(mat), squeeze_me=True, struct_as_record=False)["RELEASE"]


def as_list(value) -> list:
    return list(value.ravel()) if isinstance(value, np.ndarray) else [value]


def is_empty(value) -> bool:
    return isinstance(value, np.ndarray) and value.size == 0


def test_toy_file_carries_the_real_files_quirks_and_the_parser_copes(small):
    """Each oddity of mpii_human_pose_v1_u12_1.mat that the parser handles is in the toy's file (found in the
    raw .mat, squeezed as the parser loads it), and the parse of that image is what it should be."""
    from scipy.io.matlab import mat_struct

    root, _, _ = small
    release = squeezed_release(root / MAT_NAME)
    ann = load_annotations(root)
    annolist = as_list(release.annolist)
    by_name = {a.image.name: a for a in annolist}

    # an image whose annorect is empty: nobody annotated (its figures are still drawn)
    nobody = [n for n, a in by_name.items() if is_empty(a.annorect)]
    assert nobody and all(ann[n].people == () for n in nobody)
    rects = {(n, j): r for n, a in by_name.items() if not is_empty(a.annorect)
             for j, r in enumerate(as_list(a.annorect))}

    # a person whose annopoints is empty, with empty scale and objpos
    no_points = [(n, j) for (n, j), r in rects.items() if is_empty(getattr(r, "annopoints", np.zeros(1)))]
    assert no_points
    for n, j in no_points:
        person = ann[n].people[j]
        assert np.isnan(person.joints).all() and not person.annotated.any()
    no_scale = [(n, j) for (n, j), r in rects.items() if is_empty(r.scale) and is_empty(r.objpos)]
    assert no_scale and all(ann[n].people[j].scale is None and ann[n].people[j].objpos is None for n, j in no_scale)

    # keypoints whose point struct array has no is_visible field at all
    points = {(n, j): as_list(r.annopoints.point) for (n, j), r in rects.items()
              if isinstance(getattr(r, "annopoints", None), mat_struct)}
    no_field = [(n, j) for (n, j), pts in points.items() if not hasattr(pts[0], "is_visible")]
    assert no_field
    for n, j in no_field:
        person = ann[n].people[j]
        assert person.annotated.sum() >= 10 and np.isnan(person.joints[person.annotated, 2]).all()

    # a person with a single point: the struct array squeezes to a lone struct, not an array
    lone = [(n, j) for (n, j), r in rects.items() if isinstance(getattr(getattr(r, "annopoints", None), "point", None),
                                                                mat_struct)]
    assert lone
    for n, j in lone:
        point = rects[(n, j)].annopoints.point
        person = ann[n].people[j]
        assert person.annotated.sum() == 1
        assert person.joints[int(point.id), :2].tolist() == [point.x, point.y]

    # doubles where MATLAB stores doubles (unsqueezed: every number is a 1x1 double matrix)
    raw = sio.loadmat(str(root / MAT_NAME), squeeze_me=False, struct_as_record=True)["RELEASE"][0, 0]
    assert raw["img_train"].dtype == np.float64
    assert {a["act_id"].dtype for a in raw["act"].ravel()} == {np.dtype(np.float64)}
    labelled = next(i for i, a in enumerate(raw["act"].ravel()) if a["act_id"].ravel()[0] >= 0)
    first = raw["annolist"].ravel()[labelled]["annorect"].ravel()[0]
    point = first["annopoints"][0, 0]["point"].ravel()[0]
    assert point["id"].dtype == np.float64 and point["x"].dtype == np.float64 and first["scale"].dtype == np.float64

    # video_list: the YouTube ids that annolist(i).vididx (1-based, a double) points into, with frame_sec
    videos = as_list(release.video_list)
    assert videos and all(isinstance(v, str) and len(v) == 11 for v in videos)
    with_video = [a for a in annolist if not is_empty(a.vididx)]
    assert len(with_video) >= len(annolist) // 2
    assert all(1 <= a.vididx <= len(videos) and float(a.vididx).is_integer() and a.frame_sec >= 0
               for a in with_video)
    # none of it is an anomaly of the labelled images: their people all have keypoints, as before
    assert all(p.annotated.any() for im in ann.labelled for p in im.people)


# Digests of the labelled images' annotations (names, labels, every person's joints, visibility, scale, objpos,
# head box) and of the split lists, as toy MPII format version 2 wrote them for SMALL in both difficulties: the
# quirks of version 3 went on other images, so the pose and label data the accuracy tests train on is the same.
LABELLED_V2 = {"easy": "5755176b2c81b38c87c487485abbee5a527d6e68315f17e63ac344fe27bf57a2",
               "hard": "eecfa9414bdeb3d3eb8ca696d42b64de8f7f1091675beb10001d2df86ab14004"}


def labelled_digest(root: Path) -> str:
    ann = load_annotations(root, disk_cache=False)
    h = hashlib.sha256()
    for name in (TRAIN_LIST, VAL_LIST):
        h.update((root / name).read_bytes())
    for im in ann.labelled:
        h.update(f"{im.index}|{im.name}|{im.act_id}|{im.act_name}|{im.cat_name}|{im.label}|{im.img_train}".encode())
        for p in im.people:
            h.update(np.ascontiguousarray(p.joints).tobytes())
            h.update(repr((p.scale, p.objpos, p.head_box, p.single)).encode())
    return h.hexdigest()


def test_labelled_annotations_are_those_of_format_version_2(small, tmp_path: Path):
    root, _, _ = small
    assert labelled_digest(root) == LABELLED_V2["easy"]
    hard = tmp_path / "hard"
    generate_toy_mpii(hard, ToyMPIIConfig(seed=0, classes=3, per_class=6, size=64, difficulty="hard"))
    assert labelled_digest(hard) == LABELLED_V2["hard"]


# -- hand-written .mat files ------------------------------------------------------------------------------


def struct_array(records: list[dict], names: list[str], column: bool = False) -> np.ndarray:
    out = np.zeros((len(records), 1) if column else (1, len(records)), dtype=[(n, object) for n in names])
    flat = out.reshape(-1)
    for i, rec in enumerate(records):
        for n in names:
            flat[i][n] = rec.get(n, np.zeros((0, 0)))
    return out


def point(jid, x, y, vis=None) -> dict:
    """A keypoint; vis None leaves is_visible out (savemat then writes [] if the struct array has the field)."""
    p = {"id": jid, "x": x, "y": y}
    if vis is not None:
        p["is_visible"] = vis
    return p


def person(points: list[dict] | None, point_fields=("id", "x", "y", "is_visible"), **extra) -> dict:
    rect = dict(extra)
    rect["annopoints"] = {"point": struct_array(points, list(point_fields))} if points else np.zeros((0, 0))
    return rect


def write_mpii(root: Path, images: list[dict], *, train=(), val=(), on_disk=None, drop=(), rect_fields=None,
               mat_path: Path | None = None) -> Path:
    """An MPII folder: images = [{name, act: (name, cat, id) | None, rects: [...] | None (no field)}]."""
    root.mkdir(parents=True, exist_ok=True)
    rect_fields = rect_fields or ["annopoints", "scale", "objpos"]
    annolist, acts = [], []
    for im in images:
        entry = {"image": {"name": im["name"]}}
        if im.get("rects") is not None:
            entry["annorect"] = struct_array(im["rects"], rect_fields) if im["rects"] else np.zeros((0, 0))
        annolist.append(entry)
        a = im.get("act")
        acts.append({"act_name": a[0], "cat_name": a[1], "act_id": a[2]} if a else
                    {"act_name": np.zeros((0, 0)), "cat_name": np.zeros((0, 0)), "act_id": -1})
    fields = ["image"] + (["annorect"] if any(im.get("rects") is not None for im in images) else [])
    release = {
        "annolist": struct_array(annolist, fields),
        "act": struct_array(acts, ["act_name", "cat_name", "act_id"], column=True),
        "img_train": np.ones((1, len(images)), dtype=np.uint8),
    }
    for key in drop:
        release.pop(key)
    sio.savemat(str(mat_path or root / MAT_NAME), {"RELEASE": release})
    (root / "images").mkdir(exist_ok=True)
    for name in on_disk if on_disk is not None else [im["name"] for im in images]:
        (root / "images" / name).write_bytes(b"not decoded by the parser")
    (root / TRAIN_LIST).write_text("".join(f"{n}\n" for n in train))
    (root / VAL_LIST).write_text("".join(f"{n}\n" for n in val))
    return root


RUN = ("running, general", "running", 3)
WALK = ("walking, general", "walking", 7)


def test_odd_values_of_a_real_file(tmp_path: Path):
    pts = [point(0, 10, 20, 1), point(1, 11.5, 21, "0"), point(2, 12, 22, "1"), point(8, 13, 23, np.zeros((0, 0))),
           point(9, 14, 24), point(16, 1, 1, 1), point(3, 5, 5, 1), point(3, 6, 6, 1),
           point(4, np.zeros((0, 0)), 7, 1)]
    images = [
        {"name": "000000001.jpg", "act": RUN, "rects": [person(pts, scale=1.5, objpos={"x": 3, "y": 4}),
                                                          person(None, scale=2.0),
                                                          person([point(7, 30, 40)], point_fields=("id", "x", "y"))]},
        {"name": "000000002.jpg", "act": WALK, "rects": [person([point(6, 1, 2, 1)])]},  # a lone point
        {"name": "000000003.jpg", "act": None, "rects": []},  # unlabelled, nobody
    ]
    root = write_mpii(tmp_path / "m", images, train=["000000001", "000000002", "000000003"])
    ann = load_annotations(root)
    first = ann["000000001"]
    p = first.people[0]
    assert p.joints[0].tolist() == [10, 20, 1] and p.joints[1].tolist() == [11.5, 21, 0]
    assert p.joints[2].tolist() == [12, 22, 1]
    assert p.joints[8, :2].tolist() == [13, 23] and np.isnan(p.joints[8, 2])  # empty is_visible
    assert p.joints[9, :2].tolist() == [14, 24] and np.isnan(p.joints[9, 2])  # is_visible left out: []
    assert p.joints[3].tolist() == [5, 5, 1]  # the first of two id-3 points is kept
    assert np.isnan(p.joints[4]).all()  # a point without x
    assert p.annotated.sum() == 6 and p.visible.sum() == 3
    assert p.scale == 1.5 and p.objpos == (3.0, 4.0) and p.head_box is None
    nobody = first.people[1]
    assert np.isnan(nobody.joints).all() and nobody.scale == 2.0 and nobody.objpos is None
    no_field = first.people[2]  # points without an is_visible field at all
    assert no_field.joints[7, :2].tolist() == [30, 40] and np.isnan(no_field.joints[7, 2])
    lone = ann["000000002.jpg"].people[0]
    assert lone.joints[6].tolist() == [1, 2, 1] and lone.annotated.sum() == 1
    assert ann["000000003"].people == () and not ann["000000003"].labelled
    assert ann.anomalies == {"duplicate-joint": 1, "person-without-keypoints": 1, "point-with-bad-id": 1,
                             "point-without-coordinates": 1, "visibility-not-recorded": 3}
    assert ann.counts() == {"images": 3, "labelled": 2, "unlabelled": 1, "classes": 2, "people": 4,
                            "people_with_keypoints": 3, "joints": 8, "visible_joints": 4}
    assert first.keypoints().shape == (3, 16, 3) and ann["000000003"].keypoints().shape == (0, 16, 3)


def test_a_single_image_file_squeezes_to_lone_structs(tmp_path: Path):
    root = write_mpii(tmp_path / "m", [{"name": "000000001.jpg", "act": WALK,
                                        "rects": [person([point(7, 1, 1, 1)])]}], val=["000000001"])
    idx = MPII(root).load(1)
    assert [s.rel for s in idx.test] == ["000000001.jpg"] and idx.classes == ["walking, general"]
    assert idx.annotations["000000001"].people[0].joints[7].tolist() == [1, 1, 1]


def test_missing_optional_fields_are_tolerated(tmp_path: Path):
    images = [{"name": "000000001.jpg", "act": RUN}, {"name": "000000002.jpg", "act": WALK}]  # no annorect field
    root = write_mpii(tmp_path / "m", images, train=["000000001"], val=["000000002"], drop=("img_train",))
    ann = load_annotations(root)
    assert all(im.people == () and im.img_train is None for im in ann.images)
    assert len(MPII(root).load(1).train) == 1


def test_missing_act_field_is_a_clear_error(tmp_path: Path):
    root = write_mpii(tmp_path / "m", [{"name": "000000001.jpg", "act": RUN}], drop=("act",))
    with pytest.raises(UserError, match="RELEASE has no field 'act'"):
        load_annotations(root)


@pytest.mark.parametrize("content, message", [
    (b"plain text, not MATLAB", "cannot read it as a MATLAB file"),
    (None, "holds no RELEASE struct"),
])
def test_not_an_mpii_file(tmp_path: Path, content, message):
    root = tmp_path / "m"
    root.mkdir()
    if content is None:
        sio.savemat(str(root / MAT_NAME), {"other": np.ones(3)})
    else:
        (root / MAT_NAME).write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_annotations(root)


def test_act_and_annolist_of_different_lengths(tmp_path: Path):
    root = write_mpii(tmp_path / "m", [{"name": "000000001.jpg", "act": RUN}, {"name": "000000002.jpg", "act": RUN}])
    mat = sio.loadmat(str(root / MAT_NAME))
    release = mat["RELEASE"]
    release[0, 0]["act"] = release[0, 0]["act"][:1]
    sio.savemat(str(root / MAT_NAME), {"RELEASE": release})
    with pytest.raises(UserError, match="RELEASE.act has 1 entries but RELEASE.annolist has 2"):
        load_annotations(root)


def test_list_problems_and_unlabelled_images(tmp_path: Path):
    images = [
        {"name": "000000001.jpg", "act": RUN, "rects": [person([point(0, 1, 1, 1)])]},
        {"name": "000000002.jpg", "act": WALK, "rects": [person(None)]},  # a person with no keypoints
        {"name": "000000003.jpg", "act": None, "rects": []},  # no action
        {"name": "000000004.jpg", "act": RUN, "rects": []},  # listed but not on disk
        {"name": "000000005.jpg", "act": ("", "", 9), "rects": []},  # an empty name: unlabelled too
    ]
    root = write_mpii(
        tmp_path / "m", images,
        train=["000000001", "000000003", "000000004", "123456789", "000000001", "../x"],
        val=["000000002.jpg", "000000005", "two names"],
        on_disk=["000000001.jpg", "000000002.jpg", "000000003.jpg", "000000005.jpg"],
    )
    idx = MPII(root).index(1)
    assert [s.rel for s in idx.train] == ["000000001.jpg"] and [s.rel for s in idx.test] == ["000000002.jpg"]
    assert [s.class_name for s in idx.train + idx.test] == ["running, general", "walking, general"]
    assert idx.unlabelled == {"train": ["000000003.jpg"], "test": ["000000005.jpg"]}
    assert [(p.kind, p.file.name, p.line) for p in idx.problems] == [
        ("missing", TRAIN_LIST, 3),
        ("not-in-annotations", TRAIN_LIST, 4),
        ("duplicate", TRAIN_LIST, 5),
        ("outside-root", TRAIN_LIST, 6),
        ("malformed", VAL_LIST, 3),
    ]
    assert "000000004.jpg" in idx.problems[0].message and "123456789" in idx.problems[1].message
    assert "2 listed images have no action label (act_id -1) and are excluded: 1 train, 1 test" in idx.remarks
    assert idx.annotations.counts()["people_with_keypoints"] == 1
    with pytest.raises(UserError, match="image not found"):
        MPII(root).load(1)


def test_same_name_under_two_ids_and_ties(tmp_path: Path):
    images = [
        {"name": "000000001.jpg", "act": ("b", "x", 4)},
        {"name": "000000002.jpg", "act": ("a", "y", 4)},
        {"name": "000000003.jpg", "act": ("c", "z", 9)},
        {"name": "000000004.jpg", "act": ("c", "w", 2)},
        {"name": "000000005.jpg", "act": ("d", "v", -1)},  # a name with id -1: unlabelled
        {"name": "000000001.jpg", "act": ("e", "u", 1)},  # a second entry of one image: only the first is found
    ]
    ann = load_annotations(write_mpii(tmp_path / "m", images))
    assert ann.classes == ["e", "c", "a", "b"] and ann.class_act_ids == [(1,), (2, 9), (4,), (4,)]
    assert ann.class_categories == ["u", "w", "y", "x"]
    assert [im.label for im in ann.images] == [3, 2, 1, 1, None, 0]
    assert ann["000000001"].act_name == "b"
    assert ann.anomalies == {"act-name-without-id": 1, "duplicate-image-name": 1}


@pytest.mark.parametrize("split", [0, 2, 3])
def test_mpii_has_one_split(small, split):
    root, _, _ = small
    with pytest.raises(UserError, match=f"MPII has one split, not split {split}"):
        MPII(root).index(split)


def test_missing_lists_and_images_name_what_is_missing(small, tmp_path: Path):
    root = tmp_path / "m"
    root.mkdir()
    (root / MAT_NAME).write_bytes((small[0] / MAT_NAME).read_bytes())
    with pytest.raises(UserError, match="image folder not found"):
        MPII(root).index(1)
    (root / "images").mkdir()
    with pytest.raises(UserError, match=TRAIN_LIST):
        MPII(root).index(1)


# -- where the .mat may be, and the parse cache -----------------------------------------------------------


def test_mat_locations(small, tmp_path: Path, monkeypatch):
    src = small[0] / MAT_NAME
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="MPII annotation file not found") as err:
        find_mat(empty)
    assert mpii.MAT_DIR in str(err.value) and mpii.ENV_MAT in str(err.value)
    nested = tmp_path / "nested"
    (nested / mpii.MAT_DIR).mkdir(parents=True)
    (nested / mpii.MAT_DIR / MAT_NAME).write_bytes(src.read_bytes())
    assert find_mat(nested) == (nested / mpii.MAT_DIR / MAT_NAME).resolve()
    monkeypatch.setenv(mpii.ENV_MAT, str(src))
    assert find_mat(empty) == src.resolve()
    assert find_mat(nested) == (nested / mpii.MAT_DIR / MAT_NAME).resolve()  # ROOT wins over the variable
    assert find_mat(empty, mat=src) == src.resolve()
    assert len(MPII(empty, mat=src).classes()) == 3
    monkeypatch.setenv(mpii.ENV_MAT, str(tmp_path / "nope.mat"))
    with pytest.raises(UserError, match="nope.mat"):
        find_mat(empty)


def test_parse_is_cached_in_memory_and_on_disk(small, tmp_path: Path, monkeypatch):
    root, _, _ = small
    first = load_annotations(root)
    assert load_annotations(root) is first  # in memory
    cached = list((tmp_path / "cache" / "datasets").glob("mpii-*.npz"))
    assert len(cached) == 1

    def fail(path):
        raise AssertionError("parsed again although the disk cache holds this file")

    monkeypatch.setattr(mpii, "_MEMO", {})
    monkeypatch.setattr(mpii, "parse_mat", fail)
    again = load_annotations(root)
    assert again is not first and again.classes == first.classes and again.anomalies == first.anomalies
    assert [im.name for im in again.images] == [im.name for im in first.images]
    for a, b in zip(again.images, first.images, strict=True):
        assert (a.act_id, a.label, a.img_train, len(a.people)) == (b.act_id, b.label, b.img_train, len(b.people))
        for pa, pb in zip(a.people, b.people, strict=True):
            assert np.array_equal(pa.joints, pb.joints, equal_nan=True)
            assert (pa.scale, pa.objpos, pa.head_box, pa.single) == (pb.scale, pb.objpos, pb.head_box, pb.single)
    # a different file is a different key: parsed, not read from the cache
    other = write_mpii(tmp_path / "other", [{"name": "000000001.jpg", "act": RUN}])
    with pytest.raises(AssertionError, match="parsed again"):
        load_annotations(other)


# -- the toy generator ------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(small, tmp_path: Path):
    root, _, _ = small
    generate_toy_mpii(tmp_path / "again", SMALL)
    assert digests(tmp_path / "again") == digests(root)


def test_different_seed_gives_different_images(small, tmp_path: Path):
    root, _, _ = small
    other = generate_toy_mpii(tmp_path / "s1", ToyMPIIConfig(seed=1, classes=3, per_class=6, size=64))
    assert other["images"] == 21 + QUIRK_IMAGES
    a, b = digests(root), digests(tmp_path / "s1")
    assert not set(a) & set(b) - {MARKER, MAT_NAME, TRAIN_LIST, VAL_LIST}  # other names, too
    assert a[MAT_NAME] != b[MAT_NAME]


def test_images_do_not_depend_on_the_class_count(small):
    img3, j3 = render_image(SMALL, "squatting", 4)
    img5, j5 = render_image(ToyMPIIConfig(seed=0, classes=5, per_class=9, size=64), "squatting", 4)
    assert np.array_equal(img3, img5) and np.array_equal(j3, j5)


def test_rerun_reuses_and_foreign_folders_are_refused(small, tmp_path: Path):
    root, _, _ = small
    before = digests(root)
    assert generate_toy_mpii(root, SMALL)["reused"] is True
    assert digests(root) == before
    with pytest.raises(UserError, match="different config"):
        generate_toy_mpii(root, ToyMPIIConfig(seed=0, classes=2, per_class=6, size=64))
    with pytest.raises(UserError, match="different config"):
        generate_toy_mpii(root, ToyMPIIConfig(seed=0, classes=3, per_class=6, size=64, difficulty="hard"))
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="is not empty"):
        generate_toy_mpii(tmp_path, SMALL)
    assert (tmp_path / "mine.txt").read_text() == "keep me" and not (tmp_path / "images").exists()
    assert digests(root) == before


@pytest.mark.parametrize("kwargs, option", [
    ({"classes": 1}, "--classes"), ({"classes": 11}, "--classes"), ({"per_class": 2}, "--per-class"),
    ({"size": 16}, "--size"), ({"seed": -1}, "--seed"), ({"difficulty": "medium"}, "--difficulty"),
])
def test_config_validation_names_the_option(tmp_path: Path, kwargs, option):
    with pytest.raises(UserError, match=option):
        generate_toy_mpii(tmp_path / "x", ToyMPIIConfig(**kwargs))
    assert not (tmp_path / "x").exists()


def test_toy_classes_are_learnable(tmp_path: Path):
    """The default toy set (6 classes x 45 images, 160 px, easy): a linear probe separates the classes from the
    annotated joints read back through the loader (the pose is the class), and from pixels cropped around
    the actor (the images show it), while the colours of the background and of the figure stay near chance
    (they carry no class; global statistics would not: the figure's area depends on the pose). Bars on the 90
    val images (chance 1/6): joints >= 0.9, crops >= 0.5, colour <= 0.4; measured: 1.0, 0.96 and 0.18."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "toy"
    generate_toy_mpii(root, ToyMPIIConfig())
    idx = MPII(root).load(1)
    ann = idx.annotations
    assert len(idx.train) == 180 and len(idx.test) == 90

    def joints(s):
        p = ann[s.rel].people[0].joints[:, :2]  # the actor is always the first person
        centre = np.nanmean(p, axis=0)
        p = np.where(np.isnan(p), centre, p) - centre
        return (p / np.sqrt((p**2).sum(1).mean())).ravel()

    def crop(s, n=20):
        xy = ann[s.rel].people[0].joints[:, :2]
        lo, hi = np.nanmin(xy, 0), np.nanmax(xy, 0)
        c, r = (lo + hi) / 2, (hi - lo).max() / 2 * 1.25
        im = Image.open(s.path).convert("L").crop((c[0] - r, c[1] - r, c[0] + r, c[1] + r))
        a = np.asarray(im.resize((n, n), Image.Resampling.BOX), np.float32)
        a = np.abs(a - np.median(a))  # figures are lighter or darker than their background
        return (a / (a.max() + 1e-6)).ravel()

    def colour(s):  # the background's colours at the four corners and the figure's (its darkest pixels)
        a = np.asarray(Image.open(s.path).convert("RGB"), np.float32) / 255
        corners = [a[:12, :12], a[:12, -12:], a[-12:, :12], a[-12:, -12:]]
        return np.concatenate([c.mean((0, 1)) for c in corners] + [np.percentile(a, 1, axis=(0, 1))])

    def probe(feature, c=1.0) -> float:
        xtr, ytr = np.stack([feature(s) for s in idx.train]), [s.label for s in idx.train]
        xte, yte = np.stack([feature(s) for s in idx.test]), [s.label for s in idx.test]
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(xtr, ytr)
        return model.score(xte, yte)

    acc = {"joints": probe(joints), "crops": probe(crop, 0.05), "colour": probe(colour)}
    print(acc)
    assert acc["joints"] >= 0.9, acc
    assert acc["crops"] >= 0.5, acc
    assert acc["colour"] <= 0.4, acc


# -- CLI, presets, extraction -----------------------------------------------------------------------------


def test_cli_toy_mpii_then_check(tmp_path: Path, capsys):
    out = tmp_path / "toy"
    args = ["datasets", "toy-mpii", str(out), "--classes", "2", "--per-class", "3", "--size", "64"]
    assert run(args) == 0
    assert "written" in capsys.readouterr().out
    assert run(["datasets", "check", "mpii", "--root", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no problems found" in printed and "arms raised" in printed and "squatting" in printed
    assert "1 listed images have no action label (act_id -1) and are excluded" in printed
    assert run(["datasets", "check", "toy-mpii", "--root", str(out)]) == 0
    capsys.readouterr()
    assert run(args) == 0 and "reused" in capsys.readouterr().out
    gone = MPII(out).load(1).train[0]
    gone.path.unlink()
    assert run(["datasets", "check", "mpii", "--root", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "missing (1)" in printed and f"image not found: {gone.path}" in printed


def test_cli_split_2_is_a_one_line_error(small, capsys):
    root, _, _ = small
    assert run(["datasets", "check", "mpii", "--root", str(root), "--split", "2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("actiontk: error: MPII has one split")


def test_presets_and_map_sizes():
    from actiontk.config import load_preset
    from actiontk.models.backbones import layer_map_size

    mpii_preset, _ = load_preset("mpii")
    toy_preset, _ = load_preset("toy-mpii")
    assert mpii_preset["extract"]["backbone"] == toy_preset["extract"]["backbone"] == "resnet101"
    assert mpii_preset["extract"]["layers"] == ["layer4"]
    assert layer_map_size("resnet101", "layer4", mpii_preset["extract"]["size"]) == (15, 15)  # the paper's maps
    assert layer_map_size("resnet101", "layer4", toy_preset["extract"]["size"]) == (5, 5)
    assert get_dataset("toy-mpii", Path(".")).kind == "image"


def test_extract_stores_one_frame_per_image(tmp_path: Path, capsys):
    from actiontk.cache.features import FeatureReader

    root = tmp_path / "toy"
    generate_toy_mpii(root, ToyMPIIConfig(classes=2, per_class=3, size=64))
    cache = tmp_path / "features"
    args = ["extract", "mpii", "--root", str(root), "--backbone", "resnet101", "--layers", "layer4", "--size", "64",
            "--weights", "none", "--batch-size", "8", "--workers", "1", "--cache", str(cache)]
    assert run(args) == 0, capsys.readouterr().err
    idx = MPII(root).load(1)
    run_dir = next((cache / "extract").iterdir())
    reader = FeatureReader(run_dir)
    try:
        assert sorted(reader.videos()) == sorted(s.rel for s in idx.videos())
        assert len(reader.videos()) == 6 and all(r.endswith(".jpg") and "/" not in r for r in reader.videos())
        assert reader.layers() == {"layer4": (2048, 2, 2)}
        for s in idx.videos():
            assert reader.num_frames(s.rel) == 1
            maps = reader.read(s.rel, "layer4")
            assert maps.shape == (1, 2048, 2, 2) and np.isfinite(maps).all()
            assert reader.index.videos[s.rel]["label"] == s.label
    finally:
        reader.close()
