"""How request prompts become token ids: what the model sees must match what vLLM would feed it."""

from __future__ import annotations

import pytest

from ingot.runtime.engine import Engine
from ingot.server.prompts import chat_prompt, completion_prompts, tokenize_text
from ingot.server.protocol import ChatMessage


@pytest.fixture(scope="module")
def llama3_engine(compiled):
    """The tiny Llama 3 family, whose tokenizer puts a BOS token before plain text, as Llama 3's does."""
    result = compiled("llama3")
    engine = Engine(result.path, result.manifest, num_blocks=64)
    yield engine
    engine.shutdown()


def test_completion_prompts_start_with_the_tokenizers_bos(llama3_engine):
    bos = llama3_engine.tokenizer.bos_token_id
    assert bos is not None
    [ids] = completion_prompts(llama3_engine, "The quick brown fox")
    assert ids[0] == bos and ids[1:] == llama3_engine.tokenize("The quick brown fox")


def test_token_id_prompts_are_taken_as_given(llama3_engine):
    assert completion_prompts(llama3_engine, [40, 41, 42]) == [[40, 41, 42]]


def test_a_chat_template_is_not_given_a_second_bos(llama3_engine):
    text = chat_prompt(llama3_engine, [ChatMessage(role="user", content="hello")])
    ids = tokenize_text(llama3_engine, text, "messages")
    assert ids.count(llama3_engine.tokenizer.bos_token_id) == text.count("<|begin_of_text|>")
