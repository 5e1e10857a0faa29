"""Blind A/B: the page's items and key, scoring choices, and the real page driven in headless Chromium."""

from __future__ import annotations

import json
import time

import pytest

from lit_ft.eval.blind_ab import build_items, export, main, score
from tests.support.browser import Chromium, find_chromium

ATTACK = "</script><script>window.pwned = true</script><b>bold</b>"


def generations(path, model: str, tasks: list[str]):
    rows = [
        {
            "id": f"val.jsonl:{i}",
            "task_type": task,
            "messages": [{"role": "user", "content": f"Question {i} & <more>"}],
            "reference": f"reference {i}",
            "generation": f"answer {i} from {model}" + (f" {ATTACK}" if i == 0 else ""),
        }
        for i, task in enumerate(tasks)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TASKS = ["classify", "flag", "classify", "flag", "summarize", "classify"]


@pytest.fixture
def two_runs(tmp_path):
    return generations(tmp_path / "a.jsonl", "A", TASKS), generations(tmp_path / "b.jsonl", "B", TASKS)


def test_items_are_shuffled_blind_and_keyed(two_runs):
    items, key = build_items(*two_runs, seed=3)
    assert len(items) == len(TASKS) and len(key["items"]) == len(TASKS)
    assert [key["items"][i["item"]]["id"] for i in items] != [f"val.jsonl:{i}" for i in range(len(TASKS))]
    sides = [key["items"][i["item"]]["left"] for i in items]
    assert set(sides) == {"a", "b"}  # both sides used
    for item in items:
        left_model = key["items"][item["item"]]["left"].upper()
        assert item["left"].split(" from ")[1].startswith(left_model)
        assert set(item) == {"item", "task_type", "request", "reference", "left", "right"}  # nothing names a model
    assert build_items(*two_runs, seed=3) == (items, key)  # reproducible from the seed


def test_score_maps_left_and_right_back_to_the_models(two_runs, tmp_path):
    _, key_path = export(*two_runs, tmp_path / "ab", seed=1)
    key = json.loads(key_path.read_text())
    # a rater who always prefers model A's answer on classify, B's on flag, and calls summarize a tie
    wanted = {"classify": "a", "flag": "b", "summarize": "tie"}
    choices = {}
    for item, entry in key["items"].items():
        want = wanted[entry["task_type"]]
        choices[item] = "tie" if want == "tie" else ("left" if entry["left"] == want else "right")
    path = tmp_path / "choices.json"
    path.write_text(json.dumps({"page_id": key["page_id"], "rater": "r1", "choices": choices}))
    report = score(key_path, [path])
    assert report["per_task"]["classify"] == {"n": 3, "wins_a": 3, "wins_b": 0, "ties": 0, "win_rate_a": 1.0}
    assert report["per_task"]["flag"]["win_rate_a"] == 0.0 and report["per_task"]["summarize"]["win_rate_a"] == 0.5
    assert report["overall"]["win_rate_a"] == pytest.approx((3 + 0.5) / 6)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"page_id": "another", "choices": {}}))
    with pytest.raises(ValueError, match="is the key of"):
        score(key_path, [other])


@pytest.mark.skipif(find_chromium() is None, reason="needs Chromium (apt-get install chromium)")
def test_page_in_headless_chromium_records_choices_that_score_back(two_runs, tmp_path):
    page, key_path = export(*two_runs, tmp_path / "ab", seed=0)
    key = json.loads(key_path.read_text())
    assert "a.jsonl" not in page.read_text() and key["page_id"] in page.read_text()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Chromium() as browser:
        browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        session = browser.open(page.as_uri())
        # self-contained: nothing fetched, and answer text is shown as text, never run or rendered
        assert browser.evaluate(session, "performance.getEntriesByType('resource').length") == 0
        assert browser.evaluate(
            session, "window.pwned === undefined && document.querySelectorAll('main b').length === 0"
        )
        assert ATTACK in browser.evaluate(session, "document.getElementById('items').innerText")
        cards = browser.evaluate(
            session,
            "[...document.querySelectorAll('.item')].map(c => [c.dataset.item, c.querySelector('.meta').textContent,"
            " [...c.querySelectorAll('.answer pre')].map(p => p.textContent)])",
        )
        assert (
            len(cards) == len(TASKS)
            and browser.evaluate(session, "document.getElementById('progress').textContent")
            == f"0 / {len(TASKS)} judged"
        )
        # the rater prefers model A's answer on classify, B's on flag, and calls summarize a tie; they can only
        # tell the models apart by reading the answers
        wanted = {"classify": " from A", "flag": " from B"}
        browser.type_text(session, "#rater", "tester")
        for item, meta, (left, right) in cards:
            task = meta.rsplit(" ", 1)[-1]
            choice = "tie" if task not in wanted else ("left" if wanted[task] in left else "right")
            assert wanted.get(task, " from ") in (left + right)
            browser.click(session, f'.item[data-item="{item}"] button[data-choice="{choice}"]')
        assert browser.evaluate(session, "document.querySelectorAll('.item.done').length") == len(TASKS)
        browser.click(session, "#download")
        deadline = time.monotonic() + 20
        while not [p for p in downloads.glob("*.json")] and time.monotonic() < deadline:
            time.sleep(0.1)
        # choices survive a reload (local storage)
        browser.send("Page.reload", {}, session)
        browser.wait_for(
            session, f"document.getElementById('progress').textContent === '{len(TASKS)} / {len(TASKS)} judged'"
        )
        assert browser.evaluate(session, "document.getElementById('rater').value") == "tester"
    (downloaded,) = downloads.glob("*.json")
    assert downloaded.name == f"ab_choices_{key['page_id']}_tester.json"
    report = main(["score", str(key_path), str(downloaded), "--out", str(tmp_path / "scores.json")])
    assert report["raters"] == ["tester"]
    assert report["per_task"]["classify"]["win_rate_a"] == 1.0
    assert report["per_task"]["flag"]["win_rate_a"] == 0.0
    assert report["per_task"]["summarize"] == {"n": 1, "wins_a": 0, "wins_b": 0, "ties": 1, "win_rate_a": 0.5}
    assert json.loads((tmp_path / "scores.json").read_text())["overall"]["n"] == len(TASKS)
