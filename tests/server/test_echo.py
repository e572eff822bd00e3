"""Scoring prompts over HTTP: /v1/completions with echo (and logprobs), max_tokens 0, streaming, and vLLM's
prompt_logprobs, against the engine's own prompt logprobs."""

from __future__ import annotations

import json

import pytest

from ingot.runtime.sampling_params import SamplingParams
from tests.server.test_errors import assert_openai_error

COMPLETIONS = "/v1/completions"
PROMPT = "The quick brown fox jumps over the lazy dog"
GREEDY = dict(temperature=0, extra_body={"ignore_eos": True})


def engine_prompt_logprobs(server, prompt, top: int = 2):
    (completion,) = server.engine.generate([prompt], SamplingParams(max_tokens=0, prompt_logprobs=top))
    return completion.prompt_logprobs


def test_echo_with_logprobs_returns_the_prompt_and_its_logprobs_first(client, server):
    plain = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=5, logprobs=2, **GREEDY)
    echoed = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=5, logprobs=2, echo=True, **GREEDY)
    choice, generated = echoed.choices[0], plain.choices[0]
    assert choice.text == PROMPT + generated.text and choice.finish_reason == "length"
    prompt_ids = server.engine.tokenize(PROMPT, add_special_tokens=True)
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(prompt_ids) + 5
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None  # nothing predicts the first
    expected = engine_prompt_logprobs(server, PROMPT)
    assert logprobs.token_logprobs[1 : len(prompt_ids)] == pytest.approx([e.logprob for e in expected[1:]], abs=1e-6)
    for top, entry in zip(logprobs.top_logprobs[1 : len(prompt_ids)], expected[1:]):
        assert max(top.values()) >= entry.logprob and len(top) in (2, 3)  # 2 alternatives (+ the token itself)
    # the generated part is what a request without echo gets
    assert logprobs.tokens[len(prompt_ids) :] == generated.logprobs.tokens
    assert logprobs.token_logprobs[len(prompt_ids) :] == pytest.approx(generated.logprobs.token_logprobs, abs=1e-6)
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    assert echoed.usage.prompt_tokens == len(prompt_ids) and echoed.usage.completion_tokens == 5


def test_max_tokens_zero_with_echo_scores_the_prompt_alone(client, server):
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=0, logprobs=0, echo=True)
    choice = response.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length"
    prompt_ids = server.engine.tokenize(PROMPT, add_special_tokens=True)
    assert len(choice.logprobs.token_logprobs) == len(prompt_ids)
    assert all(len(top) == 1 for top in choice.logprobs.top_logprobs[1:])  # logprobs 0: the token itself
    assert response.usage.completion_tokens == 0
    # without logprobs: the prompt alone
    bare = client.completions.create(model=server.model, prompt=[prompt_ids, prompt_ids[:3]], max_tokens=0, echo=True)
    texts = [c.text for c in bare.choices]
    assert texts == [server.engine.tokenizer.decode(ids) for ids in (prompt_ids, prompt_ids[:3])]
    assert all(c.logprobs is None for c in bare.choices)


def test_max_tokens_zero_without_echo_is_refused(server):
    response = server.http().post(COMPLETIONS, json={"prompt": PROMPT, "max_tokens": 0})
    assert "echo" in assert_openai_error(response, 400, "max_tokens")["message"]


def test_a_streamed_echo_sends_the_prompt_in_the_first_chunk(client, server):
    whole = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, logprobs=1, echo=True, **GREEDY)
    stream = client.completions.create(
        model=server.model, prompt=PROMPT, max_tokens=6, logprobs=1, echo=True, stream=True, **GREEDY
    )
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    assert chunks[0].text.startswith(PROMPT)
    assert "".join(c.text for c in chunks) == whole.choices[0].text
    tokens = [t for c in chunks if c.logprobs for t in c.logprobs.tokens]
    offsets = [o for c in chunks if c.logprobs for o in c.logprobs.text_offset]
    logprobs = [lp for c in chunks if c.logprobs for lp in c.logprobs.token_logprobs]
    assert tokens == whole.choices[0].logprobs.tokens and offsets == whole.choices[0].logprobs.text_offset
    assert logprobs[0] is None and logprobs[1:] == pytest.approx(whole.choices[0].logprobs.token_logprobs[1:], abs=1e-6)


def test_vllm_prompt_logprobs_field(server):
    body = {"prompt": PROMPT, "max_tokens": 1, "prompt_logprobs": 2, "temperature": 0}
    choice = server.http().post(COMPLETIONS, json=body).json()["choices"][0]
    expected = engine_prompt_logprobs(server, PROMPT)
    scored = choice["prompt_logprobs"]
    assert scored[0] is None and len(scored) == len(expected)
    for entry, want in zip(scored[1:], expected[1:]):
        own = entry[str(want.token_id)]
        assert own["logprob"] == pytest.approx(want.logprob, abs=1e-6) and own["rank"] == want.rank
        assert {v["rank"] for v in entry.values()} >= {1, 2} and len(entry) == (2 if want.rank <= 2 else 3)
    assert choice["text"] and "logprobs" in choice and choice["logprobs"] is None  # no echo: the completion alone
    # not with streaming (vLLM's rule)
    refused = server.http().post(COMPLETIONS, json={**body, "stream": True})
    assert_openai_error(refused, 400, "prompt_logprobs")
    # a choice without prompt_logprobs keeps OpenAI's shape
    assert "prompt_logprobs" not in server.http().post(COMPLETIONS, json={"prompt": PROMPT, "max_tokens": 1}).json()["choices"][0]


def test_echo_with_n_echoes_every_choice(server):
    body = {"prompt": [PROMPT, "Hello"], "max_tokens": 2, "n": 2, "echo": True, "logprobs": 1, "temperature": 0}
    choices = server.http().post(COMPLETIONS, json=body).json()["choices"]
    assert [c["text"].startswith(p) for c, p in zip(choices, [PROMPT, PROMPT, "Hello", "Hello"])] == [True] * 4
    assert all(c["logprobs"]["token_logprobs"][0] is None for c in choices)
    assert json.dumps(choices[0]["logprobs"]) == json.dumps(choices[1]["logprobs"])
