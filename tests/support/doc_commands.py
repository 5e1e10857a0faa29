"""Read the commands the documentation shows, as a user would type them.

A command is a ``python train.py|eval.py ...`` or ``python -m lit_ft...`` invocation, alone or behind
a launcher (``srun python ...``, ``torchrun ... train.py ...``), found in a shell code block (```` ```bash ````,
```` ```sh ````, or a block with no language) or in an inline code span. In code blocks, ``\\`` continuations are
joined and trailing ``# comments`` dropped; a line such as ``bash scripts/setup.sh && python train.py ...`` gives
its ``python`` part. Each command keeps its file, line and code block, so a test can name the doc line it runs
and replay a block's commands in order.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ENTRY_SCRIPTS = ("train.py", "eval.py")
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
LAUNCHERS = ("srun", "torchrun")
_FENCE = re.compile(r"^ {0,3}```\s*([\w+-]*)")
_INLINE = re.compile(r"`([^`]+)`")
# what may stand before the command in a shell line: `time`, environment assignments
_PREFIX = re.compile(r"^(?:(?:time|[A-Za-z_]\w*=\S*)\s+)*")


@dataclass(frozen=True)
class DocCommand:
    """One documented command: ``text`` as typed (continuations joined, comment dropped), where it is, and the
    fenced block it belongs to (``None`` for an inline span: a command on its own)."""

    file: str
    line: int
    text: str
    block: str | None
    comment: str = ""
    index: int = 1  # the n-th command on this line

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}" + (f"#{self.index}" if self.index > 1 else "")

    @property
    def invocation(self) -> Invocation:
        found = invocation(self.text)
        assert found is not None, self.text
        return found


@dataclass(frozen=True)
class Invocation:
    """A command split into its launcher (``srun``, ``torchrun ...``), program (an entry script's file name or a
    ``lit_ft`` module) and arguments."""

    launcher: tuple[str, ...]
    program: str
    args: tuple[str, ...]

    @property
    def is_module(self) -> bool:
        return not self.program.endswith(".py")


def invocation(text: str) -> Invocation | None:
    """The invocation in ``text`` when it runs an entry script or a ``lit_ft`` module, else ``None``."""
    try:
        words = shlex.split(text)
    except ValueError:  # unbalanced quotes: not a command
        return None
    for i, word in enumerate(words):
        if word in ("python", "python3") and i + 1 < len(words):
            launcher = tuple(words[:i])
            if words[i + 1] == "-m" and i + 2 < len(words) and words[i + 2].split(".")[0] == "lit_ft":
                return Invocation(launcher, words[i + 2], tuple(words[i + 3 :]))
            if Path(words[i + 1]).name in ENTRY_SCRIPTS:
                return Invocation(launcher, Path(words[i + 1]).name, tuple(words[i + 2 :]))
            return None
        if words[0] == "torchrun" and Path(word).name in ENTRY_SCRIPTS:
            return Invocation(tuple(words[:i]), Path(word).name, tuple(words[i + 1 :]))
    return None


def strip_comment(line: str) -> tuple[str, str]:
    """``(code, comment)``: a ``#`` that starts a word outside quotes starts the comment, as in a shell."""
    quote, escaped = None, False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def split_operators(line: str) -> list[str]:
    """The simple commands of a shell line: split at ``&&``, ``||``, ``;`` and ``|`` outside quotes."""
    parts, start, quote, i = [], 0, None, 0
    while i < len(line):
        char = line[i]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "&|;":
            width = 2 if line[i : i + 2] in ("&&", "||") else 1
            if char != "&" or width == 2:
                parts.append(line[start:i])
                start = i + width
                i += width
                continue
        i += 1
    parts.append(line[start:])
    return [part.strip() for part in parts if part.strip()]


def commands_in(line: str) -> list[str]:
    """The command-like parts of one logical shell line, each from its launcher or ``python`` on."""
    found = []
    for part in split_operators(line):
        part = _PREFIX.sub("", part)
        if invocation(part) is not None and shlex.split(part)[0] in ("python", "python3", *LAUNCHERS):
            found.append(part)
    return found


def logical_lines(lines: list[str], first: int) -> list[tuple[int, str, str]]:
    """``(line number, code, comment)`` of a shell block's lines: ``\\`` continuations joined (the number is the
    first line's), comments dropped."""
    joined, pending, start, comments = [], "", None, []
    for number, raw in enumerate(lines, first):
        code, comment = strip_comment(raw)
        comments.append(comment)
        if start is None:
            start = number
        code = code.strip() if pending else code
        if code.endswith("\\"):
            pending += code[:-1].rstrip() + " "
            continue
        joined.append((start, (pending + code).strip(), " ".join(c for c in comments if c)))
        pending, start, comments = "", None, []
    if start is not None:
        joined.append((start, pending.strip(), " ".join(c for c in comments if c)))
    return joined


def fenced_blocks(markdown: str) -> list[tuple[int, str, list[str]]]:
    """``(line of the first content line, language, lines)`` of each fenced code block."""
    blocks, current = [], None
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = _FENCE.match(line)
        if current is None and fence:
            current = (number + 1, fence.group(1).lower(), [])
        elif current is not None and line.strip().startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def inline_spans(markdown: str) -> list[tuple[int, str]]:
    """``(line, text)`` of inline code spans outside fenced blocks; a span may wrap onto the next line of its
    paragraph (the wrap becomes a space)."""
    lines = markdown.splitlines()
    for first, _, body in fenced_blocks(markdown):
        for number in range(first - 1, first + len(body) + 1):  # the fences and the content
            lines[number - 1] = ""
    spans, paragraph, start = [], [], 1
    for number, line in enumerate([*lines, ""], 1):
        if line.strip():
            if not paragraph:
                start = number
            paragraph.append(line)
            continue
        text = "\n".join(paragraph)
        for match in _INLINE.finditer(text):
            spans.append((start + text.count("\n", 0, match.start()), " ".join(match.group(1).split())))
        paragraph = []
    return spans


def doc_commands(root: Path, files: list[str]) -> list[DocCommand]:
    """Every command-like string of ``files`` (paths relative to ``root``), in document order."""
    found: list[DocCommand] = []
    for name in files:
        markdown = (root / name).read_text(encoding="utf-8")
        entries = []
        for first, language, body in fenced_blocks(markdown):
            if language not in SHELL_LANGUAGES:
                continue
            for number, code, comment in logical_lines(body, first):
                entries += [(number, text, f"{name}:{first}", comment) for text in commands_in(code)]
        for number, span in inline_spans(markdown):
            entries += [(number, text, None, "") for text in commands_in(span)]
        per_line: dict[int, int] = {}
        for number, text, block, comment in sorted(entries, key=lambda entry: entry[0]):
            per_line[number] = per_line.get(number, 0) + 1
            found.append(DocCommand(name, number, text, block, comment, per_line[number]))
    return found


def code_block_after(markdown: str, heading: str, language: str) -> str:
    """The first ``language`` code block after the heading titled ``heading``: an example to run as written."""
    lines = markdown.splitlines()
    at = next(i for i, line in enumerate(lines, 1) if line.lstrip("#").strip() == heading and line.startswith("#"))
    first, _, body = next(block for block in fenced_blocks(markdown) if block[0] > at and block[1] == language)
    return "\n".join(body) + "\n"
