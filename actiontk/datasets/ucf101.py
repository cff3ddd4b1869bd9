"""UCF101 (Soomro et al., 2012): 101 classes, three official train/test splits.

Official files: ``classInd.txt`` (``<id> <Class>``, ids 1-based), ``trainlist0N.txt``
(``<Class>/<file>.avi <id>``) and ``testlist0N.txt`` (``<Class>/<file>.avi``, no label), shipped in
``ucfTrainTestlist/`` beside the ``UCF-101/`` video folder.
"""

from __future__ import annotations

from pathlib import Path

from actiontk.datasets.base import (
    VIDEO_EXTENSIONS,
    Dataset,
    Problem,
    SplitIndex,
    read_lines,
    safe_rel,
)
from actiontk.errors import UserError

LIST_DIR = "ucfTrainTestlist"
VIDEO_DIR = "UCF-101"


def parse_entry(line: str) -> tuple[str, str | None]:
    """Split a list line into (path, label text or None).

    File names may contain spaces, so the label is only split off when the line does not already end
    with a video extension.
    """
    if Path(line).suffix.lower() in VIDEO_EXTENSIONS:
        return line, None
    parts = line.rsplit(None, 1)
    if len(parts) == 2:
        return parts[0], parts[1]
    return line, None


class UCF101(Dataset):
    name = "ucf101"
    title = "UCF101"
    layout = (
        "ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi (or ROOT/<Class>/...), lists in "
        "ROOT/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt (or in ROOT)"
    )
    list_names = ("classInd.txt", "trainlist0{n}.txt", "testlist0{n}.txt")

    @property
    def video_root(self) -> Path:
        nested = self.root / VIDEO_DIR
        return nested if nested.is_dir() else self.root

    @property
    def list_dir(self) -> Path:
        for cand in (self.root / LIST_DIR, self.root, self.root.parent / LIST_DIR):
            if (cand / "classInd.txt").is_file():
                return cand
        raise UserError(
            f"classInd.txt not found in {self.root / LIST_DIR}, {self.root} or {self.root.parent / LIST_DIR}",
            "unpack UCF101TrainTestSplits-RecognitionTask.zip into ROOT (it creates ucfTrainTestlist/)",
        )

    def classes(self) -> list[str]:
        path = self.list_dir / "classInd.txt"
        by_id: dict[int, str] = {}
        for number, line in read_lines(path):
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise UserError(f"{path}:{number}: expected '<id> <ClassName>', got {line!r}")
            cid, name = int(parts[0]), parts[1]
            if cid in by_id:
                raise UserError(f"{path}:{number}: class id {cid} appears twice")
            if name in by_id.values():
                raise UserError(f"{path}:{number}: class {name!r} appears twice")
            by_id[cid] = name
        if not by_id:
            raise UserError(f"{path}: no classes listed")
        if sorted(by_id) != list(range(1, len(by_id) + 1)):
            raise UserError(f"{path}: class ids must be 1..{len(by_id)} with none missing")
        return [by_id[i] for i in range(1, len(by_id) + 1)]

    def index(self, split: int) -> SplitIndex:
        self.check_split_number(split)
        classes = self.classes()
        idx = SplitIndex(self.name, split, classes)
        lists = self.list_dir
        for subset, fname in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
            path = self.require_file(lists / fname, f"UCF101 {subset} list for split {split}")
            for number, line in read_lines(path):
                parsed = self._parse_line(line, classes)
                if isinstance(parsed, Problem):
                    idx.note(parsed.kind, parsed.message, path, number, parsed.rel)
                else:
                    idx.add(subset, *parsed, root=self.video_root, file=path, line=number)
        return idx

    @staticmethod
    def _parse_line(line: str, classes: list[str]) -> tuple[str, int] | Problem:
        """(rel, label) of a list line, or the Problem with it (file and line filled in by the caller)."""
        entry, label_text = parse_entry(line)
        rel = safe_rel(entry)
        if rel is None:
            return Problem("outside-root", f"entry {entry!r} resolves outside the dataset root")
        parts = rel.split("/")
        if len(parts) != 2:
            return Problem("malformed", f"expected '<Class>/<file>' with an optional label, got {line!r}")
        class_name = parts[0]
        if class_name not in classes:
            return Problem("unknown-class", f"class {class_name!r} of {rel!r} is not in classInd.txt")
        label = classes.index(class_name)
        if label_text is not None:
            if not label_text.isdigit():
                return Problem("malformed", f"label {label_text!r} is not a class id (line {line!r})")
            if int(label_text) != label + 1:
                return Problem(
                    "label-mismatch",
                    f"label {label_text} of {rel!r} does not match its folder {class_name!r} "
                    f"(id {label + 1} in classInd.txt)",
                    rel=rel,
                )
        return rel, label
