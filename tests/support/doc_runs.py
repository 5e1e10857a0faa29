"""Run documented commands as a user would: in a folder that looks like a checkout, in the order the docs give them.

A *sandbox* holds copies of the entry scripts and links to ``conf/`` and ``data/``; ``LIT_FT_ROOT`` points at it,
so every ``logs/`` a command writes lands there, and ``HF_DATASETS_CACHE`` at its own datasets cache
(:data:`DATASETS_CACHE`: what a documented dataset name reads is put there first, nothing is downloaded). The commands of one fenced block run in order in one sandbox; an
inline command runs alone. A command that needs what an earlier run wrote (``logs/lora_legal/model``) gets that
run's folder copied in first, from the documented command that makes it, run once per session in a fresh sandbox
(its *producer*). The same command in a fresh sandbox runs once per session too, whichever doc line shows it.

What to run and how to judge it is the caller's (:class:`Plan`, ``verify``): this module only runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.doc_commands import ENTRY_SCRIPTS, DocCommand


@dataclass(frozen=True)
class Plan:
    """How one documented command is exercised.

    ``kind``: ``run`` (run it; judged by ``verify``), ``refusal`` (run it; it must refuse), ``compose`` (Hydra's
    ``--cfg``), ``skip`` (``note`` says which extra is missing) or ``fragment`` (not a command; ``note`` says why).
    ``needs``: sandbox paths that must exist before it runs (made by a producer when missing); ``makes``: the
    folders it writes, which later commands may need; ``files``: placeholder files written into the sandbox first.
    """

    command: DocCommand
    kind: str
    text: str = ""
    note: str = ""
    stdin: str | None = None
    needs: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    rank: tuple[int, ...] = ()  # producer preference: lower first
    timeout: int = 600
    details: dict = field(default_factory=dict, compare=False)  # what ``verify`` needs (run name, jobs, ...)

    @property
    def runs(self) -> bool:
        return self.kind in ("run", "refusal", "compose")


@dataclass
class Outcome:
    plan: Plan
    returncode: int | None
    stdout: str
    stderr: str
    sandbox: Path
    problems: list[str]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def report(self) -> str:
        tail = "\n".join(self.output.strip().splitlines()[-25:])
        return (
            f"{self.plan.command.id}: {self.plan.text}\n" + "\n".join(self.problems) + f"\n--- output tail ---\n{tail}"
        )


# The sandbox's Hugging Face datasets cache (``HF_DATASETS_CACHE``), relative to the sandbox.
DATASETS_CACHE = ".cache/huggingface/datasets"

Verify = Callable[[Plan, Path, int | None, str, float], list[str]]
Writer = Callable[[Path, Plan], None]


def make_sandbox(path: Path, repo: Path) -> Path:
    """A folder that looks like a user's checkout: the entry scripts copied, ``conf/`` and ``data/`` linked."""
    path.mkdir(parents=True)
    for script in ENTRY_SCRIPTS:
        shutil.copy2(repo / script, path / script)
    for folder in ("conf", "data"):
        (path / folder).symlink_to(repo / folder, target_is_directory=True)
    return path


class DocRunner:
    """Runs plans in sandboxes under ``root``; ``outcome(id)`` runs a command's block up to it (once)."""

    def __init__(
        self,
        root: Path,
        repo: Path,
        commands: list[DocCommand],
        planner: Callable[[DocCommand], Plan],
        env: dict[str, str],
        writers: dict[str, Writer],
        verify: Verify,
    ):
        self.root, self.repo, self.planner, self.writers, self.verify = root, repo, planner, writers, verify
        self.commands = {command.id: command for command in commands}
        self.blocks: dict[str, list[str]] = {}
        for command in commands:
            self.blocks.setdefault(command.block or command.id, []).append(command.id)
        self._plans: dict[str, Plan] = {}
        self.env = self._environment(env)
        self._done: dict[str, Outcome] = {}
        self._block_dirs: dict[str, Path] = {}
        self._fresh: dict[tuple[str, str | None], tuple[Outcome, Path]] = {}
        self._producing: set[str] = set()
        self._count = 0

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        """The user's shell: ``python`` is this interpreter, lit-ft is this checkout's, no network, W&B offline."""
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name in ("python", "python3"):
            if not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(sys.executable)
        env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join(p for p in (str(self.repo), env.get("PYTHONPATH", "")) if p),
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
            WANDB_MODE="offline",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            **extra,
        )
        return env

    def _new_dir(self, kind: str) -> Path:
        self._count += 1
        return self.root / f"{kind}-{self._count:03d}"

    def plan(self, command_id: str) -> Plan:
        """The plan of a documented command, made when first asked for (planning composes its config)."""
        if command_id not in self._plans:
            self._plans[command_id] = self.planner(self.commands[command_id])
        return self._plans[command_id]

    def outcome(self, command_id: str) -> Outcome:
        """The outcome of one documented command, after the commands before it in its block."""
        command = self.commands[command_id]
        block_id = command.block or command.id
        block = self.blocks[block_id]
        for plan in map(self.plan, block[: block.index(command_id) + 1]):
            if plan.command.id in self._done:
                continue
            if not plan.runs:
                self._done[plan.command.id] = Outcome(plan, None, "", "", self.root, [])
            elif plan.kind != "run" or len(block) == 1:  # nothing to carry on: share the fresh run
                self._done[plan.command.id] = self.fresh(plan)[0]
            elif block_id not in self._block_dirs:  # the block's first run: a fresh run, carried on in a copy
                outcome, folder = self.fresh(plan)
                self._block_dirs[block_id] = self._new_dir("block")
                shutil.copytree(folder, self._block_dirs[block_id], symlinks=True)
                self._done[plan.command.id] = outcome
            else:
                self._done[plan.command.id] = self._run(plan, self._block_dirs[block_id])
        return self._done[command_id]

    def fresh(self, plan: Plan) -> tuple[Outcome, Path]:
        """``plan`` run in a new sandbox, once per session for the same command text: its outcome and folder."""
        key = (plan.text, plan.stdin)
        if key not in self._fresh:
            folder = make_sandbox(self._new_dir("fresh"), self.repo)
            self._fresh[key] = (self._run(plan, folder), folder)
        return self._fresh[key]

    def producer(self, need: str) -> tuple[Plan, str] | None:
        """The documented run that writes ``need`` (the one writing the deepest enclosing folder; among equals the
        one ranked first), and that folder; a run that needs the folder itself is not a producer. Only commands
        that name the folder (``logs/<name>``: ``<name>``) are planned to find out."""
        parts = Path(need).parts
        name = parts[1] if parts[0] == "logs" and len(parts) > 1 else parts[0]
        candidates = []
        for order, command in enumerate(self.commands.values()):
            if name not in command.text or (plan := self.plan(command.id)).kind != "run":
                continue
            for made in plan.makes:
                inside = need == made or need.startswith(made + "/")
                if inside and not any(n == made or n.startswith(made + "/") for n in plan.needs):
                    candidates.append((-len(made), plan.rank, order, plan, made))
        return min(candidates, key=lambda c: c[:3])[3:] if candidates else None

    def _provide(self, plan: Plan, sandbox: Path) -> list[str]:
        """Copy into ``sandbox`` what ``plan`` needs and is not there, from each producer's fresh run."""
        problems = []
        for need in plan.needs:
            if (sandbox / need).exists():
                continue
            found = self.producer(need)
            if found is None:
                continue  # nothing documented makes it: the command shows what a user would see
            producer, made = found
            if producer.command.id in self._producing:
                problems.append(f"{need}: producer {producer.command.id} needs it too (a cycle)")
                continue
            self._producing.add(producer.command.id)
            try:
                outcome, folder = self.fresh(producer)
            finally:
                self._producing.discard(producer.command.id)
            if outcome.problems:
                problems.append(f"needs {need}, written by {producer.command.id} ({producer.text}), which failed")
            if (folder / made).exists():
                shutil.copytree(folder / made, sandbox / made, symlinks=True, dirs_exist_ok=True)
        return problems

    def _run(self, plan: Plan, sandbox: Path) -> Outcome:
        problems = self._provide(plan, sandbox)
        for name in plan.files:
            self.writers[name](sandbox, plan)
        started = time.time()
        env = {**self.env, "LIT_FT_ROOT": str(sandbox), "HF_DATASETS_CACHE": str(sandbox / DATASETS_CACHE)}
        process = subprocess.Popen(
            ["bash", "-c", plan.text],
            cwd=sandbox,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a timeout ends the ranks it started too
        )
        try:
            stdout, stderr = process.communicate(plan.stdin or "", timeout=plan.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            problems.append(f"still running after {plan.timeout} s: killed")
        problems += self.verify(plan, sandbox, process.returncode, stdout + stderr, started)
        return Outcome(plan, process.returncode, stdout, stderr, sandbox, problems)
