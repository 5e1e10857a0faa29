"""Turn examples into :class:`~lit_ft.data.batch.Tokens`: ``input_ids`` and ``labels`` (-100 where a token carries
no loss), not shifted, whole (:func:`lit_ft.data.truncation.truncate` fits them to a length).

Chat examples are tokenised exactly as the tokenizer's chat template renders them; each assistant turn's span is
found in that rendering by rendering the conversation again with a marker for the turn's content
(:func:`assistant_spans`), so no template-specific markers are hard-coded, and templates that render an earlier
turn differently once the conversation goes on (dropping its reasoning) are labelled exactly too.
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from lit_ft.data.batch import IGNORE_INDEX, Tokens
from lit_ft.data.rows import ChatExample, Message, SFTExample, TextExample

# Stands for an assistant message's content in the renderings that locate it: plain text that templates pass
# through as it is (no whitespace to trim, no special token, nothing a template parses, like `</think>`).
CONTENT_MARKER = "[[lit-ft: assistant content]]"


def render_text(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], add_generation_prompt: bool = False
) -> str:
    """The chat template applied to ``messages``; a template error (one it raises for this conversation, or a
    bug in it) is a ``ValueError`` naming it."""
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as error:
        raise ValueError(f"the chat template cannot render this conversation: {error}") from error


def render_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], add_generation_prompt: bool = False
) -> list[int]:
    """Token ids of the chat template applied to ``messages`` (the template's own special tokens included)."""
    return _token_ids(tokenizer, render_text(tokenizer, messages, add_generation_prompt))


def _token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _common_prefix_length(a: str, b: str) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


def _turn_chars(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], turn: int, text: str
) -> tuple[int, int]:
    """``[start, end)`` characters of assistant turn ``turn`` in ``text`` (the whole conversation rendered): what
    a model writes after the generation prompt, through the turn's end-of-turn marker (its trailing whitespace
    left out).

    With ``marked`` the conversation whose turn ``turn`` has :data:`CONTENT_MARKER` as content, rendered as
    ``A + marker + B``:

    - ``B`` (the turn's end, and every later message) must end ``text``: it does not depend on the content;
    - the turn starts after the last generation prompt in ``A`` (``g``: what ``add_generation_prompt`` appends to
      ``messages[:turn]``), and ``text`` must equal ``A`` up to there; what a template writes between that
      prompt and the content (a ``<think>`` block it builds from the content) is the model's to write, so labelled;
    - the turn ends ``len(text) - len(B)`` characters in, plus its own closing: what follows the marker when
      ``marked[:turn + 1]`` is rendered, as far as ``B`` starts with it (``<|im_end|>``; ``</tool_call><|im_end|>``
      after a tool call).

    No prefix of the conversation has to render as a prefix of ``text``: a template that drops earlier
    reasoning blocks (Qwen3's) renders the turn with its reasoning in ``messages[:turn + 1]`` and without it in
    the whole conversation, and the span is the whole conversation's.
    """
    marked = [*messages[:turn], {**messages[turn], "content": CONTENT_MARKER}, *messages[turn + 1 :]]
    rendered = render_text(tokenizer, marked)
    if CONTENT_MARKER in text or rendered.count(CONTENT_MARKER) != 1:
        raise ValueError(f"the chat template does not render assistant turn {turn}'s content once and as it is")
    before, after = rendered.split(CONTENT_MARKER)
    history = render_text(tokenizer, messages[:turn])
    prompted = render_text(tokenizer, messages[:turn], add_generation_prompt=True)
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
    alone = render_text(tokenizer, marked[: turn + 1])
    closing = alone[alone.index(CONTENT_MARKER) + len(CONTENT_MARKER) :]
    closing = closing[: _common_prefix_length(closing, after)].rstrip()
    end = len(text) - len(after) + len(closing)
    if end <= start:
        raise ValueError(f"assistant turn {turn} renders as nothing: there is nothing to label")
    return start, end


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], turns: Sequence[int], text: str, ids: list[int]
) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of the given assistant turns in ``ids`` (the tokens of ``text``, the whole
    conversation rendered): their content and end-of-turn token.

    Each turn's characters come from :func:`_turn_chars`; a character offset becomes a token index by tokenising
    the text before it, which must give the first tokens of ``ids`` (a span edge inside a token is refused, never
    guessed).
    """
    spans = []
    for turn in turns:
        edges = []
        for offset in _turn_chars(tokenizer, messages, turn, text):
            prefix = _token_ids(tokenizer, text[:offset])
            if ids[: len(prefix)] != prefix:
                raise ValueError(
                    f"assistant turn {turn} starts or ends inside a token of the rendered conversation; its labels "
                    "cannot be located"
                )
            edges.append(len(prefix))
        spans.append((edges[0], edges[1]))
    return spans


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    trainable_turns: Sequence[int] | None = None,
) -> Tokens:
    """Tokenise a chat with labels on assistant turns only.

    Returns ``input_ids`` (the chat template's own tokenisation of ``messages``) and ``labels`` (equal to
    ``input_ids`` on each trainable assistant turn's content and end-of-turn token, -100 on system, user and
    assistant headers).

    Args:
        trainable_turns: indices of the assistant messages that carry loss (default: all of them).
    """
    if trainable_turns is None:
        trainable_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    text = render_text(tokenizer, messages)
    input_ids = _token_ids(tokenizer, text)
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in assistant_spans(tokenizer, messages, trainable_turns, text, input_ids):
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
        return tokenize_conversation(tokenizer, example.messages, example.trainable_turns)
    if isinstance(example, TextExample):
        return tokenize_text(tokenizer, example.prompt, example.completion)
    raise TypeError(f"cannot tokenise {type(example).__name__}")
