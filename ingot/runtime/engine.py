"""The engine: requests in, streamed text out, with one background thread running the step loop.

Three parts, as in vLLM v1 and nano-vllm: ``EngineCore`` steps (schedule, run, sample), ``OutputProcessor`` turns
tokens into outputs (text, stops, finish reasons, timings), and ``Engine`` here is the threaded front. Callers (the
server's event loop, or ``generate``) only enqueue commands and read outputs; the core and the output side are touched
by the engine thread alone.

Failures: one request's (its sampling, its text, its consumer) finish that request alone, with finish reason "error"
and a message for its client. A model step that raises fails the requests of that step; anything else that escapes a
step (a bug in the scheduler or the block manager) fails every request in flight. Either way the failure is logged
with the request ids and the engine keeps serving: a supervisor learns of a broken artifact from the warm-up, which
fails like any request, so the server never turns ready.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import Manifest
from ingot.artifacts.store import ArtifactStore
from ingot.errors import ArtifactError, ContextLengthError, IngotError, OptionError, RequestError
from ingot.runtime.block_manager import BlockManager
from ingot.runtime.detokenizer import IncrementalDetokenizer, StopStringMatcher
from ingot.runtime.engine_core import CoreRequest, EngineCore, StepResult
from ingot.runtime.grammar import GrammarCompiler
from ingot.runtime.kv_sizing import kv_block_bytes, kv_cache_blocks
from ingot.runtime.model_runner import ModelRunner
from ingot.runtime.output_processor import OutputProcessor, RequestState, Sink
from ingot.runtime.outputs import Completion, RequestOutput
from ingot.runtime.relay import relay_for
from ingot.runtime.sampler import SampleRequest, make_generator
from ingot.runtime.sampling_params import SamplingParams
from ingot.runtime.scheduler import Scheduler
from ingot.runtime.servable import unservable_reason
from ingot.runtime.sequence import Sequence

log = logging.getLogger("ingot.engine")

OUTPUT_FAILED = "turning this request's tokens into text failed; the server log has the details"
CONSUMER_FAILED = "this request's output could not be delivered"
ENGINE_FAILED = "the engine failed while generating this request; the server log has the details"


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
        self.core = EngineCore(directory, manifest, num_blocks, max_num_batched_tokens)
        self.outputs = OutputProcessor(self.max_context)
        self.eos_token_ids = frozenset(manifest.tokenizer.eos_token_ids)
        self._commands: deque[Callable[[], None]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._request_ids: set[str] = set()  # of the requests not finished yet, guarded by _wake
        self._grammars: GrammarCompiler | None = None
        self._grammars_lock = threading.Lock()
        log.info(
            "KV cache: %d blocks of %d tokens (%.2f GiB), %d tokens in all",
            num_blocks, self.blocks.block_size, num_blocks * kv_block_bytes(manifest.kv_cache) / 2**30,
            self.blocks.capacity * self.blocks.block_size,
        )

    # The core's parts, for callers that inspect or instrument them (tests, benchmarks).
    @property
    def runner(self) -> ModelRunner:
        return self.core.runner

    @property
    def blocks(self) -> BlockManager:
        return self.core.blocks

    @property
    def scheduler(self) -> Scheduler:
        return self.core.scheduler

    @property
    def requests(self) -> dict[str, RequestState]:
        """The requests admitted and not finished yet."""
        return self.outputs.requests

    @property
    def grammars(self) -> GrammarCompiler:
        """Structured outputs' compiler for this artifact's tokenizer, made on first use (any thread)."""
        with self._grammars_lock:
            if self._grammars is None:
                stop_ids = sorted(self.eos_token_ids)
                self._grammars = GrammarCompiler(self.tokenizer, self.runner.vocab_size, stop_ids)
            return self._grammars

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
        request_id, admit = self._prepare(prompt, params, sink, request_id)
        self._submit(admit, reserve_ids=[request_id])
        return request_id

    def _prepare(
        self, prompt: str | Seq[int], params: SamplingParams, sink: Sink, request_id: str | None
    ) -> tuple[str, Callable[[], None]]:
        """Check a request and build it: its id, and the command that admits it on the engine thread."""
        token_ids = self.tokenize(prompt)
        if not token_ids:
            raise RequestError("the prompt is empty", param="prompt")
        if len(token_ids) + params.max_tokens > self.max_context:
            raise ContextLengthError(len(token_ids), params.max_tokens, self.max_context)
        params.validate_vocab(self.runner.vocab_size)
        if params.prompt_logprobs is not None and not self.runner.scores_prompts:
            message = f"{self.model_name}'s artifact cannot score prompts (it has no logits program): compile it again"
            raise RequestError(message, param="prompt_logprobs")
        request_id = request_id or uuid.uuid4().hex
        seq = Sequence(request_id, token_ids, params)
        eos_token_ids = frozenset() if params.ignore_eos else self.eos_token_ids
        sampling = SampleRequest(
            params,
            seq.prompt_token_ids,
            seq.output_token_ids,
            make_generator(params.seed),
            list(eos_token_ids),
            grammar=params.grammar.new_state() if params.grammar is not None else None,
        )
        state = RequestState(
            seq=seq,
            sink=sink,
            detokenizer=IncrementalDetokenizer(self.tokenizer, token_ids, params.skip_special_tokens),
            stop=StopStringMatcher(params.stop),
            eos_token_ids=eos_token_ids,
        )
        return request_id, lambda: self._admit(CoreRequest(seq, sampling), state)

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

        # Every prompt checked before any is queued (an invalid one: none of them runs), then all admitted by one
        # command: no step runs between two of them, so they start together as far as the scheduler's budget goes.
        prepared = [self._prepare(prompt, p, sink, None) for prompt, p in zip(prompts, params_list)]
        ids = [request_id for request_id, _ in prepared]

        def admit_all() -> None:
            for _, admit in prepared:
                admit()

        self._submit(admit_all, reserve_ids=ids)
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
            prompt_tokens=self.core.prompt_tokens,
            generation_tokens=self.core.generation_tokens,
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

    def _submit(self, command: Callable[[], None], reserve_ids: Seq[str] = ()) -> None:
        """Queue ``command`` for the engine thread; ``reserve_ids``: new requests' ids, refused while in use."""
        with self._wake:
            if self._stopping:
                raise EngineStopped(f"{self.model_name} has shut down")
            for request_id in reserve_ids:
                if request_id in self._request_ids:
                    raise RequestError(f"request id {request_id!r} is in use", param="request_id")
            self._request_ids.update(reserve_ids)
            self._commands.append(command)
            self._wake.notify()
        self.start()

    # --- the engine thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._commands or self.core.has_work() or self._stopping):
                    self._wake.wait()
                if self._stopping:
                    return
                commands = list(self._commands)
                self._commands.clear()
            try:
                for command in commands:
                    command()
                self.step()
            except Exception:  # a bug outside any one request's work: fail every request, keep serving
                log.exception("the engine step failed; failing every request in flight: %s", ", ".join(self.requests))
                for request_id in list(self.requests):
                    self._fail(self.requests[request_id], ENGINE_FAILED)

    def _admit(self, request: CoreRequest, state: RequestState) -> None:
        self.outputs.add(state)
        self.core.add(request)

    def _abort(self, request_id: str) -> None:
        state = self.requests.get(request_id)
        if state is not None:
            self._finish(state, RequestOutput(request_id, "", []), "abort")

    def step(self) -> None:
        """One core step, then each of its requests' outputs."""
        for result in self.core.step():
            self._process(result)

    def _process(self, result: StepResult) -> None:
        state = self.requests[result.seq.request_id]
        if result.error is not None:
            self._fail(state, result.error)
            return
        try:
            output = self.outputs.process(state, result.token)
        except Exception:
            log.exception("request %s failed making its output; failing it alone", result.seq.request_id)
            self._fail(state, OUTPUT_FAILED)
            return
        if output.finish_reason is not None:
            self._finish(state, output, output.finish_reason)
        else:
            self._deliver(state, output)

    def _fail(self, state: RequestState, error: str) -> None:
        self._finish(state, RequestOutput(state.seq.request_id, "", []), "error", error)

    def _finish(self, state: RequestState, output: RequestOutput, reason: str, error: str | None = None) -> None:
        request_id = state.seq.request_id
        self.core.finish(request_id)
        self.outputs.finish(state, output, reason, error)
        with self._wake:
            self._request_ids.discard(request_id)
        self._deliver(state, output)

    def _deliver(self, state: RequestState, output: RequestOutput) -> None:
        """Hand an output to its consumer. A consumer that fails (gone away, or broken) ends its own request:
        generating for nobody would hold its blocks and a batch slot."""
        try:
            state.sink(output)
        except Exception:
            log.warning("request %s: its consumer failed taking an output", output.request_id, exc_info=True)
            if not output.finished:
                self._fail(state, CONSUMER_FAILED)


def _completion(request_id: str, outputs: list[RequestOutput]) -> Completion:
    last = outputs[-1]
    return Completion(
        request_id=request_id,
        text="".join(o.text for o in outputs),
        token_ids=[t for o in outputs for t in o.token_ids],
        finish_reason=last.finish_reason or "abort",
        prompt_tokens=last.prompt_tokens,
        logprobs=[lp for o in outputs for lp in o.logprobs],
        prompt_logprobs=outputs[0].prompt_logprobs,
        error=last.error,
    )
