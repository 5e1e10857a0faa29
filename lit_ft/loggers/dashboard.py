"""W&B dashboards laid out for fine-tuning: a saved workspace and a sweep report, defined in code with
``wandb-workspaces`` (``pip install 'lit-ft[dashboards]'``).

Every panel plots a name from :mod:`lit_ft.utils.metric_names`, where the modules and callbacks that log the
metrics take them too, so a renamed metric renames its panel. ::

    python -m lit_ft.loggers.dashboard --entity my-team --project lit-ft             # the workspace
    python -m lit_ft.loggers.dashboard --entity my-team --project lit-ft --sweep DIR  # a sweep's report

With an API key configured each is saved to W&B and its URL printed; without one the definition is written to a
JSON file (``--out``), which ``--load FILE`` saves later. ``logger.wandb.dashboard=true`` saves the workspace at
the end of an online run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

try:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.reports.v2 import internal as report_model
    from wandb_workspaces.workspaces import internal as workspace_model
except ImportError as error:
    raise ImportError("W&B dashboards need wandb-workspaces: pip install 'lit-ft[dashboards]'") from error

from lit_ft.loggers.wandb import wandb_offline_by_default
from lit_ft.sweep_report import collect, split_overrides
from lit_ft.utils.metric_names import (
    EWC,
    FORGETTING,
    FORGETTING_TABLE,
    L2SP,
    LOGP_METRICS,
    LR,
    MCQ_ACC,
    MFU,
    PEAK_MEM_GB,
    PER_TASK_TABLE,
    PPO_METRICS,
    PROSE_PPL,
    REWARD_METRICS,
    RL_METRICS,
    RL_VAL_REWARD,
    ROLLOUT_TOKENS_PER_S,
    SAMPLES_BEFORE_AFTER_TABLE,
    SAMPLES_PER_S,
    SAMPLES_TABLE,
    STAGES,
    STEP,
    TASK_COUNTS,
    TASK_LOSS,
    TASK_SCORES_TABLE,
    TOKENS_PER_S,
    TRAIN_LOSS,
    TRAIN_TOKENS_PER_S,
    VAL_LOSS,
    VAL_PPL,
    final_metric,
    forgetting_metric,
    stage_metric,
    task_metric,
)

WORKSPACE_NAME = "lit-ft"
REFERENCE = "dashed"  # how baseline and threshold lines are drawn
TASK = "<task>"  # stands for any task type in a per-task name (re.escape leaves it as it is)
OUTPUT_DIR_KEY = "paths.output_dir"  # each job's own folder (conf/paths): paths under it differ between jobs
Definition = ws.Workspace | wr.Report


def _lines(title: str, metrics: Sequence[str], **options: Any) -> wr.LinePlot:
    return wr.LinePlot(title=title, x=STEP, y=list(metrics), **options)


def _family(title: str, pattern: str) -> wr.LinePlot:
    """Every metric whose name matches ``pattern`` (one line per task, subject, ...)."""
    return wr.LinePlot(title=title, x=STEP, metric_regex=pattern)


def _task_regex(stage: str, name: str) -> str:
    """``<stage>/<name>/<task>`` for every task: :func:`task_metric` with the task left open."""
    return "^" + re.escape(task_metric(stage, name, TASK)).replace(TASK, "[^/]+") + "$"


def _per_task(stage: str, name: str) -> wr.LinePlot:
    return _family(f"{stage_metric(stage, name)} per task", _task_regex(stage, name))


def train(name: str) -> str:
    """``train/<name>``."""
    return stage_metric("train", name)


def task_scores_pattern(families: Sequence[str]) -> str:
    """``val/<metric>/<task>`` for any ``<metric>`` not among ``families`` (which have panels of their own)."""
    known = "|".join(re.escape(name) for name in families)
    return f"^{re.escape(stage_metric('val', ''))}(?!(?:{known})/)[^/]+/[^/]+$"


def _against_reference(title: str, score: str) -> wr.LinePlot:
    lines = [forgetting_metric(score), forgetting_metric(score, "baseline"), forgetting_metric(score, "threshold")]
    return _lines(title, lines, line_marks={line: REFERENCE for line in lines[1:]})


def sections() -> list[ws.Section]:
    """The workspace's sections, in page order (see ``docs/recipes.md``, "Dashboards")."""
    reward, reward_std, kl, clip_frac, completion_tokens, truncated = RL_METRICS
    value_loss, explained_variance = PPO_METRICS
    not_reference = "(?!.*_(?:delta|baseline|threshold)$)"
    chosen, rejected, accuracies, margins = REWARD_METRICS
    preference = {
        "Rewards: chosen vs rejected": (chosen, rejected),
        "Reward margin (chosen - rejected)": (margins,),
        "Reward accuracy (chosen > rejected)": (accuracies,),
        "Log-probabilities (DPO): chosen vs rejected": LOGP_METRICS,
    }
    per_task_names = (TASK_LOSS, *REWARD_METRICS, *LOGP_METRICS, *TASK_COUNTS)
    return [
        ws.Section(
            name="Overview",
            is_open=True,
            panels=[
                _lines("Loss: train (step mean) and validation", [TRAIN_LOSS, VAL_LOSS]),
                _lines("Validation perplexity", [VAL_PPL], log_y=True),
                _lines("Learning rate", [LR]),
                _lines("Pull toward the starting weights: L2-SP and EWC penalties", [L2SP, EWC]),
                wr.ScalarChart(title="Early stopping: best step", metric=final_metric("early_stopping/best_step")),
                wr.ScalarChart(title="Best validation loss", metric=final_metric("best_val_loss")),
            ],
        ),
        ws.Section(
            name="Per task",
            is_open=True,
            panels=[
                *(_per_task(stage, name) for name in per_task_names for stage in STAGES),
                wr.WeavePanelSummaryTable(table_name=PER_TASK_TABLE),
            ],
        ),
        ws.Section(
            name="Task scores",
            is_open=True,
            panels=[
                # val/<metric>/<task> of the task-scores callback: the metrics are the task_metrics config's, so the
                # panel takes every per-task validation metric that is not one of the families above.
                _family(
                    "Held-out task scores (greedy generations), per task",
                    task_scores_pattern((*per_task_names, reward)),  # val/reward/<task>: Online RL's panel
                ),
                wr.WeavePanelSummaryTable(table_name=TASK_SCORES_TABLE),
            ],
        ),
        ws.Section(
            name="Forgetting",
            is_open=True,
            panels=[
                _against_reference("Multiple-choice accuracy vs baseline and threshold", MCQ_ACC),
                _against_reference("Prose perplexity vs baseline and threshold", PROSE_PPL),
                _family(
                    "Accuracy: overall, normalised, per subject, lm-eval tasks",
                    f"^{FORGETTING}/(?!{PROSE_PPL}){not_reference}[^_/][^/]*$",
                ),
                _family("Accuracy change from the baseline", f"^{FORGETTING}/(?!{PROSE_PPL}_).+_delta$"),
                _lines("Prose perplexity change from the baseline", [forgetting_metric(PROSE_PPL, "delta")]),
                wr.WeavePanelSummaryTable(table_name=FORGETTING_TABLE),
            ],
        ),
        ws.Section(
            name="Preference",
            panels=[
                _lines(title, [stage_metric(stage, name) for name in names for stage in STAGES])
                for title, names in preference.items()
            ],
        ),
        ws.Section(
            name="Online RL",
            panels=[
                _lines("Rollouts: mean reward and its spread within groups", [train(reward), train(reward_std)]),
                _lines("KL to the reference (k3)", [train(kl)]),
                _lines("Clipped share of completion tokens", [train(clip_frac)]),
                _lines(
                    "Completion tokens, and completions cut at max_new_tokens",
                    [train(completion_tokens), train(truncated)],
                ),
                *(_family(f"{train(name)} per task", _task_regex("train", name)) for name in (reward, kl)),
                _lines("Validation reward: one completion per prompt (greedy unless val_temperature)", [RL_VAL_REWARD]),
                _per_task("val", reward),
                _lines("PPO: clipped value loss", [train(value_loss)]),
                _lines("PPO: variance of the returns explained by the values", [train(explained_variance)]),
            ],
        ),
        ws.Section(
            name="Samples",
            is_open=True,
            panels=[
                wr.WeavePanelSummaryTable(table_name=SAMPLES_BEFORE_AFTER_TABLE),
                wr.WeavePanelSummaryTable(table_name=SAMPLES_TABLE),
            ],
        ),
        ws.Section(
            name="Performance",
            panels=[
                _lines("Tokens/s (non-padding, all ranks)", [TOKENS_PER_S]),
                _lines("Online RL: rollout and training tokens/s", [ROLLOUT_TOKENS_PER_S, TRAIN_TOKENS_PER_S]),
                _lines("Samples/s", [SAMPLES_PER_S]),
                _lines("MFU", [MFU]),
                _lines("Peak memory (GB)", [PEAK_MEM_GB]),
            ],
        ),
    ]


def workspace(entity: str, project: str) -> ws.Workspace:
    """lit-ft's workspace for ``entity/project``: :func:`sections` against optimizer steps, no automatic panels."""
    return ws.Workspace(
        entity=entity,
        project=project,
        name=WORKSPACE_NAME,
        sections=sections(),
        settings=ws.WorkspaceSettings(x_axis=STEP),
        auto_generate_panels=False,
    )


# ------------------------------------------------------------------------------------------------------ sweep report
def sweep_group(sweep_dir: Path) -> tuple[str, list[str], list[str], list[str]]:
    """``(W&B group, varied override keys, task types, forgetting scores)`` of a Hydra sweep folder: the group
    the W&B logger gave its jobs (``<logger.wandb.group>/<sweep id>``), the rest as the sweep report reads them."""
    jobs = collect(sweep_dir)
    configs = sorted(sweep_dir.glob("*/config.yaml"))
    group = OmegaConf.select(OmegaConf.load(configs[0]), "logger.wandb.group") if configs else None
    if group is None:
        raise ValueError(f"{sweep_dir}: no job logged to W&B (logger=wandb); nothing for a W&B report to compare")
    _, varying = split_overrides(jobs)
    keys = sorted({override.split("=", 1)[0].lstrip("+~") for overrides in varying.values() for override in overrides})
    tasks = sorted({task for job in jobs for task in job.task_losses})
    scores = sorted({key.removeprefix("delta/") for job in jobs for key in job.forgetting})
    return f"{group}/{sweep_dir.name}", keys, tasks, scores


def _pattern(name: str) -> re.Pattern:
    """A metric name with :data:`TASK` standing for any one name part: ``forgetting/<task>_delta``."""
    return re.compile("^" + re.escape(name).replace(TASK, "([^/]+)") + "$")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"peft": {"r": 8}}`` -> ``{"peft.r": 8}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compare_runs(
    configs: Sequence[Mapping[str, Any]], summaries: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[str], list[str]]:
    """``(varied config keys, task types, forgetting scores)`` of W&B runs, from their configs and run summaries:
    what :func:`sweep_group` reads from a sweep folder. A key is varied when its values differ between the runs,
    except where each run's value holds its own output folder (``paths.output_dir`` and the paths under it) and
    W&B's own keys (``_wandb``); of the copies an interpolation makes (``module.adapter.r`` of ``peft.r``), the
    shallowest key is kept."""
    flat = [_flatten(config) for config in configs]

    def own_folder(value: Any, run: dict[str, Any]) -> bool:
        folder = run.get(OUTPUT_DIR_KEY)
        return isinstance(value, str) and isinstance(folder, str) and folder in value

    by_values: dict[str, str] = {}  # the values of a varied key over the runs -> the key (the shallowest of copies)
    for key in sorted(set().union(*flat), key=lambda key: (key.count("."), key)):
        values = [run.get(key) for run in flat]
        if key.startswith("_") or any(own_folder(value, run) for value, run in zip(values, flat)):
            continue
        encoded = [json.dumps(value, sort_keys=True, default=str) for value in values]
        if len(set(encoded)) > 1:
            by_values.setdefault(json.dumps(encoded), key)
    keys = sorted(by_values.values())
    task_loss = _pattern(final_metric(f"val_after/{task_metric('val', TASK_LOSS, TASK)}"))
    delta = _pattern(forgetting_metric(TASK, "delta"))
    keys_logged = {key for summary in summaries for key in summary}
    tasks = {match[1] for key in keys_logged if (match := task_loss.match(key))}
    scores = {match[1] for key in keys_logged if (match := delta.match(key))}
    return keys, sorted(tasks), sorted(scores)


def group_runs(entity: str, project: str, group: str) -> tuple[str, list[str], list[str], list[str]]:
    """``(group, varied keys, task types, forgetting scores)`` of the runs W&B holds in ``group`` (needs the W&B
    API: an API key), by :func:`compare_runs`."""
    import wandb

    runs = list(wandb.Api().runs(f"{entity}/{project}", filters={"group": group}))
    if not runs:
        raise ValueError(f"W&B group {group!r} of {entity}/{project} has no runs")
    return group, *compare_runs([dict(run.config) for run in runs], [dict(run.summary) for run in runs])


def sweep_report(
    entity: str, project: str, group: str, keys: Sequence[str], tasks: Sequence[str], scores: Sequence[str]
) -> wr.Report:
    """A report on the runs of W&B group ``group``: a parallel-coordinates panel from the varied overrides
    (``keys``) to the best validation loss, the per-task validation losses and the forgetting deltas (the sweep
    report's columns; per task the final validation, which early stopping runs on the best weights), then the
    validation loss curves and bar charts of the same per-task losses and deltas."""
    task_losses = [final_metric(f"val_after/{task_metric('val', TASK_LOSS, task)}") for task in tasks]
    deltas = [forgetting_metric(score, "delta") for score in scores]
    columns = [wr.Config(key) for key in keys] + [final_metric("best_val_loss"), *task_losses, *deltas]
    grid = wr.PanelGrid(
        runsets=[wr.Runset(name=group, filters=f"Group = '{group}'")],
        panels=[
            wr.ParallelCoordinatesPlot(
                title="Overrides -> validation loss, per task, forgetting",
                columns=[wr.ParallelCoordinatesPlotColumn(metric=column) for column in columns],
            ),
            _lines("Validation loss per run", [VAL_LOSS]),
            *([wr.BarPlot(title="Validation loss per task", metrics=task_losses)] if task_losses else []),
            *([wr.BarPlot(title="Forgetting deltas", metrics=deltas)] if deltas else []),
        ],
    )
    return wr.Report(
        entity=entity,
        project=project,
        title=f"Sweep {group}",
        description=f"lit-ft sweep report: runs of group {group}, compared by {', '.join(keys) or 'their overrides'}",
        blocks=[wr.H1(f"Sweep {group}"), wr.P(f"Varied: {', '.join(keys)}."), grid],
    )


# ------------------------------------------------------------------------------------------- JSON, saving to W&B
def to_json(definition: Definition) -> str:
    """The definition as wandb-workspaces' own model of it (what its ``save`` sends), with its kind."""
    kind = "workspace" if isinstance(definition, ws.Workspace) else "report"
    model = json.loads(definition._to_model().model_dump_json(by_alias=True, exclude_none=True))
    return json.dumps({"kind": kind, "entity": definition.entity, "project": definition.project, "model": model})


def from_json(text: str) -> Definition:
    data = json.loads(text)
    if data.get("kind") == "workspace":
        definition = ws.Workspace._from_model(workspace_model.View.model_validate(data["model"]))
    elif data.get("kind") == "report":
        definition = wr.Report._from_model(report_model.ReportViewspec.model_validate(data["model"]))
    else:
        raise ValueError(f"not a lit-ft dashboard definition (kind {data.get('kind')!r})")
    definition.entity, definition.project = data["entity"], data["project"]
    return definition


def save(definition: Definition) -> str:
    """Save to W&B (a report's run sets look in its own project); the URL."""
    if isinstance(definition, wr.Report):
        for block in definition.blocks:
            for runset in getattr(block, "runsets", []):
                runset.entity, runset.project = definition.entity, definition.project
    return definition.save().url


def offline_hint(entity: str, project: str) -> str:
    return f"save it later with `python -m lit_ft.loggers.dashboard --entity {entity} --project {project}`"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save lit-ft's W&B workspace, or a sweep's report, to a project.")
    parser.add_argument("--entity", help="W&B entity (user or team)")
    parser.add_argument("--project", help="W&B project")
    parser.add_argument(
        "--sweep", help="a Hydra sweep folder (its jobs logged with logger=wandb), or a W&B group (online)"
    )
    parser.add_argument("--out", type=Path, help="the JSON file written when no API key is configured")
    parser.add_argument("--load", type=Path, help="save a definition written earlier as JSON")
    args = parser.parse_args(argv)
    if args.load:
        definition = from_json(args.load.read_text())
    elif not (args.entity and args.project):
        parser.error("--entity and --project are required (or --load FILE)")
    elif args.sweep and Path(args.sweep).is_dir():
        definition = sweep_report(args.entity, args.project, *sweep_group(Path(args.sweep)))
    elif args.sweep:
        if wandb_offline_by_default():
            parser.error(
                f"--sweep {args.sweep}: not a folder, and reading the runs of a W&B group needs the W&B API (an API "
                "key; WANDB_MODE=offline unset); offline, give the Hydra sweep folder (logs/<run>/multirun/<date>)"
            )
        definition = sweep_report(args.entity, args.project, *group_runs(args.entity, args.project, args.sweep))
    else:
        definition = workspace(args.entity, args.project)
    kind = "workspace" if isinstance(definition, ws.Workspace) else "sweep report"
    if wandb_offline_by_default():
        if args.load:
            sys.exit(f"W&B: offline (no API key configured, or WANDB_MODE=offline): {args.load} cannot be saved")
        out = args.out or Path(args.sweep or ".") / f"wandb_{kind.replace(' ', '_')}.json"
        out.write_text(to_json(definition))
        print(
            f"W&B: offline (no API key configured, or WANDB_MODE=offline): the {kind} is not saved. Its definition "
            f"is in {out}; once logged in, save it with: python -m lit_ft.loggers.dashboard --load {out}",
            file=sys.stderr,
        )
        return
    print(f"W&B {kind} saved: {save(definition)}")


if __name__ == "__main__":
    main()
