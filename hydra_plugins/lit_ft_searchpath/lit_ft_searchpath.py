"""lit-ft's config groups on the search path of every Hydra app in the environment.

A project that installs lit-ft composes ``module=dpo``, ``peft=lora``, ``callbacks=[...]`` or
``experiment=lora_legal`` from its own ``train.py`` without writing ``hydra.searchpath``. The entry is appended, so
the app's own configs come first: a file of the same name in the app's config folder wins over lit-ft's.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "lit-ft"
LIT_FT_CONFIGS = "pkg://lit_ft.conf"


class LitFtSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider=PROVIDER, path=LIT_FT_CONFIGS)
