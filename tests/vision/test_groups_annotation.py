"""Demographic annotations (``--groups``) and the per-group report, on tiny synthetic files
and scores: no LFW, no model, nothing random."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devicebio import decision
from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation import demographics, transactions

COLUMBIA_ATTRS = ["Male", "Asian", "White", "Black", "Baby", "Child", "Youth", "Middle Aged"]
COLUMBIA_ATTRS += ["Senior", "Black Hair", "Indian"]


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_image_lists_vote_per_photo_and_a_tie_leaves_the_person_out(tmp_path: Path) -> None:
    # CRLF line ends, as the published lists have
    male = _write(tmp_path / "male_names.txt", "Ann_Lee_0001.jpg\r\nBo_Day_0001.jpg\r\n")
    female = _write(
        tmp_path / "female_names.txt",
        "Ann_Lee_0002.jpg\r\nAnn_Lee_0003.jpg\r\nBo_Day_0002.jpg\r\nCy_de_la_Vo_0007.jpg\r\n",
    )
    g = demographics.load([f"sex=male:{male}", f"sex=female:{female}"])
    assert g.of == {"Ann_Lee": {"sex": "female"}, "Cy_de_la_Vo": {"sex": "female"}}
    assert g.conflicting == {"sex": 1}  # Bo_Day: one photo each way
    assert g.sources == ["sex=male:male_names.txt", "sex=female:female_names.txt"]
    assert g.attributes == ["sex"]


def test_person_map_json_marks_several_labels_as_multiple(tmp_path: Path) -> None:
    race = _write(
        tmp_path / "race.json",
        json.dumps({"Ann_Lee": "eastasian", "Bo_Day": "african,caucasian", "Cy Vo": "latino"}),
    )
    g = demographics.load([f"race:{race}"])
    assert g.of == {
        "Ann_Lee": {"race": "eastasian"},
        "Bo_Day": {"race": demographics.MULTIPLE},
        "Cy_Vo": {"race": "latino"},
    }


def test_csv_per_person_and_per_image_combine_with_other_sources(tmp_path: Path) -> None:
    per_person = _write(tmp_path / "people.csv", "person,sex,age\nAnn Lee,female,senior\n")
    per_image = _write(
        tmp_path / "images.csv", "image,sex\nBo_Day_0001.jpg,male\nBo_Day_0002.jpg,male\n"
    )
    g = demographics.load([per_person, per_image])
    assert g.of == {"Ann_Lee": {"sex": "female", "age": "senior"}, "Bo_Day": {"sex": "male"}}
    assert g.sources == ["people.csv", "images.csv"]


def test_columbia_attribute_file_takes_the_mean_score_per_person(tmp_path: Path) -> None:
    header = "#\tperson\timagenum\t" + "\t".join(COLUMBIA_ATTRS)

    def row(person: str, num: int, male: float, race: list[float], senior: float) -> str:
        # Male, Asian, White, Black, Baby, Child, Youth, Middle Aged, Senior, Black Hair, Indian
        asian, white, black, indian = race
        values = [male, asian, white, black, -2, -2, -1, 0.5, senior, 0.3, indian]
        return "\t".join([person, str(num)] + [str(v) for v in values])

    text = "\n".join(
        [
            "# synthetic file in the layout of Columbia's lfw_attributes.txt",
            header,
            row("Ann Lee", 1, -1.5, [1.0, -1.0, -1.0, -2.0], -1.0),
            row("Ann Lee", 2, 0.5, [0.8, -1.0, -1.0, -2.0], -1.0),  # mean Male -0.5: female
            row("Bo Day", 1, 2.0, [-1.0, -0.5, -1.0, 0.7], 1.5),
        ]
    )
    g = demographics.load([_write(tmp_path / "lfw_attributes.txt", text)])
    assert g.of["Ann_Lee"] == {"sex": "female", "race": "asian", "age": "middle_aged"}
    assert g.of["Bo_Day"] == {"sex": "male", "race": "indian", "age": "senior"}


@pytest.mark.parametrize(
    ("spec", "content", "reason"),
    [
        ("sex=male:{p}", "Ann_Lee_0001.jpg\nnot an image name\n", Reason.MALFORMED_DATA),
        ("{p}", "name,sex\nAnn,female\n", Reason.MALFORMED_DATA),
        ("race:{p}", "[1, 2]", Reason.MALFORMED_DATA),
        ("race:{p}", "{not json", Reason.MALFORMED_DATA),
        ("sex=male:{p}.missing", "", Reason.INVALID_ARGUMENT),
    ],
)
def test_bad_annotations_fail_with_a_typed_error(
    tmp_path: Path, spec: str, content: str, reason: Reason
) -> None:
    path = _write(tmp_path / "groups.txt", content)
    with pytest.raises(DeviceBioError) as err:
        demographics.load([spec.format(p=path)])
    assert err.value.reason == reason


def _person(name: str, enrolled: bool) -> transactions._Person:
    p = transactions._Person(name, [])
    if enrolled:
        p.templates = np.zeros((3, 128), np.float32)
    return p


def test_per_group_counts_rates_and_what_the_intervals_resolve() -> None:
    # three women (0-2) and three men (3-5) plus one unannotated man-or-woman (6)
    persons = [_person(n, enrolled=n != "F2") for n in ("F0", "F1", "F2", "M3", "M4", "M5", "X6")]
    groups = demographics.Groups(
        of={n: {"sex": "female" if n[0] == "F" else "male"} for n in ("F0", "F1", "F2", "M3")}
        | {"M4": {"sex": "male"}, "M5": {"sex": "male"}},
        sources=["synthetic"],
    )
    t = 0.3
    # genuine: the women are refused 2 of 2 times, the men accepted 3 of 3
    genuine = np.array([0.5, 0.6, 0.1, 0.1, 0.2])
    genuine_owner = np.array([0, 1, 3, 4, 5])
    # impostors: every ordered pair of different people among 0..6 with enrolled templates
    pairs = [(a, b) for a in range(7) for b in range(7) if a != b and b != 2]
    owner_p = np.array([a for a, _ in pairs])
    owner_t = np.array([b for _, b in pairs])
    # a false match (0.1) wherever a woman probes another woman; cross-sex pairs never match
    female = owner_p <= 2
    impostor = np.where(female & (owner_t <= 2), 0.1, 0.9)
    scores = transactions._Scores(genuine, genuine_owner, impostor, owner_p, owner_t)
    policy = decision.Policy.of(threshold=t)

    out = transactions._per_group(persons, groups, scores, policy)
    assert out["annotated_people"] == 6
    sex = out["attributes"]["sex"]
    assert sex["unannotated"] == 1
    f, m = sex["groups"]["female"], sex["groups"]["male"]
    assert (f["people"], f["enrolled"], m["people"], m["enrolled"]) == (3, 2, 3, 3)
    # same-group impostors only: women probe the 2 enrolled women (F0<->F1, F2->F0, F2->F1)
    assert (f["fmr"]["errors"], f["fmr"]["trials"]) == (4, 4)
    assert (m["fmr"]["errors"], m["fmr"]["trials"]) == (0, 6)
    assert (f["fnmr"]["errors"], f["fnmr"]["trials"]) == (2, 2)
    assert (m["fnmr"]["errors"], m["fnmr"]["trials"]) == (0, 3)
    # F0<->F1 both ways round is one pair of people: 3 pairs carry the 4 false matches
    assert (f["false_match_pairs"], m["false_match_pairs"]) == (3, 0)
    # FMR 4/4 vs 0/6: the intervals [0.40, 1] and [0, 0.46] overlap; FNMR 2/2 vs 0/3 too
    fmr_sim = sex["similar"]["fmr"]
    assert (fmr_sim["ratio"], fmr_sim["apart"]) == (None, [])
    assert fmr_sim["tests"][0]["groups"] == ["female", "male"]
    # all 4 errors in female's 4 of 10 trials: P = 0.4**4 = 0.0256, doubled
    assert fmr_sim["tests"][0]["p"] == pytest.approx(2 * 0.4**4)
    assert sex["similar"]["fnmr"]["apart"] == []

    text = "\n".join(transactions._group_lines(out, t))
    assert "female: 3 people, 2 enrolled; FMR 1.00e+00" in text
    assert "(3 pairs of people)" in text
    assert "male: 3 people, 3 enrolled; FMR 0.00e+00" in text
    # p = 0.0512: not below 0.05, so no pair is named
    assert "FMR highest/lowest n/a; 95% intervals apart: none; exact test p < 0.05: none" in text


def test_similarity_names_the_pairs_whose_intervals_do_not_overlap() -> None:
    from devicebio.evaluation import metrics

    per = {
        "a": {"fmr": metrics.rate(1, 100_000), "fnmr": metrics.rate(3, 100)},
        "b": {"fmr": metrics.rate(50, 100_000), "fnmr": metrics.rate(4, 100)},
        "c": {"fmr": metrics.rate(2, 100_000), "fnmr": metrics.rate(0, 0)},
    }
    sim = demographics.similarity(per)
    assert sim["fmr"]["apart"] == [["a", "b"], ["b", "c"]]
    assert sim["fmr"]["ratio"] == pytest.approx(50.0)
    assert [t["groups"] for t in sim["fmr"]["tests"]] == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert sim["fmr"]["tests"][0]["p"] < 1e-10
    assert sim["fnmr"]["ratio"] == pytest.approx(4 / 3)  # c has no trials
    assert sim["fnmr"]["apart"] == []
    assert [t["groups"] for t in sim["fnmr"]["tests"]] == [["a", "b"]]


def test_exact_rate_comparison() -> None:
    from devicebio.evaluation import metrics

    assert metrics.rates_differ_p(0, 10, 0, 10) == 1.0
    assert metrics.rates_differ_p(5, 100, 5, 100) == 1.0  # the middle of a symmetric law
    # 3 errors, equal trials: all 3 in group a has P = 1/8; two-sided 1/4
    assert metrics.rates_differ_p(3, 50, 0, 50) == pytest.approx(0.25)
    assert metrics.rates_differ_p(0, 50, 3, 50) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        metrics.rates_differ_p(0, 0, 1, 10)
