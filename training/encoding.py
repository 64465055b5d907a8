"""Examples to token ids with the model's own chat template, and which tokens the loss counts.

A conversation is rendered once; the character span of each trained assistant turn is found by
rendering the conversation up to that turn (with and without it), then mapped to tokens through
the tokenizer's offsets. That works for any template that renders a conversation as a growing
prefix, which is what chat templates do; one that does not is refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.data import Example

# Used only when a tokenizer carries no template (a bare tokenizer for a base model): ChatML.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ValueError):
    pass


@dataclass
class Sequence:
    """Token ids and, per token, whether the loss should predict it."""

    input_ids: list[int]
    trained: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodedData:
    sequences: list[Sequence]
    truncated: int = 0  # chat examples cut at seq_len
    dropped: int = 0  # examples with nothing left to learn after cutting


def encode(examples: list[Example], tokenizer, seq_len: int) -> EncodedData:
    if tokenizer.chat_template is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    data = EncodedData(sequences=[])
    for example in examples:
        if example.is_chat:
            sequence = encode_chat(example, tokenizer)
            if len(sequence) > seq_len:
                data.truncated += 1
                sequence = Sequence(sequence.input_ids[:seq_len], sequence.trained[:seq_len])
            if any(sequence.trained[1:]):
                data.sequences.append(sequence)
            else:
                data.dropped += 1
        else:
            data.sequences += encode_text(example.text, tokenizer, seq_len)
    return data


def encode_chat(example: Example, tokenizer) -> Sequence:
    messages = [{"role": turn.role, "content": turn.content} for turn in example.turns]
    full = _render(tokenizer, messages)
    spans = []
    for index, turn in enumerate(example.turns):
        if not turn.trained:
            continue
        start = len(_render(tokenizer, messages[:index], generation_prompt=True))
        end = len(_render(tokenizer, messages[: index + 1]))
        if not full.startswith(_render(tokenizer, messages[: index + 1])):
            raise TemplateError("the chat template does not render conversations as a growing prefix, "
                                "so assistant turns cannot be located for the loss mask")
        spans.append((start, end))
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    trained = [any(start <= token_start < end for start, end in spans)
               for token_start, _ in encoding["offset_mapping"]]
    return Sequence(list(encoding["input_ids"]), trained)


def encode_text(text: str, tokenizer, seq_len: int) -> list[Sequence]:
    """A document ends with EOS and is cut into seq_len windows, every token trained."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return [Sequence(ids[i: i + seq_len], [True] * len(ids[i: i + seq_len]))
            for i in range(0, len(ids), seq_len) if len(ids[i: i + seq_len]) > 1]


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
