"""Prompt logprobs from the engine on a compiled tiny artifact: equal to the float32 reference's, chunked prefill,
batches, the prefix cache and max_tokens 0."""

import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.compile.verify.references import reference_model
from ingot.errors import RequestError, SamplingParamsError
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams

# Longer than the artifact's largest prefill chunk (64 tokens): its prompt runs in several prefill steps.
LONG = "The lighthouse keeper kept a notebook in which she wrote down every ship that passed. " * 2
SHORT = "Compilers turn programs into fast code"
SCORE = SamplingParams(temperature=0, max_tokens=0, prompt_logprobs=3)


@pytest.fixture(scope="module")
def reference(artifact):
    return reference_model(artifact, check_artifact(artifact))


def expected_logprobs(reference, token_ids: list[int]) -> torch.Tensor:
    """log_softmax of the float32 reference's logits: row p is the distribution of token p + 1."""
    with torch.no_grad():
        logits = reference(torch.tensor([token_ids])).logits[0].float()
    return logits.log_softmax(dim=-1)


def test_prompt_logprobs_equal_the_float32_reference_across_prefill_chunks(engine, reference):
    token_ids = engine.tokenize(LONG)
    assert len(token_ids) > 2 * engine.runner.prefill_sizes[-1]  # three prefill steps at least
    (completion,) = engine.generate([LONG], SCORE)
    scored = completion.prompt_logprobs
    assert completion.finish_reason == "length" and completion.token_ids == [] and completion.text == ""
    assert len(scored) == len(token_ids) and scored[0] is None
    expected = expected_logprobs(reference, token_ids)
    for position, entry in enumerate(scored[1:]):
        row, token = expected[position], token_ids[position + 1]
        assert entry.token_id == token
        assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
        assert entry.rank == 1 + int((row > row[token]).sum())
        values, ids = row.topk(3)
        assert [i for i, _ in entry.top_logprobs] == ids.tolist()
        assert [lp for _, lp in entry.top_logprobs] == pytest.approx(values.tolist(), abs=1e-4)


def test_a_batch_scores_each_prompt_as_alone_and_others_pay_nothing(engine):
    plain = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    scoring = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, prompt_logprobs=0)
    alone = engine.generate([SHORT, LONG], SCORE)
    together = engine.generate([SHORT, LONG, SHORT], [scoring, SCORE, plain])
    for got, want in zip(together[:2], alone):
        assert [e.token_id for e in got.prompt_logprobs[1:]] == [e.token_id for e in want.prompt_logprobs[1:]]
        assert [e.logprob for e in got.prompt_logprobs[1:]] == pytest.approx(
            [e.logprob for e in want.prompt_logprobs[1:]], abs=1e-5
        )
    assert all(entry.top_logprobs == [] for entry in together[0].prompt_logprobs[1:])  # prompt_logprobs=0
    assert together[2].prompt_logprobs is None
    # scoring changes nothing about the tokens generated
    assert together[0].token_ids == together[2].token_ids and len(together[0].token_ids) == 4


def test_a_cached_prefix_is_recomputed_for_a_scoring_request(engine, reference):
    prompt = "A prefix that the cache will hold before anyone scores it, " * 3
    token_ids = engine.tokenize(prompt)
    first = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=2))[0]
    hits = engine.stats().prefix_hit_tokens
    (scored,) = engine.generate([prompt], SCORE)
    assert engine.stats().prefix_hit_tokens == hits  # served by running the prompt, not from the cache
    assert len(scored.prompt_logprobs) == len(token_ids)
    expected = expected_logprobs(reference, token_ids)
    want = [float(expected[p, token_ids[p + 1]]) for p in range(len(token_ids) - 1)]
    assert [e.logprob for e in scored.prompt_logprobs[1:]] == pytest.approx(want, abs=1e-4)
    # a request that does not score still reuses the cache the scoring request left
    again = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=2))[0]
    assert engine.stats().prefix_hit_tokens - hits >= 2 * engine.blocks.block_size
    assert again.token_ids == first.token_ids


def test_preempted_scoring_requests_still_score_every_prompt_token_once(artifact, engine):
    params = SamplingParams(temperature=0, max_tokens=100, ignore_eos=True, prompt_logprobs=1)
    prompts = [LONG, SHORT, LONG[:150], SHORT * 3]
    expected = engine.generate(prompts, params)
    small = Engine(artifact, check_artifact(artifact), num_blocks=20)
    try:
        got = small.generate(prompts, params)
        assert small.stats().num_preemptions > 0
    finally:
        small.shutdown()
    for g, e in zip(got, expected):
        assert g.token_ids == e.token_ids
        assert [x.token_id for x in g.prompt_logprobs[1:]] == [x.token_id for x in e.prompt_logprobs[1:]]
        assert [x.logprob for x in g.prompt_logprobs[1:]] == pytest.approx(
            [x.logprob for x in e.prompt_logprobs[1:]], abs=1e-5
        )


def test_max_tokens_zero_needs_prompt_logprobs():
    with pytest.raises(SamplingParamsError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(SamplingParamsError, match="prompt_logprobs"):
        SamplingParams(max_tokens=0, prompt_logprobs=21)
    assert SamplingParams(max_tokens=0, prompt_logprobs=0).max_tokens == 0


def test_an_artifact_without_a_logits_program_serves_but_cannot_score(artifact):
    """Older artifacts (and targets that plan no logits program): outputs are read by name, scoring is refused."""
    manifest = check_artifact(artifact)
    without = manifest.model_copy(update={"programs": [p for p in manifest.programs if p.kind != "logits"]})
    engine = Engine(artifact, without, num_blocks=32)
    try:
        assert not engine.runner.scores_prompts
        (plain,) = engine.generate([SHORT], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
        assert len(plain.token_ids) == 3
        with pytest.raises(RequestError, match="cannot score prompts") as refused:
            engine.generate([SHORT], SCORE)
        assert refused.value.param == "prompt_logprobs"
    finally:
        engine.shutdown()
