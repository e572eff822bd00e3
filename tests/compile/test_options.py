import pytest

from ingot.compile.options import CompileOptions
from ingot.errors import OptionError


def test_defaults_follow_the_issue_buckets():
    options = CompileOptions.parse()
    assert options.target == "cpu"
    assert options.prefill_buckets == (16, 32, 64, 128, 256, 512)
    assert options.decode_batches == [1, 2, 4, 8, 16, 32]


def test_buckets_never_exceed_the_context_and_include_max_batch():
    options = CompileOptions.parse(max_context=100, max_batch=6)
    assert options.prefill_buckets[-1] == 100
    assert options.decode_batches == [1, 2, 4, 6]


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(max_batch=0), "--max-batch"),
        (dict(max_context=10), "--max-context"),
        (dict(target="gpu"), "unknown target 'gpu'"),
        (dict(block_size=7), "--block-size"),
        (dict(prefill_buckets=(64, 32)), "increasing"),
        (dict(max_context=128, prefill_buckets=(256,)), "exceeds max context 128"),
        (dict(dtype="float16"), "only float32"),
        (dict(kv_cache_dtype="fp16"), "--kv-cache-dtype: unknown KV-cache dtype 'fp16'; choices: fp32, bf16"),
        (dict(kv_cache_dtype="bf16", target="p150"), "--kv-cache-dtype bf16 applies to the cpu target, not p150"),
        (dict(activation_dtype="fp16"), "--activation-dtype: unknown activation dtype 'fp16'; choices: fp32, bf16"),
        (dict(activation_dtype="bf16", target="p150"), "--activation-dtype bf16 applies to the cpu target, not p150"),
        (dict(activation_dtype="bf16"), "--activation-dtype bf16 needs weights bfloat16 holds exactly"),
    ],
)
def test_bad_values_are_one_line_option_errors(values, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(")) as error:
        CompileOptions.parse(**values)
    assert "\n" not in str(error.value)
