"""``devicebio eval``: evaluation tools for reviewers (LFW accuracy, transaction FMR/FNMR,
liveness APCER/BPCER)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from devicebio.cli.common import (
    add_command,
)
from devicebio.cli.exits import EXIT_OK
from devicebio.errors import DeviceBioError, Reason


def cmd_eval_lfw(args: argparse.Namespace) -> int:
    from pathlib import Path

    from devicebio.evaluation import lfw

    base = lfw.default_lfw_dir()
    images = Path(args.images) if args.images else base / "images"
    pairs = Path(args.pairs) if args.pairs else base / "pairs.txt"
    if not images.is_dir() or not pairs.is_file():
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            f"no face set at {images} / {pairs}",
            hint="pass --images DIR --pairs FILE, or set DEVICEBIO_LFW",
        )
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    report = lfw.evaluate(
        images,
        pairs,
        folds=folds,
        detector=args.detector,
        mirror=not args.no_mirror,
        normalize=not args.no_normalize,
    )
    json_out = Path(args.json_out) if args.json_out else None
    lfw.write_outputs(report, json_out, Path(args.plot) if args.plot else None)
    shown = {k: v for k, v in report.items() if k not in ("no_face_list", "fold_thresholds")}
    print(json.dumps(shown, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_eval_transactions(args: argparse.Namespace) -> int:
    from pathlib import Path

    from devicebio.evaluation import lfw, transactions

    images = Path(args.images) if args.images else lfw.default_lfw_dir() / "images"
    report = transactions.evaluate(
        images,
        enrol=args.enrol,
        probes=args.probes,
        operating_point=args.operating_point,
        threshold=args.threshold,
        seeds=[int(s) for s in args.seeds.split(",")],
        groups=args.groups or (),
        workers=args.workers,
        probe_mirror=args.probe_mirror,
        compare_probe_mirror=args.compare_probe_mirror,
    )
    json_out = Path(args.json_out) if args.json_out else None
    transactions.write_outputs(report, json_out, Path(args.plot) if args.plot else None)
    print(transactions.format_table(report))
    return EXIT_OK


def cmd_eval_liveness(args: argparse.Namespace) -> int:
    from pathlib import Path

    from devicebio.evaluation import lfw, liveness

    video = Path(args.video_dir) if args.video_dir else liveness.default_video_dir()
    lfw_dir = Path(args.lfw) if args.lfw else lfw.default_lfw_dir()
    if not video.is_dir() or not (lfw_dir / "images").is_dir():
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            f"no face videos at {video} or no LFW images at {lfw_dir / 'images'}",
            hint="pass --video-dir DIR --lfw DIR, or set DEVICEBIO_VIDEO / DEVICEBIO_LFW",
        )
    species = args.species.split(",") if args.species else list(liveness.SPECIES)
    report = liveness.evaluate(
        video,
        lfw_dir,
        sessions=args.sessions,
        attacks=args.attacks,
        seed=args.seed,
        species=species,
        workers=args.workers,
        pad={"default": None, "on": True, "off": False}[args.pad],
        recaptures=liveness.recapture_dir(args.recaptures),
        replay_challenges=args.replay_challenges,
    )
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(liveness.format_table(report))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    ev = sub.add_parser("eval", help="evaluation tools for reviewers")
    ev_sub = ev.add_subparsers(dest="eval", required=True)
    p = add_command(
        ev_sub, "lfw", cmd_eval_lfw, "verification accuracy on LFW (or any set in its format)"
    )
    p.add_argument("--images", help="folder of <name>/<name>_NNNN.jpg (default: shared LFW)")
    p.add_argument("--pairs", help="pairs file in LFW's View-2 format")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report here")
    p.add_argument("--plot", metavar="OUT.png", help="DET curve and score histograms")
    p.add_argument("--folds", help="only these folds, e.g. 0 or 0,1 (default: all)")
    p.add_argument("--detector", choices=["fast", "accurate"], default="fast")
    p.add_argument("--no-mirror", action="store_true", help="skip mirror-averaging (ablation)")
    p.add_argument(
        "--no-normalize", action="store_true", help="keep dlib's raw embedding length (ablation)"
    )
    p = add_command(
        ev_sub, "transactions", cmd_eval_transactions, "FMR/FNMR per transaction (ISO 19795-1)"
    )
    p.add_argument("--images", help="folder of <person>/<photo> images (default: shared LFW)")
    p.add_argument("--enrol", type=int, default=3, help="enrolment templates (default 3)")
    p.add_argument("--probes", type=int, default=3, help="probe frames fused (default 3)")
    p.add_argument("--operating-point", help="evaluate this named operating point")
    p.add_argument("--threshold", type=float, help="evaluate a custom threshold instead")
    p.add_argument("--seeds", default="0,1,2,3,4", help="out-of-sample split seeds")
    p.add_argument(
        "--groups",
        action="append",
        metavar="SPEC",
        help="demographic annotation (repeatable): a person or image CSV, Columbia's "
        "lfw_attributes.txt, ATTR=VALUE:IMAGE_LIST or ATTR:PERSON_MAP.json "
        "(docs/data-demographics.md)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument(
        "--probe-mirror",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed probes with the mirror average, as the product does (templates always are)",
    )
    p.add_argument(
        "--compare-probe-mirror",
        action="store_true",
        help="also report the other probe choice, from the same embeddings",
    )
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report here")
    p.add_argument("--plot", metavar="OUT.png", help="DET curves with the operating point")
    p = add_command(
        ev_sub, "liveness", cmd_eval_liveness, "APCER/BPCER of active liveness (ISO 30107-3)"
    )
    p.add_argument("--sessions", type=int, default=200, help="genuine sessions (default 200)")
    p.add_argument("--attacks", type=int, default=200, help="presentations per attack species")
    p.add_argument("--seed", type=int, help="reproducible challenges and attacks")
    p.add_argument("--species", help="comma-separated subset of the attack species")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument(
        "--pad",
        choices=["default", "on", "off"],
        default="default",
        help="passive PAD: the product's default, required, or active checks only",
    )
    p.add_argument(
        "--recaptures",
        help="real screen recaptures (a folder with manifest.csv; default $DEVICEBIO_RECAPTURES)",
    )
    p.add_argument(
        "--replay-challenges",
        type=int,
        default=1,
        help="fresh challenges each recorded session is replayed against (default 1)",
    )
    p.add_argument("--video-dir", help="the face videos (default ../shared/data/video)")
    p.add_argument("--lfw", help="LFW folder with images/ (default ../shared/data/lfw)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report here")
