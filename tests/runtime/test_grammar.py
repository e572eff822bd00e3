"""Grammar masks on a batch's logits, with the tiny models' real byte-level tokenizer and no model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ingot.runtime.grammar import GrammarCompiler, GrammarError, GrammarSpec, mask_logits
from ingot.runtime.sampler import Sampler, SampleRequest
from ingot.runtime.sampling_params import SamplingParams
from tests.tiny_models import make_tokenizer

EXTRA_LOGITS = 40  # the model's vocabulary (the logits' width) is wider than the tokenizer's, as padded ones are


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def grammars(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, len(tokenizer) + EXTRA_LOGITS, [tokenizer.eos_token_id])


def allowed(row: torch.Tensor) -> set[int]:
    return set(torch.isfinite(row).nonzero().squeeze(1).tolist())


def test_only_the_constrained_row_is_masked_and_only_to_what_the_grammar_allows(tokenizer, grammars):
    state = grammars.compile(GrammarSpec("choice", '["yes", "no"]')).new_state()
    logits = torch.randn(3, grammars.vocab_size)
    before = logits.clone()
    masked = mask_logits(logits, [1], [state])
    assert torch.equal(logits, before)  # a copy
    assert torch.equal(masked[0], logits[0]) and torch.equal(masked[2], logits[2])
    ids = allowed(masked[1])
    assert ids and max(ids) < len(tokenizer)  # never an id past the tokenizer's
    texts = {tokenizer.decode([i]) for i in ids}
    assert all("yes".startswith(t) or "no".startswith(t) for t in texts)
    assert {"y", "n"} <= texts


def test_a_complete_grammar_allows_only_eos(tokenizer, grammars):
    state = grammars.compile(GrammarSpec("regex", "ab")).new_state()
    for token in tokenizer("ab", add_special_tokens=False).input_ids:
        assert state.accept(token)
    masked = mask_logits(torch.zeros(1, grammars.vocab_size), [0], [state])
    assert allowed(masked[0]) == {tokenizer.eos_token_id}
    assert not state.accept(tokenizer("a", add_special_tokens=False).input_ids[0])
    assert state.accept(tokenizer.eos_token_id) and state.finished


def test_the_sampler_picks_an_allowed_token_in_a_mixed_batch(tokenizer, grammars):
    compiled = grammars.compile(GrammarSpec("json_schema", '{"enum": ["x"]}'))
    logits = torch.zeros(2, grammars.vocab_size)
    quote = tokenizer('"', add_special_tokens=False).input_ids[0]
    favourite = tokenizer("z", add_special_tokens=False).input_ids[0]
    logits[:, favourite] = 100.0  # what both rows would pick unconstrained
    requests = [
        SampleRequest(SamplingParams(temperature=0, logprobs=0), [], [], None, [], grammar=state)
        for state in (compiled.new_state(), None)
    ]
    constrained, free = Sampler().sample(logits, requests)
    assert constrained.token_id == quote and math.isfinite(constrained.logprob)
    assert free.token_id == favourite


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (GrammarSpec("regex", "([a-", "structured_outputs"), "regex"),
        (GrammarSpec("json_schema", '{"type": "nonsense"}'), "JSON schema"),
        (GrammarSpec("grammar", "root ::= missing", "structured_outputs"), "grammar"),
    ],
)
def test_an_invalid_grammar_is_a_request_error_naming_its_field(grammars, spec, words):
    with pytest.raises(GrammarError, match=words) as error:
        grammars.compile(spec)
    assert error.value.param == spec.param


def test_choices_are_exact_whatever_their_characters(tokenizer, grammars):
    choices = ["é🦊", 'a"b\\c', "x\ny\u0001"]
    compiled = grammars.compile(GrammarSpec("choice", json.dumps(choices)))
    for choice in choices:
        state = compiled.new_state()
        assert all(state.accept(token) for token in tokenizer(choice, add_special_tokens=False).input_ids)
        assert state.accept(tokenizer.eos_token_id)
    state = compiled.new_state()
    assert not state.accept(tokenizer("z", add_special_tokens=False).input_ids[0])
