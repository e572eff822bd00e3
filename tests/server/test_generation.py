"""Chat and text completions through the official openai client: shapes, streaming, n, stop, seeds, logprobs."""

from __future__ import annotations

import json

import httpx
import pytest

GREEDY = dict(temperature=0, extra_body={"ignore_eos": True})
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "Name a fox."}]},
]


def test_models_lists_the_served_model(client, server):
    models = client.models.list().data
    assert [m.id for m in models] == [server.model]
    assert models[0].max_model_len == server.engine.max_context


def test_chat_runs_the_chat_template_then_completes(client, server):
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=12, **GREEDY)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    choice = chat.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"

    tokens = server.http().post("/tokenize", json={"messages": MESSAGES}).json()["tokens"]
    assert chat.usage.prompt_tokens == len(tokens)
    assert chat.usage.completion_tokens == 12
    assert chat.usage.total_tokens == len(tokens) + 12
    # The same tokens as a raw completion: the template (with the assistant turn opened) is what the model saw.
    raw = client.completions.create(model=server.model, prompt=tokens, max_tokens=12, **GREEDY)
    assert raw.choices[0].text == choice.message.content


def test_max_completion_tokens_is_max_tokens(client, server):
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=5, **GREEDY)
    assert chat.usage.completion_tokens == 5


def test_completion_and_its_stream_agree(client, server):
    whole = client.completions.create(model=server.model, prompt="The quick brown fox", max_tokens=20, **GREEDY)
    stream = client.completions.create(
        model=server.model, prompt="The quick brown fox", max_tokens=20, stream=True, **GREEDY
    )
    chunks = list(stream)
    assert whole.object == "text_completion" and whole.usage.completion_tokens == 20
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)


def test_chat_stream_opens_with_the_role_and_matches_the_whole_reply(client, server):
    whole = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=16, **GREEDY)
    chunks = list(
        client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=16, stream=True, **GREEDY)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stream_usage_comes_last_when_asked_for(client, server, endpoint):
    if endpoint == "chat":
        stream = client.chat.completions.create(
            model=server.model, messages=MESSAGES, max_tokens=7, n=2, stream=True,
            stream_options={"include_usage": True}, **GREEDY,
        )  # fmt: skip
    else:
        stream = client.completions.create(
            model=server.model, prompt="Hello", max_tokens=7, n=2, stream=True,
            stream_options={"include_usage": True}, **GREEDY,
        )  # fmt: skip
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 14
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 14
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chunks_carry_usage_null_until_the_last_as_openai_sends_them(server, include_usage):
    body = {"model": server.model, "prompt": "Hello", "max_tokens": 3, "stream": True, "temperature": 0}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    for path, extra in [("/v1/completions", {}), ("/v1/chat/completions", {"messages": MESSAGES})]:
        request = {k: v for k, v in body.items() if not (extra and k == "prompt")} | extra
        with server.http() as http, http.stream("POST", path, json=request) as response:
            data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        chunks = [json.loads(d) for d in data[:-1]]
        assert data[-1] == "[DONE]"
        if include_usage:
            assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
        else:
            assert not any("usage" in c for c in chunks)


def test_n_choices_with_a_seed_differ_from_each_other_and_repeat_exactly(client, server):
    def ask(seed: int):
        response = client.completions.create(
            model=server.model, prompt="Once upon a time", max_tokens=24, n=2, temperature=1.0, seed=seed,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        return [c.text for c in sorted(response.choices, key=lambda c: c.index)]

    first = ask(1234)
    assert len(first) == 2 and first[0] != first[1]
    assert ask(1234) == first
    assert ask(4321) != first


def test_prompt_forms_and_choice_order(client, server):
    texts = ["The quick brown fox", "Hello there"]
    ids = [server.engine.tokenize(p) for p in texts]
    by_text = client.completions.create(model=server.model, prompt=texts, max_tokens=6, n=2, **GREEDY)
    by_ids = client.completions.create(model=server.model, prompt=ids, max_tokens=6, n=2, **GREEDY)
    outputs = [c.text for c in sorted(by_text.choices, key=lambda c: c.index)]
    assert [c.index for c in by_text.choices] == [0, 1, 2, 3]
    assert outputs == [c.text for c in sorted(by_ids.choices, key=lambda c: c.index)]
    assert outputs[0] == outputs[1] and outputs[2] == outputs[3]  # prompt-major; greedy choices of a prompt agree
    assert by_text.usage.prompt_tokens == len(ids[0]) + len(ids[1])  # each prompt counted once, not once per choice


def test_stop_strings_end_the_text_before_them(client, server):
    prompt = "Hello"
    full = client.completions.create(model=server.model, prompt=prompt, max_tokens=24, **GREEDY).choices[0].text
    assert len(full) >= 8  # the random tiny model writes text here, not just halves of UTF-8 characters
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    for given in (stop, [stop, "never-appears"]):
        cut = client.completions.create(model=server.model, prompt=prompt, max_tokens=24, stop=given, **GREEDY)
        assert cut.choices[0].text == full[: full.index(stop)]
        assert cut.choices[0].finish_reason == "stop"


def test_default_max_tokens_is_the_rest_of_the_context(client, server):
    prompt = "The quick brown fox"
    response = client.completions.create(model=server.model, prompt=prompt, **GREEDY)
    assert response.usage.completion_tokens == server.engine.max_context - len(server.engine.tokenize(prompt))
    assert response.choices[0].finish_reason == "length"


def test_completion_logprobs_shape(client, server):
    response = client.completions.create(model=server.model, prompt="Hello", max_tokens=8, logprobs=3, **GREEDY)
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 8
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)
    for token, chosen, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert 1 <= len(top) <= 4 and top[token] == chosen <= 0  # the 3 alternatives and the sampled token
        assert chosen == pytest.approx(max(top.values()))  # greedy picks the most likely token


def test_chat_logprobs_shape(client, server):
    response = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=6, logprobs=True, top_logprobs=2, **GREEDY
    )
    content = response.choices[0].logprobs.content
    assert len(content) == 6
    for token in content:
        assert bytes(token.bytes).decode("utf-8") == token.token
        assert len(token.top_logprobs) == 2
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
    streamed = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=6, logprobs=True, stream=True, **GREEDY
    )
    tokens = [t for chunk in streamed for choice in chunk.choices if choice.logprobs for t in choice.logprobs.content]
    assert [t.logprob for t in tokens] == pytest.approx([t.logprob for t in content])
    assert all(t.top_logprobs == [] for t in tokens)


def test_sampling_parameters_are_all_accepted(client, server):
    response = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=8, temperature=0.7, top_p=0.9, presence_penalty=0.5,
        frequency_penalty=0.5, logit_bias={"5": 5}, seed=3, stop=["\n\n"], user="tests",
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "stop_token_ids": [2], "min_tokens": 2,
                    "skip_special_tokens": True},
    )  # fmt: skip
    assert response.usage.completion_tokens >= 2


def test_null_parameters_mean_their_defaults(server):
    body = {"prompt": "Hello", "max_tokens": 3, "n": None, "stream": None, "temperature": None, "stop": None}
    response = server.http().post("/v1/completions", json=body)
    assert response.status_code == 200 and len(response.json()["choices"]) == 1


def test_tokenize_and_detokenize_round_trip(server):
    http = server.http()
    tokenized = http.post("/tokenize", json={"prompt": "Hello world", "return_token_strs": True}).json()
    assert tokenized["count"] == len(tokenized["tokens"]) == len(tokenized["token_strs"])
    assert tokenized["max_model_len"] == server.engine.max_context
    assert http.post("/detokenize", json={"tokens": tokenized["tokens"]}).json() == {"prompt": "Hello world"}


def test_health_version_and_metrics_need_no_key(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/version").json()["version"]
    assert httpx.get(f"{server.url}/metrics").status_code == 200
