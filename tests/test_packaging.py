"""lit-ft as another project uses it: pip-installed, its config groups composed from that project's own folder.

The wheel is built from a copy of this checkout and installed into a folder (no dependencies); a user's project
in a temporary folder, with its own ``train.py`` and ``conf/config.yaml``, composes lit-ft's groups from it. The
real run uses the installed (editable) lit-ft, the way ``scripts/setup.sh`` installs it, with this repository
off ``sys.path``. The tensorboard logger, an optional extra, is refused by name when its package is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.support.helpers import REPO

# A user's entry point, as lit-ft's own train.py is written: resolvers registered at import, the run inside.
USER_TRAIN_PY = """\
import hydra
from omegaconf import DictConfig

import lit_ft.resolvers  # noqa: F401  (the resolvers lit-ft's configs use)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from lit_ft.run import train

    train(cfg)


if __name__ == "__main__":
    main()
"""

# The user's config: lit-ft's main config, with groups picked in the defaults list (no hydra.searchpath: lit-ft's
# search path plugin finds them).
USER_CONFIG = """\
defaults:
  - train
  - override data: preference_legal
  - override module: dpo
  - override peft: lora
  - override callbacks: [default, neftune]
  - _self_
task_name: my_dpo
"""


def user_project(folder: Path) -> Path:
    (folder / "conf").mkdir(parents=True)
    (folder / "train.py").write_text(USER_TRAIN_PY)
    (folder / "conf" / "config.yaml").write_text(USER_CONFIG)
    return folder


def user_env(pythonpath: Path | None = None) -> dict[str, str]:
    """The environment of a user's shell: no LIT_FT_ROOT (only lit-ft's own entry points set it), and nothing of
    this checkout on the import path unless ``pythonpath`` is given."""
    env = {k: v for k, v in os.environ.items() if k not in ("LIT_FT_ROOT", "PYTHONPATH")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """lit-ft's wheel, built without build isolation (nothing fetched) from a copy of the checkout."""
    pytest.importorskip("setuptools", minversion="77", reason="builds the wheel with setuptools>=77 (the dev extra)")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("lit_ft", "conf", "data", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root), str(source)]
    run(command, cwd=root, env=user_env())
    (built,) = root.glob("lit_ft-*.whl")
    return built


def test_wheel_holds_the_code_configs_data_and_search_path_plugin(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())

    def under(folder: str, *patterns: str) -> set[str]:
        return {
            p.relative_to(REPO / folder).as_posix()
            for pattern in patterns
            for p in (REPO / folder).rglob(pattern)
            if "__pycache__" not in p.parts
        }

    expected = (
        # every subpackage listed in pyproject.toml, and its data files (the A/B page, the chat templates)
        {f"lit_ft/{p}" for p in under("lit_ft", "*.py", "*.html", "*.jinja")}
        | {f"lit_ft/conf/{p}" for p in under("conf", "*.yaml", "__init__.py")}
        | {f"lit_ft/shipped_data/{p}" for p in under("data", "*.jsonl", "README.md", "__init__.py")}
        | {f"hydra_plugins/{p}" for p in under("hydra_plugins", "*.py")}
    )
    # the globs found the files
    assert {"lit_ft/conf/experiment/dpo_legal.yaml", "lit_ft/data/templates/chatml.jinja"} <= expected
    assert sorted(expected - names) == []
    # conf/ and data/ go inside lit_ft, not to the top of site-packages; the plugin namespace has no __init__.py
    assert not [n for n in names if n.split("/")[0] in ("conf", "data", "tests")]
    assert "hydra_plugins/__init__.py" not in names


@pytest.fixture(scope="module")
def installed_wheel(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        target,
        user_env(),
    )
    return target


def test_a_project_composes_the_installed_groups_and_experiments(installed_wheel, tmp_path):
    project = user_project(tmp_path / "my_project")
    env = user_env(pythonpath=installed_wheel)
    data = installed_wheel / "lit_ft" / "shipped_data"

    search_path = run([sys.executable, "train.py", "--info", "searchpath"], project, env).stdout
    assert "pkg://lit_ft.conf" in search_path and "lit-ft" in search_path

    cfg = yaml.safe_load(run([sys.executable, "train.py", "--cfg", "job", "--resolve"], project, env).stdout)
    assert cfg["task_name"] == "my_dpo"
    assert cfg["module"]["_target_"] == "lit_ft.modules.DPOModule"
    assert cfg["module"]["adapter"]["_target_"] == "lit_ft.models.LoRA"
    assert cfg["data"]["train_files"] == str(data / "preference" / "train.jsonl")
    assert set(cfg["callbacks"]) >= {"neftune", "progress_bar"}
    assert Path(cfg["paths"]["log_dir"]) == Path("logs")  # the project's folder, not lit-ft's

    # lit-ft's own main config by name, with an experiment, as lit-ft's train.py takes them; its callbacks read
    # the installed data
    overrides = ["--config-name", "train", "experiment=lora_legal"]
    cfg = yaml.safe_load(
        run([sys.executable, "train.py", "--cfg", "job", "--resolve", *overrides], project, env).stdout
    )
    assert cfg["task_name"] == "lora_legal"
    assert cfg["module"]["_target_"] == "lit_ft.modules.SFTModule"
    assert cfg["data"]["val_files"] == str(data / "legal" / "val.jsonl")
    for file in (cfg["callbacks"]["forgetting"]["mcq_file"], cfg["callbacks"]["generation_samples"]["prompts_file"]):
        assert Path(file).is_file() and Path(file).is_relative_to(data)


def editable_lit_ft(env: dict[str, str], cwd: Path) -> Path:
    """This checkout when it is the lit-ft the environment has installed (``pip install -e .``), else a skip."""
    where = run([sys.executable, "-c", "import lit_ft; print(lit_ft.__file__)"], cwd, env).stdout.strip()
    if Path(where).resolve().parent != (REPO / "lit_ft").resolve():
        pytest.skip(f"the installed lit_ft is {where}, not this checkout's (pip install -e . here to test it)")
    conf = subprocess.run(
        [sys.executable, "-c", "import lit_ft.conf, lit_ft.shipped_data"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert conf.returncode == 0, (
        "this checkout is installed without lit_ft.conf / lit_ft.shipped_data (installed before they existed): "
        f"run `pip install -e .` again.\n{conf.stderr[-1500:]}"
    )
    return REPO


def test_a_project_trains_with_the_installed_lit_ft(tmp_path):
    project = user_project(tmp_path / "my_project")
    env = user_env()
    checkout = editable_lit_ft(env, project)

    overrides = ["debug=tiny", "trainer.max_steps=2", "run_name=tiny_dpo", "data.max_val_rows=8"]
    run([sys.executable, "train.py", *overrides], project, env, timeout=600)

    output = project / "logs" / "tiny_dpo"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["experiment"] == "my_dpo"
    assert summary["optimizer_steps"] == 2
    assert "val/rewards/accuracies" in summary["val_after"]  # DPO's metrics
    assert (output / "adapter" / "adapter_config.json").is_file()
    run_config = yaml.safe_load((output / "config.yaml").read_text())
    assert run_config["data"]["train_files"] == str(checkout / "data" / "preference" / "train.jsonl")
    assert not (checkout / "logs" / "tiny_dpo").exists()


def test_tensorboard_logger_without_its_extra_is_refused_by_name(tmp_path):
    """``logger=tensorboard`` with tensorboard (and tensorboardX) absent: train.py stops at the config check, before
    any model loads, naming the extra. Absent is simulated in the subprocess (a ``None`` entry in ``sys.modules``
    makes the import, and ``find_spec``, fail as for a package that is not installed)."""
    hide_and_run = (
        "import runpy, sys; sys.modules['tensorboard'] = sys.modules['tensorboardX'] = None; "
        f"sys.argv = ['train.py', 'debug=tiny', 'logger=tensorboard', 'paths.log_dir={tmp_path}']; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", hide_and_run], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "logger.tensorboard (TensorBoardLogger) needs the tensorboard package" in output
    assert "pip install 'lit-ft[tensorboard]'" in output
    assert not (tmp_path / "debug_tiny" / "summary.json").exists()
