"""Build the general-instruction chat set: python data/general_chat/build.py

Short everyday instructions and answers, written for this project. Mixed into legal SFT as the usual guard
against forgetting (e.g. 10-20% of the examples). Its topics avoid those of data/general (the forgetting-check
set), so training on it does not inflate the forgetting scores. The last eight pairs are validation.
"""

from __future__ import annotations

import json
from pathlib import Path

TASK_TYPE = "general"

PAIRS = [
    (
        "Give me three tips for writing a clear email.",
        "1. Put the main point or request in the first two sentences. 2. Keep paragraphs short and use one topic "
        "per paragraph. 3. End with a clear next step, such as a date by which you need a reply.",
    ),
    (
        "Rewrite this sentence to be more polite: Send me the report now.",
        "Could you please send me the report when you have a moment? I would like to review it today.",
    ),
    (
        "What is the difference between a budget and a forecast?",
        "A budget is a plan of what you intend to earn and spend over a period. A forecast is an estimate of what "
        "you now expect to happen, updated as new information arrives, and it is often compared with the budget.",
    ),
    (
        "Summarise in one sentence: The meeting was moved from Tuesday to Thursday because two team members were "
        "travelling, and the agenda will stay the same.",
        "The meeting moves to Thursday, with the same agenda, because two team members are travelling on Tuesday.",
    ),
    (
        "Suggest a name for a small bakery that sells sourdough bread.",
        'How about "The Rising Crust"? It hints at sourdough\'s slow rise and is easy to remember.',
    ),
    (
        "How do I convert 3 hours and 45 minutes into minutes?",
        "Multiply the hours by 60 and add the minutes: 3 x 60 = 180, and 180 + 45 = 225 minutes.",
    ),
    ("Turn this list into a sentence: apples, pears, plums.", "We bought apples, pears and plums."),
    (
        "Explain what a password manager does.",
        "A password manager stores your passwords in an encrypted vault protected by one main password. It can "
        "create long random passwords for each site and fill them in for you, so you do not reuse passwords.",
    ),
    (
        "Write a short thank-you note to a colleague who helped me finish a project.",
        "Thank you for your help on the project this week. Your quick reviews and good ideas made a real "
        "difference, and we finished on time because of you.",
    ),
    (
        "What does it mean to prioritise tasks?",
        "It means deciding which tasks matter most and doing those first, usually by weighing how important and "
        "how urgent each one is, so that limited time goes to the work with the biggest effect.",
    ),
    (
        "Give two ways to save energy at home.",
        "Switch off lights and devices you are not using, and lower the heating by one degree; both cut energy "
        "use without much effort.",
    ),
    ("Correct the grammar: She don't like working late.", "She doesn't like working late."),
    (
        "What is a good way to start a presentation?",
        "Start with a short question, story or surprising fact that connects to your topic, then say in one "
        "sentence what the audience will learn.",
    ),
    (
        "Explain the term deadline in simple words.",
        "A deadline is the latest time by which something must be finished or handed in.",
    ),
    (
        "List the steps to make a cup of tea.",
        "1. Boil water. 2. Put a tea bag in a cup. 3. Pour the hot water over it. 4. Wait three to five minutes. "
        "5. Remove the tea bag and add milk or sugar if you like.",
    ),
    (
        "How can I remember names better when I meet people?",
        "Repeat the name when you are introduced, use it once in the conversation, and link it to something you "
        "notice about the person. Writing it down afterwards also helps.",
    ),
    (
        "Make this title shorter: A Complete and Detailed Guide to Planning Your First Garden.",
        "Planning Your First Garden.",
    ),
    (
        "What is the difference between a meeting agenda and meeting minutes?",
        "An agenda lists the topics to discuss and is shared before the meeting. Minutes record what was said, "
        "decided and assigned, and are written during or after it.",
    ),
    (
        "Give me a polite way to decline an invitation.",
        "Thank you so much for inviting me. Unfortunately I can't make it that day, but I hope it goes well and "
        "I'd love to join next time.",
    ),
    (
        "If a train leaves at 14:20 and the trip takes 95 minutes, when does it arrive?",
        "95 minutes is 1 hour and 35 minutes, so it arrives at 15:55.",
    ),
    (
        "Explain what a spreadsheet is used for.",
        "A spreadsheet organises data in rows and columns and can calculate with it, so people use it for "
        "budgets, lists, schedules and simple analysis.",
    ),
    (
        "Write a one-line reminder to submit expense reports by Friday.",
        "Reminder: please submit your expense reports by Friday.",
    ),
    (
        "What should I pack for a one-day hike?",
        "Water, snacks, a map or charged phone, sun protection, a light waterproof layer, comfortable shoes and a "
        "small first-aid kit.",
    ),
    ("Describe the colour blue to someone in one sentence.", "Blue is the cool, calm colour of a clear daytime sky."),
    (
        "How do I politely ask for more time on a task?",
        "Explain briefly why you need it, propose a new date, and offer an update on what is already done, for "
        'example: "Could I have until Wednesday? The draft is ready and I am checking the figures."',
    ),
    ("Sort these numbers from smallest to largest: 42, 7, 19, 3.", "3, 7, 19, 42."),
    (
        "What is the purpose of a to-do list?",
        "A to-do list keeps track of tasks so you do not forget them, helps you decide what to do next, and gives "
        "a sense of progress as items are ticked off.",
    ),
    (
        "Give a short definition of teamwork.",
        "Teamwork is people working together toward a shared goal, each contributing their skills and supporting "
        "one another.",
    ),
    ("Rewrite in plain English: Please be advised that the office will be closed.", "The office will be closed."),
    (
        "What is a simple way to check that a total is right?",
        "Add the numbers a second time in a different order, or estimate by rounding each number and see whether "
        "the total is close.",
    ),
    (
        "Suggest a healthy snack for the afternoon.",
        "A handful of nuts with an apple gives you fibre, protein and steady energy.",
    ),
    ("How many minutes are there in a day?", "There are 24 hours of 60 minutes, so 24 x 60 = 1,440 minutes."),
    # validation
    (
        "Give me two tips for a productive morning.",
        "Plan your three most important tasks the evening before, and start with the hardest one before opening email.",
    ),
    (
        "Rewrite this sentence to be more formal: Thanks a lot for the quick reply.",
        "Thank you very much for your prompt response.",
    ),
    (
        "What is the difference between a goal and a task?",
        "A goal is the result you want to achieve; a task is a single action you take on the way to it.",
    ),
    ("Correct the spelling: I recieved the pakage yesterday.", "I received the package yesterday."),
    ("Turn this into a question: The shop opens at nine.", "What time does the shop open?"),
    ("If a film starts at 19:45 and lasts 2 hours and 10 minutes, when does it end?", "It ends at 21:55."),
    (
        "Explain what a calendar invitation is.",
        "It is a message that adds an event to someone's digital calendar, with the time, place and details, and "
        "lets them accept or decline.",
    ),
    (
        "Write a one-sentence welcome message for a new team member.",
        "Welcome to the team, we are glad to have you and look forward to working together.",
    ),
]


def main() -> None:
    here = Path(__file__).resolve().parent
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "task_type": TASK_TYPE}
        for q, a in PAIRS
    ]
    for name, part in (("train.jsonl", rows[:-8]), ("val.jsonl", rows[-8:])):
        (here / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in part))
    print(f"{len(rows)} conversations: {len(rows) - 8} train, 8 val")


if __name__ == "__main__":
    main()
