"""Prometheus metrics, one registry per app so several servers can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentd_requests", "Requests served", ["endpoint", "model", "status"], registry=self.registry
        )
        self.ttft = Histogram(
            "agentd_time_to_first_token_seconds", "Time to first token", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.latency = Histogram(
            "agentd_request_latency_seconds", "End-to-end request latency", ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "agentd_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "agentd_completion_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.in_flight = Gauge(
            "agentd_requests_in_flight", "Requests being served", ["endpoint"], registry=self.registry
        )
        self.prefix_cached_tokens = Gauge(
            "agentd_engine_prefix_cached_prompt_tokens", "Prompt tokens found in the engine's prefix cache since start",
            ["model"], registry=self.registry,
        )
        self.prefix_hit_rate = Gauge(
            "agentd_engine_prefix_cache_hit_rate", "Share of prompt tokens found in the engine's prefix cache",
            ["model"], registry=self.registry,
        )
        self.active_sequences = Gauge(
            "agentd_engine_active_sequences", "Sequences an engine is generating", ["model"],
            registry=self.registry,
        )
