"""No combination of sampling parameters hurts another client: each request is answered 200 or 400, and a greedy
stream running beside it always completes with its usual text.

temperature 1e308 (finite in JSON, infinite in float32) with min_p and min_tokens once made a NaN row whose sampling
raised, and the engine aborted every request in flight, the bystander's stream included.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

COMPLETIONS = "/v1/completions"
CANARY = {"prompt": "The quick brown fox", "max_tokens": 64, "temperature": 0, "ignore_eos": True}

# Values at and past the edges float32 and the API care about, then anything at all.
EDGES = [0.0, -0.0, 1e-300, 1e-45, 1e-5, 0.5, 1.0, 2.0, 100.0, 3.4e38, 3.5e38, 1e308, -1e308, math.inf, -math.inf, math.nan]
floats = st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True))
small_ints = st.integers(min_value=-3, max_value=40)


@st.composite
def sampling_bodies(draw: st.DrawFn) -> dict:
    """A completion request with a random subset of the sampling fields, any values the JSON can carry."""
    fields = {
        "temperature": floats,
        "top_p": floats,
        "top_k": st.one_of(small_ints, st.integers()),
        "min_p": floats,
        "presence_penalty": floats,
        "frequency_penalty": floats,
        "repetition_penalty": floats,
        "min_tokens": small_ints,
        "seed": st.integers(min_value=-(2**64), max_value=2**65),
        "logprobs": st.integers(min_value=-1, max_value=25),
        "n": st.integers(min_value=0, max_value=3),
        "ignore_eos": st.booleans(),
        "stop": st.lists(st.text(max_size=6), max_size=4),
        "stop_token_ids": st.lists(st.integers(min_value=-2, max_value=400), max_size=4),
        "logit_bias": st.dictionaries(st.integers(min_value=-2, max_value=400).map(str), floats, max_size=12),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    body = {name: draw(fields[name]) for name in chosen}
    return {"prompt": "Once upon a time", "max_tokens": draw(st.integers(min_value=1, max_value=12)), **body}


@pytest.fixture(scope="module")
def canary_text(server) -> str:
    return server.http().post(COMPLETIONS, json=CANARY).json()["choices"][0]["text"]


def _events(lines) -> list[dict]:
    events = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(body={"prompt": "Once upon a time", "max_tokens": 4, "temperature": 1e308, "min_p": 0.1, "min_tokens": 1}, stream=True)
@example(body={"prompt": "Once upon a time", "max_tokens": 4, "temperature": 1e-300, "repetition_penalty": 1e-300}, stream=False)
@given(body=sampling_bodies(), stream=st.booleans())
def test_any_sampling_parameters_get_a_200_or_a_400_and_never_disturb_a_canary(server, canary_text, body, stream):
    with server.http() as http, http.stream("POST", COMPLETIONS, json={**CANARY, "stream": True}) as canary:
        lines = canary.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))  # the canary is running
        content = json.dumps({**body, "stream": stream})  # NaN and Infinity as Python writes them
        response = http.post(COMPLETIONS, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200 and stream:
            assert not any("error" in event for event in _events(response.text.splitlines()))
        elif response.status_code == 200:
            assert response.json()["choices"]
        chunks = _events([first, *lines])
    assert "".join(c["choices"][0]["text"] for c in chunks) == canary_text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
