"""The engine: requests in, streamed text out, with one background thread running the step loop.

Callers (the server's event loop, or ``generate``) only enqueue commands and read outputs; the
scheduler, the KV cache and the model are touched by the engine thread alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import Manifest
from ingot.artifacts.store import ArtifactStore
from ingot.errors import ArtifactError, ContextLengthError, IngotError, OptionError, RequestError
from ingot.runtime.block_manager import BlockManager
from ingot.runtime.detokenizer import IncrementalDetokenizer, StopStringMatcher
from ingot.runtime.kv_sizing import kv_block_bytes, kv_cache_blocks
from ingot.runtime.model_runner import ModelRunner
from ingot.runtime.outputs import Completion, RequestMetrics, RequestOutput
from ingot.runtime.relay import relay_for
from ingot.runtime.sampler import SampledToken, Sampler, SampleRequest, make_generator
from ingot.runtime.sampling_params import SamplingParams
from ingot.runtime.scheduler import ScheduledStep, Scheduler
from ingot.runtime.servable import unservable_reason
from ingot.runtime.sequence import Sequence
from ingot.runtime.threads import call_on_fresh_thread

log = logging.getLogger("ingot.engine")

Sink = Callable[[RequestOutput], None]


class EngineStopped(IngotError):
    """A request came after the engine shut down."""


@dataclass
class EngineStats:
    """A snapshot of the counters the server exports (vLLM's metric names map onto these)."""

    num_running: int
    num_waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    prefix_query_tokens: int
    prefix_hit_tokens: int
    num_preemptions: int
    prompt_tokens: int
    generation_tokens: int


@dataclass(eq=False)
class _Request:
    seq: Sequence
    sink: Sink
    detokenizer: IncrementalDetokenizer
    stop: StopStringMatcher
    eos_token_ids: frozenset[int]
    generator: object
    token_times: list[float] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        kv_cache_gb: float | None = None,
        num_blocks: int | None = None,
        max_num_batched_tokens: int | None = None,
    ) -> None:
        """``max_num_batched_tokens`` caps the tokens one step computes (a prefill step's prompt tokens, a decode
        batch's size); by default the largest bucket bounds them. A lower cap shortens the pause a long
        prompt's prefill puts between the decode steps of running requests."""
        refusal = unservable_reason(manifest)
        if refusal:
            raise ArtifactError(refusal)
        if max_num_batched_tokens is not None and max_num_batched_tokens < 1:
            raise OptionError(f"--max-num-batched-tokens must be at least 1, not {max_num_batched_tokens}")
        num_blocks = kv_cache_blocks(manifest.kv_cache, manifest.buckets.max_context, kv_cache_gb, num_blocks)
        self.manifest = manifest
        self.model_name = manifest.model.name
        self.max_context = manifest.buckets.max_context
        self.tokenizer = AutoTokenizer.from_pretrained(directory / manifest.tokenizer.directory)
        self.runner = call_on_fresh_thread(lambda: ModelRunner(directory, manifest, num_blocks))
        self.blocks = BlockManager(num_blocks, manifest.kv_cache.block_size)
        prefill_sizes, decode_sizes = self.runner.prefill_sizes, self.runner.decode_sizes
        cap = max(prefill_sizes[-1], decode_sizes[-1]) if max_num_batched_tokens is None else max_num_batched_tokens
        self.scheduler = Scheduler(
            self.blocks,
            max_batch=min(decode_sizes[-1], cap),
            prefill_sizes=prefill_sizes,
            max_prefill_tokens=min(prefill_sizes[-1], cap),
            max_prefill_batch=self.runner.prefill_batches[-1],
        )
        self.sampler = Sampler()
        self.eos_token_ids = frozenset(manifest.tokenizer.eos_token_ids)
        self.requests: dict[str, _Request] = {}
        self._commands: deque[Callable[[], None]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._request_ids: set[str] = set()  # of the requests not finished yet, guarded by _wake
        self.prompt_tokens = 0
        self.generation_tokens = 0
        log.info(
            "KV cache: %d blocks of %d tokens (%.2f GiB), %d tokens in all",
            num_blocks, self.blocks.block_size, num_blocks * kv_block_bytes(manifest.kv_cache) / 2**30,
            self.blocks.capacity * self.blocks.block_size,
        )

    @classmethod
    def from_artifact(cls, key_or_path: str, cache_dir: str | None = None, **kwargs: object) -> Engine:
        path = ArtifactStore.open(cache_dir).resolve(key_or_path)
        return cls(path, check_artifact(path), **kwargs)

    # --- requests (any thread) -------------------------------------------------------------

    def tokenize(self, prompt: str | Seq[int], add_special_tokens: bool = False) -> list[int]:
        """Text through the artifact's tokenizer; ``add_special_tokens`` adds what the tokenizer puts around
        a plain prompt (Llama 3's BOS), which a chat template already writes itself."""
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=add_special_tokens).input_ids
        ids = list(prompt)
        vocab = self.runner.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise RequestError(f"prompt token ids must be integers in [0, {vocab})", param="prompt")
        return ids

    def add_request(
        self, prompt: str | Seq[int], params: SamplingParams, sink: Sink, request_id: str | None = None
    ) -> str:
        """Queue a request; ``sink`` receives its outputs on the engine thread. Invalid requests raise here."""
        token_ids = self.tokenize(prompt)
        if not token_ids:
            raise RequestError("the prompt is empty", param="prompt")
        if len(token_ids) + params.max_tokens > self.max_context:
            raise ContextLengthError(len(token_ids), params.max_tokens, self.max_context)
        params.validate_vocab(self.runner.vocab_size)
        request_id = request_id or uuid.uuid4().hex
        request = _Request(
            seq=Sequence(request_id, token_ids, params),
            sink=sink,
            detokenizer=IncrementalDetokenizer(self.tokenizer, token_ids, params.skip_special_tokens),
            stop=StopStringMatcher(params.stop),
            eos_token_ids=frozenset() if params.ignore_eos else self.eos_token_ids,
            generator=make_generator(params.seed),
        )
        self._submit(lambda: self._admit(request), reserve_id=request_id)
        return request_id

    def abort(self, request_id: str) -> None:
        """End a request wherever it is, freeing its blocks. Once the engine has shut down, every request has
        ended already: nothing to do."""
        try:
            self._submit(lambda: self._abort(request_id))
        except EngineStopped:
            pass

    async def stream(
        self, prompt: str | Seq[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request as they come; closing the iterator early aborts the request."""
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        sink = functools.partial(relay_for(asyncio.get_running_loop()).put, queue)
        request_id = self.add_request(prompt, params, sink, request_id)
        finished = False
        try:
            while not finished:
                output = await queue.get()
                finished = output.finished
                yield output
        finally:
            if not finished:
                self.abort(request_id)

    def generate(self, prompts: Seq[str | Seq[int]], params: SamplingParams | Seq[SamplingParams]) -> list[Completion]:
        """Offline batch generation: all prompts run together; returns when every one has finished."""
        params_list = list(params) if isinstance(params, Seq) else [params] * len(prompts)
        if len(params_list) != len(prompts):
            raise RequestError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        if not prompts:
            return []
        done = threading.Event()
        collected: dict[str, list[RequestOutput]] = {}
        remaining = [len(prompts)]

        def sink(output: RequestOutput) -> None:
            collected.setdefault(output.request_id, []).append(output)
            if output.finished:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        ids: list[str] = []
        try:
            for prompt, prompt_params in zip(prompts, params_list):
                ids.append(self.add_request(prompt, prompt_params, sink))
        except IngotError:  # an invalid prompt: none of them runs
            for request_id in ids:
                self.abort(request_id)
            raise
        done.wait()
        return [_completion(rid, collected[rid]) for rid in ids]

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_blocks_used=self.blocks.num_used,
            kv_blocks_total=self.blocks.capacity,
            prefix_query_tokens=self.blocks.prefix_query_tokens,
            prefix_hit_tokens=self.blocks.prefix_hit_tokens,
            num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
        )

    def start(self) -> None:
        with self._wake:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._loop, name="ingot-engine", daemon=True)
                self._thread.start()

    def shutdown(self) -> None:
        """Stop the step loop; every request not finished yet gets its final output (finish reason "abort")."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for command in self._commands:  # admissions and aborts that came after the loop's last turn
            command()
        self._commands.clear()
        for request_id in list(self.requests):
            self._abort(request_id)

    def _submit(self, command: Callable[[], None], reserve_id: str | None = None) -> None:
        """Queue ``command`` for the engine thread; ``reserve_id``: a new request's id, refused while in use."""
        with self._wake:
            if self._stopping:
                raise EngineStopped(f"{self.model_name} has shut down")
            if reserve_id is not None:
                if reserve_id in self._request_ids:
                    raise RequestError(f"request id {reserve_id!r} is in use", param="request_id")
                self._request_ids.add(reserve_id)
            self._commands.append(command)
            self._wake.notify()
        self.start()

    # --- the engine thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._commands or self.scheduler.has_work() or self._stopping):
                    self._wake.wait()
                if self._stopping:
                    return
                commands = list(self._commands)
                self._commands.clear()
            try:
                for command in commands:
                    command()
                self.step()
            except Exception:  # a bug, not a request's fault: fail every request, keep serving
                log.exception("engine step failed")
                for request_id in list(self.requests):
                    self._abort(request_id)

    def _admit(self, request: _Request) -> None:
        self.requests[request.seq.request_id] = request
        self.prompt_tokens += len(request.seq.prompt_token_ids)
        self.scheduler.add(request.seq)

    def _abort(self, request_id: str) -> None:
        request = self.requests.get(request_id)
        if request is not None:
            self._finish(request, "abort", RequestOutput(request_id, "", []))

    def step(self) -> None:
        """One scheduled step: a prefill chunk or a decode batch, then sampling and outputs."""
        scheduled = self.scheduler.schedule()
        if scheduled is None:
            return
        now = time.monotonic()
        for seq in scheduled.seqs:
            if seq.scheduled_time is None:
                seq.scheduled_time = now
        logits = self._run(scheduled)
        rows = [i for i, s in enumerate(scheduled.seqs) if s.num_uncomputed == 0]  # not part-way through a prompt
        if not rows:
            return
        requests = [self.requests[scheduled.seqs[i].request_id] for i in rows]
        sampled = self.sampler.sample(
            logits if len(rows) == len(scheduled.seqs) else logits[rows],
            [
                SampleRequest(r.seq.params, r.seq.prompt_token_ids, r.seq.output_token_ids, r.generator, list(r.eos_token_ids))
                for r in requests
            ],
        )
        for request, token in zip(requests, sampled):
            self._append(request, token)

    def _run(self, scheduled: ScheduledStep) -> torch.Tensor:
        seqs = scheduled.seqs
        if scheduled.kind == "prefill":
            starts = [s.num_computed_tokens for s in seqs]
            chunks = [s.token_ids[start : start + n] for s, start, n in zip(seqs, starts, scheduled.num_tokens)]
            logits = self.runner.prefill(chunks, starts, [s.block_table for s in seqs])
        else:
            logits = self.runner.decode(
                [s.token_ids[-1] for s in seqs], [s.num_tokens - 1 for s in seqs], [s.block_table for s in seqs]
            )
        for seq, n in zip(seqs, scheduled.num_tokens):
            seq.num_computed_tokens += n
            self.blocks.seal(seq)
        return logits

    def _append(self, request: _Request, token: SampledToken) -> None:
        seq = request.seq
        now = time.monotonic()
        seq.token_ids.append(token.token_id)
        self.generation_tokens += 1
        if seq.first_token_time is None:
            seq.first_token_time = now
        else:
            request.token_times.append(now - seq.last_token_time)
        seq.last_token_time = now

        params = seq.params
        completed = len(seq.output_token_ids)
        if token.token_id in request.eos_token_ids or token.token_id in params.stop_token_ids:
            text = request.stop.flush()
            output = RequestOutput(seq.request_id, text, [token.token_id], logprobs=_logprobs(params, token))
            self._finish(request, "stop", output)
            return
        # before min_tokens, a stop string is text like any other (vLLM's rule; EOS and stop ids are banned then)
        text, stopped = request.stop.feed(request.detokenizer.add(token.token_id), completed >= params.min_tokens)
        output = RequestOutput(seq.request_id, text, [token.token_id], logprobs=_logprobs(params, token))
        if stopped:
            self._finish(request, "stop", output)
        elif completed >= params.max_tokens or seq.num_tokens >= self.max_context:
            output.text += request.stop.flush()
            self._finish(request, "length", output)
        else:
            self._deliver(request, output)

    @staticmethod
    def _deliver(request: _Request, output: RequestOutput) -> None:
        """Hand an output to its consumer; a consumer that has gone away must not stop the engine."""
        try:
            request.sink(output)
        except Exception:
            log.warning("dropped an output of request %s: its consumer failed", output.request_id, exc_info=True)

    def _finish(self, request: _Request, reason: str, output: RequestOutput) -> None:
        seq = request.seq
        self.scheduler.finish(seq)
        del self.requests[seq.request_id]
        with self._wake:
            self._request_ids.discard(seq.request_id)
        now = time.monotonic()
        output.finished = True
        output.finish_reason = reason
        output.prompt_tokens = len(seq.prompt_token_ids)
        output.metrics = RequestMetrics(
            queue_time=(seq.scheduled_time or now) - seq.arrival_time,
            time_to_first_token=(seq.first_token_time or now) - seq.arrival_time,
            e2e_latency=now - seq.arrival_time,
            inter_token_latencies=request.token_times,
        )
        self._deliver(request, output)


def _logprobs(params: SamplingParams, token: SampledToken) -> list[SampledToken]:
    return [token] if params.logprobs is not None else []


def _completion(request_id: str, outputs: list[RequestOutput]) -> Completion:
    last = outputs[-1]
    return Completion(
        request_id=request_id,
        text="".join(o.text for o in outputs),
        token_ids=[t for o in outputs for t in o.token_ids],
        finish_reason=last.finish_reason or "abort",
        prompt_tokens=last.prompt_tokens,
        logprobs=[lp for o in outputs for lp in o.logprobs],
    )
