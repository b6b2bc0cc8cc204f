"""``devicebio eval transactions``: FMR and FNMR of the device's decision, ISO/IEC 19795-1 style.

Any folder of ``<person>/<photo>`` images works (the shared LFW by default). Every photo goes
through the full pipeline once and through the product's capture gates (the face nearest the
centre is taken, as photo sets need; a photo with no face, or one the gates refuse, is a
failure to acquire). The photos of one person, in file order, stand in for the frames a camera
gives the device:

* **Enrolment** (``k`` = 3): the first ``k`` acquired photos, kept only if they pass the
  enrolment consistency check the product runs (:func:`devicebio.decision.consistent`);
  otherwise the person failed to enrol.
* **Genuine transactions**: every enrolled person with at least ``k + m`` photos presents the
  next ``m`` (= 3) acquired photos, fused by the product's decision
  (:func:`devicebio.decision.fused_distances`, the rule :func:`~devicebio.decision.decide`
  applies).
* **Impostor transactions** (zero effort): every person's probe set (their genuine probes, or
  for people with fewer than ``k + m`` photos their first ``m`` acquired photos) against
  every other enrolled person's templates.
* **Per comparison**: one photo per person (the first acquired), every cross-person pair; and
  every same-person pair of the photos used.

Template protection is an isometry (docs/evaluation.md), so the scores are computed on the
unprotected embeddings. The report gives FMR and FNMR with 95% Clopper-Pearson intervals (and
the rule of three when nothing failed), the thresholds at FMR 1e-3, 1e-4 and 1e-5 with the
FNMR at each, the EER, failure-to-enrol and failure-to-acquire rates, figures per demographic
group when an annotation is given, and an out-of-sample check: each threshold is chosen on a
random half of the people and measured on the other half, for several seeds. Impostor
transactions share people, so they are not independent trials: the intervals are those of
independent trials and understate the uncertainty somewhat (ISO/IEC 19795-1 says so too).

Embeddings and scores stay in this process's memory; only aggregates are returned.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicebio import decision
from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation import demographics, metrics

TARGETS = (1e-3, 1e-4, 1e-5)
SPLIT_SEEDS = (0, 1, 2, 3, 4)
CALIBRATION_SEED = 0  # the split the shipped default was chosen on (its half "a")
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")
_CHUNK = 512


@dataclass
class _Person:
    name: str
    photos: list[str]
    acquired: list[np.ndarray] = field(default_factory=list, repr=False)  # as templates
    acquired_probe: list[np.ndarray] = field(default_factory=list, repr=False)  # as probes
    acquired_index: list[int] = field(default_factory=list)
    templates: np.ndarray | None = field(default=None, repr=False)
    probes: np.ndarray | None = field(default=None, repr=False)  # genuine probe set
    impostor_probes: np.ndarray | None = field(default=None, repr=False)
    enrol: str = "not_attempted"  # "enrolled", "too_few_acquired", "inconsistent"
    genuine_attempted: bool = False


def people_in(images: Path) -> dict[str, list[str]]:
    """person -> their photo files (sorted), for every folder with at least one photo."""
    if not images.is_dir():
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"no image folder at {images}")
    out: dict[str, list[str]] = {}
    for person in sorted(os.listdir(images)):
        folder = images / person
        if not folder.is_dir():
            continue
        photos = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_EXT))
        if photos:
            out[person] = photos
    if not out:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"no person/photo images under {images}")
    return out


def split(names: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Two halves of ``names`` (in the order given), drawn by ``seed``: (a, b)."""
    order = np.random.default_rng(seed).permutation(len(names))
    half = len(names) // 2
    return [names[i] for i in sorted(order[:half])], [names[i] for i in sorted(order[half:])]


def calibration_split(images: Path, enrol: int = 3) -> tuple[list[str], list[str]]:
    """(calibration, held out): the split of the people with at least ``enrol`` photos that
    the shipped default threshold was chosen on (half a) and validated on (half b)."""
    names = [n for n, p in people_in(images).items() if len(p) >= enrol]
    return split(names, CALIBRATION_SEED)


# ---- embedding ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(threads: int) -> None:
    from devicebio.vision.pipeline import FacePipeline

    _WORKER["pipe"] = FacePipeline(threads=threads, mirror=False)  # _acquire embeds both ways


def _acquire(pipe: Any, path: str) -> tuple[np.ndarray | None, str]:
    """The photo's face embedded both ways if the product would acquire it, and why not:
    (2, 128), row 0 the mirror average (chip and its mirror), row 1 the chip alone, both unit
    length. Both come from one network run on the chip and its mirror, the batch
    :meth:`~devicebio.vision.embedder.Embedder.embed_mirrored` runs."""
    import cv2

    from devicebio.vision.align import face_chip
    from devicebio.vision.pipeline import FaceCapture

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    result = pipe.analyze(rgb, select="center", gates=True)
    if not isinstance(result, FaceCapture):
        return None, result.code.value
    chip = face_chip(rgb, result.landmarks)
    raw = pipe._embedder.embed(np.stack([chip, chip[:, ::-1]]))
    both = np.stack([(raw[0] + raw[1]) * np.float32(0.5), raw[0]])
    both /= np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)
    return both.astype(np.float32), "acquired"


def _acquire_in_worker(path: str) -> tuple[np.ndarray | None, str]:
    return _acquire(_WORKER["pipe"], path)


def _embed_all(
    paths: list[str], workers: int, progress: bool, pipeline: Any
) -> list[tuple[np.ndarray | None, str]]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="embedding photos", unit="img")
    out: list[tuple[np.ndarray | None, str]] = []
    if workers <= 1 or pipeline is not None:
        from devicebio.vision.pipeline import FacePipeline

        pipe = pipeline or FacePipeline(mirror=False)  # _acquire embeds both ways
        for path in paths:
            out.append(_acquire(pipe, path))
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        # Results come back through the pool's pipe, in memory; nothing touches the disk.
        with mp.get_context("fork").Pool(workers, _worker_init, (threads,)) as pool:
            for got in pool.imap(_acquire_in_worker, paths, chunksize=16):
                out.append(got)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out


# ---- the evaluation -------------------------------------------------------------------------


def evaluate(
    images: Path,
    *,
    enrol: int = 3,
    probes: int = 3,
    people: Sequence[str] | None = None,
    operating_point: str | None = None,
    threshold: float | None = None,
    seeds: Sequence[int] = SPLIT_SEEDS,
    groups: Sequence[str | Path] = (),
    workers: int = 1,
    progress: bool = True,
    pipeline: Any = None,
    probe_mirror: bool = True,
    compare_probe_mirror: bool = False,
) -> dict[str, Any]:
    """Run the evaluation (module doc) and return the report; ``people`` limits who takes
    part; the policy (default: the model's default operating point) is the one enrolment's
    consistency check and the headline figures use.

    Templates are always the mirror average (what enrolment stores). ``probe_mirror``: embed
    the probes with the mirror average too (True, what the product does) or the chip alone
    (False, a measured and rejected lever: docs/evaluation.md). ``compare_probe_mirror``
    adds the other choice's figures, from the same embeddings, under ``"probe_mirror_other"``.
    """
    if enrol < 1 or probes < 1:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "enrol and probes must be at least 1")
    policy = decision.Policy.of(threshold=threshold, operating_point=operating_point)
    # Read once, before the long embedding run, so a bad annotation fails at once.
    annotation = demographics.load(list(groups)) if groups else None
    started = time.perf_counter()
    listing = people_in(images)
    if people is not None:
        missing = [p for p in people if p not in listing]
        if missing:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"{len(missing)} people not found")
        listing = {p: listing[p] for p in people}
    persons = [_Person(n, ph[: enrol + probes]) for n, ph in listing.items()]
    paths = [str(images / p.name / f) for p in persons for f in p.photos]
    acquired = _embed_all(paths, workers, progress, pipeline)
    embed_s = time.perf_counter() - started

    def run(who: list[_Person], mirror: bool) -> dict[str, Any]:
        out = _report(who, acquired, enrol, probes, policy, seeds, annotation, progress, mirror)
        out["dataset"], out["photos"], out["probe_mirror"] = str(images), len(paths), mirror
        return out

    report = run(persons, probe_mirror)
    if compare_probe_mirror:
        other = run([_Person(p.name, p.photos) for p in persons], not probe_mirror)
        other.pop("_scores")
        report["probe_mirror_other"] = other
    report["seconds_embedding"] = embed_s
    report["seconds_total"] = time.perf_counter() - started
    report["workers"] = workers
    report["model"] = decision.EMBEDDER
    from devicebio.evaluation.machine import describe_machine

    report["machine"] = describe_machine()
    return report


def _report(
    persons: list[_Person],
    acquired: list[tuple[np.ndarray | None, str]],
    enrol: int,
    probes: int,
    policy: decision.Policy,
    seeds: Sequence[int],
    annotation: demographics.Groups | None,
    progress: bool,
    probe_mirror: bool,
) -> dict[str, Any]:
    failures: Counter[str] = Counter()
    it = iter(acquired)
    for person in persons:
        for i in range(len(person.photos)):
            emb, why = next(it)
            if emb is None:
                failures[why] += 1
            else:
                person.acquired.append(emb[0])
                person.acquired_probe.append(emb[0] if probe_mirror else emb[1])
                person.acquired_index.append(i)
    _enrol_and_probe(persons, enrol, probes, policy)
    report: dict[str, Any] = {
        "standard": "ISO/IEC 19795-1 (technology evaluation, zero-effort impostors)",
        "people": len(persons),
        "enrol_templates": enrol,
        "probe_frames": probes,
        "decision": "mean over probes of each probe's closest template; accept below threshold",
        "policy": {
            "threshold": policy.threshold,
            "same_person": policy.same_person,
            "operating_point": policy.operating_point,
        },
        "failure_to_acquire": {
            "per_photo": metrics.rate(sum(failures.values()), len(acquired)),
            "reasons": dict(failures.most_common()),
        },
    }
    report.update(_failure_to_enrol(persons, enrol, probes))
    scores = _transaction_scores(persons)
    report["transactions"] = _figures(scores, policy)
    comp = _comparison_scores(persons, progress)
    report["comparisons"] = _figures(comp, policy)
    report["out_of_sample"] = _out_of_sample(persons, scores, enrol, seeds, policy)
    report["groups"] = (
        None if annotation is None else _per_group(persons, annotation, scores, policy)
    )
    report["_scores"] = {"transactions": scores, "comparisons": comp}
    return report


def _enrol_and_probe(
    persons: list[_Person], enrol: int, probes: int, policy: decision.Policy
) -> None:
    """The device's enrolment walk and probe capture, per person (module doc)."""
    for p in persons:
        if len(p.photos) < enrol:
            continue
        if len(p.acquired) < enrol:
            p.enrol = "too_few_acquired"
            continue
        first = np.stack(p.acquired[:enrol])
        if not decision.consistent(first, policy):
            p.enrol = "inconsistent"
            continue
        p.enrol = "enrolled"
        p.templates = first
        rest = p.acquired_probe[enrol : enrol + probes]
        p.genuine_attempted = len(p.photos) >= enrol + probes
        if p.genuine_attempted and rest:
            p.probes = np.stack(rest)
        if p.probes is not None and len(p.probes) == probes:
            p.impostor_probes = p.probes
        elif len(p.acquired) >= probes:
            p.impostor_probes = np.stack(p.acquired_probe[:probes])
    for p in persons:
        # people too few photos to enrol can still be zero-effort impostors
        if p.impostor_probes is None and p.enrol == "not_attempted" and len(p.acquired) >= probes:
            p.impostor_probes = np.stack(p.acquired_probe[:probes])


def _failure_to_enrol(persons: list[_Person], enrol: int, probes: int) -> dict[str, Any]:
    attempted = [p for p in persons if p.enrol != "not_attempted"]
    failed = [p for p in attempted if p.enrol != "enrolled"]
    cohort = [p for p in attempted if len(p.photos) >= enrol + probes]
    enrolled_cohort = [p for p in cohort if p.enrol == "enrolled"]
    no_probe = [p for p in enrolled_cohort if p.probes is None]
    return {
        "failure_to_enrol": {
            **metrics.rate(len(failed), len(attempted)),
            "reasons": dict(Counter(p.enrol for p in failed).most_common()),
            "genuine_cohort": metrics.rate(sum(p.enrol != "enrolled" for p in cohort), len(cohort)),
        },
        "failure_to_acquire_transactions": metrics.rate(len(no_probe), len(enrolled_cohort)),
    }


@dataclass
class _Scores:
    genuine: np.ndarray  # fused score per genuine transaction
    genuine_owner: np.ndarray  # index into persons
    impostor: np.ndarray  # (probe owner, template owner) matrix flattened, diagonal removed
    probe_owner: np.ndarray
    template_owner: np.ndarray


def _transaction_scores(persons: list[_Person]) -> _Scores:
    enrolled = [i for i, p in enumerate(persons) if p.templates is not None]
    if not enrolled:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "nobody enrolled: too few usable photos")
    templates = np.stack([persons[i].templates for i in enrolled])  # type: ignore[misc]
    gen, gen_owner = [], []
    for i in enrolled:
        p = persons[i]
        if p.probes is not None:
            gen.append(float(decision.paired_fused_distances(p.probes[None], p.templates[None])[0]))  # type: ignore[index]
            gen_owner.append(i)
    probers = [i for i, p in enumerate(persons) if p.impostor_probes is not None]
    probe_sets = np.stack([persons[i].impostor_probes for i in probers])  # type: ignore[misc]
    t_owner = np.asarray(enrolled)
    imp, p_own, t_own = [], [], []
    for start in range(0, len(probers), _CHUNK):
        block = decision.fused_distances(probe_sets[start : start + _CHUNK], templates)
        owners = np.asarray(probers[start : start + _CHUNK])
        keep = owners[:, None] != t_owner[None, :]  # zero-effort impostors: other people only
        imp.append(block[keep].astype(np.float32))
        rows, cols = np.nonzero(keep)
        p_own.append(owners[rows])
        t_own.append(t_owner[cols])
    return _Scores(
        np.asarray(gen),
        np.asarray(gen_owner, np.int64),
        np.concatenate(imp),
        np.concatenate(p_own),
        np.concatenate(t_own),
    )


def _comparison_scores(persons: list[_Person], progress: bool) -> _Scores:
    """One photo against one photo: the first acquired photo of each person against every
    other person's; and every same-person pair among the acquired photos (in each pair the
    earlier photo is the probe, the later the template)."""
    firsts = [i for i, p in enumerate(persons) if p.acquired]
    emb = np.stack([persons[i].acquired[0] for i in firsts])[:, None]  # as templates
    probe = np.stack([persons[i].acquired_probe[0] for i in firsts])[:, None]
    n = len(firsts)
    imp = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * (n - 1) // 2, desc="cross-person pairs", unit="pair", unit_scale=True)
    for start in range(0, n, _CHUNK):
        block = decision.fused_distances(probe[start : start + _CHUNK], emb)
        rows = np.arange(start, min(start + _CHUNK, n))
        upper = np.arange(n)[None, :] > rows[:, None]  # each unordered pair once
        imp.append(block[upper].astype(np.float32))
        if bar is not None:
            bar.update(int(upper.sum()))
    if bar is not None:
        bar.close()
    gen, owner = [], []
    for i, p in enumerate(persons):
        if len(p.acquired) >= 2:
            e = np.stack(p.acquired)[:, None]
            d = decision.fused_distances(np.stack(p.acquired_probe)[:, None], e)
            iu = np.triu_indices(len(e), 1)
            gen.extend(d[iu].tolist())
            owner.extend([i] * len(iu[0]))
    empty = np.zeros(0, np.int64)
    return _Scores(np.asarray(gen), np.asarray(owner, np.int64), np.concatenate(imp), empty, empty)


def _figures(s: _Scores, policy: decision.Policy) -> dict[str, Any]:
    fmr, fnmr = metrics.fmr_fnmr(s.genuine, s.impostor, policy.threshold)
    at = {}
    for target in TARGETS:
        t = metrics.threshold_at_far(s.impostor, target)
        r_fmr, r_fnmr = metrics.fmr_fnmr(s.genuine, s.impostor, t)
        at[f"{target:.0e}"] = {"threshold": t, "fmr": r_fmr, "fnmr": r_fnmr}
    eer, eer_t = metrics.fast_eer(s.genuine, s.impostor)
    return {
        "genuine": len(s.genuine),
        "impostor": len(s.impostor),
        "at_policy": {"threshold": policy.threshold, "fmr": fmr, "fnmr": fnmr},
        "at_fmr": at,
        "eer": eer,
        "eer_threshold": eer_t,
    }


def _out_of_sample(
    persons: list[_Person],
    scores: _Scores,
    enrol: int,
    seeds: Sequence[int],
    policy: decision.Policy,
) -> dict[str, Any]:
    """Choose each threshold on half a of the people (those with at least ``enrol`` photos),
    measure it on half b; impostor transactions stay within each half."""
    names = [p.name for p in persons if len(p.photos) >= enrol]
    index = {p.name: i for i, p in enumerate(persons)}
    runs = []
    for seed in seeds:
        a, b = split(names, seed)
        cal, val = (_restrict(scores, _members(half, index, len(persons))) for half in (a, b))
        run: dict[str, Any] = {"seed": seed, "people": [len(a), len(b)]}
        for target in TARGETS:
            t = metrics.threshold_at_far(cal.impostor, target)
            fmr, fnmr = metrics.fmr_fnmr(val.genuine, val.impostor, t)
            run[f"{target:.0e}"] = {"threshold": t, "fmr": fmr, "fnmr": fnmr}
        fmr, fnmr = metrics.fmr_fnmr(val.genuine, val.impostor, policy.threshold)
        run["at_policy"] = {"fmr": fmr, "fnmr": fnmr}
        runs.append(run)
    if not runs:
        return {"calibration_seed": CALIBRATION_SEED, "runs": [], "range": {}}
    summary = {}
    for key in [f"{t:.0e}" for t in TARGETS]:
        summary[key] = {
            what: [min(_get(r, key, what) for r in runs), max(_get(r, key, what) for r in runs)]
            for what in ("threshold", "fmr", "fnmr")
        }
    return {"calibration_seed": CALIBRATION_SEED, "runs": runs, "range": summary}


def _get(run: dict[str, Any], key: str, what: str) -> float:
    value = run[key][what]
    return float(value if what == "threshold" else value["rate"] if value["rate"] else 0.0)


def _members(names: Sequence[str], index: dict[str, int], n: int) -> np.ndarray:
    members = np.zeros(n, bool)
    members[[index[name] for name in names]] = True
    return members


def _restrict(s: _Scores, members: np.ndarray) -> _Scores:
    g = members[s.genuine_owner] if len(s.genuine_owner) else np.zeros(0, bool)
    keep = members[s.probe_owner] & members[s.template_owner]
    return _Scores(
        s.genuine[g],
        s.genuine_owner[g],
        s.impostor[keep],
        s.probe_owner[keep],
        s.template_owner[keep],
    )


# ---- demographic groups -----------------------------------------------------------------------


def _per_group(
    persons: list[_Person],
    groups: demographics.Groups,
    s: _Scores,
    policy: decision.Policy,
) -> dict[str, Any]:
    """FMR and FNMR per group at the policy's threshold: genuine transactions of the group's
    people; impostor transactions where both the prober and the enrolled person belong to it
    (the demographic-matched impostors, ISO/IEC 19795-10's harder case)."""
    out: dict[str, Any] = {
        "sources": groups.sources,
        "annotated_people": sum(p.name in groups.of for p in persons),
        "attributes": {},
    }
    enrolled = np.array([p.templates is not None for p in persons])
    for attr in groups.attributes:
        label = np.array([groups.of.get(p.name, {}).get(attr, "") for p in persons], dtype=object)
        per: dict[str, Any] = {}
        for value in sorted({v for v in label if v}):
            members = label == value
            sub = _restrict(s, members)
            fmr, fnmr = metrics.fmr_fnmr(sub.genuine, sub.impostor, policy.threshold)
            hit = sub.impostor < policy.threshold
            a, b = sub.probe_owner[hit], sub.template_owner[hit]
            per[value] = {
                "people": int(members.sum()),
                "enrolled": int(sum(enrolled[members])),
                "fmr": fmr,
                "fnmr": fnmr,
                # A false match both ways round is one pair of people: impostor transactions
                # are not independent trials, and this says how many pairs the errors rest on.
                "false_match_pairs": len(set(zip(np.minimum(a, b), np.maximum(a, b), strict=True))),
            }
        out["attributes"][attr] = {
            "groups": per,
            "unannotated": int((label == "").sum()),
            "conflicting": groups.conflicting.get(attr, 0),
            "similar": demographics.similarity(per),
        }
    return out


# ---- output ---------------------------------------------------------------------------------


def write_outputs(report: dict[str, Any], json_out: Path | None, plot_out: Path | None) -> None:
    import json

    scores = report.pop("_scores")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if plot_out is not None:
        plot(scores, report, plot_out)


def plot(scores: dict[str, _Scores], report: dict[str, Any], out: Path) -> None:
    """DET curves (log axes) per transaction and per comparison, the policy marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DeviceBioError(
            Reason.DEPENDENCY_MISSING, "plots need matplotlib", hint="pip install 'devicebio[eval]'"
        ) from None
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    floor = 1e-7
    for key, label in (
        ("transactions", "transaction (3 frames x 3 templates)"),
        ("comparisons", "one photo vs one photo"),
    ):
        s = scores[key]
        _, fmr, fnmr = metrics.det_curve(s.genuine, s.impostor, 2000)
        seen = (fmr > 0) & (fnmr > 0)  # a zero rate has no place on log axes
        ax.plot(fmr[seen], fnmr[seen], label=label)
        at = report[key]["at_policy"]
        ax.plot(
            max(at["fmr"]["rate"], floor),
            max(at["fnmr"]["rate"], floor),
            "o",
            label=f"{key}: threshold {at['threshold']:.3f}",
        )
    ax.axvline(1e-4, color="k", ls=":", lw=1, label="FMR 1e-4 (NIST SP 800-63B-4)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false match rate")
    ax.set_ylabel("false non-match rate")
    ax.set_title("DET, zero-effort impostors")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _pct(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    text = f"{r['rate']:.2e} [{lo:.1e}, {hi:.1e}] ({r['errors']}/{r['trials']})"
    if "rule_of_3" in r:
        text += f" <= {r['rule_of_3']:.1e} (rule of 3)"
    return text


def format_table(report: dict[str, Any], *, footer: bool = True) -> str:
    """The report as text: every rate with its 95% Clopper-Pearson interval and counts."""
    lines = [
        f"{report['standard']}; {report['people']} people, {report['photos']} photos, "
        f"enrol {report['enrol_templates']}, probe {report['probe_frames']}; templates: mirror "
        f"average; probes: {'mirror average' if report['probe_mirror'] else 'chip alone'}",
        f"policy: threshold {report['policy']['threshold']:.3f} "
        f"({report['policy']['operating_point'] or 'custom'}), same person (enrolment "
        f"consistency) {report['policy']['same_person']:.3f}",
        f"failure to acquire (per photo): {_pct(report['failure_to_acquire']['per_photo'])} "
        f"{report['failure_to_acquire']['reasons']}",
        f"failure to enrol: {_pct(report['failure_to_enrol'])} "
        f"{report['failure_to_enrol']['reasons']}",
        f"failure to acquire (genuine transactions): "
        f"{_pct(report['failure_to_acquire_transactions'])}",
    ]
    for key in ("transactions", "comparisons"):
        f = report[key]
        lines.append(
            f"\n{key}: {f['genuine']} genuine, {f['impostor']} impostor; "
            f"EER {f['eer']:.2%} at {f['eer_threshold']:.3f}"
        )
        at = f["at_policy"]
        lines.append(f"  at {at['threshold']:.3f}: FMR {_pct(at['fmr'])}")
        lines.append(f"  {'':>10} FNMR {_pct(at['fnmr'])}")
        for target, row in f["at_fmr"].items():
            lines.append(
                f"  FMR {target}: threshold {row['threshold']:.4f}, FMR {_pct(row['fmr'])}, "
                f"FNMR {_pct(row['fnmr'])}"
            )
    oos = report["out_of_sample"]
    lines.append("\nout of sample (threshold chosen on half a, measured on half b):")
    for run in oos["runs"]:
        cells = [f"seed {run['seed']} ({run['people'][0]}/{run['people'][1]} people)"]
        for target in [f"{t:.0e}" for t in TARGETS]:
            r = run[target]
            cells.append(
                f"{target}: t {r['threshold']:.4f} FMR {r['fmr']['rate']:.1e} "
                f"(<= {r['fmr']['ci95'][1]:.1e}) FNMR {r['fnmr']['rate']:.2%}"
            )
        p = run["at_policy"]
        cells.append(f"policy: FMR {p['fmr']['rate']:.1e} FNMR {p['fnmr']['rate']:.2%}")
        lines.append("  " + "; ".join(cells))
    if report.get("groups"):
        lines.extend(_group_lines(report["groups"], report["policy"]["threshold"]))
    else:
        lines.append(
            "\nper group: no annotation given (--groups SPEC, docs/data-demographics.md: a "
            "person or image CSV, Columbia's lfw_attributes.txt, ATTR=VALUE:IMAGE_LIST, "
            "ATTR:PERSON_MAP.json)"
        )
    other = report.get("probe_mirror_other")
    if other is not None:
        lines.append("\n==== the same embeddings, the other probe choice ====")
        lines.append(format_table(other, footer=False))
        lines.append("==== end of the other probe choice ====")
    if footer:
        lines.append(
            f"\n{report['seconds_total']:.0f} s ({report['seconds_embedding']:.0f} s embedding, "
            f"{report['workers']} workers); load average "
            f"{', '.join(f'{x:.1f}' for x in report['machine'].get('load_average') or [])}"
        )
    return "\n".join(lines)


def _group_lines(g: dict[str, Any], threshold: float) -> list[str]:
    lines = [
        f"\nper group at {threshold:.3f} (impostors from the same group; "
        f"{g['annotated_people']} people annotated by {', '.join(g['sources'])}):"
    ]
    for attr, a in g["attributes"].items():
        lines.append(
            f"  {attr} ({a['unannotated']} people unannotated; {a['conflicting']} ties in the "
            "annotation):"
        )
        for value, row in a["groups"].items():
            lines.append(
                f"    {value}: {row['people']} people, {row['enrolled']} enrolled; "
                f"FMR {_pct(row['fmr'])} ({row['false_match_pairs']} pairs of people); "
                f"FNMR {_pct(row['fnmr'])}"
            )
        for what in ("fmr", "fnmr"):
            sim = a["similar"][what]
            ratio = "n/a" if sim["ratio"] is None else f"{sim['ratio']:.1f}x"
            apart = "; ".join(" vs ".join(pair) for pair in sim["apart"]) or "none"
            differ = [t for t in sim["tests"] if t["p"] < 0.05]
            tested = (
                "; ".join(f"{' vs '.join(t['groups'])} p={t['p']:.3f}" for t in differ) or "none"
            )
            lines.append(
                f"    {what.upper()} highest/lowest {ratio}; 95% intervals apart: {apart}; "
                f"exact test p < 0.05: {tested}"
            )
    return lines
