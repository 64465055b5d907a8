"""A task built from a definition (`TaskConfig`): documents -> prompts and requests -> scores.

Prompts follow lm-evaluation-harness 0.4 exactly, so that scores agree with it: the description,
then each few-shot example as `text + target_delimiter + answer + fewshot_delimiter`, then the
document's text; a multiple-choice request per choice scores `target_delimiter + choice` after
that context. Few-shot examples are drawn with `random.Random` seeded by (seed, task, document),
so a document's prompt never depends on which other documents are evaluated (`limit`).
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from evaluation import data, metrics, templates
from evaluation.metrics import MetricValue
from evaluation.requests import (
    EvaluationError,
    GenerateRequest,
    LoglikelihoodRequest,
    Request,
    RollingRequest,
)
from evaluation.tasks import process_docs
from evaluation.tasks.base import Sample, SampleScore, ScoringContext, Task
from evaluation.tasks.config import TaskConfig
from evaluation.tasks.generated import GENERATORS
from evaluation.tasks.scoring import score_generation

Doc = dict[str, Any]
_FILE_DATASETS = {"json", "jsonl", "csv", "arrow"}


class ConfigurableTask(Task):
    def __init__(self, config: TaskConfig, source: str):
        self.config = config
        self.name, self.version, self.output_type = config.task, config.version, config.output_type
        self.num_fewshot, self.description = config.num_fewshot, config.description
        self.source = source
        self._splits: dict[str, list[Doc]] = {}
        self._ids: list[str] | None = None

    # --- documents -------------------------------------------------------------------------------

    def docs(self, split: str | None = None) -> list[Doc]:
        """A split's documents after `process_docs` (the evaluation split by default)."""
        split = split or self.config.eval_split
        if split not in self._splits:
            self._splits[split] = process_docs.apply(self.config.process_docs, self._rows(split))
            if not self._splits[split]:
                raise EvaluationError(f"task {self.name!r}: split {split!r} holds no rows", param="dataset_path")
        return self._splits[split]

    def _rows(self, split: str) -> list[Doc]:
        config = self.config
        if config.rows is not None:
            return list(config.rows)
        if config.dataset_path == "generated":
            if config.dataset_name not in GENERATORS:
                raise EvaluationError(f"no generated dataset {config.dataset_name!r}; known: {sorted(GENERATORS)}",
                                      param="dataset_name")
            return GENERATORS[config.dataset_name]()
        if config.dataset_path in _FILE_DATASETS:
            files = config.dataset_kwargs.get("data_files")
            file = files.get(split) if isinstance(files, dict) else files
            if not isinstance(file, str):
                raise EvaluationError(f"task {self.name!r}: dataset_kwargs.data_files names no file for split "
                                      f"{split!r}", param="dataset_kwargs.data_files")
            path = (config.base_dir / file) if config.base_dir and not file.startswith("/") else file
            return data.read_rows(path)
        assert config.dataset_path is not None
        return data.benchmark_rows(config.dataset_path, config.dataset_name, split)

    def doc_ids(self) -> list[str]:
        if self._ids is None:
            docs, column = self.docs(), self.config.doc_id
            if column is None and all("id" in doc for doc in docs):
                column = "id"
            ids = [str(doc[column]) for doc in docs] if column and all(column in doc for doc in docs) else []
            if len(set(ids)) != len(docs):
                if self.config.doc_id:
                    raise EvaluationError(f"task {self.name!r}: doc_id column {column!r} is missing or not unique",
                                          param="doc_id")
                ids = [str(index) for index in range(len(docs))]
            self._ids = ids
        return self._ids

    # --- fields of a document --------------------------------------------------------------------

    def doc_to_text(self, doc: Doc) -> str | int:
        """The prompt text; an integer means "multiple inputs" (the harness's Winogrande trick):
        the choices are the contexts and this is the gold one's index."""
        text = templates.value(self.config.doc_to_text, doc, "doc_to_text")
        if isinstance(text, int) and not isinstance(text, bool):
            return text
        text = str(text)
        if text.isdigit() and self.config.doc_to_choice is not None:
            return int(text)
        return text

    def doc_to_target(self, doc: Doc) -> Any:
        target = templates.value(self.config.doc_to_target, doc, "doc_to_target")
        if isinstance(target, bool):
            return int(target)
        if isinstance(target, str) and self.config.doc_to_choice is not None and target.strip().isdigit():
            return int(target)
        if isinstance(target, tuple):
            return list(target)
        return target

    def doc_to_choice(self, doc: Doc) -> list[str] | None:
        if self.config.doc_to_choice is None:
            return None
        return templates.as_list(templates.value(self.config.doc_to_choice, doc, "doc_to_choice"), "doc_to_choice")

    def _multiple_input(self, doc: Doc) -> bool:
        return isinstance(self.doc_to_text(doc), int) and self.config.doc_to_choice is not None

    def _answer_text(self, doc: Doc) -> str:
        """The answer as it appears after a few-shot example."""
        target, choices = self.doc_to_target(doc), self.doc_to_choice(doc)
        if isinstance(target, list):
            target = target[0]
        if isinstance(target, int) and choices is not None and not self._multiple_input(doc):
            return choices[target]
        return str(target)

    def references(self, doc: Doc) -> list[str]:
        """What a generated answer is compared with (one or several accepted answers)."""
        target, choices = self.doc_to_target(doc), self.doc_to_choice(doc)
        if isinstance(target, int) and choices is not None:
            return [choices[target]]
        return [str(t) for t in target] if isinstance(target, list) else [str(target)]

    # --- prompts ---------------------------------------------------------------------------------

    def _fewshot(self, index: int, count: int, seed: int) -> list[Doc]:
        if count == 0:
            return []
        config = self.config
        pool_split = config.fewshot_split or config.eval_split
        pool = self.docs(pool_split)
        # a document never serves as its own example when examples come from the evaluated split
        exclude = index if pool_split == config.eval_split else None
        available = len(pool) - (exclude is not None)
        if count > available:
            raise EvaluationError(f"task {self.name!r}: num_fewshot {count} exceeds the {available} examples in "
                                  f"split {pool_split!r}", param="num_fewshot")
        if config.fewshot_sampler == "first_n":
            return [doc for i, doc in enumerate(pool) if i != exclude][:count]
        rng = random.Random(f"{seed}:{self.name}:{self.doc_ids()[index]}")
        picked = rng.sample(range(len(pool)), min(len(pool), count + (exclude is not None)))
        return [pool[i] for i in picked if i != exclude][:count]

    def _example(self, doc: Doc) -> str:
        config = self.config
        text = self.doc_to_text(doc)
        if isinstance(text, int):  # multiple inputs: the gold choice is the example's context
            text = self.doc_to_choice(doc)[text]  # type: ignore[index]
        return text + config.target_delimiter + self._answer_text(doc) + config.fewshot_delimiter

    def contexts(self, doc: Doc, fewshot: list[Doc]) -> tuple[str, list[str]]:
        """(description, few-shot text + the document's text); several contexts for multiple inputs."""
        description = self.config.description
        description = str(templates.value(description, doc, "description")) if description else ""
        shots = "".join(self._example(example) for example in fewshot)
        text = self.doc_to_text(doc)
        if isinstance(text, int):
            return description, [shots + choice for choice in self.doc_to_choice(doc) or []]
        return description, [shots + text]

    def samples(self, *, limit: int | None = None, num_fewshot: int | None = None, seed: int = 1234,
                chat_template: bool = False) -> list[Sample]:
        if limit is not None and limit < 1:
            raise EvaluationError("limit must be a positive integer", param="limit")
        count = self.num_fewshot if num_fewshot is None else num_fewshot
        if count < 0:
            raise EvaluationError("num_fewshot must be >= 0", param="num_fewshot")
        docs, ids = self.docs(), self.doc_ids()
        return [self._sample(index, docs[index], ids[index], self._fewshot(index, count, seed), seed, chat_template)
                for index in range(len(docs) if limit is None else min(limit, len(docs)))]

    def _sample(self, index: int, doc: Doc, sample_id: str, fewshot: list[Doc], seed: int,
                chat_template: bool) -> Sample:
        config = self.config
        description, contexts = self.contexts(doc, fewshot) if config.doc_to_text is not None else ("", [""])
        prompts = [description + context for context in contexts]
        target: Any
        requests: list[Request]
        if self.output_type == "multiple_choice":
            if self._multiple_input(doc):
                continuation = config.target_delimiter + str(self.doc_to_target(doc))
                requests = [LoglikelihoodRequest(prompt, continuation) for prompt in prompts]
                target = self.doc_to_text(doc)
            else:
                choices = self.doc_to_choice(doc) or []
                requests = [LoglikelihoodRequest(prompts[0], config.target_delimiter + choice) for choice in choices]
                target = self.doc_to_target(doc)
                if isinstance(target, str):  # a gold given as the choice's text
                    target = choices.index(target) if target in choices else -1
        elif self.output_type == "loglikelihood":
            target = str(self.doc_to_target(doc))
            requests = [LoglikelihoodRequest(prompts[0], target)]
        elif self.output_type == "loglikelihood_rolling":
            target = str(self.doc_to_target(doc))
            requests = [RollingRequest(target)]
        else:
            target = self.references(doc)
            target = target[0] if len(target) == 1 else target
            requests = [self._generate_request(doc, description, contexts[0], chat_template, seed, sample_id, repeat)
                        for repeat in range(config.repeats)]
        return Sample(id=sample_id, requests=requests, target=target, prompt="\n| ".join(prompts), doc=doc)

    def _generate_request(self, doc: Doc, description: str, context: str, chat: bool, seed: int, sample_id: str,
                          repeat: int) -> GenerateRequest:
        config = self.config
        # repeated samples (pass@k) need different draws, reproducibly
        draw_seed = zlib.crc32(f"{seed}:{sample_id}:{repeat}".encode()) if config.repeats > 1 else None
        common = {"until": tuple(config.until), "max_tokens": config.max_gen_toks,
                  "temperature": config.temperature, "seed": draw_seed}
        if not chat:
            return GenerateRequest(prompt=description + context, **common)
        system = [{"role": "system", "content": description}] if description else []
        if config.doc_to_messages:  # a conversation is its own prompt (few-shot examples do not apply)
            turns = templates.value(config.doc_to_messages, doc, "doc_to_messages")
            return GenerateRequest(messages=tuple(system + [dict(turn) for turn in turns]), **common)
        # the harness's single-turn chat form: the description as the system message, the few-shot
        # examples and the question together as one user message
        messages = system + [{"role": "user", "content": context}]
        return GenerateRequest(messages=tuple(messages), **common)

    # --- scoring ---------------------------------------------------------------------------------

    async def score(self, sample: Sample, responses: list, ctx: ScoringContext) -> SampleScore:
        if len(responses) != len(sample.requests):
            raise EvaluationError(f"sample {sample.id}: {len(responses)} responses for {len(sample.requests)} requests")
        wanted = set(self.config.reported_metrics())
        if self.output_type == "multiple_choice":
            return self._score_choice(sample, responses, wanted)
        if self.output_type == "loglikelihood":
            [answer] = responses
            items = {"perplexity": answer.logprob, "acc": float(answer.greedy)}
            return SampleScore({k: v for k, v in items.items() if k in wanted},
                               output=f"logprob {answer.logprob:.4f}, greedy: {answer.greedy}")
        if self.output_type == "loglikelihood_rolling":
            [answer] = responses
            text = str(sample.target)
            words, size = metrics.count_words(text), metrics.count_bytes(text)
            items = {"word_perplexity": [answer.logprob, words], "byte_perplexity": [answer.logprob, size],
                     "bits_per_byte": [answer.logprob, size]}
            return SampleScore({k: v for k, v in items.items() if k in wanted},
                               output=f"logprob {answer.logprob:.4f} over {answer.tokens} tokens")
        return await score_generation(self.config, sample, [str(r) for r in responses], ctx)

    def _score_choice(self, sample: Sample, responses: list, wanted: set[str]) -> SampleScore:
        logprobs = [answer.logprob for answer in responses]
        # acc_norm divides by each choice's length in characters, as the harness does (for
        # multiple inputs the harness measures the contexts; we do the same to agree with it)
        choices = self.doc_to_choice(sample.doc) or []
        predicted = max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))
        normalised = max(range(len(logprobs)), key=lambda i: (logprobs[i] / max(len(choices[i]), 1), -i))
        gold = sample.target
        items = {"acc": metrics.accuracy(predicted, gold), "acc_norm": metrics.accuracy(normalised, gold)}
        return SampleScore({k: v for k, v in items.items() if k in wanted}, output=choices[predicted])

    def aggregate(self, scores: list[SampleScore]) -> dict[str, MetricValue]:
        results = {}
        for name in self.config.reported_metrics():
            value = metrics.aggregate_metric(name, [score.metrics.get(name) for score in scores])
            if value is not None:
                results[name] = value
        return results

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "output_type": self.output_type,
                "metrics": self.config.reported_metrics(), "samples": len(self.docs()),
                "split": self.config.eval_split, "num_fewshot": self.num_fewshot, "source": self.source,
                "description": self.config.description.strip()}
