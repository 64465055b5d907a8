"""Synthetic agent episodes: a user request, the calls that answer it, what each call returned, and
the answer that quotes it. Wordings, values and observation shapes are varied on purpose: the
adapter must learn the choice of tool and the reading of results, not a phrase.

Observations copy the real tools' shapes (a calculator number, python's `["stdout:\\n…"]`, a
search hit list, a job summary dict, `[image file-…: …]` for a picture made). The wordings here
never reuse the benchmark's (benchmarks/agent_tasks/tasks.jsonl): a test checks it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any



@dataclass
class Call:
    tool: str
    arguments: dict[str, Any]
    observation: str
    thought: str
    # The arguments as a ReWOO plan writes them, before any tool runs ("#E1", "#E1.fine_tuned_model").
    planned: dict[str, Any] | None = None
    # A mistake the run then mends: shown as context, never trained on.
    wrong: bool = False


@dataclass
class Episode:
    kind: str
    request: str
    calls: list[Call]
    answer: str
    # An earlier exchange in the same thread, whose results this request builds on.
    before: Episode | None = None
    # ReWOO can write this plan (all calls known up front, references only to whole results or fields).
    plannable: bool = True
    extra_tools: list[dict[str, Any]] = field(default_factory=list)


def hexid(rng: random.Random, n: int = 24) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def file_id(rng: random.Random) -> str:
    return f"file-{hexid(rng)}"


def pick(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


def obs(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- arithmetic -------------------------------------------------------------------------------

def _number(rng: random.Random) -> int:
    return rng.choice([rng.randint(2, 99), rng.randint(100, 999), rng.randint(1000, 9999)])


def _calculated(expression: str) -> str:
    """What the calculator tool itself returns for `expression` (its observation text)."""
    from tools.builtin.calculator import evaluate

    return json.dumps(evaluate(expression))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _divisible(rng: random.Random) -> tuple[int, int]:
    """A dividend and a divisor that divides it: a division with a whole answer."""
    b = rng.randint(2, 40)
    return b * rng.randint(2, 250), b


# Things counted in groups, for word problems: (the group, the things in it, the people who share them).
_GROUPS = [("boxes", "pens", "pupils"), ("pallets", "bricks", "builders"), ("shelves", "books", "readers"),
           ("buses", "passengers", "guides"), ("trays", "eggs", "cooks"), ("bags", "apples", "children"),
           ("rows", "seats", "ushers"), ("packs", "cards", "players"), ("cartons", "bottles", "shops"),
           ("teams", "players", "coaches"), ("pages", "words", "editors"), ("racks", "servers", "engineers")]


def word_problem(rng: random.Random, a: int, b: int) -> tuple[str, str]:
    """An everyday story with two numbers (a request that never says "multiply" or "add"), and the
    expression it asks for."""
    group, thing, people = rng.choice(_GROUPS)
    kind = rng.choice(["mul", "mul", "add", "sub", "div", "rate"])
    if kind == "mul":
        return pick(rng, f"We have {a} {group} with {b} {thing} in each. How many {thing} in total?",
                    f"There are {a} {group}, each holding {b} {thing}; how many {thing} altogether?",
                    f"{a} {group} of {b} {thing} apiece - what's the total number of {thing}?",
                    f"If every one of the {a} {group} has {b} {thing}, how many {thing} are there?"), f"{a} * {b}"
    if kind == "add":
        return pick(rng, f"{a} {thing} arrived on Monday and {b} more on Tuesday. How many {thing} now?",
                    f"I counted {a} {thing} in the morning and another {b} in the afternoon; what's the total?"), \
            f"{a} + {b}"
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        return pick(rng, f"We had {a} {thing} and gave away {b}. How many are left?",
                    f"Out of {a} {thing}, {b} were damaged; how many are still good?"), f"{a} - {b}"
    if kind == "div":
        a, b = _divisible(rng)
        return pick(rng, f"{a} {thing} shared equally among {b} {people}: how many does each get?",
                    f"Split {a} {thing} evenly between {b} {people}. How many each?"), f"{a} / {b}"
    hours = rng.randint(2, 12)
    return pick(rng, f"A machine makes {a} {thing} an hour. How many after {hours} hours?",
                f"At {a} {thing} per hour, how many {thing} in {hours} hours?"), f"{a} * {hours}"


def arithmetic(rng: random.Random) -> Episode:
    a, b = _number(rng), _number(rng)
    kind = rng.choice(["mul", "add", "sub", "div", "pct", "pow", "sqrt", "fact", "mixed", "story", "story"])
    if kind == "story":
        text, expression = word_problem(rng, a, b)
    elif kind == "mul":
        text = pick(rng, f"Please multiply {a} by {b}", f"{a} times {b}?", f"how much is {a} x {b}",
                    f"I need the product of {a} and {b}.", f"calc {a}*{b}", f"What do you get if you multiply {a} and {b}?")
        expression = f"{a} * {b}"
    elif kind == "add":
        text = pick(rng, f"add {a} to {b}", f"Sum up {a} and {b} for me.", f"{a} plus {b} equals?",
                    f"What's the total of {a} and {b}?", f"I spent {a} and then {b}; how much altogether?")
        expression = f"{a} + {b}"
    elif kind == "sub":
        a, b = max(a, b), min(a, b)
        text = pick(rng, f"Subtract {b} from {a}.", f"{a} take away {b}", f"what's left if I remove {b} from {a}?",
                    f"difference between {a} and {b}?", f"How much is {a} less {b}?")
        expression = f"{a} - {b}"
    elif kind == "div":
        a, b = _divisible(rng)
        text = pick(rng, f"Divide {a} by {b}.", f"{a} split into {b} equal parts is how much each?",
                    f"how many times does {b} go into {a}", f"{a} over {b}?", f"Share {a} between {b} people evenly.")
        expression = f"{a} / {b}"
    elif kind == "pct":
        p = rng.choice([5, 8, 10, 12.5, 15, 20, 25, 30, 40, 75])
        text = pick(rng, f"Work out {_fmt(p)} percent of {a}.", f"{_fmt(p)}% of {a} is?",
                    f"A {_fmt(p)}% tip on a bill of {a}: how much is the tip?", f"take {_fmt(p)} per cent of {a}")
        expression = f"{a} * {_fmt(p)} / 100"
    elif kind == "pow":
        base, exp = rng.randint(2, 15), rng.randint(2, 6)
        text = pick(rng, f"Raise {base} to the {exp}th power.", f"{base}^{exp}?", f"What's {base} to the power {exp}",
                    f"{base} multiplied by itself {exp} times", f"work out {base}**{exp} for me",
                    *([f"{base} cubed, please", f"the cube of {base}?"] if exp == 3 else []),
                    *([f"{base} squared is?", f"square {base} for me"] if exp == 2 else []))
        expression = f"{base} ^ {exp}"
    elif kind == "sqrt":
        root = rng.randint(4, 120)
        text = pick(rng, f"Find the square root of {root * root}.", f"sqrt of {root * root}?",
                    f"Which number squared gives {root * root}?", f"root of {root * root} please")
        expression = f"sqrt({root * root})"
    elif kind == "fact":
        n = rng.randint(3, 12)
        text = pick(rng, f"Factorial of {n}?", f"{n}! = ?", f"What is the factorial of {n}", f"{n} factorial, please")
        expression = f"factorial({n})"
    else:
        c = rng.randint(2, 30)
        text = pick(rng, f"First add {a} and {b}, then multiply the sum by {c}.", f"({a} + {b}) * {c} = ?",
                    f"Take {a} plus {b} and times it by {c}.", f"What is {c} times the sum of {a} and {b}?")
        expression = f"({a} + {b}) * {c}"
    result = _calculated(expression)  # what the real tool answers, not a sum done here
    thought = pick(rng, "Arithmetic: use the calculator.", "Compute it with the calculator.", "This needs the calculator.")
    answer = pick(rng, f"{expression} = {result}", f"The answer is {result}.", f"It comes to {result}.",
                  f"{result} ({expression}).")
    return Episode("calculator", text, [Call("calculator", {"expression": expression}, result, thought)],
                   answer)


def two_calculations(rng: random.Random) -> Episode:
    a, b, c = _number(rng), _number(rng), rng.randint(2, 50)
    first = a * b
    op, word = rng.choice([("+", "add"), ("-", "subtract"), ("*", "multiply by"), ("/", "divide by")])
    second = {"+": first + c, "-": first - c, "*": first * c, "/": first / c}[op]
    text = pick(rng, f"Multiply {a} by {b}, and then {word} {c}.",
                f"Work out {a} x {b}; after that {word} {c} using that result.",
                f"take the product of {a} and {b} and {word} {c}")
    calls = [Call("calculator", {"expression": f"{a} * {b}"}, _calculated(f"{a} * {b}"), "First the product.",
                  {"expression": f"{a} * {b}"}),
             Call("calculator", {"expression": f"{_fmt(first)} {op} {c}"}, _calculated(f"{_fmt(first)} {op} {c}"),
                  f"Now {word} {c} using {_fmt(first)}.", {"expression": f"#E1 {op} {c}"})]
    return Episode("calculator_chain", text, calls, f"{a} * {b} = {_fmt(first)}, and {_fmt(first)} {op} {c} = {_fmt(second)}.")


# --- python -----------------------------------------------------------------------------------

WORDS = ["lantern", "orbit", "pepper", "galaxy", "marble", "tundra", "violin", "harbor", "quartz", "meadow",
         "rocket", "saffron", "walnut", "canyon", "biscuit", "compass"]


def python_task(rng: random.Random) -> Episode:
    word = rng.choice(WORDS)
    numbers = rng.sample(range(1, 60), rng.randint(3, 6))
    choices = [
        (f"Write some Python that flips the text '{word}' backwards.", f"print('{word}'[::-1])", word[::-1]),
        (f"With code, turn '{word}' into capital letters.", f"print('{word}'.upper())", word.upper()),
        (f"run code to count the vowels in '{word}'", f"print(sum(c in 'aeiou' for c in '{word}'))",
         str(sum(ch in "aeiou" for ch in word))),
        (f"Using a script, order these numbers from small to large: {numbers}", f"print(sorted({numbers}))",
         str(sorted(numbers))),
        (f"Execute Python to get the largest value in {numbers}.", f"print(max({numbers}))", str(max(numbers))),
        (f"program it: the mean of {numbers}", f"print(sum({numbers}) / len({numbers}))",
         _fmt(sum(numbers) / len(numbers))),
        (f"Can you code up how many characters '{word}' has?", f"print(len('{word}'))", str(len(word))),
        (f"Python please: is {numbers[0]} a prime number?",
         f"n = {numbers[0]}\nprint(n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1)))",
         str(numbers[0] > 1 and all(numbers[0] % d for d in range(2, int(numbers[0] ** 0.5) + 1)))),
        (f"Use code to list the even numbers in {numbers}.", f"print([n for n in {numbers} if n % 2 == 0])",
         str([n for n in numbers if n % 2 == 0])),
        (f"Script that repeats '{word}' twice with a space between", f"print('{word} {word}')", f"{word} {word}"),
        (f"Run a snippet that sums the numbers from 1 to {numbers[-1]}.", f"print(sum(range(1, {numbers[-1] + 1})))",
         str(sum(range(1, numbers[-1] + 1)))),
        (f"In Python, how many times does 'o' occur in '{word}'?", f"print('{word}'.count('o'))", str(word.count("o"))),
        (f"Python: print the squares of {numbers}.", f"print([n * n for n in {numbers}])", str([n * n for n in numbers])),
        (f"With a script, glue {[word, word[::-1]]} together using commas.", f"print(','.join({[word, word[::-1]]}))",
         f"{word},{word[::-1]}"),
        (f"Use python to print {numbers} in reverse order.", f"print(list(reversed({numbers})))",
         str(list(reversed(numbers)))),
        (f"Code it: the smallest number in {numbers}.", f"print(min({numbers}))", str(min(numbers))),
        (f"Print '{word}' in title case with Python.", f"print('{word}'.title())", word.title()),
        (f"Write python that adds up the squares from 1 to {len(numbers) + 3}.",
         f"print(sum(n * n for n in range(1, {len(numbers) + 4})))", str(sum(n * n for n in range(1, len(numbers) + 4)))),
        (f"python: the first {len(numbers)} odd numbers", f"print([2 * n + 1 for n in range({len(numbers)})])",
         str([2 * n + 1 for n in range(len(numbers))])),
        (f"Run Python to check whether '{word}' is a palindrome.", f"print('{word}' == '{word}'[::-1])",
         str(word == word[::-1])),
        (f"Use code to print '{word}' three times with no spaces.", f"print('{word}' * 3)", word * 3),
        (f"Python please: the length of the list {numbers}", f"print(len({numbers}))", str(len(numbers))),
    ]
    text, code, out = rng.choice(choices)
    observation = obs([f"stdout:\n{out}"])
    return Episode("python", text, [Call("python", {"code": code}, observation,
                                         pick(rng, "Run code with python.", "Write and run Python."))],
                   pick(rng, f"The output is {out}.", f"Result: {out}", f"{out}"))


# What a user asks Python to do, said as an instruction after "Use Python to …"-like openings: the
# small model must turn the task itself into code, not copy a fixed request.
_PYTHON_OPENINGS = ["Use Python to ", "Using Python, ", "With Python, ", "Write Python code to ", "In Python, ",
                    "Run a Python snippet to ", "Please use python to ", "Can you use Python to ", "Python: ",
                    "Write a short script to ", "Use code to ", "Run some code to "]


def _python_instructions(rng: random.Random) -> list[tuple[str, str]]:
    """(the task in words, the program that does it), with fresh words and numbers each time."""
    word, other, third = rng.sample(WORDS, 3)
    numbers = rng.sample(range(1, 90), rng.randint(3, 6))
    n, k = rng.randint(4, 30), rng.randint(3, 9)
    separator, separator_said = rng.choice([("-", "dashes"), (", ", "commas"), (" ", "spaces"), ("+", "plus signs"),
                                            ("/", "slashes"), ("_", "underscores")])
    power = rng.randint(2, 12)
    return [
        (f"reverse the word '{word}'", f"print('{word}'[::-1])"),
        (f"turn the text '{word}' around", f"print('{word}'[::-1])"),
        (f"print '{word}' in capital letters", f"print('{word}'.upper())"),
        (f"make '{word.upper()}' lower case", f"print('{word.upper()}'.lower())"),
        (f"print '{word}' with a capital first letter", f"print('{word}'.capitalize())"),
        (f"add up the squares of the numbers 1 through {n}", f"print(sum(i * i for i in range(1, {n + 1})))"),
        (f"sum the cubes from 1 to {k}", f"print(sum(i ** 3 for i in range(1, {k + 1})))"),
        (f"count how many letters '{word}' has", f"print(len('{word}'))"),
        (f"count the vowels in the word '{other}'", f"print(sum(c in 'aeiou' for c in '{other}'))"),
        (f"list the first {k} even numbers", f"print([2 * i for i in range(1, {k + 1})])"),
        (f"print the first {k} odd numbers", f"print([2 * i - 1 for i in range(1, {k + 1})])"),
        (f"show the first {k} square numbers", f"print([i * i for i in range(1, {k + 1})])"),
        (f"print the numbers from 1 to {k}", f"print(list(range(1, {k + 1})))"),
        (f"join {[word, other, third]} with {separator_said}", f"print({separator!r}.join({[word, other, third]}))"),
        (f"repeat '{word}' {k} times in a single string", f"print('{word}' * {k})"),
        (f"find the largest number in {numbers}", f"print(max({numbers}))"),
        (f"get the smallest value of {numbers}", f"print(min({numbers}))"),
        (f"work out {k} to the power of {power}", f"print({k} ** {power})"),
        (f"reverse the list {numbers}", f"print({numbers}[::-1])"),
        (f"sort {numbers} from largest to smallest", f"print(sorted({numbers}, reverse=True))"),
        (f"sort the list {numbers}", f"print(sorted({numbers}))"),
        (f"compute the average of {numbers}", f"print(sum({numbers}) / len({numbers}))"),
        (f"add up all of {numbers}", f"print(sum({numbers}))"),
        (f"count the items in {numbers}", f"print(len({numbers}))"),
        (f"compute the factorial of {k}", f"import math\nprint(math.factorial({k}))"),
        (f"check whether {n} is even", f"print({n} % 2 == 0)"),
        (f"split '{word} {other} {third}' into words", f"print('{word} {other} {third}'.split())"),
        (f"replace every 'a' in '{word}' with 'o'", f"print('{word}'.replace('a', 'o'))"),
        (f"print the last letter of '{word}'", f"print('{word}'[-1])"),
        (f"print the first three letters of '{other}'", f"print('{other}'[:3])"),
        (f"multiply all the numbers in {numbers[:4]} together", f"import math\nprint(math.prod({numbers[:4]}))"),
        (f"print the even numbers among {numbers}", f"print([x for x in {numbers} if x % 2 == 0])"),
        (f"double every number in {numbers}", f"print([x * 2 for x in {numbers}])"),
        (f"count the words in '{word} {other} {third}'", f"print(len('{word} {other} {third}'.split()))"),
        (f"sort the letters of '{word}' alphabetically", f"print(''.join(sorted('{word}')))"),
    ]


def _run_python(code: str) -> str:
    """The program's printed output, as the python tool would report it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})  # our own generated programs, nothing from outside
    return out.getvalue().strip()


def python_instruction(rng: random.Random) -> Episode:
    task, code = rng.choice(_python_instructions(rng))
    opening = rng.choice(_PYTHON_OPENINGS)
    request = opening + task + pick(rng, ".", ".", "?", "", *([] if "please" in opening.lower() else [" please."]))
    out = _run_python(code)
    return Episode("python", request, [Call("python", {"code": code}, obs([f"stdout:\n{out}"]),
                                            pick(rng, "Write the program and run it.", "Run code with python.",
                                                 "Python can do this."))],
                   pick(rng, f"The output is {out}.", f"Result: {out}", f"{out}", f"Python printed {out}."))


# --- knowledge base ---------------------------------------------------------------------------

# Topics of an invented company wiki (not the benchmark's handbook): what a search returns for each.
WIKI = {
    "pension": "The company pays 6% of salary into the pension plan from the first month.",
    "bicycle": "Bicycles can be parked in the basement rack; e-bikes charge at the wall sockets.",
    "onboarding": "New starters get a buddy for their first 8 weeks and a laptop on day one.",
    "vpn": "Connect to the VPN with the company app before opening internal sites from home.",
    "training budget": "Each employee has a yearly training budget of 1500 euros.",
    "meeting rooms": "Meeting rooms are booked in the calendar for at most 2 hours at a time.",
    "printer": "The printer on floor 3 needs your badge; colour prints cost extra.",
    "overtime": "Overtime is paid at 125% or taken as time off within 3 months.",
    "visitors": "Visitors sign in at reception and wear a visitor pass at all times.",
    "fire drill": "Fire drills happen twice a year; assemble in the north car park.",
    "payroll": "Salaries are paid on the 25th of each month.",
    "phones": "Company phones are replaced every 3 years.",
    "canteen": "The canteen serves lunch from 11:30 to 14:00.",
    "probation": "The probation period lasts 6 months.",
    "whistleblowing": "Report concerns anonymously through the ethics hotline.",
    "mentoring": "Mentoring pairs meet once a month for one hour.",
}


def _hits(topic: str, rng: random.Random) -> str:
    source = pick(rng, "wiki.md", "policies.pdf", "staff-guide.md", "intranet.md")
    return obs([{"citation": f"[1] {source} › {topic.title()}", "text": WIKI[topic], "source": source,
                 "section": topic.title(), "page": None}])


def knowledge(rng: random.Random) -> Episode:
    topic = rng.choice(list(WIKI))
    text = pick(rng, f"Check our internal docs: what's the rule on {topic}?", f"Anything in the wiki about {topic}?",
                f"Look through the uploaded documents for {topic}.", f"what do our policies say regarding {topic}",
                f"I need the company guidance on {topic}.", f"From the knowledge base: {topic}?",
                f"Find the passage on {topic} in my files.", f"What does the staff guide say on {topic}?",
                f"According to our handbook, what about {topic}?", f"Search the handbook for {topic}.",
                f"is there a policy on {topic}?", f"Quote the manual's section about {topic}.",
                f"How do we handle {topic} here? Check the docs.", f"look up {topic} in the documentation",
                f"What do the uploaded files tell me about {topic}?")
    answer = pick(rng, WIKI[topic], f"According to the documents: {WIKI[topic]}", f"{WIKI[topic]} (source: the docs)")
    return Episode("knowledge_search", text, [Call("knowledge_search", {"query": topic}, _hits(topic, rng),
                                                   "Search the documents.")], answer)


def knowledge_then_calculate(rng: random.Random) -> Episode:
    topic, number, per = rng.choice([("training budget", 1500, "per quarter, i.e. divided by 4"),
                                     ("pension", 6, "as a fraction, i.e. divided by 100"),
                                     ("overtime", 125, "for 8 hours at 20 an hour, i.e. times 8 * 20 / 100"),
                                     ("meeting rooms", 2, "in minutes, i.e. times 60"),
                                     ("probation", 6, "in weeks, i.e. times 52 / 12")])
    factor = {"training budget": "/ 4", "pension": "/ 100", "overtime": "* 8 * 20 / 100",
              "meeting rooms": "* 60", "probation": "* 52 / 12"}[topic]
    value = json.loads(_calculated(f"{number} {factor}"))
    text = pick(rng, f"Look up the {topic} figure in the docs and give it {per}.",
                f"Search our documents for the {topic} number, then compute it {per}.")
    calls = [Call("knowledge_search", {"query": topic}, _hits(topic, rng), "Find the number first."),
             Call("calculator", {"expression": f"{number} {factor}"}, _calculated(f"{number} {factor}"),
                  f"The documents say {number}; now compute.")]
    return Episode("knowledge_chain", text, calls, f"The documents give {number}; {number} {factor} = {_fmt(value)}.",
                   plannable=False)


def ingest(rng: random.Random) -> Episode:
    fid = file_id(rng)
    name = pick(rng, "handbook.md", "policy.pdf", "notes.txt", "faq.md", "manual.pdf")
    text = pick(rng, f"Index the document {fid} so you can search it later.", f"Add {fid} to your knowledge base.",
                f"please ingest my file {fid}", f"Make {fid} searchable.")
    observation = obs({"source": name, "title": name.rsplit(".", 1)[0].title(), "chunks": rng.randint(3, 40)})
    return Episode("knowledge_ingest", text, [Call("knowledge_ingest", {"document": fid}, observation,
                                                   "Ingest the document.")],
                   f"Added {name} to the knowledge base; it can be searched now.")


def documents(rng: random.Random) -> Episode:
    listed = [{"source": s, "title": s.split(".")[0].title(), "chunks": rng.randint(3, 30)}
              for s in rng.sample(["wiki.md", "policies.pdf", "faq.md", "manual.pdf", "notes.txt"], 2)]
    text = pick(rng, "Which documents have I uploaded to the knowledge base?", "list the indexed documents",
                "What files can you search through?")
    return Episode("knowledge_documents", text, [Call("knowledge_documents", {}, obs(listed), "List the documents.")],
                   "The knowledge base holds " + " and ".join(d["source"] for d in listed) + ".")
