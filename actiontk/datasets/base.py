"""What every dataset module provides: samples, split indexes and the problems found while parsing.

A dataset is parsed into a :class:`SplitIndex` that keeps going past bad lines and records each one as a
:class:`Problem` (file, line, what is wrong). ``actiontk datasets check`` reports all of them; the stages
call :meth:`SplitIndex.raise_first` and stop at the first one with a clear error.

Entries must stay inside the dataset root, lexically (:func:`safe_rel`) and on disk: a symlink inside the
dataset whose target lies outside the root's real path is refused ("outside-root"), since a dataset from
elsewhere could otherwise make the decoders read any file the user can read. Setting the environment
variable ``ACTIONTK_FOLLOW_SYMLINKS=1`` allows such links for every command (a dataset assembled from links
into other disks). The root itself may be a symlink: it is resolved first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

from actiontk.errors import UserError

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".3gp", ".ogv", ".vob", ".ts",
     ".mts", ".m2ts"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
SPLITS = (1, 2, 3)
FOLLOW_SYMLINKS_ENV = "ACTIONTK_FOLLOW_SYMLINKS"


def follow_symlinks_allowed() -> bool:
    """True when the user allowed symlinks that lead outside the dataset root (``ACTIONTK_FOLLOW_SYMLINKS=1``)."""
    return os.environ.get(FOLLOW_SYMLINKS_ENV, "").strip().lower() in ("1", "true", "yes")


def link_escape(path: Path, root: Path) -> Path | None:
    """Where ``path`` really points when that is outside ``root``'s real path (and links are not allowed
    to leave it), else None."""
    if follow_symlinks_allowed():
        return None
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return None if real == real_root or real.is_relative_to(real_root) else real


def escape_message(rel: str, real: Path, root: Path) -> str:
    return (f"{rel!r} is a symlink to {real}, outside the dataset root {root} (set {FOLLOW_SYMLINKS_ENV}=1 "
            "to allow links that leave the root)")


@dataclass(frozen=True)
class Sample:
    """One video of a split."""

    rel: str  # path relative to the video root, '/'-separated: the video's key in the feature cache
    path: Path  # absolute path on disk
    label: int  # 0-based index into the dataset's class list
    class_name: str


@dataclass(frozen=True)
class Problem:
    """Something wrong in a split list or on disk; ``kind`` groups problems in the check report."""

    kind: str  # malformed | unknown-class | duplicate | outside-root | missing | extra | label-mismatch | ...
    message: str
    file: Path | None = None
    line: int | None = None
    rel: str | None = None  # the video concerned, when there is one ('<class>/<file>')

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        return where + self.message


@dataclass
class SplitIndex:
    """The train and test samples of one split, and every problem met while building them."""

    dataset: str
    split: int
    classes: list[str]
    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    unused: list[Sample] = field(default_factory=list)  # listed but in neither subset (HMDB51 code 0)
    problems: list[Problem] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)  # facts for the check report that are not problems
    _seen: dict[str, str] = field(default_factory=dict, repr=False)  # rel -> 'file:line' of first listing

    def note(self, kind: str, message: str, file: Path, line: int, rel: str | None = None) -> None:
        """Record a problem found at ``file:line``."""
        self.problems.append(Problem(kind, message, file, line, rel))

    def add(self, subset: str, rel: str, label: int, *, root: Path, file: Path, line: int) -> None:
        """Add the video ``rel`` listed at ``file:line`` unless it is a duplicate or missing from disk.

        ``subset`` is 'train', 'test' or 'unused'; unused videos are not required to exist.
        """
        if rel in self._seen:
            self.note("duplicate", f"{rel!r} is listed twice (first at {self._seen[rel]})", file, line, rel)
            return
        self._seen[rel] = f"{file.name}:{line}"
        full = root / rel
        if (real := link_escape(full, root)) is not None:
            self.note("outside-root", escape_message(rel, real, root), file, line, rel)
            return
        if subset != "unused" and not full.is_file():
            self.note("missing", f"video not found: {full}", file, line, rel)
            return
        target = self.unused if subset == "unused" else self.subset(subset)
        target.append(Sample(rel=rel, path=full, label=label, class_name=self.classes[label]))

    def subset(self, name: str) -> list[Sample]:
        if name not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', got {name!r}")
        return self.train if name == "train" else self.test

    def videos(self) -> list[Sample]:
        """Train and test samples, sorted by ``rel`` (the order extraction shards by)."""
        return sorted(self.train + self.test, key=lambda s: s.rel)

    def raise_first(self, *kinds: str) -> SplitIndex:
        """Raise the first recorded problem (of the given kinds, or any) as a :class:`UserError`."""
        for p in self.problems:
            if not kinds or p.kind in kinds:
                more = len(self.problems) - 1
                tail = f"; {more} more problem(s) in this split" if more else ""
                raise UserError(
                    f"{p}{tail}",
                    f"run `actiontk datasets check {self.dataset} --root ROOT --split {self.split}` to see all",
                )
        return self


class Dataset:
    """Base class of the video datasets: subclasses parse their official split files."""

    name: ClassVar[str]
    title: ClassVar[str]
    layout: ClassVar[str]  # where the files go, shown by `actiontk datasets list`
    kind: ClassVar[str] = "video"  # "video" or "image": how extract reads the files
    extensions: ClassVar[frozenset[str]] = VIDEO_EXTENSIONS

    def __init__(self, root: str | Path):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise UserError(
                f"dataset root {root} does not exist or is not a directory",
                f"pass --root pointing at your {self.title} folder; `actiontk datasets list` shows the layout",
            )
        self.root = root.resolve()

    @property
    def video_root(self) -> Path:
        """The folder that holds ``<class>/<file>``; sample ``rel`` paths are relative to it."""
        return self.root

    def classes(self) -> list[str]:
        raise NotImplementedError

    def index(self, split: int) -> SplitIndex:
        """Parse split ``split``, recording every problem instead of raising."""
        raise NotImplementedError

    def load(self, split: int) -> SplitIndex:
        """Parse split ``split`` strictly: the first problem becomes a :class:`UserError`."""
        return self.index(split).raise_first()

    # -- helpers shared by the parsers -------------------------------------------------------------

    @staticmethod
    def check_split_number(split: int, allowed: tuple[int, ...] = SPLITS) -> None:
        if split not in allowed:
            raise UserError(
                f"split {split} does not exist",
                f"use --split {' / '.join(map(str, allowed))}",
            )

    def require_file(self, path: Path, what: str) -> Path:
        if not path.is_file():
            raise UserError(
                f"{what} not found: {path}",
                f"check --root; `actiontk datasets list` shows the files {self.title} needs",
            )
        return path

    def disk_videos(self) -> dict[str, Path]:
        """Every video (or image) file under ``<video_root>/<class>/``, keyed by its ``rel`` path.

        Files (or class folders) that are symlinks leading outside the root are left out; see
        :meth:`escaped_videos`."""
        return {rel: f for rel, f in self._disk_files().items() if link_escape(f, self.video_root) is None}

    def escaped_videos(self) -> dict[str, Path]:
        """The files :meth:`disk_videos` leaves out: ``rel`` -> the real path outside the root."""
        out = {}
        for rel, f in self._disk_files().items():
            if (real := link_escape(f, self.video_root)) is not None:
                out[rel] = real
        return out

    def _disk_files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        root = self.video_root
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in self.extensions:
                    found[f"{class_dir.name}/{f.name}"] = f
        return found


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers; CRLF endings and a BOM are tolerated.

    The official UCF101 lists use Windows line endings, and HMDB51's lines end in a trailing space.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", "is this the right file?") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            out.append((number, line))
    return out


def safe_rel(entry: str) -> str | None:
    """Normalize a list entry to a '/'-separated path inside the root, or None if it would escape it.

    The check is lexical (no symlink resolution) so that a dataset folder that is itself a symlink to
    another disk keeps working, while ``../x.avi`` or ``/etc/passwd`` are rejected.
    """
    entry = entry.replace("\\", "/")
    if entry.startswith("/") or (len(entry) > 1 and entry[1] == ":"):
        return None
    norm = os.path.normpath(entry).replace("\\", "/")
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return str(PurePosixPath(norm))
