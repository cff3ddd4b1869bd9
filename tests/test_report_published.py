"""The published rows a run is compared with: only the row whose whole configuration is the run's."""

from __future__ import annotations

from actiontk.report.published import PUBLISHED, comparison, matches, method_of


def video_chain(*, fusion="early", levels=None, temporal_kernel=3, regularized=True, lstm_att=0.0,
                backbone="vgg16", maps_to_lstm=False) -> list[dict]:
    """A provenance chain as evaluate lists it: train-lstm, then its upstream runs depth first."""
    extract = {"found": True, "stage": "extract", "config": {"backbone": {"backbone": backbone,
                                                                          "layers": ["pool4", "conv5_3"]}},
               "upstream": {}}
    lstm = {"found": True, "stage": "train-lstm",
            "config": {"model": {"fusion": fusion, "levels": levels, "att_lambda": lstm_att}},
            "upstream": {"extract": "e"} if maps_to_lstm else {"cubes": "c"}}
    if maps_to_lstm:
        return [lstm, extract]
    three_d = {"found": True, "stage": "train-3d",
               "config": {"model": {"temporal_kernel": temporal_kernel, "att_lambda": 1000.0, "levels": None}},
               "upstream": {"extract": "e", **({"attention": "l0"} if regularized else {})}}
    cubes = {"found": True, "stage": "cubes", "config": {}, "upstream": {"train-3d": "t"}}
    return [lstm, cubes, three_d, extract]


def highlighted(dataset: str, kind: str, chain: list[dict]) -> list[str]:
    table = comparison(dataset, kind, method_of(kind, chain), {"top1_vote": 0.5, "mAP": 0.3, "top1": 0.4}, None)
    return [r["name"] for r in table["published"] if r["highlight"]]


def test_the_full_method_matches_its_fusion_row_only():
    assert highlighted("ucf101", "video", video_chain(fusion="early")) == ["early fusion"]
    assert highlighted("hmdb51", "video", video_chain(fusion="late")) == ["late fusion"]


def test_ablations_match_no_final_row():
    for chain in (video_chain(regularized=False), video_chain(temporal_kernel=1), video_chain(levels=["pool4"]),
                  video_chain(maps_to_lstm=True), video_chain(lstm_att=1000.0), video_chain(backbone="resnet101")):
        assert highlighted("ucf101", "video", chain) == [], method_of("video", chain)
    table = comparison("ucf101", "video", method_of("video", video_chain(regularized=False)), {}, None)
    assert table["matched"] is False and "regularized False" in table["method"]


def test_unknown_upstream_matches_nothing():
    chain = video_chain()
    chain[2] = {"found": False, "key": "gone"}  # the train-3d run is no longer in the cache
    assert highlighted("ucf101", "video", chain) == []


def image_chain(**model) -> list[dict]:
    top = {"found": True, "stage": "train-gap", "config": {"model": {"finetune": False, **model}},
           "upstream": {"extract": "e"}}
    extract = {"found": True, "stage": "extract", "config": {"backbone": {"backbone": "resnet101",
                                                                          "layers": ["layer4"]}}, "upstream": {}}
    return [top, extract]


def test_mpii_rows_by_head_and_pose():
    assert highlighted("mpii", "image", image_chain(head="gap", pose=True, pose_attention=False)) == ["GAP-CNN + Pose"]
    assert highlighted("mpii", "image", image_chain(head="gap", pose=False)) == ["GAP-CNN"]
    assert highlighted("mpii", "image", image_chain(head="attn", pose=True, pose_attention=False)) == [
        "Attn. Pool. + Pose"]
    assert highlighted("mpii", "image", image_chain(head="attn", pose=False)) == ["Attn. Pool. (rank-1)"]
    assert highlighted("mpii", "image", image_chain(head="mean", pose=False)) == ["ResNet-101 mean-pool baseline"]
    # the reference code's variant and the printed form are not the paper's rows
    assert highlighted("mpii", "image", image_chain(head="gap", pose=True, pose_attention=True)) == []
    assert highlighted("mpii", "image", image_chain(head="gap", pose=False, form="weights")) == []


def test_every_row_names_where_it_is_printed_and_states_its_method():
    for table in PUBLISHED.values():
        for row in table.rows:
            assert row.table and row.match, row
            assert not matches(row, {})


def test_gap_rows_need_the_papers_depth():
    assert highlighted("mpii", "image", image_chain(head="gap", pose=False, depth=1)) == []
    assert highlighted("mpii", "image", image_chain(head="gap", pose=False, depth=3)) == ["GAP-CNN"]
