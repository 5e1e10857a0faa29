"""A Hugging Face datasets cache written by a test, so that a dataset name loads offline with nothing downloaded."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from datasets import Dataset, load_dataset_builder


def cache_dataset(cache_dir: Path, repo_id: str, splits: dict[str, list[dict]], subset: str = "default") -> Path:
    """Put ``splits`` (split name -> rows) into ``cache_dir`` as ``load_dataset(repo_id, subset)`` leaves a hub
    dataset there, so that offline (``HF_DATASETS_OFFLINE=1``) the same call reads them back; returns the folder.

    The layout is the one datasets' offline reader (``packaged_modules/cache``) looks for:
    ``<cache>/<namespace>___<name>/<subset>/<version>/<hash>/`` holding ``dataset_info.json`` (its ``config_name``
    is the subset's folder) and one ``<name>-<split>.arrow`` file a split. The Arrow files are written by the
    ``parquet`` builder from the rows, then named as the hub dataset's.
    """
    namespace, name = repo_id.split("/")
    with tempfile.TemporaryDirectory() as scratch:
        files = {}
        for split, rows in splits.items():
            files[split] = str(Path(scratch) / f"{split}.parquet")
            Dataset.from_list(rows).to_parquet(files[split])
        builder = load_dataset_builder("parquet", data_files=files, cache_dir=str(Path(scratch) / "build"))
        builder.download_and_prepare()
        built = Path(builder.cache_dir)
        target = cache_dir / f"{namespace}___{name}" / subset / built.parent.name / built.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(built, target)
    for split in splits:
        (target / f"parquet-{split}.arrow").rename(target / f"{name}-{split}.arrow")
    info_path = target / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info.update(config_name=subset, dataset_name=name)
    for split_info in info["splits"].values():
        split_info["dataset_name"] = name
    info_path.write_text(json.dumps(info))
    return target
