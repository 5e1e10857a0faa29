"""W&B dashboards (issue 21): the workspace and the sweep report, built for what real tiny runs logged.

Three commands run once for the module, offline (no API key): a 2-job LoRA sweep with the forgetting check, samples,
task scores, early stopping, L2-SP and EWC, a DPO run and an online RL run. Their ``.wandb`` files are read back
(``tests/support/wandb_records.py``):
every panel must plot something they logged, and everything they logged must have a panel.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb

pytest.importorskip("wandb_workspaces", reason="needs the dashboards extra: pip install 'lit-ft[dashboards]'")

import wandb_workspaces.reports.v2 as wr  # noqa: E402
from wandb_workspaces.reports.v2 import interface as report_interface  # noqa: E402
from wandb_workspaces.workspaces import internal as workspace_model  # noqa: E402

from lit_ft.loggers import WandbLogger  # noqa: E402
from lit_ft.loggers.dashboard import (  # noqa: E402
    compare_runs,
    from_json,
    save,
    sweep_group,
    sweep_report,
    to_json,
    workspace,
)
from lit_ft.utils.metric_names import AXES  # noqa: E402
from tests.support.helpers import run_entry_point  # noqa: E402
from tests.support.wandb_records import logged_run, offline_without_api_key  # noqa: E402

TINY_CHECKS = [
    "debug=tiny",
    "logger=wandb",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "++trainer.log_every_n_steps=1",
]
SWEEP = [
    "-m",
    "experiment=lora_legal",
    *TINY_CHECKS,
    "peft.r=2,4",
    "module.l2sp=0.01",
    "ewc=general",  # its penalty shares the Overview panel with L2-SP's
    "module.ewc.max_examples=2",
    "callbacks.forgetting.max_questions=4",
    "callbacks.forgetting.max_passages=1",
    "callbacks.forgetting.max_ppl_increase=0.5",  # so the perplexity threshold line is logged too
    "callbacks.generation_samples.max_new_tokens=4",
]
DPO = ["experiment=dpo_legal", "model=tiny", *TINY_CHECKS, "logger.wandb.dashboard=true"]
# PPO logs what GRPO and RLOO do, and its value loss and explained variance
RL = [
    "experiment=rl_legal",
    "module.loss_type=ppo",
    *TINY_CHECKS,
    "callbacks.task_scores.max_examples=4",
    "module.max_new_tokens=8",
]


def dashboard_command(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m lit_ft.loggers.dashboard <args>`` in ``cwd``, with this checkout's lit_ft."""
    return run_entry_point(["lit_ft.loggers.dashboard", *args], script="-m", cwd=cwd, check=check)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{"sweep_dir", "runs": [logged run, ...]}``: the sweep's two W&B runs, the DPO run's and the online RL run's."""
    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as patch:
        offline_without_api_key(patch, root)
        run_entry_point([*SWEEP, f"paths.log_dir={root}/logs"])
        dpo = run_entry_point([*DPO, f"paths.log_dir={root}/logs", f"paths.output_dir={root}/dpo"])
        run_entry_point([*RL, f"paths.log_dir={root}/logs", f"paths.output_dir={root}/rl"])
    [sweep_dir] = (root / "logs" / "debug_tiny" / "multirun").iterdir()
    files = sorted(root.glob("**/wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 4, files
    return {"sweep_dir": sweep_dir, "runs": [logged_run(f) for f in files], "dpo_output": dpo.stdout + dpo.stderr}


@pytest.fixture
def no_api_key(tmp_path, monkeypatch):
    offline_without_api_key(monkeypatch, tmp_path)


class Api:
    """What wandb-workspaces asks of ``wandb.Api`` besides GraphQL: the app's URL and the entity's projects."""

    client = SimpleNamespace(app_url="https://wandb.ai")

    def projects(self, entity):
        return [SimpleNamespace(name="lit-ft")]


UPSERTED = {"upsertView": {"view": {"name": "abc123", "id": "VmlldzoxMjM="}}}  # W&B's answer to a saved view


def without_ids(value):
    """A definition's JSON without the random ``__id__`` each panel gets when built."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "__id__"}
    return [without_ids(v) for v in value] if isinstance(value, list) else value


def logged(runs) -> tuple[set[str], set[str], set[str]]:
    """``(metrics, tables, summary keys)`` the runs logged; a table's own fields (``samples/_type``) and W&B's
    internal keys (``_step``) are not metrics, nor are the x axes."""
    history = {key for r in runs["runs"] for row in r["history"] for key in row}
    tables = {key.removesuffix("/_type") for key in history if key.endswith("/_type")}
    metrics = {
        key
        for key in history
        if not key.startswith("_") and key not in AXES and not any(key.startswith(t + "/") for t in tables)
    }
    summary = {key for r in runs["runs"] for key in r["summary"]}
    return metrics, tables, summary


def panels(definition) -> list:
    if isinstance(definition, wr.Report):
        return [panel for block in definition.blocks for panel in getattr(block, "panels", [])]
    return [panel for section in definition.sections for panel in section.panels]


def names(metrics) -> list[str]:
    return [getattr(m, "name", m) for m in metrics]


def test_every_panel_plots_what_the_runs_logged(runs):
    metrics, tables, summary = logged(runs)
    checked = 0
    for panel in panels(workspace("e", "p")):
        if isinstance(panel, wr.LinePlot) and panel.metric_regex:
            assert any(re.search(panel.metric_regex, m) for m in metrics), f"{panel.title}: nothing matches"
        elif isinstance(panel, wr.LinePlot):
            assert set(names(panel.y)) <= metrics, f"{panel.title}: {set(names(panel.y)) - metrics} never logged"
        elif isinstance(panel, wr.ScalarChart):
            assert names([panel.metric])[0] in summary, panel.title
        else:
            assert isinstance(panel, wr.WeavePanelSummaryTable) and panel.table_name in tables, panel
        checked += 1
    assert checked >= 30


def test_every_logged_metric_and_table_has_a_panel(runs):
    metrics, tables, _ = logged(runs)
    built = panels(workspace("e", "p"))
    plotted = {m for p in built if isinstance(p, wr.LinePlot) for m in names(p.y)}
    patterns = [p.metric_regex for p in built if isinstance(p, wr.LinePlot) and p.metric_regex]
    orphans = {m for m in metrics if m not in plotted and not any(re.search(p, m) for p in patterns)}
    assert orphans == set()
    assert tables == {p.table_name for p in built if isinstance(p, wr.WeavePanelSummaryTable)}
    # what the runs logged: every family the issue lists, per task for all four task types
    assert {"train/loss/classify", "val/loss/summarize", "forgetting/mcq_acc_threshold", "perf/mfu"} <= metrics
    assert {"train/rewards/margins", "val/rewards/accuracies", "train/l2sp", "lr"} <= metrics
    # a per-task panel draws one line per task and nothing else
    lines = {p.title: p for p in built if isinstance(p, wr.LinePlot)}
    per_task = lines["val/loss per task"]
    assert sorted(m for m in metrics if re.search(per_task.metric_regex, m)) == [
        "val/loss/classify",
        "val/loss/flag",
        "val/loss/revise",
        "val/loss/summarize",
    ]
    accuracy = lines["Accuracy: overall, normalised, per subject, lm-eval tasks"]
    matched = {m for m in metrics if re.search(accuracy.metric_regex, m)}
    assert {"forgetting/mcq_acc", "forgetting/mcq_acc_norm", "forgetting/mcq_acc_history"} <= matched
    assert not any(m.endswith(("_delta", "_baseline", "_threshold")) or "prose_ppl" in m for m in matched)


def test_the_forgetting_reference_lines_are_the_baseline_and_the_threshold(runs):
    sweep_run = next(r for r in runs["runs"] if r["config"]["callbacks"].get("forgetting"))
    rows = [row for row in sweep_run["history"] if "forgetting/mcq_acc_threshold" in row]
    baseline = rows[0]["forgetting/mcq_acc"]  # the first check is the baseline's
    max_drop = sweep_run["config"]["callbacks"]["forgetting"]["max_acc_drop"]
    for row in rows:
        assert row["forgetting/mcq_acc_baseline"] == pytest.approx(baseline)
        assert row["forgetting/mcq_acc_threshold"] == pytest.approx(baseline - max_drop)
        ppl = row["forgetting/prose_ppl_baseline"]
        assert row["forgetting/prose_ppl_threshold"] == pytest.approx(ppl * 1.5)


def test_the_offline_command_writes_the_workspace_as_json_that_round_trips(no_api_key, tmp_path):
    result = dashboard_command(["--entity", "team", "--project", "lit-ft"], tmp_path)
    assert "no API key configured" in result.stderr and "--load wandb_workspace.json" in result.stderr
    text = (tmp_path / "wandb_workspace.json").read_text()
    loaded = from_json(text)
    assert (loaded.entity, loaded.project) == ("team", "lit-ft")
    assert to_json(loaded) == text
    assert without_ids(json.loads(text)) == without_ids(json.loads(to_json(workspace("team", "lit-ft"))))
    sections = [
        "Overview",
        "Per task",
        "Task scores",
        "Forgetting",
        "Preference",
        "Online RL",
        "Samples",
        "Performance",
    ]
    assert [s.name for s in loaded.sections] == sections
    mcq = next(s for s in loaded.sections if s.name == "Forgetting").panels[0]
    assert names(mcq.y)[1:] == ["forgetting/mcq_acc_baseline", "forgetting/mcq_acc_threshold"]
    assert mcq.line_marks == {"forgetting/mcq_acc_baseline": "dashed", "forgetting/mcq_acc_threshold": "dashed"}
    # no definition to save without a key: a clear refusal
    refused = dashboard_command(["--load", "wandb_workspace.json"], tmp_path, check=False)
    assert refused.returncode != 0 and "cannot be saved" in refused.stderr


def test_the_sweep_report_compares_the_sweeps_runs_by_their_overrides(runs, no_api_key, tmp_path):
    sweep_dir = runs["sweep_dir"]
    result = dashboard_command(["--entity", "team", "--project", "lit-ft", "--sweep", str(sweep_dir)], tmp_path)
    assert "sweep report is not saved" in result.stderr
    report = from_json((sweep_dir / "wandb_sweep_report.json").read_text())
    sweep_runs = [r for r in runs["runs"] if "sweep" in r["run"]["tags"]]
    assert len(sweep_runs) == 2
    group = f"lora_legal/{sweep_dir.name}"
    assert {r["run"]["group"] for r in sweep_runs} == {group}
    [grid] = [block for block in report.blocks if isinstance(block, wr.PanelGrid)]
    assert grid.runsets[0].filters == f"Metric(\"Group\") == '{group}'"
    parallel = grid.panels[0]
    columns = [c.metric for c in parallel.columns]
    assert columns[0] == wr.Config("peft.r")  # the one varied override, then the sweep report's columns
    summary_columns = names(columns[1:])
    tasks = ["classify", "flag", "revise", "summarize"]
    assert summary_columns[:5] == ["final/best_val_loss", *(f"final/val_after/val/loss/{t}" for t in tasks)]
    assert "forgetting/mcq_acc_delta" in summary_columns and "forgetting/prose_ppl_delta" in summary_columns
    for r in sweep_runs:  # every column is in each run's summary
        assert set(summary_columns) <= set(r["summary"]), set(summary_columns) - set(r["summary"])
        assert r["config"]["peft"]["r"] in (2, 4)
    # the JSON round-trips
    assert to_json(from_json(to_json(report))) == to_json(report)


def test_a_w_and_b_group_is_compared_as_its_sweep_folder_is(runs):
    """Online, ``--sweep <group>`` reads the group's runs from W&B: their configs and summaries (here the ones the
    sweep's runs logged) give the same varied keys, tasks and forgetting scores as the sweep's folder."""
    sweep_runs = [r for r in runs["runs"] if "sweep" in r["run"]["tags"]]
    group, *from_folder = sweep_group(runs["sweep_dir"])
    assert compare_runs([r["config"] for r in sweep_runs], [r["summary"] for r in sweep_runs]) == tuple(from_folder)
    assert from_folder[0] == ["peft.r"] and "mcq_acc" in from_folder[2]


def test_a_group_name_offline_is_refused_naming_what_works(no_api_key, tmp_path):
    result = dashboard_command(
        ["--entity", "team", "--project", "lit-ft", "--sweep", "lora_legal/2026"], tmp_path, check=False
    )
    assert result.returncode == 2
    assert "needs the W&B API" in result.stderr and "give the Hydra sweep folder" in result.stderr


def test_online_save_sends_the_librarys_view_and_prints_its_url(monkeypatch):
    sent = []

    def upsert_view2(view):  # the GraphQL mutation wandb-workspaces' save sends: its View model arrives
        sent.append(view)
        return UPSERTED

    monkeypatch.setattr(workspace_model, "upsert_view2", upsert_view2)
    monkeypatch.setattr(wandb, "Api", Api)
    url = save(workspace("team", "lit-ft"))
    [view] = sent
    assert isinstance(view, workspace_model.View)
    assert (view.entity, view.project, view.display_name) == ("team", "lit-ft", "lit-ft")
    expected = json.loads(to_json(workspace("team", "lit-ft")))["model"]["spec"]
    assert without_ids(json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True))) == without_ids(expected)
    assert url.startswith("https://wandb.ai/team/lit-ft?nw=")


def test_a_report_saves_with_its_run_sets_in_its_own_project(monkeypatch):
    """The report's save, run by wandb-workspaces up to the network: its GraphQL requests are answered here."""
    requests = []

    def execute_graphql(api, query, variables):
        requests.append(variables)
        if "projectName" in variables and "spec" not in variables:  # the run set's project id
            return {"project": {"internalId": "UHJvamVjdDox"}}
        view = {"id": "VmlldzoxMjM=", "displayName": variables["displayName"], "spec": variables["spec"]}
        view["project"] = {"name": variables["projectName"], "entityName": variables["entityName"]}
        return {"upsertView": {"view": view}}

    monkeypatch.setattr(report_interface, "_get_api", Api)
    monkeypatch.setattr(report_interface, "execute_graphql", execute_graphql)
    report = sweep_report("team", "lit-ft", "lora_legal/2025-01-01_12-00-00", ["peft.r"], ["add"], ["mcq_acc"])
    url = save(report)
    assert url == "https://wandb.ai/team/lit-ft/reports/Sweep-lora_legal/2025-01-01_12-00-00--VmlldzoxMjM="
    lookup, upsert = requests
    assert lookup == {"entityName": "team", "projectName": "lit-ft"}
    spec = json.loads(upsert["spec"])
    [grid] = [b for b in spec["blocks"] if b["type"] == "panel-grid"]
    runset = grid["metadata"]["runSets"][0]
    assert runset["project"] == {"entityName": "team", "name": "lit-ft", "id": "UHJvamVjdDox"}


def test_dashboard_true_leaves_an_offline_run_a_command_to_save_the_workspace(runs):
    assert (
        "W&B: offline, so the workspace is not saved; save it later with `python -m lit_ft.loggers.dashboard"
        in (runs["dpo_output"])
    )


def test_dashboard_true_saves_the_workspace_at_the_end_of_an_online_run(monkeypatch, tmp_path, caplog):
    class Run:  # what the logger calls on a W&B run
        entity, project, name, dir, summary = "team", "lit-ft", "lora_legal", str(tmp_path / "run" / "files"), {}

        def log(self, data, step=None):
            pass

        def finish(self):
            pass

    sent = []
    monkeypatch.setattr(workspace_model, "upsert_view2", lambda view: sent.append(view) or UPSERTED)
    monkeypatch.setattr(wandb, "Api", Api)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "not-used")  # looks configured, so the logger is online
    logger = WandbLogger(save_dir=str(tmp_path), dashboard=True)
    logger._experiment = Run()
    with caplog.at_level(logging.INFO, logger="lit_ft.loggers.wandb"):
        logger.finish({"val_loss_after": 1.5, "early_stopping": {"best_step": 4, "stopped_early": False}})
    [view] = sent
    assert (view.entity, view.project) == ("team", "lit-ft")
    assert "W&B workspace saved: https://wandb.ai/team/lit-ft?nw=" in caplog.text
    # the early-stopping point the Overview shows, among the run's final scalars
    assert Run.summary == {"final/val_loss_after": 1.5, "final/early_stopping/best_step": 4}


def test_dashboard_true_without_wandb_workspaces_is_refused_when_the_logger_is_built(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'lit-ft\[dashboards\]'"):
        WandbLogger(save_dir=str(tmp_path), offline=True, dashboard=True)
