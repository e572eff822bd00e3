"""The engine end to end on a compiled tiny artifact: batching, caching, preemption, sampling, streaming."""

import asyncio
import threading

import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.compile.verify.references import reference_model
from ingot.errors import ContextLengthError, OptionError, RequestError
from ingot.runtime import sampler as sampler_module
from ingot.runtime.engine import Engine, EngineStopped
from ingot.runtime.sampling_params import SamplingParams

GREEDY_64 = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
PROMPTS = [
    "The quick brown fox",
    "Compilers turn programs into fast code, and servers",
    "Hé",
    "def main():\n    return sum(i * i for i in range(10))\n" * 2,
]


def test_batched_greedy_equals_one_at_a_time_and_transformers(engine, artifact):
    together = engine.generate(PROMPTS, GREEDY_64)
    alone = [engine.generate([p], GREEDY_64)[0] for p in PROMPTS]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert all(len(c.token_ids) == 64 and c.finish_reason == "length" for c in together)
    _assert_transformers_generates(artifact, engine, together)


@pytest.mark.parametrize("family", ["llama3", "qwen2", "qwen3"])
def test_batched_greedy_equals_transformers_for_every_family(compiled, family):
    path = compiled(family).path
    engine = Engine(path, check_artifact(path), num_blocks=64)
    try:
        _assert_transformers_generates(path, engine, engine.generate(PROMPTS, GREEDY_64))
    finally:
        engine.shutdown()


def _assert_transformers_generates(artifact, engine: Engine, completions) -> None:
    """transformers' greedy ``generate`` on the float32 reference gives the same tokens, prompt by prompt."""
    reference = reference_model(artifact, check_artifact(artifact))
    for prompt, completion in zip(PROMPTS, completions):
        ids = torch.tensor([engine.tokenize(prompt)])
        expected = reference.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
        assert completion.token_ids == expected[0, ids.shape[1] :].tolist()


def test_shared_prefix_is_computed_once(engine):
    prompt = "The lighthouse keeper kept a notebook in which she wrote down every ship " * 2
    first = engine.generate([prompt], GREEDY_64)[0]
    hits = engine.stats().prefix_hit_tokens
    second = engine.generate([prompt], GREEDY_64)[0]
    assert engine.stats().prefix_hit_tokens - hits >= engine.blocks.block_size * 2
    assert second.token_ids == first.token_ids


def test_preemption_under_a_tiny_kv_budget_still_finishes_everything(artifact, engine):
    params = SamplingParams(temperature=0, max_tokens=120, ignore_eos=True)
    expected = [c.token_ids for c in engine.generate(PROMPTS, params)]
    small = Engine(artifact, check_artifact(artifact), num_blocks=18)  # 17 usable blocks of 16 tokens
    try:
        got = small.generate(PROMPTS, params)
        assert small.stats().num_preemptions > 0
        assert [c.token_ids for c in got] == expected
        assert small.stats().kv_blocks_used == 0
    finally:
        small.shutdown()


def test_a_token_cap_chunks_prefill_and_decode_without_changing_the_output(artifact, engine):
    capped = Engine(artifact, check_artifact(artifact), num_blocks=128, max_num_batched_tokens=3)
    prefill_steps: list[list[int]] = []
    decode_batches: list[int] = []
    prefill, decode = capped.runner.prefill, capped.runner.decode
    capped.runner.prefill = lambda ids, *rest: prefill_steps.append([len(c) for c in ids]) or prefill(ids, *rest)
    capped.runner.decode = lambda ids, *rest: decode_batches.append(len(ids)) or decode(ids, *rest)
    try:
        prompts = [PROMPTS[3]] + [PROMPTS[0]] * 3
        params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        assert [c.token_ids for c in capped.generate(prompts, params)] == [
            c.token_ids for c in engine.generate(prompts, params)
        ]
    finally:
        capped.shutdown()
    prompt_tokens = len(capped.tokenize(PROMPTS[3])) + 3 * len(capped.tokenize(PROMPTS[0]))
    assert max(map(sum, prefill_steps)) == 3 and sum(map(sum, prefill_steps)) >= prompt_tokens
    assert max(decode_batches) == 3  # four requests decode, at most three a step


def test_same_seed_same_output_whatever_the_batch(engine):
    seeded = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=32, seed=1234, ignore_eos=True)
    alone = engine.generate([PROMPTS[0]], seeded)[0]
    others = [SamplingParams(temperature=0.8, max_tokens=40, seed=s, ignore_eos=True) for s in (1, 2, 3)]
    in_batch = engine.generate([PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[3]], [others[0], seeded, *others[1:]])
    assert in_batch[1].token_ids == alone.token_ids
    other_seed = engine.generate([PROMPTS[0]], SamplingParams(temperature=1.0, max_tokens=32, seed=99, ignore_eos=True))
    assert other_seed[0].token_ids != alone.token_ids


def test_stop_string_split_across_tokens_is_cut_from_the_output(engine):
    full = engine.generate([PROMPTS[1]], GREEDY_64)[0]
    pieces = [engine.tokenizer.decode([t]) for t in full.token_ids]
    # a stop string made of the end of one token and the start of the next, both non-empty
    index = next(i for i in range(5, len(pieces) - 1) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[index][-1] + pieces[index + 1][:1]
    text_before = "".join(pieces[:index]) + pieces[index][:-1]
    stopped = engine.generate([PROMPTS[1]], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True, stop=[stop]))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.find(stop)]
    assert stop not in stopped.text and stopped.text.startswith(text_before[: len(stopped.text)])


def test_min_tokens_holds_back_stop_strings(engine):
    full = engine.generate([PROMPTS[1]], GREEDY_64)[0]
    early = next(i for i in range(1, 10) if engine.tokenizer.decode(full.token_ids[i]).strip())
    stop = engine.tokenizer.decode(full.token_ids[early]).strip()
    params = {"temperature": 0, "max_tokens": 64, "ignore_eos": True, "stop": [stop]}
    assert len(engine.generate([PROMPTS[1]], SamplingParams(**params))[0].token_ids) <= early + 1
    held = engine.generate([PROMPTS[1]], SamplingParams(**params, min_tokens=20))[0]
    assert len(held.token_ids) >= 20 and held.token_ids == full.token_ids[: len(held.token_ids)]
    assert held.text == full.text[: len(held.text)] and stop in held.text  # the early stop string passed


def test_stop_token_ids_and_eos_finish_with_stop(engine):
    full = engine.generate([PROMPTS[0]], GREEDY_64)[0]
    stop_id = full.token_ids[10]
    stopped = engine.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=64, stop_token_ids=[stop_id]))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: full.token_ids.index(stop_id) + 1]


def test_context_overflow_is_refused_up_front_with_both_numbers(engine):
    with pytest.raises(ContextLengthError) as error:
        engine.generate(["word " * 100], SamplingParams(max_tokens=250))
    assert error.value.max_context == 256 and error.value.max_tokens == 250 and error.value.prompt_tokens > 6
    assert "256" in str(error.value)
    with pytest.raises(ContextLengthError, match="no room to generate") as error:
        engine.generate([list(range(3, 259))], SamplingParams(max_tokens=1))
    assert error.value.param is None and "256" in str(error.value)


def test_a_kv_budget_too_small_for_one_sequence_is_an_option_error(artifact):
    with pytest.raises(OptionError, match="kv-cache-gb"):
        Engine(artifact, check_artifact(artifact), num_blocks=4)
    with pytest.raises(OptionError, match="kv-cache-gb must be more than 0"):  # not the default budget
        Engine(artifact, check_artifact(artifact), kv_cache_gb=0)


def test_bad_prompts_are_refused(engine):
    with pytest.raises(RequestError, match="empty"):
        engine.generate([""], GREEDY_64)
    with pytest.raises(RequestError, match="token ids"):
        engine.generate([[1, 2, 10**9]], GREEDY_64)


def test_generate_takes_no_prompts_and_refuses_mismatched_params(engine):
    assert engine.generate([], GREEDY_64) == []
    with pytest.raises(RequestError, match="2 prompts but 1 sampling params"):
        engine.generate(PROMPTS[:2], [GREEDY_64])


def test_a_request_id_in_use_is_refused_until_its_request_ends(engine):
    ended = threading.Event()
    long = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    engine.add_request(PROMPTS[0], long, lambda output: output.finished and ended.set(), request_id="mine")
    with pytest.raises(RequestError, match="in use"):
        engine.add_request(PROMPTS[1], GREEDY_64, lambda output: None, request_id="mine")
    engine.abort("mine")
    assert ended.wait(30)
    assert engine.generate([PROMPTS[0]], GREEDY_64)[0].finish_reason == "length"  # the engine kept serving
    again = threading.Event()
    engine.add_request(PROMPTS[1], GREEDY_64, lambda output: output.finished and again.set(), request_id="mine")
    assert again.wait(30)  # free again


def test_shutdown_ends_every_request_and_refuses_new_ones(artifact):
    engine = Engine(artifact, check_artifact(artifact), num_blocks=64)
    outputs, started = [], threading.Event()

    def sink(output) -> None:
        outputs.append(output)
        started.set()

    engine.add_request(PROMPTS[0], SamplingParams(max_tokens=200, ignore_eos=True), sink)
    assert started.wait(30)
    engine.shutdown()
    assert outputs[-1].finished and outputs[-1].finish_reason == "abort"
    assert engine.stats().kv_blocks_used == 0
    with pytest.raises(EngineStopped):
        engine.add_request(PROMPTS[0], GREEDY_64, sink)
    engine.abort("anything")  # nothing left to abort: not an error


def test_logprobs_come_with_each_token(engine):
    out = engine.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=8, logprobs=3, ignore_eos=True))[0]
    assert len(out.logprobs) == 8
    for token_id, sampled in zip(out.token_ids, out.logprobs):
        assert sampled.token_id == token_id and len(sampled.top_logprobs) == 3
        assert sampled.top_logprobs[0][0] == token_id  # greedy picks the most likely token


def test_stream_deltas_add_up_and_closing_early_aborts(engine):
    async def run():
        deltas = []
        async for output in engine.stream(PROMPTS[1], GREEDY_64):
            deltas.append(output)
        stream = engine.stream(PROMPTS[2], SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
        async for output in stream:
            break
        await stream.aclose()
        return deltas

    deltas = asyncio.run(run())
    assert deltas[-1].finished and deltas[-1].finish_reason == "length"
    assert deltas[-1].metrics.time_to_first_token > 0 and len(deltas[-1].metrics.inter_token_latencies) == 63
    full = engine.generate([PROMPTS[1]], GREEDY_64)[0]  # queued behind the abort, so it ran after it
    assert "".join(d.text for d in deltas) == full.text
    stats = engine.stats()
    assert stats.num_running == 0 and stats.num_waiting == 0 and stats.kv_blocks_used == 0


def _unchecked(params: SamplingParams, **values: object) -> SamplingParams:
    """``params`` with ``values`` set past validation: what a gap in the checks would let through."""
    for name, value in values.items():
        object.__setattr__(params, name, value)
    return params


def test_sampling_values_past_validation_never_fail_the_step_of_other_requests(engine):
    """temperature 1e308 (infinite in float32) with min_p and min_tokens once made a NaN row whose sampling raised,
    and the engine aborted every running request."""
    alone = engine.generate([PROMPTS[0]], GREEDY_64)[0]
    poisoned = _unchecked(SamplingParams(min_p=0.1, min_tokens=2, max_tokens=8, seed=0), temperature=1e308)
    canary, odd = engine.generate([PROMPTS[0], PROMPTS[1]], [GREEDY_64, poisoned])
    assert canary.finish_reason == "length" and canary.token_ids == alone.token_ids
    assert odd.finish_reason in ("stop", "length") and len(odd.token_ids) >= 2


def test_a_request_whose_sampling_fails_finishes_alone_with_an_error(engine, monkeypatch, caplog):
    alone = engine.generate([PROMPTS[0]], GREEDY_64)[0]

    def broken(row, request):
        raise RuntimeError("sampling broke")

    monkeypatch.setattr(sampler_module, "_sample_row", broken)  # only non-greedy rows sample one by one
    canary, failed = engine.generate([PROMPTS[0], PROMPTS[1]], [GREEDY_64, SamplingParams(temperature=0.8)])
    assert canary.finish_reason == "length" and canary.token_ids == alone.token_ids
    assert failed.finish_reason == "error" and failed.error and "sampling broke" not in failed.error
    assert failed.request_id in caplog.text
    assert engine.stats().kv_blocks_used == 0


def test_a_sink_that_fails_ends_its_own_request_only(engine):
    calls = []

    def sink(output) -> None:
        calls.append(output)
        raise RuntimeError("the consumer is gone")

    alone = engine.generate([PROMPTS[0]], GREEDY_64)[0]
    engine.add_request(PROMPTS[1], SamplingParams(temperature=0, max_tokens=200, ignore_eos=True), sink)
    assert engine.generate([PROMPTS[0]], GREEDY_64)[0].token_ids == alone.token_ids
    assert len(calls) <= 2  # the output that failed, and at most the error that ends the request
    assert calls[-1].finished or len(calls) == 1
    stats = engine.stats()
    assert stats.num_running == stats.num_waiting == stats.kv_blocks_used == 0


def test_a_failed_model_step_fails_its_requests_with_an_error_and_the_engine_keeps_serving(engine, monkeypatch, caplog):
    decode = engine.runner.decode
    failures = []

    def fails_once(*args):
        if not failures:
            failures.append(True)
            raise RuntimeError("the program failed")
        return decode(*args)

    monkeypatch.setattr(engine.runner, "decode", fails_once)
    completions = engine.generate(PROMPTS[:2], GREEDY_64)
    assert [c.finish_reason for c in completions] == ["error", "error"]
    assert all(c.error for c in completions)
    assert all(c.request_id in caplog.text for c in completions)  # the log names the requests it failed
    assert engine.generate([PROMPTS[0]], GREEDY_64)[0].finish_reason == "length"
    assert engine.stats().kv_blocks_used == 0
