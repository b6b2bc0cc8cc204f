"""The annotation of the shared face videos: which frame ranges of which real video show a
person neutral, turning left or right, looking up or blinking (``video_segments.json``: file
names and frame ranges only; the videos themselves never enter the repository)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devicebio.errors import DeviceBioError, Reason

ENV_VIDEO = "DEVICEBIO_VIDEO"
SEGMENTS_FILE = Path(__file__).with_name("video_segments.json")
LABELS = ("neutral", "turn_left", "turn_right", "look_up", "blink")
PROMPT_LABELS = ("turn_left", "turn_right", "look_up", "blink")


@dataclass(frozen=True)
class Segment:
    video: str
    person: str
    label: str
    ranges: tuple[tuple[int, int], ...]  # [start, end) frame ranges (0-based, decode order)
    note: str = ""

    @property
    def frames(self) -> list[int]:
        return [i for a, b in self.ranges for i in range(a, b)]


@dataclass(frozen=True)
class Annotation:
    videos: dict[str, dict[str, Any]]  # file name -> {"frames": n, "fps": f, "person": p}
    segments: tuple[Segment, ...]


def load_annotation(path: Path = SEGMENTS_FILE) -> Annotation:
    try:
        raw = json.loads(Path(path).read_text())
        videos = {str(k): dict(v) for k, v in raw["videos"].items()}
        segments = tuple(
            Segment(
                video=str(s["video"]),
                person=str(videos[s["video"]]["person"]),
                label=str(s["label"]),
                ranges=tuple((int(a), int(b)) for a, b in s["ranges"]),
                note=str(s.get("note", "")),
            )
            for s in raw["segments"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeviceBioError(
            Reason.MALFORMED_DATA, f"cannot read the segment file {path}: {exc!r}"
        ) from None
    for seg in segments:
        if seg.label not in LABELS or not seg.ranges or any(not 0 <= a < b for a, b in seg.ranges):
            raise DeviceBioError(Reason.MALFORMED_DATA, f"bad segment {seg}")
    return Annotation(videos, segments)


def check_annotation(ann: Annotation, video_dir: Path) -> list[str]:
    """Problems with the annotation against the video folder (empty when all is well)."""
    problems = []
    for name in ann.videos:
        if not (video_dir / name).is_file():
            problems.append(f"{name}: not in {video_dir}")
    for seg in ann.segments:
        n = int(ann.videos[seg.video].get("frames", 0))
        if max(b for _, b in seg.ranges) > n:
            problems.append(f"{seg.video} {seg.label} {seg.ranges}: beyond {n} frames")
    return problems
