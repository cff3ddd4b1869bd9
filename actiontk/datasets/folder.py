"""Your own videos: ``ROOT/<class>/<file>``, with optional train/test lists.

Classes are the sub-folders that hold at least one video, sorted by name (as torchvision's
``ImageFolder`` does). Lists, when present, hold one ``<class>/<file>`` per line: ``train.txt`` /
``test.txt`` for split 1, ``trainN.txt`` / ``testN.txt`` for split N. Without lists, each video goes to
the test set when a hash of its path falls in the lowest 30% — a split that never changes when other
files are added or removed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from actiontk.datasets.base import (
    IMAGE_EXTENSIONS,
    SPLITS,
    Dataset,
    Problem,
    Sample,
    SplitIndex,
    escape_message,
    read_lines,
    safe_rel,
)
from actiontk.datasets.ucf101 import parse_entry
from actiontk.errors import UserError

TEST_FRACTION = 0.3


def hashed_subset(rel: str) -> str:
    digest = hashlib.sha1(rel.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:4], "big") / 2**32 < TEST_FRACTION else "train"


class FolderDataset(Dataset):
    name = "folder"
    title = "a video folder"
    layout = "ROOT/<class>/<file>, optional ROOT/train.txt + ROOT/test.txt ('<class>/<file>' per line)"

    def classes(self) -> list[str]:
        classes = sorted({rel.split("/")[0] for rel in self.disk_videos()})
        if not classes:
            raise UserError(
                f"no {self.kind}s found in {self.root}/<class>/",
                f"put each class's {self.kind}s in a sub-folder named after the class",
            )
        return classes

    def list_files(self, split: int) -> tuple[Path, Path] | None:
        names = [(f"train{split}.txt", f"test{split}.txt")]
        if split == 1:
            names.insert(0, ("train.txt", "test.txt"))
        for train, test in names:
            if (self.root / train).is_file() or (self.root / test).is_file():
                return self.root / train, self.root / test
        return None

    def index(self, split: int) -> SplitIndex:
        self.check_split_number(split)
        classes = self.classes()
        idx = SplitIndex(self.name, split, classes)
        lists = self.list_files(split)
        if lists is None:
            if split != 1:
                have = [n for n in SPLITS if self.list_files(n)]
                what = f"train{split}.txt / test{split}.txt" if have else "train/test lists, so it has only split 1"
                raise UserError(f"{self.root} has no {what}", f"use --split {' / '.join(map(str, have or [1]))}")
            for rel, path in self.disk_videos().items():
                cls = rel.split("/")[0]
                idx.subset(hashed_subset(rel)).append(Sample(rel, path, classes.index(cls), cls))
            for rel, real in self.escaped_videos().items():
                idx.problems.append(Problem("outside-root", escape_message(rel, real, self.video_root), rel=rel))
            return idx
        for subset, path in zip(("train", "test"), lists, strict=True):
            self.require_file(path, f"{subset} list")
            for number, line in read_lines(path):
                entry, _ = parse_entry(line)
                rel = safe_rel(entry)
                if rel is None:
                    idx.note("outside-root", f"entry {entry!r} resolves outside the dataset root", path, number)
                elif rel.count("/") != 1:
                    idx.note("malformed", f"expected '<class>/<file>', got {line!r}", path, number)
                elif (cls := rel.split("/")[0]) not in classes:
                    msg = f"class {cls!r} of {rel!r} has no folder with videos in {self.root}"
                    idx.note("unknown-class", msg, path, number)
                else:
                    idx.add(subset, rel, classes.index(cls), root=self.root, file=path, line=number)
        return idx


class ImageFolderDataset(FolderDataset):
    """Still images in the same layout: ``ROOT/<class>/<image>.jpg`` with optional train/test lists."""

    name = "images"
    title = "an image folder"
    kind = "image"
    extensions = IMAGE_EXTENSIONS
    layout = "ROOT/<class>/<image>.jpg|png, optional ROOT/train.txt + ROOT/test.txt ('<class>/<image>' per line)"
