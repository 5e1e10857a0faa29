"""Chat with a model in the terminal: chat template, tokens streamed as they come, latency measured.

Two times are reported apart, because they have different causes: the *first-token latency* (from calling
``generate`` to the first new token: tokenising the template, the prefill forward over the whole prompt, one
decoding step) grows with the prompt; the *per-token time* (mean gap between later tokens: one decoding step
with the KV cache each) grows with the model and the length of the context.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer

from lit_ft.data.rows import Message
from lit_ft.models.group_generation import sampling_kwargs


class TimedStreamer(TextStreamer):
    """A ``TextStreamer`` that writes to ``stream`` and records when each new (non-prompt) token arrived."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stream: TextIO | None = None, **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, **decode_kwargs)
        self.stream = stream or sys.stdout
        self.token_times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:  # the first call carries the prompt, every later one new tokens
            self.token_times.extend([time.perf_counter()] * value.numel())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


@dataclass
class Timing:
    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    per_token_s: float | None  # None with fewer than two new tokens

    def describe(self) -> str:
        text = f"first token {1000 * self.first_token_s:.0f} ms ({self.prompt_tokens} prompt tokens)"
        if self.per_token_s:
            text += f", then {1000 * self.per_token_s:.1f} ms/token ({1 / self.per_token_s:.1f} tokens/s)"
        return text + f", {self.new_tokens} new tokens"


@torch.no_grad()
def chat_turn(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.95,
    stream: TextIO | None = None,
) -> tuple[str, Timing]:
    """Generate the assistant's answer to ``messages``, streaming it to ``stream``; return it and its timing."""
    model.eval()
    started = time.perf_counter()
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    streamer = TimedStreamer(tokenizer, stream, skip_special_tokens=True)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        **sampling_kwargs(do_sample, temperature, top_p),
    )
    new = output[0, inputs["input_ids"].shape[1] :]
    times = streamer.token_times
    timing = Timing(
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        new_tokens=len(times),
        first_token_s=times[0] - started if times else float("nan"),
        per_token_s=(times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None,
    )
    return tokenizer.decode(new, skip_special_tokens=True).strip(), timing


def chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | None = None,
    system: str | None = None,
    read: Callable[[str], str] = input,
    stream: TextIO | None = None,
    **generate_kwargs: Any,
) -> list[dict[str, Any]]:
    """One answer to ``prompt``, or an interactive conversation when it is ``None`` (``/reset`` forgets the
    history, an empty line or ``/exit`` ends). Returns the turns with their timings."""
    stream = stream or sys.stdout
    history: list[Message] = [{"role": "system", "content": system}] if system else []
    transcript = []
    while True:
        if prompt is None:
            try:
                text = read("you> ").strip()
            except EOFError:
                break
            if text in ("", "/exit"):
                break
            if text == "/reset":
                history = history[:1] if system else []
                continue
        else:
            text = prompt
        history.append({"role": "user", "content": text})
        stream.write("assistant> ")
        answer, timing = chat_turn(model, tokenizer, history, stream=stream, **generate_kwargs)
        history.append({"role": "assistant", "content": answer})
        stream.write(f"[{timing.describe()}]\n")
        transcript.append({"user": text, "assistant": answer, **asdict(timing)})
        if prompt is not None:
            break
    return transcript
