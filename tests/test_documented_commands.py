"""Every command the docs show is run as a user types it (issue 15): ``python train.py|eval.py ...`` and
``python -m lit_ft...`` in README.md and docs/*.md, read from the docs themselves, so a changed doc is a changed test.

Each runs as a subprocess in a folder that looks like a checkout (``tests/support/doc_runs.py``), with the tiny
random model and a few steps appended (``TINY``); the commands of one code block run in order in one folder.
Placeholders get test values (``SUBSTITUTIONS``, ``PLACEHOLDER_FILES``). Multi-process commands run with two CPU
processes; GPU-only ones must refuse clearly on a CPU; launches that cannot run here (SLURM, ``srun``,
``torchrun``) must compose with Hydra's ``--cfg``. Inline spans that are not commands are listed in ``FRAGMENTS``,
and a command-like string that is neither run, composed nor listed fails ``test_every_command_like_string_...``.

Run alone: ``OMP_NUM_THREADS=1 python -m pytest -q -m docs tests/test_documented_commands.py``; one command:
``... 'tests/test_documented_commands.py::test_documented_command[README.md:67]'``.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from tests.support.doc_commands import DocCommand, Invocation, code_block_after, doc_commands, invocation
from tests.support.doc_runs import DATASETS_CACHE, DocRunner, Plan
from tests.support.hf_cache import cache_dataset

pytestmark = pytest.mark.docs

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", *sorted(f"docs/{path.name}" for path in (REPO / "docs").glob("*.md"))]
COMMANDS = doc_commands(REPO, DOC_FILES)

# Command-like strings that are not commands, by (file, text as parsed), with the reason.
FRAGMENTS = {
    ("docs/evaluation.md", "python -m lit_ft.eval.<command>"): "prose: names the family of eval modules",
    ("docs/evaluation.md", "python -m lit_ft.eval.judge A B"): "section title; the judge runs in full at :11 and :23",
    ("docs/evaluation.md", "python -m lit_ft.eval.blind_ab"): "section title; export and score run at :12, :13, :24",
    ("docs/evaluation.md", "python -m lit_ft.eval.diff A B"): "section title; the diff runs in full at :10 and :22",
    ("docs/evaluation.md", "python -m lit_ft.eval.label_margins MODEL DATA"): "section title; it runs in full at :11",
    ("docs/evaluation.md", "python -m lit_ft.eval.judge"): "row label of the measured-runs table",
    ("docs/evaluation.md", "python -m lit_ft.eval.blind_ab export"): "row label of the measured-runs table",
    ("docs/evaluation.md", "python -m lit_ft.eval.diff"): "row label of the measured-runs table",
    ("docs/recipes.md", "python train.py -m ..."): "table cell: any sweep; the documented sweeps run (recipes.md:183)",
    ("docs/scale.md", "python train.py ... trainer.devices=8"): "prose: any command with 8 devices (run at scale.md:9)",
}

# Placeholders in documented commands and the test value each gets (whole words only). `logs/...` values are
# made first by the documented command that writes them (a tiny run), like the user's earlier runs.
SUBSTITUTIONS = {
    "/path/to/hf/folder": "logs/sft_legal/model",  # a Hugging Face folder: a full fine-tuning run's export
    "/my/sft": "logs/sft_legal/model",
    "A/generations.jsonl": "logs/eval_base/generations.jsonl",  # two eval runs' answers to the same prompts
    "B/generations.jsonl": "logs/eval_lora/generations.jsonl",
    "data.train_files=...": "data.train_files=my.jsonl",
    "DIR": "logs/lora_legal/multirun/*",  # a sweep folder (one sweep in the sandbox: the glob is that folder)
    "<sweep_dir>": "logs/lora_legal/multirun/*",
    "<partition>": "gpu",
}
# Shell variables documented commands use, as the user's shell would have them.
ENV_VALUES = {"HEAD_NODE": "127.0.0.1"}

# Appended so each process takes seconds: the tiny random model (`model=tiny`; `model=hf` where the config's
# model path is an earlier run's export, as dpo_legal's), two training batches, two validation batches, small
# forgetting checks and short generations. Not `debug=tiny`: it renames the run, which breaks the chains between
# commands. A key the command sets itself is left as typed; a key whose parent the config lacks is not added.
TINY = {
    "train.py": {
        # Two batches an epoch, so an epoch still ends (and validates) where the config says; `max_steps` alone
        # would stop mid-epoch, before the validation that epoch-end callbacks (early stopping) rely on.
        "trainer.limit_train_batches": 2,
        "trainer.max_steps": 2,
        "trainer.limit_val_batches": 2,
        "callbacks.last_checkpoint.every_n_train_steps": 1,  # so a later `ckpt_path=last` finds a checkpoint
        "callbacks.forgetting.max_questions": 4,
        "callbacks.forgetting.max_passages": 1,
        "callbacks.generation_samples.max_new_tokens": 4,
        "callbacks.task_scores.max_examples": 4,
        "callbacks.task_scores.max_new_tokens": 4,
    },
    "eval.py": {
        "loss.max_batches": 2,
        "generation.max_examples": 4,
        "generation.max_new_tokens": 8,
        "forgetting.max_questions": 4,
        "forgetting.max_passages": 1,
        "chat.max_new_tokens": 8,
    },
}
# The judge defaults to the 135M embedded model: judge with a tiny run's export instead.
TINY_MODULE_ARGS = {"lit_ft.eval.judge": ["--judge", "logs/lora_legal/model"]}
# Multi-process commands run with two processes on this CPU (gloo).
CPU_TWO_PROCESSES = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.precision=32-true"]
MULTI_PROCESS_STRATEGIES = {"ddp", "fsdp"}
GPU_ONLY = {
    "trainer": {"gpu"},
    "peft": {"qlora"},
    "strategy": {"fsdp1", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"},
}
# Options that need an optional extra: (the Hydra plugin's module, the extra to install).
EXTRAS = {
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "lit-ft[slurm]"),
    "hparams_search=lora_optuna": ("hydra_plugins.hydra_optuna_sweeper", "lit-ft[optuna]"),
}
# Documented "GPU only" options with no command of their own: a user's command with each must refuse clearly.
GPU_ONLY_CLAIMS = [
    ("README.md", "CUDA only, a clear error on CPU", "python train.py experiment=lora_legal peft=qlora"),
    ("docs/scale.md", "`lit_ft.strategies.FSDP1Strategy`", "python train.py experiment=sft_legal strategy=fsdp1"),
    (
        "docs/scale.md",
        "ZeRO stage 2 | optimizer state",
        "python train.py experiment=sft_legal strategy=deepspeed_zero2",
    ),
]
CHAT_INPUT = "What is the capital of France?\n\n"  # a question, then the empty line that ends the chat
MODE_OUTPUT = {"eval": "eval.json", "data_report": "data_report.json", "chat": "chat.jsonl"}
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception)\b|Error in call to target)")


# ---------------------------------------------------------------------------------------------- placeholder files
def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def sums(n: int = 40) -> list[tuple[int, int, str]]:
    return [(a, 2 * a + 1, "add" if a % 2 else "sum") for a in range(1, n + 1)]


def write_chat_rows(sandbox: Path, plan: Plan) -> None:
    """``my.jsonl``: chat rows as README's "Data formats" gives them, with a task type."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a + b}"},
            ]
        }
        | {"task_type": task}
        for a, b, task in sums()
    ]
    write_jsonl(sandbox / "my.jsonl", rows)


def write_preference_rows(sandbox: Path, plan: Plan) -> None:
    """``pairs.jsonl``: chat prompt and message-list answers, the first format of docs/preference.md."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
            "chosen": [{"role": "assistant", "content": f"{a + b}"}],
            "rejected": [{"role": "assistant", "content": f"{a + b + 1}"}],
            "task_type": task,
        }
        for a, b, task in sums()
    ]
    write_jsonl(sandbox / "pairs.jsonl", rows)


def write_subclass_example(sandbox: Path, plan: Plan) -> None:
    """``my_pkg.py``: README's own "Subclassing a module" example, so the example is run too."""
    code = code_block_after((REPO / "README.md").read_text(), "Subclassing a module", "python")
    (sandbox / "my_pkg.py").write_text(code)


def write_datasets_folder(sandbox: Path, plan: Plan) -> None:
    """``my_dataset``: docs/own_data.md's own example, run on ``my.jsonl`` (a folder with splits train and test)."""
    write_chat_rows(sandbox, plan)
    code = code_block_after((REPO / "docs/own_data.md").read_text(), "A `datasets` folder", "python")
    env = {**os.environ, "HF_DATASETS_CACHE": str(sandbox / DATASETS_CACHE), "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=sandbox, env=env, check=True, capture_output=True)


def write_csv_rows(sandbox: Path, plan: Plan) -> None:
    """``my.csv``: questions and answers in columns of their own names (docs/own_data.md maps them)."""
    lines = ["question,answer", *(f"What is {a} plus {b}?,{a} plus {b} is {a + b}" for a, b, _ in sums())]
    (sandbox / "my.csv").write_text("\n".join(lines) + "\n")


# docs/own_data.md's example of each format: the file its command names -> the heading the example follows.
FORMAT_EXAMPLES = {
    "tools.jsonl": "`messages`, with tool calls",
    "sharegpt.jsonl": "`sharegpt`",
    "alpaca.jsonl": "`alpaca`",
    "completions.jsonl": "`prompt/completion`",
    "text.jsonl": "`text`",
    "preference.jsonl": "`preference`",
}


def write_format_examples(sandbox: Path, plan: Plan) -> None:
    """The files of :data:`FORMAT_EXAMPLES` a command names, each holding the page's own 3-line example."""
    page = (REPO / "docs/own_data.md").read_text()
    for name, heading in FORMAT_EXAMPLES.items():
        if re.search(rf"\b{re.escape(name)}\b", plan.text):
            (sandbox / name).write_text(code_block_after(page, heading, "json"))


def write_chat_template(sandbox: Path, plan: Plan) -> None:
    """``my_template.jinja``: docs/own_data.md's own example."""
    template = code_block_after((REPO / "docs/own_data.md").read_text(), "A template of your own", "jinja")
    (sandbox / "my_template.jinja").write_text(template)


# The hub datasets documented commands name, as the datasets cache holds them after a download (subset, and rows
# per split in the dataset's own columns; a few test rows, not the real data).
HUB_DATASETS = {
    "HuggingFaceTB/smoltalk": (
        "everyday-conversations",
        {
            split: [
                {
                    "full_topic": "Arithmetic/Sums",
                    "messages": [
                        {"role": "user", "content": f"What is {a} plus {b}?"},
                        {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
                    ],
                }
                for a, b, _ in rows
            ]
            for split, rows in (("train", sums()[:32]), ("test", sums()[32:]))
        },
    ),
    "databricks/databricks-dolly-15k": (
        "default",
        {
            "train": [
                {
                    "instruction": f"What is {a} plus {b}?",
                    "context": "",
                    "response": f"{a + b}",
                    "category": ("open_qa", "brainstorming", "closed_qa", "classification")[a % 4],
                }
                for a, b, _ in sums()
            ]
        },
    ),
}


def write_hub_datasets(sandbox: Path, plan: Plan) -> None:
    """The sandbox's datasets cache holds the hub datasets the command names (:data:`HUB_DATASETS`)."""
    for name, (subset, splits) in HUB_DATASETS.items():
        if name in plan.text:
            cache_dataset(sandbox / DATASETS_CACHE, name, splits, subset)


def write_rater_choices(sandbox: Path, plan: Plan) -> None:
    """``ab_choices_<page>_tester.json``: a rater who chose the left answer of every item of the page."""
    key = json.loads((sandbox / plan.details["score_key"]).read_text())
    choices = {"page_id": key["page_id"], "rater": "tester", "saved_at": "2026-01-01T00:00:00Z"}
    choices["choices"] = dict.fromkeys(key["items"], "left")
    (sandbox / f"ab_choices_{key['page_id']}_tester.json").write_text(json.dumps(choices))


# name -> (what in a command asks for it, writer)
PLACEHOLDER_FILES = {
    "my.jsonl": (r"\bmy\.jsonl\b", write_chat_rows),
    "pairs.jsonl": (r"\bpairs\.jsonl\b", write_preference_rows),
    "my_pkg.py": (r"\bmy_pkg\.", write_subclass_example),
    "my_dataset": (r"\bmy_dataset\b", write_datasets_folder),
    "my.csv": (r"\bmy\.csv\b", write_csv_rows),
    "format examples": ("|".join(rf"\b{re.escape(name)}\b" for name in FORMAT_EXAMPLES), write_format_examples),
    "my_template.jinja": (r"\bmy_template\.jinja\b", write_chat_template),
    "hub datasets": ("|".join(map(re.escape, HUB_DATASETS)), write_hub_datasets),
    "ab_choices_*.json": (r"\bab_choices_\*\.json\b", write_rater_choices),
}


# ------------------------------------------------------------------------------------------------------- planning
def placeholder_pattern(placeholder: str) -> str:
    """``placeholder`` as a whole word (``DIR`` in ``report DIR``, not in ``DIRS`` or ``a/DIR``)."""
    return rf"(?<![\w/.<$-]){re.escape(placeholder)}(?![\w/.>-])"


def substitute(text: str) -> str:
    for placeholder, value in SUBSTITUTIONS.items():
        text = re.sub(placeholder_pattern(placeholder), value, text)
    return text


def unfilled_placeholders(text: str) -> list[str]:
    """Words of ``text`` still holding a placeholder: ``...``, ``<name>``, a bare capital (``A``, ``DIR``) or a
    shell variable with no test value."""
    found = []
    for word in shlex.split(text):
        value = word.split("=", 1)[-1]
        variables = [a or b for a, b in re.findall(r"\$(\w+)|\$\{(\w+)\}", word)]  # not ${paths.log_dir}
        if (
            "..." in word
            or re.search(r"<[^<>\s]+>", word)
            or re.fullmatch(r"[A-Z]{1,4}(/\S*)?", value)
            or any(v not in ENV_VALUES for v in variables)
        ):
            found.append(word)
    return found


# Hydra's options that take their value as the next word (``--config-name train``).
OPTIONS_WITH_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"}


def parse_overrides(args: list[str]) -> list[Override]:
    """The overrides among a command's arguments (Hydra's options and their values left out)."""
    words = [
        a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in OPTIONS_WITH_VALUE)
    ]
    return OverridesParser.create().parse_overrides(words)


def probe(script: str, overrides: list[Override]) -> DictConfig:
    """The config ``script`` composes from ``overrides`` (sweeps at their first value, Hydra's own left out)."""
    plain = []
    for override in overrides:
        if override.is_hydra_override():
            continue
        value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else None
        plain.append(f"{override.get_key_element()}={value}" if value is not None else override.input_line)
    return composed(Path(script).stem, tuple(plain))


@functools.cache
def composed(config_name: str, overrides: tuple[str, ...]) -> DictConfig:
    """Hydra's composition, once per config and overrides (many documented commands repeat)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def referenced_paths(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``(paths read, options written)``: relative paths among the arguments (cut before a glob), and the
    values of ``--out``-like options."""
    reads, writes, skip = [], {}, False
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word in ("--out", "--json") and i + 1 < len(args):
            writes[word] = args[i + 1].rstrip("/")
            skip = True
            continue
        value = word.split("=", 1)[1] if "=" in word and not word.startswith("-") else word
        if word.startswith("-") or value[:1] in "[{/" or "/" not in value:
            continue
        parts = Path(value).parts
        cut = next((n for n, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
        if cut:
            reads.append(str(Path(*parts[:cut])))
    return reads, writes


def gpu_markers(overrides: list[Override]) -> list[str]:
    return [o.input_line for o in overrides if str(o.value()) in GPU_ONLY.get(o.key_or_group, ())]


def plan_for(command: DocCommand, on_cpu: bool = True) -> Plan:
    """How ``command`` is exercised here (``on_cpu=False``: as typed, to check a GPU command's refusal)."""
    if (command.file, command.text) in FRAGMENTS:
        return Plan(command, "fragment", note=FRAGMENTS[(command.file, command.text)])
    text = substitute(command.text)
    found = invocation(text)
    assert found is not None, text
    files = tuple(name for name, (pattern, _) in PLACEHOLDER_FILES.items() if re.search(pattern, text))
    for argument, (module, extra) in EXTRAS.items():
        if argument in found.args:
            try:
                importlib.import_module(module)
            except ImportError:
                return Plan(command, "skip", text, note=f"needs `pip install '{extra}'` ({module} is not installed)")
    if "--info" in found.args:  # Hydra describes the app (search path, config) and trains nothing
        prints = "pkg://lit_ft.conf" if "searchpath" in found.args else ""
        return Plan(command, "run", text, details={"prints": prints})
    if found.launcher or "hydra/launcher=slurm" in found.args:
        return compose_plan(command, found)
    if found.is_module:
        return module_plan(command, text, found, files)
    return script_plan(command, text, found, files, on_cpu)


def compose_plan(command: DocCommand, found: Invocation) -> Plan:
    """A launch that cannot run here (SLURM, srun, torchrun) must compose: ``python <script> ... --cfg``."""
    args = []
    for override in parse_overrides(list(found.args)):
        first = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else None
        args.append(f"{override.get_key_element()}={first}" if first is not None else override.input_line)
    hydra_args = any(a.startswith(("hydra.", "hydra/")) for a in args)
    cfg = ["--cfg", "all"] if hydra_args else ["--cfg", "job", "--resolve"]
    text = shlex.join(["python", found.program, *args, *cfg])
    return Plan(command, "compose", text, details={"overrides": args}, timeout=300)


def module_plan(command: DocCommand, text: str, found: Invocation, files: tuple[str, ...]) -> Plan:
    appended = TINY_MODULE_ARGS.get(found.program, [])
    args = [*found.args, *appended]
    reads, writes = referenced_paths(args)
    after_option = [False, *(a.startswith("--") for a in found.args)]  # `--out ab/`: ab/ is the option's value
    positional = [a for a, value in zip(found.args, after_option) if not a.startswith("-") and not value]
    details: dict = {"written": []}
    makes: tuple[str, ...] = ()
    if found.program == "lit_ft.eval.judge":
        details["written"] = [writes.get("--out") or str(Path(positional[0]).parent / "judge.json")]
    elif found.program == "lit_ft.eval.blind_ab" and positional[:1] == ["export"]:
        makes = (writes["--out"],)
        details["written"] = [f"{writes['--out']}/ab.html", f"{writes['--out']}/ab_key.json"]
    elif found.program == "lit_ft.eval.blind_ab" and positional[:1] == ["score"]:
        details["score_key"] = positional[1]
    elif found.program == "lit_ft.sweep_report":
        details["written"] = [f"{positional[0]}/sweep_report.md"]
    elif found.program == "lit_ft.loggers.dashboard":  # offline here: the definition is written as JSON
        sweep = dict(zip(found.args, found.args[1:])).get("--sweep")
        default = f"{sweep}/wandb_sweep_report.json" if sweep else "wandb_workspace.json"
        details["written"] = [writes.get("--out") or default]
    return Plan(
        command,
        "run",
        " ".join([text, *map(shlex.quote, appended)]),
        needs=tuple(reads),
        makes=makes,
        files=files,
        rank=(len(files), 1, len(args)),
        details=details,
    )


def script_plan(command: DocCommand, text: str, found: Invocation, files: tuple[str, ...], on_cpu: bool) -> Plan:
    args = list(found.args)
    overrides = parse_overrides(args)
    keys = {o.key_or_group: o for o in overrides}
    cfg = probe(found.program, overrides)
    appended = []
    if "model" not in keys:
        raw = OmegaConf.to_container(cfg.model, resolve=False).get("name_or_path", "")
        appended.append("model=hf" if "${paths.log_dir}" in str(raw) else "model=tiny")
    for key, value in TINY[found.program].items():
        if key not in keys and OmegaConf.select(cfg, key.rsplit(".", 1)[0]) is not None:
            appended.append(f"++{key}={value}")

    def number(key: str) -> int:
        value = keys[key].value() if key in keys else 1
        return value if isinstance(value, int) else 1

    strategy = str(keys["strategy"].value()) if "strategy" in keys else None
    two_processes = strategy in MULTI_PROCESS_STRATEGIES and number("trainer.devices") * number("trainer.num_nodes") > 1
    kind = "run"
    if two_processes and on_cpu:
        appended += CPU_TWO_PROCESSES
    elif gpu_markers(overrides) or two_processes:
        kind = "refusal"
    multirun = "-m" in args or "--multirun" in args or "hparams_search" in keys
    run_name = OmegaConf.select(cfg, "run_name")
    reads, _ = referenced_paths(args)
    if str(cfg.get("ckpt_path")) == "last":
        reads.append(f"logs/{run_name}/checkpoints/last.ckpt")
    raw_config = OmegaConf.to_yaml(cfg, resolve=False)
    reads += [f"logs/{name}" for name in re.findall(r"\$\{paths\.log_dir\}/([\w.-]+)", raw_config)]
    named = "run_name" in keys or "experiment" in keys
    makes = (f"logs/{run_name}" + ("/multirun" if multirun else ""),) if named else ()
    mode = OmegaConf.select(cfg, "mode")
    details = {"run_name": run_name, "multirun": multirun, "processes": 2 if two_processes and on_cpu else 1}
    details["jobs"] = math.prod(len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override())
    if found.program == "train.py" and not multirun:
        details["written"] = [f"logs/{run_name}/summary.json"]
    elif mode in MODE_OUTPUT:
        details["written"] = [f"logs/{run_name}/{MODE_OUTPUT[mode]}"]
    chat = mode == "chat" and OmegaConf.select(cfg, "chat.prompt") is None
    return Plan(
        command,
        kind,
        " ".join([text, *appended]),
        stdin=CHAT_INPUT if chat else None,
        needs=tuple(reads),
        makes=makes,
        files=files,
        rank=(len(files), details["processes"], len(args)),
        details=details,
    )


# -------------------------------------------------------------------------------------------------------- checks
def verify(plan: Plan, sandbox: Path, returncode: int | None, output: str, started: float) -> list[str]:
    """What is wrong with a command's run (nothing: an empty list)."""
    if plan.kind == "refusal":
        return refusal_problems(returncode, output)
    if returncode != 0:
        return [f"exit code {returncode}"]
    if plan.kind == "compose":
        return composed_problems(plan, output)
    problems = (
        [f"the output does not show {plan.details['prints']}"] if plan.details.get("prints", "") not in output else []
    )
    for pattern in plan.details.get("written", []):
        if not any(path.stat().st_mtime >= started - 1 for path in sandbox.glob(pattern)):
            problems.append(f"{pattern} was not written")
    run_name = plan.details.get("run_name")
    if plan.details.get("written") and plan.command.invocation.program == "train.py":
        summary = json.loads((sandbox / f"logs/{run_name}/summary.json").read_text())
        if Path(summary["output_dir"]).resolve() != (sandbox / "logs" / run_name).resolve():
            problems.append(f"wrote to {summary['output_dir']}, not the sandbox's logs/{run_name}")
        if not summary["optimizer_steps"] >= 1:
            problems.append(f"optimizer_steps = {summary['optimizer_steps']}")
    if plan.details.get("multirun"):
        problems += sweep_problems(sandbox / f"logs/{run_name}/multirun", plan.details["jobs"], started)
    if plan.details.get("processes", 1) > 1 and "MEMBER: 2/2" not in output:
        problems.append("rank 1 of 2 never started (no 'MEMBER: 2/2' in the log)")
    if "score_key" in plan.details:
        problems += score_problems(sandbox / plan.details["score_key"], output)
    return problems


def sweep_problems(multirun: Path, jobs: int, started: float) -> list[str]:
    sweeps = [p for p in multirun.glob("*") if p.stat().st_mtime >= started - 1]
    if len(sweeps) != 1:
        return [f"expected one new sweep folder in {multirun}, found {len(sweeps)}"]
    done = sorted(p.parent.name for p in sweeps[0].glob("*/summary.json"))
    problems = [] if len(done) == jobs else [f"{len(done)} of {jobs} jobs wrote summary.json"]
    return problems + ([] if (sweeps[0] / "sweep_report.md").exists() else ["no sweep_report.md"])


def score_problems(key_path: Path, output: str) -> list[str]:
    """A rater who chose every left answer: A wins exactly the items where A is on the left."""
    items = json.loads(key_path.read_text())["items"].values()
    wins_a = sum(item["left"] == "a" for item in items)
    row = re.search(r"│ all\s+│\s+(\d+)\s+│\s+(\d+)\s+│\s+(\d+)\s+│\s+(\d+)\s+│\s+([\d.]+)", output)
    expected = (len(items), wins_a, 0, len(items) - wins_a, f"{wins_a / len(items):.3f}")
    got = row and (int(row[1]), int(row[2]), int(row[3]), int(row[4]), row[5])
    return [] if got == expected else [f"overall row {got}, expected (judged, A wins, ties, B wins, rate) {expected}"]


def composed_problems(plan: Plan, output: str) -> list[str]:
    """Every ``a.b=value`` override of the command has its value in the composed config."""
    config = yaml.safe_load(output)
    problems = []
    for override in parse_overrides(plan.details["overrides"]):
        key = override.key_or_group
        if "." not in key:
            continue  # a group: its options are checked by composing at all
        got = OmegaConf.select(OmegaConf.create(config), key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        if got != override.value():
            problems.append(f"{key} composed as {got!r}, typed {override.value()!r}")
    return problems


def refusal_problems(returncode: int | None, output: str) -> list[str]:
    """A GPU-only command on a CPU must stop with an error that says a GPU (or the missing package) is needed,
    not with one from deep inside torch."""
    if returncode == 0:
        return ["ran to the end on a machine without a GPU instead of refusing"]
    lines = [line for line in output.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    at = max((i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line.strip())), default=len(lines) - 3)
    message = "\n".join(lines[at:])
    problems = []
    if not re.search(r"\b(gpu|cuda)\b|pip install", message, re.IGNORECASE):
        problems.append(f"the error does not say that a GPU is needed: {message.strip()!r}")
    frames = [line.strip() for line in lines[:at] if line.strip().startswith('File "')]
    if frames and "/site-packages/torch/" in frames[-1]:
        problems.append(f"raised deep inside torch: {frames[-1]}")
    return problems


# --------------------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="session")
def doc_runner(tmp_path_factory) -> DocRunner:
    writers = {name: writer for name, (_, writer) in PLACEHOLDER_FILES.items()}
    return DocRunner(tmp_path_factory.mktemp("doc_commands"), REPO, COMMANDS, plan_for, ENV_VALUES, writers, verify)


@pytest.mark.parametrize("command_id", [c.id for c in COMMANDS if (c.file, c.text) not in FRAGMENTS])
def test_documented_command(command_id, doc_runner):
    plan = doc_runner.plan(command_id)
    if plan.kind == "skip":
        pytest.skip(plan.note)
    outcome = doc_runner.outcome(command_id)
    assert not outcome.problems, outcome.report()


def gpu_cases() -> list[tuple[str, DocCommand]]:
    """Documented commands for GPUs that run here on CPU processes (their as-typed form must refuse), and one
    command per documented GPU-only option."""
    cases = []
    for command in COMMANDS:
        found = invocation(command.text)
        if (command.file, command.text) in FRAGMENTS or found.launcher or found.is_module:
            continue
        if "hydra/launcher=slurm" in found.args:
            continue  # composed, not run
        try:
            overrides = parse_overrides(list(found.args))
        except OverrideParseException:
            continue  # not a command Hydra takes: test_every_command_like_string_... names it
        if gpu_markers(overrides) and any(o.key_or_group == "strategy" for o in overrides):
            cases.append((command.id, command))
    for file, claim, text in GPU_ONLY_CLAIMS:
        lines = (REPO / file).read_text().splitlines()
        line = next((n for n, content in enumerate(lines, 1) if claim in content), 0)
        option = text.split()[-1]
        cases.append((f"{file}:{line}[{option}]", DocCommand(file, line, text, None)))
    return cases


@pytest.mark.parametrize("case", [c for _, c in gpu_cases()], ids=[i for i, _ in gpu_cases()])
def test_gpu_command_refuses_clearly_on_cpu(case, doc_runner):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu-marked tests run these")
    assert case.line, f"the documented claim for {case.text!r} is no longer in {case.file}"
    plan = plan_for(case, on_cpu=False)
    assert plan.kind == "refusal", plan
    outcome, _ = doc_runner.fresh(plan)
    assert not outcome.problems, outcome.report()


def test_every_command_like_string_is_run_composed_or_listed():
    documented = {(c.file, c.text) for c in COMMANDS}
    assert not set(FRAGMENTS) - documented, f"listed fragments no longer in the docs: {set(FRAGMENTS) - documented}"
    unfilled = {c.id: unfilled_placeholders(substitute(c.text)) for c in COMMANDS if (c.file, c.text) not in FRAGMENTS}
    unfilled = {k: v for k, v in unfilled.items() if v}
    assert not unfilled, f"placeholders with no test value (add to SUBSTITUTIONS, or list in FRAGMENTS): {unfilled}"
    used = {p for p in SUBSTITUTIONS if any(re.search(placeholder_pattern(p), c.text) for c in COMMANDS)}
    assert used == set(SUBSTITUTIONS), f"substitutions no documented command uses: {set(SUBSTITUTIONS) - used}"


MARKDOWN = """\
Intro `python train.py experiment=a
run_name=b` wraps, `python -m lit_ft.eval.diff A B` too; `pip install x` is not one.

```bash
# a comment line
bash scripts/setup.sh && python train.py experiment=lora_legal
python train.py -m a=1,2 \\
    'b=#kept' c=3   # trailing comment
srun python train.py x=1
torchrun --nnodes 4 \\
    train.py y=2
```

```python
print("python train.py inside python code")
```
"""


def test_parser_reads_blocks_and_spans_with_their_lines(tmp_path):
    (tmp_path / "doc.md").write_text(MARKDOWN)
    found = [(c.id, c.text, c.block, c.comment) for c in doc_commands(tmp_path, ["doc.md"])]
    assert found == [
        ("doc.md:1", "python train.py experiment=a run_name=b", None, ""),
        ("doc.md:2", "python -m lit_ft.eval.diff A B", None, ""),
        ("doc.md:6", "python train.py experiment=lora_legal", "doc.md:5", ""),
        ("doc.md:7", "python train.py -m a=1,2 'b=#kept' c=3", "doc.md:5", "trailing comment"),
        ("doc.md:9", "srun python train.py x=1", "doc.md:5", ""),
        ("doc.md:10", "torchrun --nnodes 4 train.py y=2", "doc.md:5", ""),
    ]
    assert invocation(found[3][1]) == Invocation((), "train.py", ("-m", "a=1,2", "b=#kept", "c=3"))
    assert invocation(found[5][1]) == Invocation(("torchrun", "--nnodes", "4"), "train.py", ("y=2",))
    assert invocation("python -m lit_ft.sweep_report d") == Invocation((), "lit_ft.sweep_report", ("d",))
    assert invocation("python benchmarks/bench_sft.py") is None


def test_placeholders_and_tiny_overrides_of_a_documented_chain():
    eval_lora = next(c for c in COMMANDS if c.text.endswith("model_path=logs/lora_legal/model run_name=eval_lora"))
    plan = plan_for(eval_lora)
    assert plan.needs == ("logs/lora_legal/model",) and plan.makes == ("logs/eval_lora",)
    assert plan.text.split()[:4] == ["python", "eval.py", "model_path=logs/lora_legal/model", "run_name=eval_lora"]
    assert "model=tiny" in plan.text.split() and "++generation.max_new_tokens=8" in plan.text.split()
    judge = plan_for(DocCommand("x.md", 1, "python -m lit_ft.eval.judge A/generations.jsonl B/generations.jsonl", None))
    assert judge.needs == (
        "logs/eval_base/generations.jsonl",
        "logs/eval_lora/generations.jsonl",
        "logs/lora_legal/model",
    )
    assert judge.details["written"] == ["logs/eval_base/judge.json"]
    dpo = plan_for(DocCommand("x.md", 1, "python train.py experiment=dpo_legal", None))
    assert "model=hf" in dpo.text.split() and "logs/lora_legal" in dpo.needs  # starts from lora_legal's export
    typed = plan_for(DocCommand("x.md", 1, "python train.py experiment=lora_legal trainer.max_steps=50", None))
    assert "++trainer.max_steps=2" not in typed.text and "++trainer.limit_val_batches=2" in typed.text
    assert unfilled_placeholders("python -m lit_ft.eval.diff A B") == ["A", "B"]
    assert unfilled_placeholders("torchrun --rdzv-endpoint $HEAD_NODE:29500 train.py x=${paths.log_dir}") == []
