"""Legacy text completions: raw prompts, n, echo, streaming."""

from tests.conftest import MODEL

PROMPT = "The capital of France is"


def test_completion(client):
    reply = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].text
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5


def test_several_prompts_n_and_echo(client):
    reply = client.completions.create(
        model=MODEL, prompt=[PROMPT, "One, two,"], max_tokens=3, n=2, temperature=0, echo=True)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text.startswith(PROMPT) and reply.choices[2].text.startswith("One, two,")
    assert reply.choices[0].text == reply.choices[1].text  # greedy: both samples agree


def test_streamed_completion_matches_the_plain_one(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
