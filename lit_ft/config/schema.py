"""Structured configs derived from the code: every ``_target_`` node is checked against its target's signature.

For each node, a dataclass is made from the arguments of the target (a class's ``__init__`` through the
``**kwargs`` it forwards to its bases, or a function), with each annotation turned into the OmegaConf type
that checks it (``int``, ``float``, ``bool``, ``str``, ``Optional`` of those, lists of them; ``Literal`` choices
are checked as a set; anything richer is ``Any``). The node's values are then assigned to an
``OmegaConf.structured`` instance of that dataclass, so a misspelt key or a value of the wrong type is reported
with its full key before anything is built. The signature is the single source of truth: a new option of a
DataModule or LightningModule is validated as soon as it exists, with no schema to keep in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
PRIMITIVES = (int, float, bool, str)


@dataclasses.dataclass(frozen=True)
class Option:
    """One argument of a target: the OmegaConf type that checks it, and its allowed values when it is a Literal."""

    type: Any
    choices: tuple | None = None


def _configurable(annotation: Any) -> bool:
    """Whether a plain config value (not a ``_target_`` node) can have this type."""
    origin = typing.get_origin(annotation) or annotation
    return annotation in PRIMITIVES or origin in (list, tuple, dict, Sequence, Mapping, Literal)


def _option(annotation: Any) -> Option:
    """Map a Python annotation to an :class:`Option` (``Any`` where OmegaConf cannot express it)."""
    if annotation in PRIMITIVES:
        return Option(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return Option(str if all(isinstance(a, str) for a in args) else Any, tuple(args))
    if origin in (Union, types.UnionType):
        optional = type(None) in args
        options = [a for a in args if a is not type(None) and _configurable(a)]  # `float | Tensor` is a float
        if not options:
            return Option(Any)
        if all(typing.get_origin(a) is Literal for a in options):
            choices = tuple(c for a in options for c in typing.get_args(a)) + ((None,) if optional else ())
            return Option(Any, choices)
        if set(options) == {int, float}:
            options = [float]
        if len(options) == 1:
            inner = _option(options[0]).type
            return Option(inner | None if optional and inner is not Any else inner)
        return Option(Any)
    if origin in (list, Sequence) and len(args) == 1 and args[0] in PRIMITIVES:
        return Option(list[args[0]])
    return Option(Any)


def _annotations(function: Callable) -> dict[str, Any]:
    """Evaluated annotations of ``function``; one that cannot be evaluated (a TYPE_CHECKING import) is ``Any``."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # evaluate one by one, so a single unresolvable name does not hide the others
        namespace = vars(sys.modules.get(function.__module__, object()))
        hints = {}
        for name, annotation in getattr(function, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
            except Exception:
                hints[name] = Any
        return hints


def target_options(target: Any) -> tuple[dict[str, Option], bool]:
    """The keyword arguments ``target`` accepts, and whether it also accepts any other (an open ``**kwargs``).

    For a class, ``__init__`` is followed up the MRO while it forwards ``**kwargs`` to its base.
    """
    functions = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    options: dict[str, Option] = {}
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check
            return options, True
        hints = _annotations(function)
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                options.setdefault(name, _option(hints.get(name, Any)))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return options, False
        if function is object.__init__:
            break
    return options, True


def _targets(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every ``_target_`` node under ``node`` with its dotted path; interpolated links (``${model}``) are skipped."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if not OmegaConf.is_interpolation(node, key):
                yield from _targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            if not OmegaConf.is_interpolation(node, index):
                yield from _targets(node._get_node(index), f"{path}[{index}]")


def _type_name(option: Option) -> str:
    return option.type.__name__ if isinstance(option.type, type) else str(option.type).replace("typing.", "")


def check_node(path: str, node: DictConfig) -> list[str]:
    """Errors of one ``_target_`` node: an unknown target, unknown keys, wrong types, values outside a Literal."""
    try:
        target = get_object(node._target_)
    except Exception as error:
        return [f"{path}._target_: cannot import {node._target_!r} ({error})"]
    options, open_kwargs = target_options(target)
    fields = [(name, option.type) for name, option in options.items()]
    schema = OmegaConf.structured(dataclasses.make_dataclass("Schema", fields))
    errors = []
    for key in node:
        if key in HYDRA_KEYS:
            continue
        where = f"{path}.{key}" if path else str(key)
        if key not in options:
            if not open_kwargs:
                close = difflib.get_close_matches(str(key), options, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                errors.append(f"{where}: not an option of {node._target_} ({hint}options: {', '.join(options)})")
            continue
        try:
            value = node[key]
        except OmegaConfBaseException:
            continue  # an interpolation only a running Hydra app resolves (${hydra:...})
        if isinstance(value, DictConfig) and "_target_" in value:
            continue  # an object built from its own node (also through a link: ${strategy}), checked on its own
        option = options[key]
        if option.choices is not None and value not in option.choices:
            allowed = ", ".join(repr(c) for c in option.choices)
            errors.append(f"{where}={value!r}: not one of {allowed}")
            continue
        try:
            schema[key] = value
        except OmegaConfBaseException:
            errors.append(f"{where}={value!r}: expected {_type_name(option)}")
    return errors


def check_targets(cfg: DictConfig) -> list[str]:
    """Errors of every ``_target_`` node of ``cfg`` (data, module and what it composes, trainer, callbacks, ...)."""
    return [error for path, node in _targets(cfg, "") for error in check_node(path, node)]
