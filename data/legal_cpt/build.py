"""Build the legal-prose continual pre-training set: python data/legal_cpt/build.py

Plain explanatory prose about contract clauses, written for this project (not legal advice). It shares the
vocabulary of data/legal (the twelve clause types, party role words) but contains none of its clauses, so
continual pre-training on it does not leak the SFT validation set. The last two passages are validation.
"""

from __future__ import annotations

import json
from pathlib import Path

TASK_TYPE = "legal_prose"

PASSAGES = [
    (
        "confidentiality",
        "A confidentiality clause protects information that one party shares with the other during a deal. "
        "The party that shares information is usually called the Discloser and the party that receives it the "
        "Recipient. A well drafted clause defines what counts as confidential information, often any business, "
        "technical or financial information marked as confidential or that a reasonable person would treat as "
        "confidential. It then says what the Recipient may do with it: use it only for the agreed purpose and "
        "share it only with employees and advisers who need to know it and who are bound by similar duties. "
        "Standard exceptions cover information that is already public, that the Recipient knew before, that it "
        "developed on its own, or that a court or regulator orders it to disclose. The duty usually lasts for a "
        "fixed number of years after the agreement ends, although trade secrets are often protected for as long "
        "as they remain secret. At the end of the relationship the Recipient is asked to return or destroy the "
        "information and to confirm in writing that it has done so.",
    ),
    (
        "limitation of liability",
        "A limitation of liability clause sets the most that one party can be made to pay the other if things "
        "go wrong. The usual structure has two parts. First, a cap: total liability under the contract is "
        "limited to an amount, commonly the fees paid or payable in the twelve months before the claim, or a "
        "fixed sum. Second, an exclusion of certain kinds of loss, such as loss of profit, loss of revenue, loss "
        "of data or indirect and consequential loss. Courts read these clauses carefully and against the party "
        "relying on them, so clear wording matters. Most legal systems do not allow a party to exclude liability "
        "for death or personal injury caused by negligence, or for fraud, and a sensible clause says so "
        "expressly. A cap of zero, or a cap that applies to one party only, is a warning sign in a review. "
        "Lawyers also check whether the cap is mutual, whether it is per claim or in aggregate, and whether "
        "indemnities and confidentiality breaches sit inside or outside the cap.",
    ),
    (
        "indemnity",
        "An indemnity is a promise by one party to cover the other for a particular kind of loss, usually loss "
        "caused by claims from third parties. A supplier might indemnify a customer against claims that its "
        "product infringes someone else's intellectual property, and a customer might indemnify a supplier "
        "against claims arising from content the customer uploads. Unlike an ordinary claim for breach of "
        "contract, an indemnity can allow recovery without proving that the loss was foreseeable, which is why "
        "it is negotiated closely. A balanced indemnity is limited to losses caused by the indemnifying party's "
        "own acts, requires the protected party to give prompt notice of a claim, lets the indemnifying party "
        "take control of the defence, and forbids settlement without consent. Reviewers look out for indemnities "
        "that are uncapped, that cover the protected party's own negligence, or that apply to any loss at all "
        "connected with the contract, since these shift far more risk than the commercial deal suggests.",
    ),
    (
        "termination",
        "Termination clauses explain how and when a contract can be brought to an end. Most agreements allow "
        "either party to terminate at once by written notice if the other commits a material breach that it "
        "fails to remedy within a cure period, often thirty days, or if the other becomes insolvent. Many also "
        "allow termination for convenience, that is without any reason, on a longer notice period such as "
        "ninety days. A reviewer checks that these rights are balanced: a clause that lets only one party walk "
        "away at will, or on very short notice, can leave the other with investments it cannot recover. The "
        "clause should also say what happens after termination. Typical consequences are that unpaid fees "
        "become due, that confidential information is returned, that licences end, and that certain clauses, "
        "such as confidentiality, limitation of liability and governing law, survive so that they still apply "
        "to disputes about the period before the contract ended.",
    ),
    (
        "payment",
        "Payment clauses set out the price, when it is due and what happens if it is paid late. A common pattern "
        "is that the supplier invoices monthly in arrears and the customer pays each undisputed invoice within "
        "thirty days of receipt. The clause may allow the customer to withhold the disputed part of an invoice "
        "while the parties resolve the disagreement in good faith, and it often gives the supplier a right to "
        "interest on late payments at a stated rate above a bank's base rate. Reviewers look at whether prices "
        "are fixed for the term or can be increased, and if they can, whether increases are limited, for "
        "example to once a year and in line with an inflation index. A clause that lets the supplier change its "
        "prices at any time without notice, or that requires payment of the whole contract value in advance, "
        "is unusual and should be flagged. Taxes such as value added tax are normally stated to be payable in "
        "addition to the price.",
    ),
    (
        "governing law",
        "A governing law clause chooses the legal system that will be used to interpret the contract. It is "
        "usually paired with a jurisdiction clause that chooses the courts that will hear any dispute. The two "
        "are different questions: the courts of one country can apply the law of another, although this is "
        "slow and expensive, so parties normally choose the same place for both. Jurisdiction can be exclusive, "
        "meaning claims may only be brought in the chosen courts, or non-exclusive, meaning the chosen courts "
        "are available but not mandatory. Some contracts replace the courts with arbitration, which is private "
        "and whose awards are easier to enforce across borders. A reviewer checks that the chosen law is one "
        "the client can live with, that the clause is consistent with any dispute resolution steps elsewhere "
        "in the contract, such as escalation to senior managers or mediation, and that the choice does not "
        "strip a consumer or employee of protection that local law does not allow them to give up.",
    ),
    (
        "intellectual property ownership",
        "Intellectual property clauses decide who owns what is created during a project. The starting point is "
        "usually that each party keeps the rights it already had before the contract, often called background "
        "intellectual property. The harder question is who owns new material, the foreground. In a services or "
        "consultancy agreement the client commonly owns the deliverables it pays for, while the consultant "
        "keeps its general know-how, tools and templates and grants the client a licence to use any of them "
        "that are built into the deliverables. In a software licence the licensor keeps ownership and the "
        "licensee only receives a right to use. A reviewer checks that the assignment of rights is effective "
        "under the governing law, that moral rights are waived where that is allowed, and that the client is "
        "not accidentally assigning its own background material. A clause that transfers all of one party's "
        "existing intellectual property to the other, with no payment, is highly unusual.",
    ),
    (
        "non-compete",
        "A non-compete clause restricts a party from working in competition with the other for a period of time "
        "and within an area. In employment contracts these restrictions apply after the employee leaves and are "
        "treated with suspicion by courts, because they limit a person's ability to earn a living. To be "
        "enforceable in many places a restriction must protect a legitimate business interest, such as trade "
        "connections or confidential information, and go no further than reasonably necessary. Six or twelve "
        "months, limited to the kind of work the employee actually did and to the areas where the employer "
        "trades, is a common starting point. A restriction that is perpetual, worldwide or covers every kind of "
        "business is likely to be unenforceable and should be flagged. Related restrictions include "
        "non-solicitation, which stops a former employee from approaching clients, and non-dealing, which stops "
        "them from working for those clients even if the clients approach them first.",
    ),
    (
        "force majeure",
        "A force majeure clause excuses a party from performing while an event beyond its reasonable control "
        "prevents it, such as a natural disaster, war, an epidemic, a government order or a failure of public "
        "utilities. Such a clause is a creature of contract, so its exact wording decides what it covers. "
        "Good drafting requires the affected party to notify the other promptly, to take reasonable steps to "
        "limit the effect of the event, and to resume performance as soon as it can. Because a long "
        "interruption can make the contract pointless, the clause often lets either party terminate if the "
        "event continues for a stated period, for example sixty or ninety days. Reviewers check that ordinary "
        "commercial difficulties, such as a rise in costs or a shortage of staff, are not listed as force "
        "majeure events, and that the obligation to pay money is not suspended, since a lack of funds is "
        "rarely accepted as something beyond a party's control.",
    ),
    (
        "warranty",
        "A warranty is a promise that a statement of fact is true or that goods or services will meet a "
        "standard. A supplier may warrant that its goods will conform to their specification and be free from "
        "defects in materials and workmanship for twelve months after delivery, or that services will be "
        "performed with reasonable skill and care. The clause then sets the remedy: typically the supplier "
        "will repair or replace defective goods, or perform the services again, and sometimes the buyer may "
        "claim a refund if that fails. Suppliers often add a disclaimer excluding all other warranties, "
        "including those implied by law about quality and fitness for purpose. Reviewers check that the "
        "warranty period is long enough to discover defects, that the exclusive remedy is workable, and that "
        "the disclaimer is not so wide that the buyer is left with no real promise at all, as when goods or "
        "software are supplied entirely as is.",
    ),
    (
        "assignment",
        "An assignment clause says whether a party may transfer its rights, or its whole contract, to someone "
        "else. The usual position is that neither party may assign or transfer the agreement without the prior "
        "written consent of the other, and that consent is not to be unreasonably withheld. Common exceptions "
        "allow a party to assign to a company in its own group, or to a buyer of the whole of its business, "
        "provided it gives notice. A lender will often insist on a free right to assign a loan to another bank, "
        "while the borrower's rights are personal to it. Reviewers look for clauses that are one-sided, for "
        "example where one party may assign freely to anyone, including a competitor of the other, while the "
        "other party may not assign at all. It is also worth checking whether a change of control of a party, "
        "such as a sale of its shares, is treated as an assignment that needs consent.",
    ),
    (
        "data protection",
        "Data protection clauses deal with personal data that one party handles for the other. Where a service "
        "provider processes personal data on behalf of a customer, the law in many countries requires a written "
        "agreement under which the provider acts only on the customer's documented instructions, keeps the data "
        "secure, ensures its staff are bound by confidentiality, uses subcontractors only with authorisation, "
        "helps the customer respond to requests from individuals, notifies the customer of a personal data "
        "breach without undue delay, and deletes or returns the data when the services end. Transfers of data "
        "to other countries need a lawful basis. Reviewers flag clauses that allow the provider to use the data "
        "for its own purposes, such as marketing or training its products, that set long deadlines for breach "
        "notification, or that deny the customer any right to audit how its data is handled.",
    ),
    (
        "definitions and interpretation",
        "Most commercial contracts open with a definitions clause. Defined terms begin with a capital letter and "
        "are used consistently throughout, so that a word such as Services or Confidential Information always "
        "means exactly what the definition says. An interpretation clause follows with rules for reading the "
        "document: headings do not affect meaning, the singular includes the plural, a reference to a statute "
        "includes it as amended, and words such as including do not limit the general words before them. When "
        "reviewing, lawyers trace each important defined term back to its definition, because a narrow or "
        "unusual definition can change the effect of a clause that looks standard. They also look for terms that "
        "are defined but never used, or used but never defined, which are signs of careless drafting and can "
        "lead to disputes about what the parties meant.",
    ),
    (
        "notices",
        "A notices clause explains how formal communications under the contract must be given, for example a "
        "notice of breach or of termination. It usually requires notices to be in writing and delivered by hand, "
        "by recorded post or by email to addresses set out in the agreement, and it states when a notice is "
        "treated as received, such as on delivery by hand or at a set time after sending. These details matter "
        "because many rights depend on a notice period, and a notice sent to the wrong address may not start "
        "the clock. A practical clause lets each party change its notice address by telling the other, and "
        "makes clear whether email is acceptable for notices of legal proceedings, which many lawyers prefer to "
        "exclude. When a client wants to terminate or claim, the first step is often to read the notices clause "
        "and follow it exactly.",
    ),
    (
        "entire agreement",
        "An entire agreement clause states that the written contract contains everything the parties agreed and "
        "replaces earlier discussions, drafts and side letters. Its purpose is certainty: a party cannot later "
        "rely on a promise made in a meeting that never made it into the document. Such clauses are often "
        "paired with a statement that neither party has relied on any representation not set out in the "
        "contract, which limits claims for misrepresentation. Most legal systems will not let a party escape "
        "liability for fraud in this way, and careful drafting says so. When reviewing, lawyers check that "
        "important documents, such as a statement of work, a price list or a data processing schedule, are "
        "actually attached or referred to, because anything outside the entire agreement clause may otherwise "
        "fall away.",
    ),
    (
        "variation and waiver",
        "Variation clauses say how the contract may be changed, usually only by a written document signed by "
        "both parties. This prevents informal emails or conversations from quietly rewriting the deal. A waiver "
        "clause adds that if a party does not enforce a right straight away, it has not given that right up, "
        "and that a waiver of one breach is not a waiver of later breaches. Together these clauses protect a "
        "party that tolerates small delays in order to keep a relationship going. In practice, however, parties "
        "often behave as if the contract had changed, and courts sometimes give effect to that conduct despite "
        "the clause. A reviewer advises the client to record agreed changes formally, and to reserve its rights "
        "in writing when it chooses not to act on a breach.",
    ),
    (
        "severability and survival",
        "A severability clause provides that if a court finds part of the contract invalid or unenforceable, the "
        "rest of the contract continues to apply, and the invalid part is treated as modified to the minimum "
        "extent needed to make it valid. This is especially relevant to restrictive covenants and to limitation "
        "clauses, which are the parts most often challenged. A survival clause lists the provisions that keep "
        "their force after the contract ends, such as confidentiality, intellectual property, limitation of "
        "liability, payment of amounts already due and governing law. Without it there can be arguments about "
        "whether a duty ended with the contract. Reviewers check that the survival list matches the clauses the "
        "client would need to rely on in a dispute after termination.",
    ),
    (
        "reading a contract for review",
        "A contract review is more reliable when it follows a fixed order. The reviewer first identifies the "
        "parties, the type of contract and the commercial deal it records. Next come the clauses that allocate "
        "risk: limitation of liability, indemnities, warranties and insurance. Then the clauses that control the "
        "relationship over time: term, renewal, termination and the consequences of termination. After that, "
        "the clauses that protect assets: confidentiality, intellectual property and data protection. Finally "
        "the boilerplate, such as assignment, notices, governing law and entire agreement. For each clause the "
        "reviewer asks whether it is market standard for this kind of contract, whether it is balanced between "
        "the parties, and whether it matches what the client expects. Anything unusual is flagged with a short "
        "reason and, where possible, a suggested revision.",
    ),
    (
        "renewal and term",
        "The term clause fixes when a contract starts and how long it lasts. A fixed term ends automatically on "
        "a stated date, while an evergreen contract continues until one party terminates it. Many commercial "
        "agreements combine the two: an initial term of one or two years followed by automatic renewal for "
        "further periods of twelve months unless either party gives notice, often at least ninety days before "
        "the end of the current period. Automatic renewal is convenient but can trap a customer that forgets "
        "the notice window, so reviewers note the dates in a calendar and check whether prices may rise on "
        "renewal. A clause that renews indefinitely with no way for one party to leave, or that requires an "
        "unusually long notice period from only one side, should be flagged.",
    ),
    (
        "remedies and specific performance",
        "When a contract is broken, the usual remedy is damages: money meant to put the injured party in the "
        "position it would have been in if the contract had been performed. Damages must be proved, and losses "
        "that are too remote or that the injured party could reasonably have avoided are not recovered. Some "
        "breaches cannot be put right with money, such as the disclosure of a trade secret, so confidentiality "
        "and intellectual property clauses often state that the injured party may seek an injunction to stop "
        "the breach. Courts can also order specific performance, requiring a party to do what it promised, but "
        "they do so rarely and only where damages would not be adequate. Some contracts add service credits, a "
        "pre-agreed reduction in fees when service levels are missed, which must be drafted as a genuine "
        "pre-estimate or a proportionate protection of a legitimate interest rather than a penalty.",
    ),
]


def main() -> None:
    here = Path(__file__).resolve().parent
    rows = [{"text": text, "topic": topic, "task_type": TASK_TYPE} for topic, text in PASSAGES]
    for name, part in (("train.jsonl", rows[:-2]), ("val.jsonl", rows[-2:])):
        (here / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in part))
    words = sum(len(text.split()) for _, text in PASSAGES)
    print(f"{len(rows)} passages, {words} words: {len(rows) - 2} train, 2 val")


if __name__ == "__main__":
    main()
