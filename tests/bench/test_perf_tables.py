"""bench.perf_tables: docs/performance.md's tables follow the JSON records in docs/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import perf_tables

DOCS = perf_tables.DOCS_DIR


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of docs/' records and performance.md, to edit freely."""
    for path in [*DOCS.glob("*.json"), DOCS / perf_tables.PAGE]:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def page(docs: Path) -> str:
    return (docs / perf_tables.PAGE).read_text()


def table(text: str, name: str) -> str:
    """The generated body of one table."""
    for _, found, body, _ in perf_tables.BLOCK.findall(text):
        if found == name:
            return body
    raise AssertionError(f"no table {name!r}")


def test_committed_page_is_up_to_date() -> None:
    assert perf_tables.main(["--check"]) == 0


def test_every_table_is_on_the_page_and_every_record_exists() -> None:
    committed = (DOCS / perf_tables.PAGE).read_text()
    names = [name for _, name, _, _ in perf_tables.BLOCK.findall(committed)]
    assert sorted(names) == sorted(perf_tables.TABLES)
    for spec in perf_tables.TABLES.values():
        for file in spec.files:
            assert (DOCS / file).is_file(), file


def test_rewriting_is_idempotent(docs: Path) -> None:
    committed = page(docs)
    assert perf_tables.main(["--docs", str(docs)]) == 0
    assert page(docs) == committed
    assert perf_tables.main(["--docs", str(docs)]) == 0
    assert page(docs) == committed


def test_check_fails_on_a_table_edited_by_hand_and_a_rewrite_restores_it(
        docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    committed = page(docs)
    edited = committed.replace("**1,008 fps, 48.3 dB**", "**1,100 fps, 48.3 dB**")
    assert edited != committed
    edited += "\nProse after the tables stays.\n"
    (docs / perf_tables.PAGE).write_text(edited)

    assert perf_tables.main(["--docs", str(docs), "--check"]) == 1
    assert "model_fps_conditioned" in capsys.readouterr().err
    assert page(docs) == edited  # --check changes nothing

    assert perf_tables.main(["--docs", str(docs)]) == 0
    assert page(docs) == committed + "\nProse after the tables stays.\n"


def test_a_table_changes_when_its_record_changes(docs: Path) -> None:
    record_path = docs / "model_fps_conditioned_h100.json"
    record = json.loads(record_path.read_text())
    assert record["results"][2]["variant"] == "bf16-reduce-overhead"
    record["results"][2]["fps"] = 1234.4
    record_path.write_text(json.dumps(record))
    before = page(docs)

    assert perf_tables.main(["--docs", str(docs), "--check"]) == 1
    assert perf_tables.main(["--docs", str(docs)]) == 0
    after = page(docs)
    assert "1,234 fps, 48.3 dB" in table(after, "model_fps_conditioned")
    assert "1,008 fps" not in table(after, "model_fps_conditioned")
    assert table(after, "model_fps") == table(before, "model_fps")
    assert perf_tables.main(["--docs", str(docs), "--check"]) == 0


def test_job_variants_table_follows_variant_summary(docs: Path) -> None:
    record_path = docs / "job_variants_h200.json"
    document = json.loads(record_path.read_text())
    last_call = document["calls"][-1]
    (report,) = last_call["runs"].values()
    clip = report["clips"][0]
    clip["job"]["fps"] = clip["encode_fps"] * 0.5  # that run's share becomes 0.500

    record_path.write_text(json.dumps(document))
    assert perf_tables.main(["--docs", str(docs)]) == 0
    assert f"{last_call['call']}: 0.500" in table(page(docs), "job_variants")


def test_conditioned_labels_must_match_the_record(docs: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    record_path = docs / "model_fps_conditioned_h100.json"
    record = json.loads(record_path.read_text())
    del record["results"][-1]
    record_path.write_text(json.dumps(record))
    committed = page(docs)

    assert perf_tables.main(["--docs", str(docs)]) == 2
    assert "labels" in capsys.readouterr().err
    assert page(docs) == committed


@pytest.mark.parametrize("bad", ["<!-- table:no_such_table -->\n<!-- /table -->\n",
                                 "<!-- table:model_fps -->\nnever closed\n"])
def test_bad_markers_are_refused_and_lose_nothing(docs: Path, bad: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    text = bad + page(docs).split("<!-- table:", 1)[0]
    (docs / perf_tables.PAGE).write_text(text)

    assert perf_tables.main(["--docs", str(docs)]) == 2
    assert capsys.readouterr().err.startswith("perf_tables:")
    assert page(docs) == text


def test_strength_table_gives_each_default_and_which_goals_it_meets() -> None:
    at = {"structure_vs_gatys": [0.95, 1.1], "style_loss_vs_gatys": [1.2, 1.8],
          "structure_goal_met": True, "style_goal_met": False}
    record = {"structure_goal": 0.9, "style_goal": 1.5, "styles": {
        "a": {"default_strength": 0.75, "at_default": at},
        "b": {"default_strength": None}}}
    header, rows = perf_tables.strength_defaults({"strength.json": record})
    assert header[2:4] == ["structure vs Gatys (goal ≥ 0.9)", "style loss vs Gatys (goal ≤ 1.5)"]
    assert rows == [["a", "0.75", "0.95–1.10", "1.20–1.80", "structure"],
                    ["b", "none", "–", "–", "no strength keeps the structure"]]
