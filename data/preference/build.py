#!/usr/bin/env python3
"""Build the legal-clause preference set (chosen/rejected pairs) for reward-model
and DPO training. Standard library only, deterministic (fixed seed).

Reads  data/legal/bank/part*.jsonl            (the hand-written clause bank)
       data/legal/build.py                    (split logic, prompts, answer format)
       data/legal/train.jsonl, val.jsonl      (the SFT rows: chosen answers must match them)
Writes data/preference/train.jsonl, data/preference/val.jsonl
and refreshes the statistics block of data/preference/README.md.

The clause split is the SFT split (same seed, same stratified sampling, checked
against the clause texts that actually ended up in data/legal/val.jsonl), so the
validation rows here use exactly the SFT validation clauses.

Each row pairs the house-notation answer of the SFT set ("chosen") with a faulty
answer ("rejected") carrying one of four faults:
  wrong_notation         right content, free prose instead of house notation
  missed_flag            wrong FLAG / wrong TYPE / summary or revision that misses the problem
  hallucinated_citation  correct-looking answer plus an invented statute, case or rule number
  verbose_hedging        40-70 words of non-committal hedging, no real answer
Faults are spread evenly over task types; about 10% of rows carry a "margin"
(1.0 for egregious faults, 0.5 for mild ones).

Run:  python data/preference/build.py
"""

import importlib.util
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True  # importing data/legal/build.py must not leave a __pycache__ there

HERE = Path(__file__).resolve().parent
LEGAL = HERE.parent / "legal"
SEED = 20240715

TASKS = ["summarize", "flag", "revise", "classify"]
FAULTS = ["wrong_notation", "missed_flag", "hallucinated_citation", "verbose_hedging"]
EGREGIOUS = {"missed_flag", "hallucinated_citation"}  # margin 1.0; the others 0.5
ROWS_PER_TASK = {
    "train": {"summarize": 72, "flag": 72, "revise": 64, "classify": 72},
    "val": {"summarize": 15, "flag": 15, "revise": 15, "classify": 15},
}
MARGIN_SHARE = 0.10
SYSTEM_SHARE = 0.6  # some long rows cannot take one, so ~half end up with a system message
MAX_WORDS = 115  # prompt + answer, ~170 SmolLM2 tokens with the chat template
HEDGE_WORDS = (40, 70)


def load_legal_build():
    spec = importlib.util.spec_from_file_location("legal_build", LEGAL / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LB = load_legal_build()


def words(s):
    return len(s.split())


def conv_words(msgs):
    return sum(words(m["content"]) for m in msgs)


# --------------------------------------------------------------------------- split


def sft_split(clauses):
    """Replicates the clause split of data/legal/build.py (same seed and sampling)."""
    rng = random.Random(LB.SEED)
    by_type = {t: sorted([c for c in clauses if c["type"] == t], key=lambda c: c["id"]) for t in LB.TYPES}
    val_ids = set()
    for t in LB.TYPES:
        val_ids.update(c["id"] for c in rng.sample(by_type[t], LB.VAL_PER_TYPE))
    return val_ids


def task_of_answer(a):
    for prefix, task in (("FLAG: ", "flag"), ("TYPE: ", "classify"), ("REVISION: ", "revise")):
        if a.startswith(prefix):
            return task
    return "summarize"


def sft_answers(path):
    """(clause text, task) -> assistant answer, read from an SFT jsonl file."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        msgs = json.loads(line)["messages"]
        body = [m for m in msgs if m["role"] != "system"]
        clause = body[0]["content"].split("\n\n", 1)[1]
        for m in body:
            if m["role"] == "assistant":
                key = (clause, task_of_answer(m["content"]))
                assert out.get(key, m["content"]) == m["content"], key
                out[key] = m["content"]
    return out


# --------------------------------------------------------------------------- helpers

TYPE_WORDS = {
    "confidentiality": "confidentiality",
    "limitation_of_liability": "limitation of liability",
    "indemnity": "indemnity",
    "termination": "termination",
    "payment": "payment",
    "governing_law": "governing law",
    "ip_ownership": "IP ownership",
    "non_compete": "non-compete",
    "force_majeure": "force majeure",
    "warranty": "warranty",
    "assignment": "assignment",
    "data_protection": "data protection",
}
# plausible mix-ups for a wrong TYPE label
CONFUSABLE = {
    "confidentiality": ["data_protection", "ip_ownership"],
    "limitation_of_liability": ["indemnity", "warranty"],
    "indemnity": ["limitation_of_liability", "warranty"],
    "termination": ["assignment", "force_majeure"],
    "payment": ["termination", "limitation_of_liability"],
    "governing_law": ["termination", "assignment"],
    "ip_ownership": ["confidentiality", "assignment"],
    "non_compete": ["confidentiality", "termination"],
    "force_majeure": ["termination", "warranty"],
    "warranty": ["limitation_of_liability", "indemnity"],
    "assignment": ["termination", "ip_ownership"],
    "data_protection": ["confidentiality", "warranty"],
}
# false reasons for flagging a standard clause
FALSE_REASONS = {
    "confidentiality": ["no carve-out for information already public", "confidentiality period too long"],
    "limitation_of_liability": ["cap too low for the contract value", "cap does not cover data loss"],
    "indemnity": ["uncapped indemnity", "indemnity not limited to third-party claims"],
    "termination": ["no right to terminate for convenience", "notice period too short"],
    "payment": ["no right to withhold disputed sums", "late-payment interest above market"],
    "governing_law": ["foreign law and forum", "exclusive jurisdiction too restrictive"],
    "ip_ownership": ["IP assignment too broad", "no licence back of the IP"],
    "non_compete": ["restraint too long", "restraint not limited by territory"],
    "force_majeure": ["force majeure definition too wide", "no exit right for prolonged events"],
    "warranty": ["warranty period too short", "remedies limited to repair or replace"],
    "assignment": ["consent to assign may be withheld", "change of control not addressed"],
    "data_protection": ["no audit right for the controller", "no deadline for breach notification"],
}
# standard-looking obligations that paper over a non-standard term (summary misses it)
BLAND = {
    "confidentiality": [
        ("keep information confidential, usual exceptions", "TERM 3y"),
        ("keep confidential information secret", "TERM 5y after termination"),
    ],
    "limitation_of_liability": [
        ("liability capped, no indirect loss", "CAP 12m fees"),
        ("liability limited to direct loss", "CAP annual fees"),
    ],
    "indemnity": [
        ("indemnify for third-party claims from own breach", None),
        ("indemnify for own negligence", "CAP 12m fees"),
    ],
    "termination": [
        ("give notice to terminate for material breach", "NOTICE 30d"),
        ("pay sums due on termination", "NOTICE 90d"),
    ],
    "payment": [
        ("pay undisputed invoices", "TERM 30d from invoice"),
        ("pay fees monthly in arrears", "TERM 30d from invoice"),
    ],
    "governing_law": [
        ("submit disputes to agreed courts", "LAW England and Wales"),
        ("use English courts for disputes", "LAW England"),
    ],
    "ip_ownership": [
        ("license IP for use under the Agreement", "TERM during Agreement"),
        ("respect the other party's IP", None),
    ],
    "non_compete": [("not compete in the agreed territory", "TERM 6m post-term"), ("not solicit clients", "TERM 12m")],
    "force_majeure": [
        ("notify and mitigate force majeure", "TERM terminable after 90d"),
        ("perform once the event ends", "TERM suspended while event lasts"),
    ],
    "warranty": [
        ("remedy defects notified in time", "TERM 12m from delivery"),
        ("perform with reasonable care and skill", None),
    ],
    "assignment": [("get consent to assign", None), ("not assign without reasonable consent", None)],
    "data_protection": [
        ("process data lawfully, report breaches", "NOTICE 3d"),
        ("process data only on instructions", None),
    ],
}
# invented authorities: none of these statutes, cases or rule numbers exist
STATUTES = {
    "confidentiality": ["Confidential Information Act 2012 s.3", "Trade Secrets (Commercial Use) Act 2010 s.8"],
    "limitation_of_liability": ["Supply of Services (Liability) Act 2003 s.4", "Contract Remedies Act 2002 s.7"],
    "indemnity": ["Commercial Indemnities Act 2005 s.2", "Contract Remedies Act 2002 s.11"],
    "termination": ["Commercial Terms Act 2011 s.9", "Contract Termination Act 2008 s.5"],
    "payment": ["Late Payments (Business Contracts) Act 2015 s.5", "Commercial Terms Act 2011 s.16"],
    "governing_law": ["Contracts Act 1999 s.14", "Cross-Border Contracts Act 2013 s.4"],
    "ip_ownership": ["Commercial Inventions Act 2007 s.19", "Software Licensing Act 2008 s.11"],
    "non_compete": ["Restrictive Covenants Act 2014 s.6", "Employment Restraints Act 2016 s.3"],
    "force_majeure": ["Contract Frustration (Business) Act 2004 s.12", "Commercial Terms Act 2011 s.21"],
    "warranty": ["Fair Contracts (Business) Act 2006 s.22", "Digital Services (Contracts) Act 2017 s.31"],
    "assignment": ["Assignment of Contracts Act 2006 s.2", "Contracts Act 1999 s.27"],
    "data_protection": ["Business Data Processing Act 2016 s.12", "Personal Information (Commerce) Act 2011 s.40"],
}
CASES = [
    "Harlow v Denby Logistics [2016] EWHC 4127 (Comm)",
    "Marsh Holdings v Tollbridge Ltd [2014] EWCA Civ 3318",
    "Penwick v Castleford Software [2019] EWHC 9207 (TCC)",
    "Ashgrove Trading v Meridan plc [2012] UKSC 71",
    "Calloway v Strand Data Services [2018] EWHC 6610 (Ch)",
    "Rowntree Freight v Balsam Foods [2015] EWCA Civ 2241",
    "Okafor v Linden Health Trust [2020] EWHC 8891 (QB)",
    "Quarry Lane Estates v Pellow [2013] EWHC 7045 (Ch)",
]
RULES = [
    "Model Commercial Terms (2018 edn) cl. 9.3",
    "Commercial Drafting Code r. 4.12",
    "City Contracts Panel Guidance Note 27",
    "Harrow & Vale Playbook rule 12.4",
    "Standard Terms Review Board ruling 2017/44",
    "Uniform Clause Register entry 318",
]


def article(phrase):
    first = phrase.split()[0]
    if first.isupper():  # acronyms: "an NDA", "an IP", "a SaaS"
        return "an" if first[0] in "AEFHILMNORSX" else "a"
    return "an" if phrase[0].lower() in "aeiou" else "a"


def expand_units(s):
    s = re.sub(r"\b(\d+)d\b", lambda m: m.group(1) + (" day" if m.group(1) == "1" else " days"), s)
    s = re.sub(r"\b(\d+)m fees\b", r"\1 months' fees", s)
    s = re.sub(r"\b(\d+)m\b", r"\1 months", s)
    s = re.sub(r"\b(\d+)y\b", r"\1 years", s)
    return s


SUM_RE = re.compile(r"^OBL\[(\w+)(>|<>)(\w+)\] (.+)$")


def parse_summary(s):
    parts = s.split(" | ")
    m = SUM_RE.match(parts[0])
    assert m, s
    fields = []
    for p in parts[1:]:
        key, val = p.split(" ", 1)
        fields.append((key, val))
    return {"a": m.group(1), "rel": m.group(2), "b": m.group(3), "obl": m.group(4), "fields": fields}


def render_summary(d):
    head = "OBL[%s%s%s] %s" % (d["a"], d["rel"], d["b"], d["obl"])
    return " | ".join([head] + ["%s %s" % kv for kv in d["fields"]])


VERBS = {
    "keep",
    "use",
    "pay",
    "bring",
    "sue",
    "vest",
    "transfer",
    "not",
    "notify",
    "remedy",
    "get",
    "report",
    "process",
    "forfeit",
    "indemnify",
    "deliver",
    "waive",
    "repay",
    "accept",
    "disclose",
    "assign",
    "maintain",
    "protect",
    "bear",
    "serve",
    "allow",
    "hand",
    "license",
    "give",
    "respect",
    "reimburse",
    "stop",
    "submit",
    "acquire",
    "delete",
    "sell",
    "meet",
    "perform",
    "rely",
    "negotiate",
    "arbitrate",
    "buy",
    "reinstate",
    "confirm",
    "prepay",
}


def to_inf(obl):
    """'not join x' -> 'not to join x', 'pay x' -> 'to pay x'."""
    return "not to " + obl[4:] if obl.startswith("not ") else "to " + obl


def prose_party(p, sentence_start=False):
    return ("The " if sentence_start else "the ") + p


def field_prose(key, val, rng):
    v = expand_units(val)
    if key == "TERM":
        return rng.choice(
            [
                "As for timing: %s." % v,
                "On duration or trigger: %s." % v,
                "Timing: %s." % v,
                "The time element is: %s." % v,
            ]
        )
    if key == "CAP":
        first, _, rest = val.partition(" ")
        if first == "none":
            return "There is no cap on liability%s." % ((" for the " + rest.split()[-1]) if rest else "")
        if first == "zero":
            return "Liability is excluded altogether."
        if first in LB.PARTIES:
            return "Liability is capped at %s for the %s." % (expand_units(rest), first)
        v = re.sub(r"^greater\b", "the greater", re.sub(r"^(\d+%) ", r"\1 of ", v))
        return rng.choice(["Liability is capped at %s." % v, "The cap is %s." % v])
    if key == "NOTICE":
        n = int(val[:-1])
        if n == 0:
            return "No notice is needed."
        return rng.choice(["%d days' notice applies." % n, "The notice period is %d days." % n])
    if key == "LAW":
        place = val
        if place.split()[0].endswith("'s"):
            place = "the " + place
        return rng.choice(["It is governed by the law of %s." % place, "The governing law is that of %s." % place])
    raise ValueError(key)


# --------------------------------------------------------------------------- faults


def wrong_notation(task, c, chosen, rng):
    tw = TYPE_WORDS[c["type"]]
    d = parse_summary(c["summary"])
    a, b = d["a"], d["b"]
    if task == "summarize":
        obl = d["obl"]
        chunks = obl.split(", ")
        verbal = all(ch.split()[0] in VERBS or ch.startswith("may ") for ch in chunks)
        joined = obl if len(chunks) == 1 else ", ".join(chunks[:-1]) + " and " + chunks[-1]
        if obl.startswith("none; "):
            first = rng.choice(
                [
                    "The %s doesn't really take on any obligation here; in effect, %s." % (a, obl[6:]),
                    "In plain terms the %s owes the %s nothing of substance (%s)." % (a, b, obl[6:]),
                ]
            )
        elif verbal and d["rel"] == "<>":
            first = rng.choice(
                [
                    "This clause says both the %s and the %s must %s." % (a, b, joined),
                    "It's a mutual obligation: the %s and the %s each have %s." % (a, b, to_inf(joined)),
                ]
            )
        elif verbal and not chunks[0].startswith("may "):
            first = rng.choice(
                [
                    "This clause says the %s must %s." % (a, joined),
                    "In plain English, the %s is required %s, and that duty is owed to the %s."
                    % (a, to_inf(joined), b),
                    "Basically the burden is on the %s here: it must %s." % (a, joined),
                    "The clause requires the %s %s for the benefit of the %s." % (a, to_inf(joined), b),
                ]
            )
        else:
            first = rng.choice(
                [
                    "The gist of this clause, as between the %s and the %s, is this: %s." % (a, b, obl),
                    "This clause puts the burden on the %s, in favour of the %s: %s." % (a, b, obl),
                    "In plain terms, the %s owes the %s the following - %s." % (a, b, obl),
                ]
            )
        return " ".join([first] + [field_prose(k, v, rng) for k, v in d["fields"]])
    if task == "flag":
        if c["nonstandard"] is None:
            return rng.choice(
                [
                    "This looks like a fairly ordinary %s clause for %s %s; I don't see anything that needs flagging."
                    % (tw, article(c["contract"]), c["contract"]),
                    "Nothing unusual here - it's a market-standard %s provision, so no flag from me." % tw,
                    "I'd say this one is fine. It's the kind of %s wording you would expect in %s %s."
                    % (tw, article(c["contract"]), c["contract"]),
                    "No concerns: this is a standard %s clause and it can go through as drafted." % tw,
                ]
            )
        r = c["nonstandard"]
        return rng.choice(
            [
                "Yes, I'd flag this one. The issue is the %s clause itself: %s, which you wouldn't normally "
                "accept in %s %s." % (tw, r, article(c["contract"]), c["contract"]),
                "This one isn't market standard. What stands out: %s. It should go to the partner." % r,
                "I would flag it, because the clause contains an off-market term (%s)." % r,
                "It needs a flag. In short: %s, and that is not what you would normally see." % r,
            ]
        )
    if task == "classify":
        return rng.choice(
            [
                "This is %s %s clause." % (article(tw), tw),
                "I'd call this %s %s provision." % (article(tw), tw),
                "Looks like %s %s clause to me - it sets out what the %s owes the %s." % (article(tw), tw, a, b),
                "That would be the %s clause of the %s." % (tw, c["contract"]),
                "It falls under %s - it sets the position between the %s and the %s." % (tw, a, b),
            ]
        )
    rev = c["revision"]
    if c["nonstandard"] is None:
        return rng.choice(
            [
                "It's mostly fine, but you could tighten it to something like: %s" % rev,
                "I'd only make light changes. Something along these lines would read better: %s" % rev,
                "Here's a tidier version you could use - %s" % rev,
            ]
        )
    return rng.choice(
        [
            "I'd redraft it along these lines: %s That should deal with the problem (%s)." % (rev, c["nonstandard"]),
            "Sure - something like this would be fairer: %s" % rev,
            "My suggested wording would be as follows. %s Let me know if you want it softer." % rev,
            "The main problem here: %s. I would rewrite it as follows. %s" % (c["nonstandard"], rev),
        ]
    )


NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "five": "5",
    "six": "6",
    "seven": "7",
    "ten": "10",
    "twelve": "12",
    "twenty": "20",
    "thirty": "30",
    "sixty": "60",
    "ninety": "90",
}


def cosmetic_redraft(text):
    """A 'revision' that only tidies the wording and keeps the problem."""
    out = re.sub(r"\bshall\b", "will", text)
    out = re.sub(
        r"\b(%s)( business)? (day|month|year)(s?)\b" % "|".join(NUMBER_WORDS),
        lambda m: NUMBER_WORDS[m.group(1).lower()] + (m.group(2) or "") + " " + m.group(3) + m.group(4),
        out,
        flags=re.I,
    )
    out = out.replace("in no event", "under no circumstances").replace("strictly ", "")
    return out


def missed_flag(task, c, chosen, rng, budget=MAX_WORDS):
    tw = TYPE_WORDS[c["type"]]
    if task == "flag":
        if c["nonstandard"] is not None:
            return "FLAG: STANDARD"
        return "FLAG: NON-STANDARD - " + rng.choice(FALSE_REASONS[c["type"]])
    if task == "classify":
        return "TYPE: " + rng.choice(CONFUSABLE[c["type"]])
    if task == "summarize":
        d = parse_summary(c["summary"])
        if c["nonstandard"] is not None:
            # standard-looking summary: the non-standard term disappears
            obl, field = rng.choice(BLAND[c["type"]])
            fields = [tuple(field.split(" ", 1))] if field else []
            if not (field or "").startswith("LAW"):
                fields += [kv for kv in d["fields"] if kv[0] == "LAW"]  # keep the real governing law
            new = {"a": d["a"], "rel": d["rel"], "b": d["b"], "obl": obl, "fields": fields}
        else:
            # wrong direction and a key field dropped
            new = dict(d)
            new["a"], new["b"] = (d["b"], d["a"]) if d["rel"] == ">" else (d["a"], d["b"])
            new["rel"] = ">"
            keys = [k for k, _ in d["fields"] if k != "LAW"]
            drop = keys[0] if keys else None
            new["fields"] = [kv for kv in d["fields"] if kv[0] != drop]
        out = render_summary(new)
        assert LB.SUMMARY_RE.match(out), out
        return out
    # revise: the "revision" leaves the non-standard term in place
    assert c["nonstandard"] is not None, c["id"]
    options = [
        "REVISION: No change needed; the clause is acceptable as drafted.",
        "REVISION: None required - this is standard %s wording." % tw,
        "REVISION: Keep as drafted; the %s position is market standard." % tw,
        "REVISION: The clause can stand as drafted.",
        "REVISION: No amendments needed - the %s %s wording is acceptable." % (c["contract"], tw),
    ]
    redraft = "REVISION: " + cosmetic_redraft(c["text"])
    if redraft != "REVISION: " + c["text"] and words(redraft) <= budget and rng.random() < 0.5:
        return redraft
    return rng.choice(options)


def pick_authority(rng, ctype):
    x = rng.random()
    if x < 0.5:
        return rng.choice(STATUTES[ctype])
    return rng.choice(CASES) if x < 0.8 else rng.choice(RULES)


def hallucinated_citation(task, c, chosen, rng):
    auth = pick_authority(rng, c["type"])
    if task == "summarize":
        d = parse_summary(chosen)
        wrap = rng.choice(["(per %s)", "(see %s)", "(as required by %s)", "(cf. %s)"]) % auth
        if d["fields"] and rng.random() < 0.7:
            i = rng.randrange(len(d["fields"]))
            k, v = d["fields"][i]
            d["fields"][i] = (k, v + " " + wrap)
        else:
            d["obl"] = d["obl"] + " " + wrap
        return render_summary(d)
    if task == "flag":
        if c["nonstandard"] is None:
            return rng.choice(
                [
                    "FLAG: STANDARD (consistent with %s)" % auth,
                    "FLAG: STANDARD - approved form under %s" % auth,
                    "FLAG: STANDARD (see %s)" % auth,
                ]
            )
        return rng.choice(
            [
                "%s, contrary to %s" % (chosen, auth),
                "%s (unenforceable under %s)" % (chosen, auth),
                "%s - see %s" % (chosen, auth),
            ]
        )
    if task == "classify":
        return rng.choice(
            [
                "%s (as defined in %s)" % (chosen, auth),
                "%s - see %s" % (chosen, auth),
                "%s (category per %s)" % (chosen, auth),
            ]
        )
    body = chosen.rstrip(".")
    return rng.choice(
        [
            "%s, as required by %s." % (body, auth),
            "%s (drafted to comply with %s)." % (body, auth),
            "%s. This follows %s." % (body, auth),
        ]
    )


HEDGE_OPEN = {
    "summarize": [
        "It may potentially be worth considering what this {tw} clause is really trying to achieve before "
        "summarising it, as it could arguably be read in more than one way.",
        "In broad terms this clause might be said to deal with obligations running from the {a} towards the {b}, "
        "although summarising it precisely could be somewhat difficult.",
        "Summarising this clause is perhaps less straightforward than it looks, since several of its elements "
        "could conceivably be interpreted in different ways.",
        "Broadly speaking, this seems to be {art} {tw} provision of some kind, but it would arguably be premature "
        "to reduce it to a short summary.",
    ],
    "flag": [
        "It may potentially be worth considering whether this clause could be regarded as standard, although "
        "that might depend on a number of factors.",
        "This {tw} clause could arguably be seen as fairly usual in some markets and possibly as less usual in "
        "others, so it is hard to say.",
        "Whether this needs flagging is, I think, a somewhat open question, and there may be considerations "
        "pointing in both directions.",
        "I am not entirely sure that this clause is either clearly standard or clearly off-market; it seems to "
        "sit somewhere in between.",
    ],
    "revise": [
        "Some redrafting might possibly help here, perhaps by clarifying the position of the {a}, although any "
        "change would need to be weighed carefully.",
        "It may potentially be worth considering whether this clause needs revising at all, and if so, how far "
        "any changes should go.",
        "There could be scope for a few amendments to this {tw} wording, though it is not entirely clear which "
        "changes would be most appropriate.",
        "One option might be to soften some of the language, but another might be to leave it broadly as it is, "
        "depending on priorities.",
    ],
    "classify": [
        "It may potentially be worth considering whether this is best described as {art} {tw} clause, although "
        "it could arguably overlap with other categories.",
        "This clause seems to touch on {tw} to some extent, but depending on interpretation it might also "
        "be treated as something else.",
        "Classifying this provision is perhaps not entirely clear-cut, as it appears to contain elements that "
        "could fit more than one heading.",
        "It is possible that this would most naturally be labelled {tw}, though I would be cautious about "
        "putting it firmly in any single category.",
    ],
}
HEDGE_MIDDLE = [
    "Much could turn on the wider commercial context of the {contract}.",
    "A great deal may depend on how the {a} and the {b} have actually dealt with each other.",
    "There is perhaps an argument either way, and reasonable reviewers could differ.",
    "It might be sensible to look at the rest of the agreement before forming a settled view.",
    "Different readers may well take somewhat different views on this point.",
    "The answer could also depend on the bargaining position of the parties.",
    "Industry practice in this area is arguably not entirely uniform.",
    "Some of the wording could potentially be read more broadly than intended.",
    "It may also be relevant what was agreed in any earlier drafts or side letters.",
]
HEDGE_CLOSE = [
    "On balance, it is probably safest not to commit to a firm conclusion at this stage.",
    "I would hesitate to give a definitive answer without more information.",
    "It may therefore be prudent to revisit this once the position is clearer.",
    "Perhaps this is something the team could discuss further in due course.",
    "So it may be best to keep the question under review for now.",
    "Ultimately, this might be a judgement call for the supervising partner.",
]


def verbose_hedging(task, c, chosen, rng, budget=HEDGE_WORDS[1]):
    d = parse_summary(c["summary"])
    tw = TYPE_WORDS[c["type"]]
    fill = {"tw": tw, "art": article(tw), "a": d["a"], "b": d["b"], "contract": c["contract"]}
    lo, hi = HEDGE_WORDS[0], min(HEDGE_WORDS[1], budget)
    opener = rng.choice(HEDGE_OPEN[task]).format(**fill)
    closer = rng.choice(HEDGE_CLOSE)
    middles = [m.format(**fill) for m in rng.sample(HEDGE_MIDDLE, len(HEDGE_MIDDLE))]
    parts = [opener]
    for m in middles:
        if words(" ".join(parts + [m, closer])) > hi:
            break
        parts.append(m)
        if words(" ".join(parts + [closer])) >= lo and rng.random() < 0.4:
            break
    parts.append(closer)
    out = " ".join(parts)
    if not lo <= words(out) <= hi:
        return None
    return out


def make_rejected(task, fault, c, chosen, rng, budget):
    if fault == "verbose_hedging":
        return verbose_hedging(task, c, chosen, rng, budget)
    if fault == "missed_flag":
        return missed_flag(task, c, chosen, rng, budget)
    return {"wrong_notation": wrong_notation, "hallucinated_citation": hallucinated_citation}[fault](
        task, c, chosen, rng
    )


# --------------------------------------------------------------------------- rows


def fault_quotas(n, task_index):
    """n rows of one task split over the faults; remainders rotate so that fault totals stay even."""
    base, extra = divmod(n, len(FAULTS))
    order = FAULTS[task_index:] + FAULTS[:task_index]
    return {f: base + (1 if i < extra else 0) for i, f in enumerate(order)}


def try_row(split, c, task, fault, chosen):
    """Build one row, or None when the fault does not fit this clause (length, applicability)."""
    rng = random.Random("%d/%s/%s/%s/%s" % (SEED, split, c["id"], task, fault))
    if fault == "missed_flag" and task == "revise" and c["nonstandard"] is None:
        return None
    user = {"role": "user", "content": LB.pick_prompt(rng, task, c) + "\n\n" + c["text"]}
    budget = MAX_WORDS - words(user["content"])
    rejected = make_rejected(task, fault, c, chosen, rng, budget)
    if rejected is None or rejected == chosen:
        return None
    if max(words(rejected), words(chosen)) > budget:
        return None
    prompt = [user]
    if rng.random() < SYSTEM_SHARE:
        sys_msg = {"role": "system", "content": rng.choice(LB.SYSTEM_PROMPTS)}
        if words(sys_msg["content"]) + max(words(rejected), words(chosen)) <= budget:
            prompt = [sys_msg, user]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "task_type": task,
        "fault": fault,
    }


def build_split(split, clauses, answers):
    rng = random.Random("%d/%s" % (SEED, split))
    rows = []
    for ti, task in enumerate(TASKS):
        pool = [c for c in clauses if (c["text"], task) in answers]
        rng.shuffle(pool)
        quotas = fault_quotas(ROWS_PER_TASK[split][task], ti)
        used = set()
        # most constrained faults first
        for fault in ["missed_flag", "verbose_hedging", "hallucinated_citation", "wrong_notation"]:
            cands = [c for c in pool if c["id"] not in used]
            if fault == "missed_flag" and task in ("summarize", "revise"):
                # the summary/revision should miss a real non-standard term where possible
                cands.sort(key=lambda c: c["nonstandard"] is None)
            got = 0
            for c in cands:
                if got == quotas[fault]:
                    break
                row = try_row(split, c, task, fault, answers[(c["text"], task)])
                if row is not None:
                    rows.append((c["id"], row))
                    used.add(c["id"])
                    got += 1
            assert got == quotas[fault], (split, task, fault, got, quotas[fault])
    rng.shuffle(rows)
    # margins on ~10% of rows, spread over faults
    by_fault = {f: [r for _, r in rows if r["fault"] == f] for f in FAULTS}
    n_margin = round(MARGIN_SHARE * len(rows))
    k = 0
    while n_margin > 0:
        f = FAULTS[k % len(FAULTS)]
        cand = [r for r in by_fault[f] if "margin" not in r]
        if cand:
            rng.choice(cand)["margin"] = 1.0 if f in EGREGIOUS else 0.5
            n_margin -= 1
        k += 1
    return [r for _, r in rows]


# --------------------------------------------------------------------------- checks


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def validate_file(path, answers, allowed_texts, forbidden_texts):
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = "%s:%d" % (path.name, n)
        r = json.loads(line)
        assert {"prompt", "chosen", "rejected", "task_type", "fault"} <= set(r), where + " missing field"
        assert set(r) <= {"prompt", "chosen", "rejected", "task_type", "fault", "margin"}, where + " extra field"
        assert r["task_type"] in TASKS, where
        assert r["fault"] in FAULTS, where
        if "margin" in r:
            assert r["margin"] == (1.0 if r["fault"] in EGREGIOUS else 0.5), where + " margin"
        p = r["prompt"]
        assert 1 <= len(p) <= 2 and p[-1]["role"] == "user", where + " prompt roles"
        if len(p) == 2:
            assert p[0]["role"] == "system", where
        for key in ("chosen", "rejected"):
            assert len(r[key]) == 1 and r[key][0]["role"] == "assistant", where + " " + key
        for m in p + r["chosen"] + r["rejected"]:
            assert isinstance(m["content"], str) and m["content"].strip(), where + " empty content"
        ch, rj = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert ch != rj, where + " chosen == rejected"
        instr, clause = p[-1]["content"].split("\n\n", 1)
        assert instr.strip(), where
        assert clause in allowed_texts, where + " clause not from this split"
        assert clause not in forbidden_texts, where + " clause from the other split"
        assert answers[(clause, r["task_type"])] == ch, where + " chosen differs from the SFT answer"
        for ans in (ch, rj):
            assert conv_words(p) + words(ans) <= MAX_WORDS, where + " too long"
        if r["fault"] == "verbose_hedging":
            assert HEDGE_WORDS[0] <= words(rj) <= HEDGE_WORDS[1], where + " hedge length"
        rows.append(r)
    return rows


def stats_block(splits):
    lines = ["| fault \\ task_type | " + " | ".join(TASKS) + " | total |", "|---|" + "---:|" * (len(TASKS) + 1)]
    out = []
    for name, rows in splits:
        cnt = Counter((r["fault"], r["task_type"]) for r in rows)
        out.append("**%s** (%d rows)" % (name, len(rows)))
        out.append("")
        out += lines
        for f in FAULTS:
            out.append(
                "| %s | %s | %d |" % (f, " | ".join(str(cnt[(f, t)]) for t in TASKS), sum(cnt[(f, t)] for t in TASKS))
            )
        out.append(
            "| **total** | %s | **%d** |"
            % (" | ".join("**%d**" % sum(cnt[(f, t)] for f in FAULTS) for t in TASKS), len(rows))
        )
        out.append("")
    out.append("| | train | val |")
    out.append("|---|---:|---:|")
    (_, tr), (_, va) = splits

    def n(rows, pred):
        return sum(1 for r in rows if pred(r))

    out.append(
        "| rows with a system message | %d | %d |"
        % (n(tr, lambda r: len(r["prompt"]) == 2), n(va, lambda r: len(r["prompt"]) == 2))
    )
    out.append(
        "| rows with margin 1.0 / 0.5 | %d / %d | %d / %d |"
        % (
            n(tr, lambda r: r.get("margin") == 1.0),
            n(tr, lambda r: r.get("margin") == 0.5),
            n(va, lambda r: r.get("margin") == 1.0),
            n(va, lambda r: r.get("margin") == 0.5),
        )
    )
    out.append(
        "| flag rows on non-standard clauses | %d | %d |"
        % (
            n(tr, lambda r: r["task_type"] == "flag" and r["chosen"][0]["content"] != "FLAG: STANDARD"),
            n(va, lambda r: r["task_type"] == "flag" and r["chosen"][0]["content"] != "FLAG: STANDARD"),
        )
    )
    for name, rows in splits:
        clauses = {r["prompt"][-1]["content"].split("\n\n", 1)[1] for r in rows}
        avg = sum(
            conv_words(r["prompt"]) + max(words(r["chosen"][0]["content"]), words(r["rejected"][0]["content"]))
            for r in rows
        ) / len(rows)
        out.append(
            "| %s: distinct clauses / avg words (prompt + longer answer) | %d / %.1f | |" % (name, len(clauses), avg)
            if name == "train"
            else "| %s: distinct clauses / avg words (prompt + longer answer) | | %d / %.1f |"
            % (name, len(clauses), avg)
        )
    return "\n".join(out)


def main():
    clauses = LB.load_bank()
    val_ids = sft_split(clauses)
    train_cl = [c for c in clauses if c["id"] not in val_ids]
    val_cl = [c for c in clauses if c["id"] in val_ids]

    sft_train = sft_answers(LEGAL / "train.jsonl")
    sft_val = sft_answers(LEGAL / "val.jsonl")
    # the replicated split must be the split the SFT files were built with
    assert {t for t, _ in sft_val} == {c["text"] for c in val_cl}, "split differs from data/legal/val.jsonl"
    assert {t for t, _ in sft_train} == {c["text"] for c in train_cl}, "split differs from data/legal/train.jsonl"
    for key in sft_train.keys() | sft_val.keys():
        c = next(c for c in clauses if c["text"] == key[0])
        assert LB.answer(key[1], c) == (sft_train.get(key) or sft_val.get(key)), key

    train = build_split("train", train_cl, sft_train)
    val = build_split("val", val_cl, sft_val)
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "val.jsonl", val)

    train_texts = {c["text"] for c in train_cl}
    val_texts = {c["text"] for c in val_cl}
    train_r = validate_file(HERE / "train.jsonl", sft_train, train_texts, val_texts)
    val_r = validate_file(HERE / "val.jsonl", sft_val, val_texts, train_texts)
    train_blob = "\n".join(m["content"] for r in train_r for m in r["prompt"] + r["chosen"] + r["rejected"])
    for t in val_texts:
        assert t not in train_blob, "val clause leaks into train"
    assert len(train_r) >= 240, len(train_r)
    assert 50 <= len(val_r) <= 70, len(val_r)
    for rows in (train_r, val_r):
        assert set(r["task_type"] for r in rows) == set(TASKS)
        fc = Counter(r["fault"] for r in rows)
        assert max(fc.values()) - min(fc.values()) <= 1, fc
        rej = Counter(r["rejected"][0]["content"] for r in rows if r["fault"] != "missed_flag")
        assert rej.most_common(1)[0][1] <= 2, rej.most_common(3)

    block = stats_block([("train", train_r), ("val", val_r)])
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
