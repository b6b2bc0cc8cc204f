"""Demographic annotations for ``devicebio eval transactions --groups`` (ISO/IEC 19795-10).

An annotation puts people (the evaluation's ``<person>`` folder names) into groups, one group
per attribute (``sex``, ``race``, ...). Annotation files stay outside the repository
(docs/data-demographics.md says where the public ones come from). Each ``--groups SPEC`` is
one of:

* ``PATH`` to a CSV with a ``person`` column (one row per person) or an ``image`` column (one
  row per photo, e.g. ``Aaron_Eckhart_0001.jpg``) and one column per attribute;
* ``PATH`` to Columbia's LFW attribute file (``lfw_attributes.txt``, Kumar et al.: classifier
  scores per image); a person takes the group whose mean score over their images is highest:
  ``sex`` male when the mean ``Male`` score is above 0, ``race`` the largest of
  Asian/White/Black/Indian, ``age`` the largest of Baby/Child/Youth/Middle Aged/Senior;
* ``ATTR=VALUE:PATH``: a list of image names, one per line (Afifi & Abdelhamed's
  ``male_names.txt`` / ``female_names.txt``); every listed image is in group VALUE of ATTR;
* ``ATTR:PATH`` to a JSON object person -> label (usc-sail's ``lfw_race_dict.json``); a label
  that names several groups (``"african,caucasian"``) becomes the group ``multiple``.

Several specs combine. Each source votes: a per-photo source once per photo, a per-person
source once per person; a person takes the majority of their votes for an attribute, and a tie
leaves them unannotated for it (counted as ``conflicting``).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation import metrics

MULTIPLE = "multiple"
_IMAGE_NAME = re.compile(r"^(?P<person>.+)_(?P<num>\d+)\.[A-Za-z]+$")
_SPEC = re.compile(r"^(?P<attr>[A-Za-z][\w-]*)(=(?P<value>[\w-]+))?:(?P<path>.+)$")

_COLUMBIA = {
    "sex": ["Male"],
    "race": ["Asian", "White", "Black", "Indian"],
    "age": ["Baby", "Child", "Youth", "Middle Aged", "Senior"],
}


@dataclass
class Groups:
    """person -> {attribute: group}, and per attribute how many people had a tie."""

    of: dict[str, dict[str, str]] = field(default_factory=dict)
    conflicting: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def attributes(self) -> list[str]:
        return sorted({a for g in self.of.values() for a in g} | set(self.conflicting))


def load(specs: list[str | Path]) -> Groups:
    """Read and combine the annotation specs (module doc)."""
    votes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    out = Groups()
    for spec in specs:
        for person, attr, value in _votes(str(spec)):
            votes[(person, attr)][value] += 1
        out.sources.append(_source(str(spec)))
    for (person, attr), counts in sorted(votes.items()):
        ranked = counts.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            out.conflicting[attr] = out.conflicting.get(attr, 0) + 1
            continue
        out.of.setdefault(person, {})[attr] = ranked[0][0]
    return out


def _source(spec: str) -> str:
    """The spec with only the file's name (the report names its sources, not local paths)."""
    match = None if Path(spec).is_file() else _SPEC.match(spec)
    if match is None:
        return Path(spec).name
    head = match["attr"] + (f"={match['value']}" if match["value"] is not None else "")
    return f"{head}:{Path(match['path']).name}"


def _votes(spec: str) -> list[tuple[str, str, str]]:
    """(person, attribute, group) votes of one spec."""
    path = Path(spec)
    match = None if path.is_file() else _SPEC.match(spec)
    if match is not None:
        path = Path(match["path"])
    text = _read(path)
    if match is None:
        if any("person\timagenum" in ln for ln in text.splitlines()[:3]):
            return _columbia(text.splitlines())
        return _csv(text)
    attr = match["attr"]
    if match["value"] is not None:
        return [(_person_of(ln), attr, match["value"]) for ln in _lines(text)]
    return _json_map(text, attr)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"cannot read groups file {path.name}: {exc}"
        ) from None


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _person_of(image: str) -> str:
    m = _IMAGE_NAME.match(Path(image.replace("\\", "/")).name)
    if m is None:
        raise DeviceBioError(
            Reason.MALFORMED_DATA, "an image list line is not <person>_<number>.<ext>"
        )
    return m["person"]


def _csv(text: str) -> list[tuple[str, str, str]]:
    rows = list(csv.DictReader(text.splitlines()))
    columns = rows[0].keys() if rows else ()
    key = "person" if "person" in columns else "image" if "image" in columns else None
    if key is None:
        raise DeviceBioError(Reason.MALFORMED_DATA, "groups CSV needs a 'person' or 'image' column")
    out = []
    for r in rows:
        raw = (r.get(key) or "").strip()
        if not raw:
            continue
        person = raw.replace(" ", "_") if key == "person" else _person_of(raw)
        for attr, value in r.items():
            if attr != key and attr is not None and value is not None and value.strip():
                out.append((person, attr.strip(), value.strip()))
    return out


def _json_map(text: str, attr: str) -> list[tuple[str, str, str]]:
    try:
        data = json.loads(text)
    except ValueError:
        raise DeviceBioError(Reason.MALFORMED_DATA, "groups JSON does not parse") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DeviceBioError(Reason.MALFORMED_DATA, "groups JSON must map person -> label")
    out = []
    for person, label in data.items():
        labels = {x.strip() for x in label.split(",") if x.strip()}
        if labels:
            value = labels.pop() if len(labels) == 1 else MULTIPLE
            out.append((person.strip().replace(" ", "_"), attr, value))
    return out


def _columbia(lines: list[str]) -> list[tuple[str, str, str]]:
    header_at = next(i for i, ln in enumerate(lines[:3]) if "person\timagenum" in ln)
    header = [h.strip() for h in lines[header_at].lstrip("#").strip().split("\t")]
    col = {name: i for i, name in enumerate(header)}
    for names in _COLUMBIA.values():
        if any(n not in col for n in names):
            raise DeviceBioError(Reason.MALFORMED_DATA, "attribute file lacks a column")
    sums: dict[str, dict[str, float]] = {}
    counts: Counter[str] = Counter()
    for ln in lines[header_at + 1 :]:
        parts = ln.split("\t")
        if len(parts) != len(header):
            continue
        person = parts[0].strip().replace(" ", "_")
        try:
            values = {n: float(parts[col[n]]) for ns in _COLUMBIA.values() for n in ns}
        except ValueError:
            raise DeviceBioError(Reason.MALFORMED_DATA, "attribute file value") from None
        acc = sums.setdefault(person, dict.fromkeys(values, 0.0))
        for n, v in values.items():
            acc[n] += v
        counts[person] += 1
    out = []
    for person, acc in sums.items():
        mean = {n: v / counts[person] for n, v in acc.items()}
        out.append((person, "sex", "male" if mean["Male"] > 0 else "female"))
        out.append((person, "race", max(_COLUMBIA["race"], key=lambda n: mean[n]).lower()))
        age = max(_COLUMBIA["age"], key=lambda n: mean[n])
        out.append((person, "age", age.lower().replace(" ", "_")))
    return out


def similarity(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the groups' rates are alike, for FMR and FNMR: the highest over the lowest point
    rate; the pairs of groups whose 95% intervals do not overlap; and for every pair the exact
    two-sided p-value of equal rates (:func:`metrics.rates_differ_p`). Impostor transactions
    share people, so neither is exact for them (module doc of transactions)."""
    out: dict[str, Any] = {}
    for what in ("fmr", "fnmr"):
        rows = {g: r[what] for g, r in sorted(per.items()) if r[what]["trials"]}
        names = list(rows)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        apart = [
            [a, b]
            for a, b in pairs
            if rows[a]["ci95"][1] < rows[b]["ci95"][0] or rows[b]["ci95"][1] < rows[a]["ci95"][0]
        ]
        tests = [
            {
                "groups": [a, b],
                "p": metrics.rates_differ_p(
                    rows[a]["errors"], rows[a]["trials"], rows[b]["errors"], rows[b]["trials"]
                ),
            }
            for a, b in pairs
        ]
        rates = [r["rate"] for r in rows.values()]
        ratio = max(rates) / min(rates) if rates and min(rates) > 0 else None
        out[what] = {"ratio": ratio, "apart": apart, "tests": tests}
    return out
