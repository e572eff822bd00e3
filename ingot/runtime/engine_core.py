"""One synchronous engine step: schedule, run the model, sample. No threads and no text: the engine's thread calls it.

A failure is contained to the requests it concerns: a model step that raises fails the requests of that step, a
row that cannot be sampled fails its own request; every other request keeps its state and its place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ingot.artifacts.manifest import Manifest
from ingot.runtime.block_manager import BlockManager
from ingot.runtime.model_runner import ModelRunner
from ingot.runtime.prompt_logprobs import score_prompt_chunk
from ingot.runtime.sampler import SampledToken, Sampler, SampleRequest
from ingot.runtime.scheduler import ScheduledStep, Scheduler
from ingot.runtime.sequence import Sequence
from ingot.runtime.threads import call_on_fresh_thread

log = logging.getLogger("ingot.engine")

GRAMMAR_REJECTED = "the sampled token does not fit the request's grammar (min_tokens or a ban left it no allowed token)"
MODEL_STEP_FAILED = "the model failed while computing this request; the server log has the details"
SAMPLING_FAILED = "sampling this request's next token failed; the server log has the details"
PROMPT_LOGPROBS_FAILED = "computing this request's prompt logprobs failed; the server log has the details"


@dataclass
class StepResult:
    """A request's news from one step: the token it sampled, or (``error``, in words fit for its client) why it
    has failed; neither: its prompt has run and it asked for no tokens (``max_tokens`` 0, scoring the prompt)."""

    seq: Sequence
    token: SampledToken | None = None
    error: str | None = None


@dataclass(eq=False)
class CoreRequest:
    seq: Sequence
    sampling: SampleRequest  # made once: it carries the request's RNG and its logit-bias tensors


class EngineCore:
    def __init__(
        self, directory: Path, manifest: Manifest, num_blocks: int, max_num_batched_tokens: int | None = None
    ) -> None:
        """``max_num_batched_tokens`` caps the tokens one step computes; by default the largest bucket does."""
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
        self.requests: dict[str, CoreRequest] = {}
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def add(self, request: CoreRequest) -> None:
        self.requests[request.seq.request_id] = request
        self.prompt_tokens += len(request.seq.prompt_token_ids)
        self.scheduler.add(request.seq)

    def finish(self, request_id: str) -> None:
        """Forget a request (finished, failed or aborted) wherever it is, freeing its blocks at once."""
        request = self.requests.pop(request_id, None)
        if request is not None:
            request.sampling.grammar = None  # its matcher goes now, not when the last reference to the request does
            self.scheduler.finish(request.seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[StepResult]:
        """One scheduled step, a prefill chunk or a decode batch: a result for every sequence that now has a new
        token (not those part-way through their prompt), for every one whose prompt has run and that asked for no
        token, and for every one that failed."""
        scheduled = self.scheduler.schedule()
        if scheduled is None:
            return []
        now = time.monotonic()
        for seq in scheduled.seqs:
            if seq.scheduled_time is None:
                seq.scheduled_time = now
        try:
            logits, failed = self._run(scheduled)
        except Exception:  # not one request's fault that we can tell: the step's requests have no usable state
            ids = ", ".join(seq.request_id for seq in scheduled.seqs)
            log.exception("the model's %s step failed; failing its requests %s", scheduled.kind, ids)
            return [StepResult(seq, error=MODEL_STEP_FAILED) for seq in scheduled.seqs]
        results = [StepResult(seq, error=PROMPT_LOGPROBS_FAILED) for seq in failed]
        done = [i for i, s in enumerate(scheduled.seqs) if s.num_uncomputed == 0 and s not in failed]  # prompt run
        results += [StepResult(scheduled.seqs[i]) for i in done if not scheduled.seqs[i].params.max_tokens]
        rows = [i for i in done if scheduled.seqs[i].params.max_tokens]
        if not rows:
            return results
        requests = [self.requests[scheduled.seqs[i].request_id] for i in rows]
        sampled = self._sample(logits if len(rows) == len(scheduled.seqs) else logits[rows], requests)
        for request, result in zip(requests, sampled):
            if result.token is None:
                continue
            grammar = request.sampling.grammar
            if grammar is not None and not grammar.accept(result.token.token_id):
                result.token, result.error = None, GRAMMAR_REJECTED
                continue
            result.seq.append_token(result.token.token_id)
            self.generation_tokens += 1
        results += sampled
        return results

    def _run(self, scheduled: ScheduledStep) -> tuple[torch.Tensor, list[Sequence]]:
        """The step's logits, and the sequences whose prompt logprobs could not be computed (failed alone)."""
        seqs = scheduled.seqs
        failed = []
        if scheduled.kind == "prefill":
            starts = [s.num_computed_tokens for s in seqs]
            chunks = [s.token_ids[start : start + n] for s, start, n in zip(seqs, starts, scheduled.num_tokens)]
            tables = [s.block_table for s in seqs]
            if any(s.scores_prompt for s in seqs):
                logits, hidden = self.runner.prefill_with_hidden_states(chunks, starts, tables)
                failed = self._score_prompts(seqs, starts, scheduled.num_tokens, hidden)
            else:
                logits = self.runner.prefill(chunks, starts, tables)
        else:
            logits = self.runner.decode(
                [s.token_ids[-1] for s in seqs], [s.num_tokens - 1 for s in seqs], [s.block_table for s in seqs]
            )
        for seq, n in zip(seqs, scheduled.num_tokens):
            seq.num_computed_tokens += n
            self.blocks.seal(seq)
        return logits, failed

    def _score_prompts(
        self, seqs: list[Sequence], starts: list[int], num_tokens: list[int], hidden: torch.Tensor
    ) -> list[Sequence]:
        """Prompt logprobs of the scoring sequences' chunks, each on its own: one that fails fails its request."""
        failed = []
        for row, (seq, start, n) in enumerate(zip(seqs, starts, num_tokens)):
            if not seq.scores_prompt:
                continue
            try:
                score_prompt_chunk(self.runner, seq, start, hidden[row, :n])
            except Exception:
                log.exception("prompt logprobs of request %s failed; failing it alone", seq.request_id)
                failed.append(seq)
        return failed

    def _sample(self, logits: torch.Tensor, requests: list[CoreRequest]) -> list[StepResult]:
        """The batch in one call; if that raises, row by row, so that only the requests whose rows fail fail."""
        try:
            tokens = self.sampler.sample(logits, [r.sampling for r in requests])
            return [StepResult(r.seq, token=token) for r, token in zip(requests, tokens)]
        except Exception:
            pass
        results = []
        for row, request in enumerate(requests):
            try:
                (token,) = self.sampler.sample(logits[row : row + 1], [request.sampling])
                results.append(StepResult(request.seq, token=token))
            except Exception:
                log.exception("sampling request %s failed; failing it alone", request.seq.request_id)
                results.append(StepResult(request.seq, error=SAMPLING_FAILED))
        return results
