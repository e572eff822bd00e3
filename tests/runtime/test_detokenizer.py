"""Streamed text must equal the decoded output, never show half a character, and never show part of a stop string."""

import random
import time
from collections.abc import Sequence

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from ingot.runtime.detokenizer import IncrementalDetokenizer, StopStringMatcher
from tests.tiny_models import make_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld! Ünïcode and Ελληνικά letters, façade.",
    "日本語のテキスト",
    "emoji 🦊🚀 and 🦊 again",
    "def main():\n    return sum(i * i for i in range(10))\n\n\tx  =  1\n",
]


def make_sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-2 style: '▁' marks a space, the decoder strips the first one, other characters become <0xNN> bytes."""
    pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    pieces += [("▁", -2.0)] + [(chr(c), -5.0) for c in range(33, 127)]
    pieces += [(word, -1.0) for word in ("▁Hello", "▁world", "▁the", "ing")]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module", params=["byte-level", "sentencepiece"])
def tokenizer(request) -> PreTrainedTokenizerFast:
    return make_tokenizer() if request.param == "byte-level" else make_sentencepiece_tokenizer()


@pytest.fixture(scope="module")
def byte_level() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def stream(
    tokenizer, output_ids: list[int], prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer, list(prompt_ids), skip_special_tokens=skip_special_tokens)
    return [detokenizer.add(token_id) for token_id in output_ids]


def test_tokens_split_characters_so_the_hard_case_is_exercised(tokenizer):
    for text in ["日本語のテキスト", "emoji 🦊🚀"]:
        alone = [tokenizer.decode([token_id]) for token_id in encode(tokenizer, text)]
        assert any("\ufffd" in piece for piece in alone), alone
        assert "\ufffd" not in tokenizer.decode(encode(tokenizer, text))


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_concatenate_to_the_full_decode_without_broken_characters(tokenizer, text):
    ids = encode(tokenizer, text)
    deltas = stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in delta for delta in deltas), deltas


def test_bytes_of_a_character_are_held_until_it_completes(byte_level):
    deltas = stream(byte_level, encode(byte_level, "🦊🚀"))
    assert "" in deltas  # some token ended mid-emoji and emitted nothing
    assert [delta for delta in deltas if delta] and all(set(delta) <= {"🦊", "🚀"} for delta in deltas)


@pytest.mark.parametrize(
    "skip, expected", [(True, "Hi there 日本"), (False, "Hi<|im_end|> there<|im_start|> 日本")]
)
def test_special_tokens_are_skipped_or_kept(byte_level, skip, expected):
    ids = encode(byte_level, "Hi<|im_end|> there<|im_start|> 日本")
    assert byte_level.convert_tokens_to_ids("<|im_end|>") in ids
    deltas = stream(byte_level, ids, skip_special_tokens=skip)
    assert "".join(deltas) == expected == byte_level.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("skip", [True, False])
def test_the_prompt_does_not_leak_into_the_output(byte_level, skip):
    messages = [{"role": "user", "content": "Héllo 日本"}]
    prompt = byte_level.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = encode(byte_level, prompt)
    output_ids = encode(byte_level, "Réponse: 日本語 🦊")
    assert "".join(stream(byte_level, output_ids, prompt_ids, skip_special_tokens=skip)) == "Réponse: 日本語 🦊"


def test_a_character_split_between_prompt_and_output_is_not_broken_and_the_prompt_does_not_leak(byte_level):
    ids = encode(byte_level, "Hello 日本語🦊 ok")
    full = byte_level.decode(ids)
    cuts = [cut for cut in range(1, len(ids)) if byte_level.decode(ids[:cut]).endswith("\ufffd")]
    assert cuts
    for cut in cuts:
        text = "".join(stream(byte_level, ids[cut:], ids[:cut]))
        assert "\ufffd" not in text and "Hello" not in text
        # The split character sits where the prompt put its first bytes; the output is the rest of the text.
        assert full.endswith(text) and len(byte_level.decode(ids[:cut])) + len(text) == len(full)


def test_sentencepiece_output_keeps_the_space_that_separates_it_from_the_prompt():
    tokenizer = make_sentencepiece_tokenizer()
    ids = encode(tokenizer, "Hello world 日本")
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["▁Hello", "▁world"]
    # Decoding the output alone drops the space ('world 日本'), but it continues the prompt 'Hello'.
    assert "".join(stream(tokenizer, ids[1:], ids[:1])) == " world 日本"
    assert "".join(stream(tokenizer, ids[1:])) == tokenizer.decode(ids[1:]) == "world 日本"


def run_matcher(stop: list[str], deltas: list[str]) -> tuple[list[str], bool]:
    """Feed deltas as the runtime would; returns what a client receives, chunk by chunk, and whether it stopped."""
    matcher = StopStringMatcher(stop)
    emitted = []
    for delta in deltas:
        safe, stopped = matcher.feed(delta)
        emitted.append(safe)
        if stopped:
            return emitted, True
    emitted.append(matcher.flush())
    return emitted, False


def test_without_stop_strings_text_passes_straight_through():
    assert run_matcher([], ["Hello", " <", "/s>", ""]) == (["Hello", " <", "/s>", "", ""], False)


def test_a_stop_string_in_one_token_stops_and_is_not_emitted():
    assert run_matcher(["\n\n"], ["Hello", " world", "\n\n", "more"]) == (["Hello", " world", ""], True)


def test_a_stop_string_split_across_tokens_is_never_partly_emitted():
    emitted, stopped = run_matcher(["</stop>"], ["The end", " is <", "/st", "op", "> extra"])
    assert stopped and "".join(emitted) == "The end is "
    assert emitted == ["The end", " is ", "", "", ""]


def test_the_earliest_of_several_stop_strings_wins():
    text = list("Answer: 42\nUser: hi END ###")
    assert "".join(run_matcher(["###", "END", "\nUser:"], text)[0]) == "Answer: 42"
    assert "".join(run_matcher(["END", "42"], text)[0]) == "Answer: "


def test_a_partial_match_that_is_not_a_stop_is_emitted_in_full():
    assert run_matcher(["</stop>"], ["a <", "/st", "ep> b"]) == (["a ", "", "</step> b", ""], False)
    assert run_matcher(["</stop>"], ["x </st"]) == (["x ", "</st"], False)  # flushed at the end
    assert "".join(run_matcher(["aab"], list("aaab"))[0]) == "a"  # the held 'aa' overlaps the real stop


def test_a_stop_at_the_very_start_emits_nothing():
    assert run_matcher(["STOP"], ["ST", "OP", "rest"]) == (["", ""], True)


def test_emitted_text_is_the_full_text_cut_at_the_first_stop_for_any_split():
    rng = random.Random(0)
    stop = ["\n\n", "Observation:", "🦊"]
    texts = ["Thought: ok\nObservation: 42\n\nmore", "no stop here, just text", "日本 🦊 tail", "a\n\nObservation:"]
    for text in texts:
        first = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
        for _ in range(50):
            cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, 6)))
            deltas = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
            emitted, stopped = run_matcher(stop, deltas)
            assert "".join(emitted) == text[:first] and stopped == (first < len(text))


def test_stop_strings_on_detokenized_stream(byte_level):
    detokenizer = IncrementalDetokenizer(byte_level, [])
    matcher = StopStringMatcher(["🦊"])
    emitted = []
    for token_id in encode(byte_level, "Let me think 日本 🦊 done"):
        safe, stopped = matcher.feed(detokenizer.add(token_id))
        emitted.append(safe)
        if stopped:
            break
    assert stopped and "".join(emitted) == "Let me think 日本 "


def test_overlapping_stop_strings_cut_at_the_same_place_however_the_text_is_split():
    """The first stop string to be completed wins (the one ending first, the longest of those ending there), as if
    the text came one character at a time: a client sees the same text whatever the tokens were."""
    stop = ["abcd", "bc"]
    for deltas in (["abcd"], ["ab", "cd"], ["a", "b", "c", "d"], ["xab", "c"]):
        emitted, stopped = run_matcher(stop, deltas)
        assert stopped and "".join(emitted) == "".join(deltas)[: "".join(deltas).find("bc")]


def test_the_cost_of_matching_does_not_grow_with_the_number_of_stop_strings():
    """A request may send thousands of stop strings: each token costs the same as with one."""
    rng = random.Random(1)
    many = ["".join(rng.choice("abcdefgh") for _ in range(12)) for _ in range(20_000)]
    deltas = ["".join(rng.choice("abcdefgh ") for _ in range(4)) for _ in range(500)]

    def feed_seconds(stop: list[str]) -> float:
        matcher = StopStringMatcher(stop)
        start = time.perf_counter()
        for delta in deltas:
            if matcher.feed(delta)[1]:
                break
        return time.perf_counter() - start

    one = feed_seconds(many[:1])
    assert feed_seconds(many) < one * 5 + 0.02
