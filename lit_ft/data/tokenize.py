"""Turn examples into :class:`~lit_ft.data.batch.Tokens`: ``input_ids`` and ``labels`` (-100 where a token carries
no loss), not shifted, whole (:func:`lit_ft.data.truncation.truncate` fits them to a length).

Chat examples are tokenised exactly as the tokenizer's chat template renders them; each assistant turn's span is
found in that rendering by rendering the conversation again with a marker for the turn's content
(:func:`assistant_spans`), so no template-specific markers are hard-coded, and templates that render an earlier
turn differently once the conversation goes on (dropping its reasoning) are labelled exactly too.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from lit_ft.data.batch import IGNORE_INDEX, Tokens, UnpairedExample
from lit_ft.data.preference_rows import UnpairedPreference
from lit_ft.data.rows import ChatExample, Message, SFTExample, TextExample, Tool

# Stands for an assistant message's content in the renderings that locate it: plain text that templates pass
# through as it is (no whitespace to trim, no special token, nothing a template parses, like `</think>`).
CONTENT_MARKER = "[[lit-ft: assistant content]]"


def render_text(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    add_generation_prompt: bool = False,
    tools: Sequence[Tool] | None = None,
) -> str:
    """The chat template applied to ``messages`` and ``tools``; a template error (one it raises for this conversation, or a
    bug in it) is a ``ValueError`` naming it."""
    try:
        return tokenizer.apply_chat_template(
            list(messages), tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as error:
        raise ValueError(f"the chat template cannot render this conversation: {error}") from error


def render_ids(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    add_generation_prompt: bool = False,
    tools: Sequence[Tool] | None = None,
) -> list[int]:
    """Token ids of the chat template applied to ``messages`` and ``tools`` (the template's own special tokens
    included)."""
    text = render_text(tokenizer, messages, add_generation_prompt, tools)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _turn_chars(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    turn: int,
    text: str,
    tools: Sequence[Tool] | None = None,
) -> tuple[int, int]:
    """``[start, end)`` characters of assistant turn ``turn`` in ``text`` (the whole conversation rendered): what
    a model writes after the generation prompt, through the turn's end-of-turn marker (its trailing whitespace
    left out).

    The conversation is rendered again with :data:`CONTENT_MARKER` as the turn's content, ``before + marker +
    after``, and the two renderings are lined up:

    - ``after`` (the rest of the turn, and every later message) must end ``text``: it does not depend on the
      content;
    - the turn starts after the last generation prompt in ``before`` (what ``add_generation_prompt`` appends to
      ``messages[:turn]``), and ``text`` must equal ``before`` up to there. What a template writes between that
      prompt and the content (a ``<think>`` block it builds from the content) is the model's to write: labelled;
    - the turn ends ``len(text) - len(after)`` characters in, plus its closing: what follows the marker when
      ``marked[:turn + 1]`` is rendered, as far as ``after`` starts with it (``<|im_end|>``; a tool call and
      ``<|im_end|>`` after an assistant's tool call).

    Rendering prefixes (``messages[:turn + 1]``) and finding them at the start of the whole would need every
    template to render a prefix as the whole conversation does; templates that drop earlier reasoning blocks
    (Qwen3's) do not: they render the turn with its reasoning when it is last, without it later on. Transformers'
    ``return_assistant_tokens_mask`` needs ``{% generation %}`` tags, which few templates have. The marker needs
    neither, and each step is checked: a template it cannot line up is refused with a ``ValueError``, never guessed.
    """
    marked = [*messages[:turn], {**messages[turn], "content": CONTENT_MARKER}, *messages[turn + 1 :]]
    rendered = render_text(tokenizer, marked, tools=tools)
    if CONTENT_MARKER in text or rendered.count(CONTENT_MARKER) != 1:
        raise ValueError(f"the chat template does not render assistant turn {turn}'s content once and as it is")
    before, after = rendered.split(CONTENT_MARKER)
    history = render_text(tokenizer, messages[:turn], tools=tools)
    prompted = render_text(tokenizer, messages[:turn], add_generation_prompt=True, tools=tools)
    if not prompted.startswith(history) or not text.endswith(after):
        raise ValueError(f"the chat template renders turn {turn}'s surroundings differently as its content changes")
    generation_prompt = prompted[len(history) :]
    header = before.rfind(generation_prompt)
    start = header + len(generation_prompt)
    if header < 0 or text[:start] != before[:start]:
        raise ValueError(
            f"assistant turn {turn} does not follow the template's generation prompt {generation_prompt!r} in the "
            "rendered conversation"
        )
    # the turn alone: the marked conversation cut after it (already rendered when the turn is the last message)
    alone = rendered if turn + 1 == len(marked) else render_text(tokenizer, marked[: turn + 1], tools=tools)
    closing = alone[alone.index(CONTENT_MARKER) + len(CONTENT_MARKER) :]
    closing = os.path.commonprefix([closing, after]).rstrip()
    end = len(text) - len(after) + len(closing)
    if end <= start:
        raise ValueError(f"assistant turn {turn} renders as nothing: there is nothing to label")
    return start, end


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    turns: Sequence[int],
    text: str,
    token_starts: Sequence[int],
    tools: Sequence[Tool] | None = None,
) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of the given assistant turns: their content (or tool call) and end-of-turn
    token.

    ``text`` is the whole conversation rendered and ``token_starts`` the character where each of its tokens starts
    (the fast tokenizer's offsets). A turn's tokens are those that start inside its characters
    (:func:`_turn_chars`). Where the template's markers are tokens of the vocabulary, the span's edges are token
    edges; where they are not (Llama 3's ``<|eot_id|>`` in another model's vocabulary), the token that holds the
    end of the turn and the start of the next header (``><``) is the turn's: the model must write it to end the
    turn.
    """
    spans = []
    for turn in turns:
        first, last = _turn_chars(tokenizer, messages, turn, text, tools)
        spans.append((bisect.bisect_left(token_starts, first), bisect.bisect_left(token_starts, last)))
    return spans


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    trainable_turns: Sequence[int] | None = None,
    tools: Sequence[Tool] | None = None,
) -> Tokens:
    """Tokenise a chat with labels on assistant turns only (an assistant's tool call included, tool outputs not).

    Returns ``input_ids`` (the chat template's own tokenisation of ``messages``) and ``labels`` (equal to
    ``input_ids`` on each trainable assistant turn's content and end-of-turn token, -100 on system, user and
    assistant headers).

    Args:
        trainable_turns: indices of the assistant messages that carry loss (default: all of them).
        tools: function schemas offered, passed to the chat template as ``tools=``.
    """
    if trainable_turns is None:
        trainable_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    text = render_text(tokenizer, messages, tools=tools)
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as error:
        raise TypeError(
            f"assistant-only labels need a fast tokenizer (token offsets), and {type(tokenizer).__name__} is not one"
        ) from error
    input_ids = encoding["input_ids"]
    token_starts = [start for start, _ in encoding["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in assistant_spans(tokenizer, messages, trainable_turns, text, token_starts, tools):
        labels[start:end] = input_ids[start:end]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_text(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
) -> Tokens:
    """Tokenise raw text (no chat template): ``prompt`` without loss, then ``completion`` + EOS with loss.

    With an empty prompt this is continual pre-training: loss on every token.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + completion_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids}


def tokenize_example(tokenizer: PreTrainedTokenizerBase, example: SFTExample) -> Tokens:
    """Dispatch on the example's kind; see :func:`tokenize_conversation` and :func:`tokenize_text`."""
    if isinstance(example, ChatExample):
        return tokenize_conversation(tokenizer, example.messages, example.trainable_turns, example.tools)
    if isinstance(example, TextExample):
        return tokenize_text(tokenizer, example.prompt, example.completion)
    raise TypeError(f"cannot tokenise {type(example).__name__}")


def tokenize_unpaired(tokenizer: PreTrainedTokenizerBase, unpaired: UnpairedPreference) -> UnpairedExample:
    """An unpaired preference row's tokens (loss on its answer only, as :func:`tokenize_example`), task type and
    label."""
    return {**tokenize_example(tokenizer, unpaired.example), "task_type": unpaired.task_type, "label": unpaired.label}
