"""Terminal chat: streamed tokens, first-token latency and per-token time, history and /reset; ``eval.py mode=chat``."""

from __future__ import annotations

import io
import json

from lit_ft.eval.chat import chat, chat_turn
from lit_ft.evaluate import run
from tests.support.helpers import compose_config


def test_timing_counts_every_new_token(tokenizer, tiny_model):
    stream = io.StringIO()
    messages = [{"role": "user", "content": "Hello there"}]
    answer, timing = chat_turn(tiny_model, tokenizer, messages, max_new_tokens=6, stream=stream)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert timing.prompt_tokens == len(prompt)
    assert timing.new_tokens == 6  # the random model never stops early: every token was timed
    assert timing.first_token_s > 0 and timing.per_token_s > 0
    assert stream.getvalue().strip() == answer and stream.getvalue().endswith("\n")
    assert "ms/token" in timing.describe()


def test_interactive_chat_keeps_history_until_reset(tokenizer, tiny_model):
    lines = iter(["first question", "second question", "/reset", "second question", ""])
    out = io.StringIO()
    transcript = chat(tiny_model, tokenizer, read=lambda _: next(lines), stream=out, max_new_tokens=3)
    assert [t["user"] for t in transcript] == ["first question", "second question", "second question"]
    # with history the second question's prompt is longer than the same question after /reset
    assert transcript[1]["prompt_tokens"] > transcript[2]["prompt_tokens"]
    fresh = tokenizer.apply_chat_template(
        [{"role": "user", "content": "second question"}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert transcript[2]["prompt_tokens"] == len(fresh)
    assert out.getvalue().count("assistant> ") == 3 and out.getvalue().count("first token") == 3


def test_chat_mode_answers_one_prompt_and_saves_the_turn(tmp_path):
    cfg = compose_config(
        ["model=tiny", "mode=chat", "chat.prompt=Hi", "chat.max_new_tokens=4"], output_dir=tmp_path, name="eval"
    )
    transcript = run(cfg)
    saved = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert saved == transcript and saved[0]["user"] == "Hi" and saved[0]["new_tokens"] == 4
