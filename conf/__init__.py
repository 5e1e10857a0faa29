"""lit-ft's Hydra configs. Installed as the package ``lit_ft.conf``, so another project composes its groups
(``module=dpo``, ``peft=lora``, ``experiment=lora_legal``, ...) through ``pkg://lit_ft.conf``, which lit-ft's
search path plugin (``hydra_plugins/lit_ft_searchpath``) adds to every Hydra app. Hydra reads a ``pkg://``
config source only from a package with an ``__init__.py``: this file."""
