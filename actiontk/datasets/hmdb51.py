"""HMDB51 (Kuehne et al., 2011): 51 classes, three official splits ("7030" version).

Official files: ``testTrainMulti_7030_splits/<class>_test_split<N>.txt``, one per class and split, lines
``<file>.avi <code>`` with 1 = train, 2 = test, 0 = unused. Class names come from the split file names
and are ordered alphabetically (the order of the published class list).
"""

from __future__ import annotations

import re
from pathlib import Path

from actiontk.datasets.base import Dataset, SplitIndex, read_lines, safe_rel
from actiontk.errors import UserError

SPLIT_DIR = "testTrainMulti_7030_splits"
SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>[123])\.txt$")
CODES = {"0": "unused", "1": "train", "2": "test"}  # the split files' codes


class HMDB51(Dataset):
    name = "hmdb51"
    title = "HMDB51"
    layout = (
        "ROOT/<class>/<file>.avi, splits in ROOT/testTrainMulti_7030_splits/<class>_test_splitN.txt "
        "(or beside ROOT)"
    )

    @property
    def split_dir(self) -> Path:
        for cand in (self.root / SPLIT_DIR, self.root.parent / SPLIT_DIR):
            if cand.is_dir():
                return cand
        raise UserError(
            f"{SPLIT_DIR}/ not found in {self.root} or {self.root.parent}",
            "unpack test_train_splits.rar into ROOT",
        )

    def classes(self) -> list[str]:
        names = set()
        for f in self.split_dir.iterdir():
            m = SPLIT_FILE.match(f.name)
            if m:
                names.add(m["cls"])
        if not names:
            raise UserError(f"no '<class>_test_splitN.txt' files in {self.split_dir}")
        return sorted(names)

    def index(self, split: int) -> SplitIndex:
        self.check_split_number(split)
        classes = self.classes()
        idx = SplitIndex(self.name, split, classes)
        for label, class_name in enumerate(classes):
            path = self.require_file(
                self.split_dir / f"{class_name}_test_split{split}.txt", f"HMDB51 split {split} of {class_name!r}"
            )
            for number, line in read_lines(path):
                parts = line.rsplit(None, 1)
                if len(parts) != 2 or parts[1] not in CODES:
                    idx.note("malformed", f"expected '<file>.avi <0|1|2>', got {line!r}", path, number)
                    continue
                name, code = parts
                rel = safe_rel(f"{class_name}/{name}")
                if rel is None or rel.count("/") != 1 or not rel.startswith(class_name + "/"):
                    msg = f"entry {name!r} resolves outside its class folder {class_name}/"
                    idx.note("outside-root", msg, path, number)
                    continue
                idx.add(CODES[code], rel, label, root=self.video_root, file=path, line=number)
        return idx
