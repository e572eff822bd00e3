"""Prometheus metrics under vLLM's names and labels, so that existing vLLM dashboards work unchanged.

Engine counters and gauges are read from ``Engine.stats()`` when scraped; latency histograms are observed from each
finished request's ``RequestMetrics``. Every app has its own registry, so several apps (tests) never share series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingot.runtime.engine import Engine
from ingot.runtime.outputs import RequestOutput
from ingot.runtime.vision.detector import Detector

# vLLM's buckets, so that dashboards' quantile panels line up.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)  # fmt: skip
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
DETECTION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
FINISH_REASONS = ("stop", "length", "abort", "error")
DETECTION_STATUSES = ("ok", "error")
MODEL = ["model_name"]


class _EngineCollector(Collector):
    """Reads each engine's counters at scrape time, so the engine keeps no Prometheus state of its own."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests in the running batch.", labels=MODEL)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting to be scheduled.", labels=MODEL)
        kv_usage = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV-cache usage; 1 means full.", labels=MODEL)
        queries = CounterMetricFamily("vllm:prefix_cache_queries", "Prompt tokens looked up for reuse.", labels=MODEL)
        hits = CounterMetricFamily("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", labels=MODEL)
        preemptions = CounterMetricFamily("vllm:num_preemptions", "Requests preempted for KV space.", labels=MODEL)
        prompt = CounterMetricFamily("vllm:prompt_tokens", "Prompt tokens admitted.", labels=MODEL)
        generation = CounterMetricFamily("vllm:generation_tokens", "Tokens generated.", labels=MODEL)
        for name, engine in self.engines.items():
            stats = engine.stats()
            running.add_metric([name], stats.num_running)
            waiting.add_metric([name], stats.num_waiting)
            kv_usage.add_metric([name], stats.kv_blocks_used / stats.kv_blocks_total)
            queries.add_metric([name], stats.prefix_query_tokens)
            hits.add_metric([name], stats.prefix_hit_tokens)
            preemptions.add_metric([name], stats.num_preemptions)
            prompt.add_metric([name], stats.prompt_tokens)
            generation.add_metric([name], stats.generation_tokens)
        yield from (running, waiting, kv_usage, queries, hits, preemptions, prompt, generation)


class ServerMetrics:
    def __init__(self, engines: Mapping[str, Engine], detectors: Mapping[str, Detector] = {}) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engines))
        self.finished = Counter(
            "vllm:request_success", "Finished requests, by finish reason.", MODEL + ["finished_reason"],
            registry=self.registry,
        )
        self.ttft = self._histogram("vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.itl = self._histogram("vllm:inter_token_latency_seconds", "Time between output tokens.", ITL_BUCKETS)
        self.e2e = self._histogram("vllm:e2e_request_latency_seconds", "Arrival to last token.", REQUEST_BUCKETS)
        self.queue = self._histogram("vllm:request_queue_time_seconds", "Arrival to first schedule.", REQUEST_BUCKETS)
        # vLLM has no detection metrics: ingot's own, with the same model_name label.
        self.detections = Counter(
            "ingot:detection_requests", "Detection requests, by outcome (ok, or error: a 4xx or 5xx answer).",
            MODEL + ["status"], registry=self.registry,
        )
        self.detection_latency = self._histogram(
            "ingot:detection_request_latency_seconds", "Detection request arrival to answer.", DETECTION_BUCKETS
        )
        self.detected_objects = Counter("ingot:detected_objects", "Detections returned.", MODEL, registry=self.registry)
        for name in engines:  # every series exists from the start, so dashboards see zeros, not gaps
            for reason in FINISH_REASONS:
                self.finished.labels(name, reason)
            for histogram in (self.ttft, self.itl, self.e2e, self.queue):
                histogram.labels(name)
        for name in detectors:
            for status in DETECTION_STATUSES:
                self.detections.labels(name, status)
            self.detection_latency.labels(name)
            self.detected_objects.labels(name)

    def _histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, documentation, MODEL, buckets=buckets, registry=self.registry)

    def observe_finished(self, model: str, output: RequestOutput) -> None:
        self.finished.labels(model, output.finish_reason).inc()
        timings = output.metrics
        if timings is None:
            return
        self.ttft.labels(model).observe(timings.time_to_first_token)
        self.e2e.labels(model).observe(timings.e2e_latency)
        self.queue.labels(model).observe(timings.queue_time)
        itl = self.itl.labels(model)
        for latency in timings.inter_token_latencies:
            itl.observe(latency)

    def observe_detection(self, model: str, seconds: float, detections: int | None) -> None:
        """One detection request answered: ``detections`` is None when it failed."""
        self.detections.labels(model, "error" if detections is None else "ok").inc()
        self.detection_latency.labels(model).observe(seconds)
        if detections is not None:
            self.detected_objects.labels(model).inc(detections)

    def observe_aborted(self, model: str) -> None:
        """A request the server aborted (its client left); the engine's own abort output is never read."""
        self.finished.labels(model, "abort").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
