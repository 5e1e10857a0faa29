#!/usr/bin/env python3
"""Build the legal-clause SFT set from the clause bank (stdlib only, deterministic).

Reads  data/legal/bank/part*.jsonl   (the hand-written clause bank)
       data/legal/bank/extra.jsonl   (clauses written for training only)
       data/legal/bank/test.jsonl    (clauses written for the test split only)
Writes data/legal/train.jsonl, data/legal/val.jsonl, data/legal/val_prompts.jsonl,
data/legal/test.jsonl and refreshes the statistics block of data/legal/README.md.

The bank is split BY CLAUSE (seeded, stratified by clause type, 2 of every 10
clauses per type go to validation), so no validation clause is ever seen in
training. The extra and the test clauses never enter that draw: the extra
clauses join the training clauses after it, so they leave validation as it
was; the test clauses make the test split alone, so the recipe chosen on
validation is scored on clauses no run has seen.
Each clause then yields summarize / flag / classify rows and, for every
non-standard clause plus a seeded share of standard ones, a revise row.
About 10% of rows are turned into two-turn conversations whose second user
turn refers back to "that clause".

Run:  python data/legal/build.py
"""

import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611

TYPES = [
    "confidentiality",
    "limitation_of_liability",
    "indemnity",
    "termination",
    "payment",
    "governing_law",
    "ip_ownership",
    "non_compete",
    "force_majeure",
    "warranty",
    "assignment",
    "data_protection",
]
TASKS = ["summarize", "flag", "revise", "classify"]
PARTIES = [
    "Supplier",
    "Customer",
    "Licensor",
    "Licensee",
    "Employer",
    "Employee",
    "Landlord",
    "Tenant",
    "Lender",
    "Borrower",
    "Discloser",
    "Recipient",
    "Consultant",
    "Client",
    "Distributor",
    "Principal",
    "Provider",
]
_P = "|".join(PARTIES)
SUMMARY_RE = re.compile(
    r"^OBL\[(%s)(>|<>)(%s)\] [^|]+?"
    r"( \| TERM [^|]+?)?( \| CAP [^|]+?)?( \| NOTICE \d+d)?( \| LAW [^|]+?)?$" % (_P, _P)
)

MAX_CONV_WORDS = 115  # keeps every row under ~170 SmolLM2 tokens incl. chat template
VAL_PER_TYPE = 2  # of 10 clauses per type -> ~80/20 split
STD_REVISE_SHARE = {"train": 0.5, "val": 0.2, "test": 0.2}
MULTI_TURN_SHARE = 0.10
SYSTEM_SHARE = 0.5

SYSTEM_PROMPTS = [
    "You are LexAssist, the contract-review assistant of Harrow & Vale LLP. Answer in house notation.",
    "You are the Harrow & Vale LLP clause-review assistant. Keep answers short and use house notation.",
    "You review contract clauses for Harrow & Vale LLP lawyers. Reply only in the firm's house notation.",
]

# Rows that ask for a clause type carry this per-task system prompt (appended to their system message, or as
# one): the answer is one of a closed set of labels, which a model cannot guess from the clause alone.
CLASSIFY_SYSTEM = "Clause types: " + ", ".join(TYPES) + "."
# Its words come on top of MAX_CONV_WORDS (it is the same in every classify row).

# {contract} is replaced by the clause's contract name, e.g. "SaaS agreement".
PROMPTS = {
    "summarize": [
        "Summarise this clause in house notation.",
        "Give me the house-notation summary of the clause below.",
        "Summarize the following clause.",
        "What does this clause require? Answer in house notation.",
        "Please summarise this {contract} clause.",
        "Reduce this clause to house notation.",
        "House summary for this clause, please.",
        "Break down this clause from our {contract}: who owes what?",
    ],
    "flag": [
        "Is this clause standard or non-standard?",
        "Flag this clause if it is off-market.",
        "Check this {contract} clause against market standard.",
        "Does anything in this clause need flagging?",
        "Review this clause and flag any non-standard terms.",
        "Would you flag this clause for the supervising partner?",
        "Is this clause market standard?",
    ],
    "revise": [
        "Redraft this clause.",
        "Propose a revised version of this clause.",
        "Rewrite this {contract} clause for our mark-up.",
        "Give me a revision of the clause below.",
        "How should we revise this clause?",
        "Mark up this clause with a revised wording.",
        "Tighten the drafting of this clause.",
    ],
    "classify": [
        "Classify this clause.",
        "What type of clause is this?",
        "Label the clause type.",
        "Which category does this clause fall into?",
        "Tag this {contract} clause with its type.",
        "Identify the clause type below.",
        "What kind of provision is this?",
    ],
}
# Extra revise phrasings that only make sense for a non-standard clause.
REVISE_NS_PROMPTS = [
    "Suggest a fairer wording for this clause.",
    "Fix the problem in this clause.",
    "This {contract} clause looks one-sided. Redraft it.",
]

# Second-turn instructions; the clause is not repeated.
FOLLOW_UPS = {
    "summarize": [
        "Now summarise that clause in house notation.",
        "And the house summary of that clause?",
        "Can you also summarise that clause?",
        "Give me that clause in house notation too.",
    ],
    "flag": [
        "Is that clause standard?",
        "Should that clause be flagged?",
        "And is that clause market standard?",
        "Now flag that clause if needed.",
    ],
    "revise": [
        "Please redraft that clause.",
        "How would you revise that clause?",
        "Give me a revised version of that clause.",
        "Now mark up that clause.",
    ],
    "classify": [
        "What type is that clause?",
        "And classify that clause.",
        "Which category is that clause?",
        "Label that clause's type too.",
    ],
}
# last task -> possible first tasks of a two-turn conversation
MULTI_FIRST = {
    "flag": ["classify", "summarize"],
    "summarize": ["classify", "flag"],
    "revise": ["flag", "classify"],
    "classify": ["summarize"],
}


def words(s):
    return len(s.split())


def load_clauses(paths):
    """The validated clause rows of ``paths``, in order."""
    clauses = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            c = json.loads(line)
            where = "%s:%d (%s)" % (path.name, n, c.get("id"))
            assert set(c) == {"id", "contract", "text", "type", "summary", "nonstandard", "revision"}, where
            assert c["type"] in TYPES, where
            assert 25 <= words(c["text"]) <= 70, where + " clause length"
            assert SUMMARY_RE.match(c["summary"]), where + " summary notation: " + c["summary"]
            assert 6 <= words(c["summary"]) <= 35, where + " summary length"
            assert 6 <= words("REVISION: " + c["revision"]) <= 35, where + " revision length"
            assert c["nonstandard"] is None or 1 <= words(c["nonstandard"]) <= 10, where
            clauses.append(c)
    assert_unique(clauses)
    return clauses


def assert_unique(clauses):
    ids = [c["id"] for c in clauses]
    assert len(ids) == len(set(ids)), "duplicate clause ids"
    assert len({c["text"] for c in clauses}) == len(clauses), "duplicate clause texts"


def load_bank():
    """The bank's clauses (``bank/part*.jsonl``): the train/validation draw."""
    return load_clauses(sorted((HERE / "bank").glob("part*.jsonl")))


def load_extra_clauses():
    """The clauses written for training only (``bank/extra.jsonl``), added to training after the validation draw."""
    return load_clauses([HERE / "bank" / "extra.jsonl"])


def load_test_clauses():
    """The clauses written for the test split (``bank/test.jsonl``), never in the train/validation draw."""
    return load_clauses([HERE / "bank" / "test.jsonl"])


def answer(task, c):
    if task == "summarize":
        return c["summary"]
    if task == "flag":
        if c["nonstandard"] is None:
            return "FLAG: STANDARD"
        return "FLAG: NON-STANDARD - " + c["nonstandard"]
    if task == "revise":
        return "REVISION: " + c["revision"]
    return "TYPE: " + c["type"]


def pick_prompt(rng, task, c):
    pool = list(PROMPTS[task])
    if task == "revise" and c["nonstandard"] is not None:
        pool += REVISE_NS_PROMPTS
    return rng.choice(pool).format(contract=c["contract"])


def conv_words(msgs):
    return sum(words(m["content"]) for m in msgs)


def make_row(rng, c, task, first_task, want_system):
    msgs = []
    if first_task is None:
        msgs += [
            {"role": "user", "content": pick_prompt(rng, task, c) + "\n\n" + c["text"]},
            {"role": "assistant", "content": answer(task, c)},
        ]
    else:
        msgs += [
            {"role": "user", "content": pick_prompt(rng, first_task, c) + "\n\n" + c["text"]},
            {"role": "assistant", "content": answer(first_task, c)},
            {"role": "user", "content": rng.choice(FOLLOW_UPS[task])},
            {"role": "assistant", "content": answer(task, c)},
        ]
    if want_system:
        sys_msg = {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}
        if conv_words([sys_msg] + msgs) <= MAX_CONV_WORDS:
            msgs = [sys_msg] + msgs
    if "classify" in (task, first_task):
        msgs = with_classify_system(msgs)
    return {"messages": msgs, "task_type": task}


def with_classify_system(msgs):
    """``msgs`` with CLASSIFY_SYSTEM appended to their system message, or as their system message."""
    if msgs[0]["role"] == "system":
        return [{"role": "system", "content": msgs[0]["content"] + " " + CLASSIFY_SYSTEM}] + msgs[1:]
    return [{"role": "system", "content": CLASSIFY_SYSTEM}] + msgs


def build_split(rng, clauses, split):
    specs = []  # (clause, task)
    for c in clauses:
        for task in ("summarize", "flag", "classify"):
            specs.append((c, task))
        if c["nonstandard"] is not None or rng.random() < STD_REVISE_SHARE[split]:
            specs.append((c, "revise"))
    rng.shuffle(specs)
    n_multi = round(MULTI_TURN_SHARE * len(specs))
    rows, multi_done = [], 0
    for c, task in specs:
        first = None
        if multi_done < n_multi:
            for cand in rng.sample(MULTI_FIRST[task], len(MULTI_FIRST[task])):
                trial = make_row(rng, c, task, cand, False)
                if conv_words(trial["messages"]) <= MAX_CONV_WORDS:
                    first = cand
                    break
            if first is not None:
                multi_done += 1
        row = make_row(rng, c, task, first, rng.random() < SYSTEM_SHARE)
        rows.append(row)
    return rows


def pick_val_prompts(rng, val_clauses):
    """Two single-turn held-out prompts per task, from distinct val clauses."""
    out, used = [], set()
    pool = sorted(val_clauses, key=lambda c: c["id"])
    rng.shuffle(pool)
    wants = [
        ("summarize", None),
        ("summarize", None),
        ("flag", False),
        ("flag", True),  # one standard, one non-standard
        ("revise", True),
        ("revise", True),
        ("classify", None),
        ("classify", None),
    ]
    for task, ns in wants:
        for c in pool:
            if c["id"] in used:
                continue
            if ns is not None and (c["nonstandard"] is not None) != ns:
                continue
            used.add(c["id"])
            user = PROMPTS[task][len(out) % len(PROMPTS[task])].format(contract=c["contract"])
            out.append(
                {
                    "messages": with_classify_system([{"role": "user", "content": user + "\n\n" + c["text"]}])
                    if task == "classify"
                    else [{"role": "user", "content": user + "\n\n" + c["text"]}],
                    "task_type": task,
                    "reference": answer(task, c),
                }
            )
            break
    assert len(out) == 8
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def validate_file(path, with_reference=False):
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        r = json.loads(line)
        where = "%s:%d" % (path.name, n)
        assert r["task_type"] in TASKS, where
        msgs = r["messages"]
        i = 1 if msgs and msgs[0]["role"] == "system" else 0
        if i:
            assert msgs[0]["content"].strip(), where
        body = msgs[i:]
        if with_reference:
            assert len(body) == 1 and body[0]["role"] == "user", where
            assert r["reference"].strip(), where
        else:
            assert len(body) >= 2 and len(body) % 2 == 0, where
            for k, m in enumerate(body):
                assert m["role"] == ("user" if k % 2 == 0 else "assistant"), where + " role order"
                assert m["content"].strip(), where + " empty content"
            limit = MAX_CONV_WORDS + (words(CLASSIFY_SYSTEM) if CLASSIFY_SYSTEM in msgs[0]["content"] else 0)
            assert conv_words(msgs) <= limit, where + " too long"
        rows.append(r)
    return rows


def assert_unseen(clauses, rows, where):
    """No clause text of ``clauses`` appears in any message of ``rows`` (the split named ``where``)."""
    seen = "\n".join(m["content"] for r in rows for m in r["messages"])
    for c in clauses:
        assert c["text"] not in seen, "clause %s leaks into %s" % (c["id"], where)


def stats_block(splits, vp):
    """The README statistics: ``splits`` maps a split name to ``(rows, number of clauses)``."""

    def row_stats(rows):
        cnt = Counter(r["task_type"] for r in rows)
        multi = sum(1 for r in rows if sum(m["role"] == "user" for m in r["messages"]) > 1)
        sysn = sum(1 for r in rows if r["messages"][0]["role"] == "system")
        avg = sum(conv_words(r["messages"]) for r in rows) / max(len(rows), 1)
        return cnt, multi, sysn, avg

    names = list(splits)
    st = {name: row_stats(rows) for name, (rows, _) in splits.items()}

    def per_split(fmt, value):
        return " / ".join(fmt % value(name) + " " + name for name in names)

    lines = [
        "| task_type | " + " | ".join(names) + " |",
        "|-----------|" + "".join("%s:|" % ("-" * (len(name) + 1)) for name in names),
    ]
    for t in TASKS:
        lines.append("| %s | " % t + " | ".join("%d" % st[name][0][t] for name in names) + " |")
    lines += [
        "| **total** | " + " | ".join("**%d**" % len(splits[name][0]) for name in names) + " |",
        "",
        "- clauses: %s (split by clause, no overlap)" % per_split("%d", lambda name: splits[name][1]),
        "- multi-turn rows: %s" % per_split("%d", lambda name: st[name][1]),
        "- rows with a system message: %s" % per_split("%d", lambda name: st[name][2]),
        "- average words per conversation (all messages): %s" % per_split("%.1f", lambda name: st[name][3]),
        "- val_prompts.jsonl: %d prompts (%s)"
        % (len(vp), ", ".join("%s %d" % (t, n) for t, n in sorted(Counter(r["task_type"] for r in vp).items()))),
    ]
    return "\n".join(lines)


def main():
    clauses, extra_cl, test_cl = load_bank(), load_extra_clauses(), load_test_clauses()
    assert_unique(clauses + extra_cl + test_cl)
    assert {c["type"] for c in test_cl} == set(TYPES), "the test clauses must cover every clause type"
    type_counts = Counter(c["type"] for c in clauses)
    assert all(type_counts[t] >= 7 for t in TYPES), type_counts

    rng = random.Random(SEED)
    by_type = {t: sorted([c for c in clauses if c["type"] == t], key=lambda c: c["id"]) for t in TYPES}
    val_ids = set()
    for t in TYPES:
        val_ids.update(c["id"] for c in rng.sample(by_type[t], VAL_PER_TYPE))
    # the extra clauses are training-only and get their own file: the validation draw and train.jsonl do not
    # depend on them
    drawn_cl = [c for c in clauses if c["id"] not in val_ids]
    train_cl = drawn_cl + extra_cl
    val_cl = [c for c in clauses if c["id"] in val_ids]

    train = build_split(random.Random(SEED + 1), drawn_cl, "train")
    train_extra = build_split(random.Random(SEED + 5), extra_cl, "train")
    val = build_split(random.Random(SEED + 2), val_cl, "val")
    vp = pick_val_prompts(random.Random(SEED + 3), val_cl)
    test = build_split(random.Random(SEED + 4), test_cl, "test")

    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "train_extra.jsonl", train_extra)
    write_jsonl(HERE / "val.jsonl", val)
    write_jsonl(HERE / "val_prompts.jsonl", vp)
    write_jsonl(HERE / "test.jsonl", test)

    # ---- validation of what was written ----
    drawn_r = validate_file(HERE / "train.jsonl")
    extra_r = validate_file(HERE / "train_extra.jsonl")
    train_r = drawn_r + extra_r
    val_r = validate_file(HERE / "val.jsonl")
    vp_r = validate_file(HERE / "val_prompts.jsonl", with_reference=True)
    test_r = validate_file(HERE / "test.jsonl")
    assert not ({c["id"] for c in train_cl} & {c["id"] for c in val_cl}), "clause in both splits"
    train_text = "\n".join(m["content"] for r in train_r for m in r["messages"])
    assert_unseen(val_cl, train_r, "train")
    assert_unseen(train_cl, val_r, "val")
    for r in vp_r:
        assert r["messages"][-1]["content"].split("\n\n", 1)[1] not in train_text
    assert_unseen(test_cl, train_r, "train")
    assert_unseen(test_cl, val_r, "val")
    assert_unseen(train_cl + val_cl, test_r, "test")
    assert len(train_r) >= 320, len(train_r)
    for rows in (val_r, test_r):
        assert 60 <= len(rows) <= 90, len(rows)
    for rows in (train_r, val_r, test_r):
        assert set(r["task_type"] for r in rows) == set(TASKS)

    splits = {
        "train": (drawn_r, len(drawn_cl)),
        "train_extra": (extra_r, len(extra_cl)),
        "val": (val_r, len(val_cl)),
        "test": (test_r, len(test_cl)),
    }
    block = stats_block(splits, vp_r)
    readme = HERE / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8")
        new = re.sub(
            r"(<!-- stats:start -->\n).*?(<!-- stats:end -->)",
            lambda m: m.group(1) + block + "\n" + m.group(2),
            text,
            flags=re.S,
        )
        if new != text:
            readme.write_text(new, encoding="utf-8")
    print(block)
    print("val clause ids:", " ".join(sorted(val_ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
