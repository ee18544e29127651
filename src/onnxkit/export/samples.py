"""Texts for the export gates.

``SENTENCES``: plain English written for onnxkit, which the int8 recipe was developed on.
``heldout_texts()``: prose from other sources (data/heldout.txt, made by scripts/make_heldout.py),
which the gates judge quantized graphs and fused tokenizers on.
"""

from __future__ import annotations

from importlib import resources


def heldout_texts() -> list[str]:
    """The held-out texts: one a line, after a header of ``#`` lines naming their sources."""
    text = resources.files("onnxkit.export").joinpath("data/heldout.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


SENTENCES: tuple[str, ...] = (
    "Hi.",
    "Thanks!",
    "Where is the nearest pharmacy?",
    "The soup was cold when it arrived.",
    "My flight was cancelled and nobody at the desk could tell me why.",
    "Please send the invoice to the accounts team by Friday.",
    "The museum opens at ten and closes early on Sundays.",
    "He forgot his umbrella on the bus again.",
    "This laptop's battery barely lasts two hours, which makes it useless on trains.",
    "We planted tomatoes, beans and a row of sunflowers along the fence.",
    "The new policy reduces paperwork for small businesses.",
    "I loved every minute of the concert.",
    "The service was slow, the food was bland, and the bill was wrong.",
    "Can you recommend a good book about the history of mathematics?",
    "Heavy rain is expected across the north of the country tomorrow afternoon.",
    "The committee voted to extend the library's opening hours during exam season.",
    "Our dog barks at every delivery van that stops outside.",
    "The software update fixed the crash but introduced a new bug in the settings menu.",
    "She speaks four languages and is learning a fifth.",
    "Turn left after the bakery and the hotel is on your right.",
    "The quarterly results beat expectations, sending the shares up eight percent.",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "I would like to cancel my subscription, please.",
    "The bridge will be closed for repairs until the end of March.",
    "A good night's sleep improves memory and concentration.",
    "The referee's decision in the final minute angered the home crowd.",
    "Mix the flour and butter, then add the eggs one at a time.",
    "Volcanic ash grounded hundreds of flights across the region.",
    "This is the worst customer support I have ever dealt with.",
    "The children built a sandcastle with a moat and three towers.",
    "Researchers found that the new vaccine was effective in older adults.",
    "Is the parking free after six in the evening?",
    "He apologised for the delay and offered us a discount on the next order.",
    "The old lighthouse has been turned into a small museum about shipwrecks.",
    "Solar panels on the school roof now supply most of its electricity.",
    "I can't find my keys anywhere.",
    "The train was packed, so I stood all the way to Manchester.",
    "The river burst its banks after three days of continuous rain, flooding the lower streets.",
    "Our team shipped the feature two weeks ahead of schedule.",
    "The painting was sold at auction for far more than its estimate.",
    "Please remember to water the plants while I'm away.",
    "The hotel room was spotless and the staff were very friendly.",
    "Astronomers observed a comet passing close to the sun.",
    "My phone keeps disconnecting from the wireless network.",
    "The recipe needs two cups of rice and a pinch of saffron.",
    "Local elections will be held on the first Thursday in May.",
    "The marathon route passes through the park and along the river.",
    "I found the lecture on climate models surprisingly easy to follow.",
    "The printer on the third floor is out of toner again.",
    "He trained for months and finally swam across the lake.",
    "Unemployment fell slightly last month, according to official figures.",
    "The cat knocked a glass of water off the table.",
    "We need to book the venue before the prices go up.",
    "The documentary explains how coral reefs recover after bleaching.",
    "My order arrived damaged and the box had clearly been opened.",
    "The orchestra rehearsed the symphony twice before the premiere.",
    "Could you speak a little more slowly, please?",
    "Wind turbines were installed along the coast last summer.",
    "The manager praised the staff for handling the busy weekend so well.",
    "The medicine should be taken with food, twice a day.",
    "After years of decline, the town centre is busy again with new shops and cafes.",
    "The puzzle was harder than it looked.",
    "A power cut left the whole street in darkness for an hour.",
    "The students presented their projects to a panel of local engineers.",
)
