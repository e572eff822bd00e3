"""The runner must refuse what compiled code would not bounds-check, and pad everything else to a bucket."""

import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.errors import ProgramShapeError
from ingot.runtime.model_runner import ModelRunner


@pytest.fixture(scope="module")
def runner(compiled):
    path = compiled("llama").path
    return ModelRunner(path, check_artifact(path), num_blocks=16)


def test_padding_to_a_bucket_does_not_change_the_logits(runner):
    tokens = [5, 17, 99, 3, 250, 42, 7]
    alone = runner.prefill(tokens, 0, [1])  # padded to 16 tokens
    step_by_step = runner.prefill(tokens[:3], 0, [2])
    for position in range(3, len(tokens)):
        step_by_step = runner.decode([tokens[position]], [position], [[2]])[0]
    torch.testing.assert_close(alone, step_by_step, rtol=1e-4, atol=1e-4)


def test_decode_pads_the_batch_and_returns_one_row_per_sequence(runner):
    runner.prefill([1, 2, 3], 0, [3])
    runner.prefill([4, 5], 0, [4])
    logits = runner.decode([9, 8, 7], [3, 2, 0], [[3], [4], [5]])  # 3 sequences run in the batch-4 bucket
    assert logits.shape == (3, runner.vocab_size)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.prefill(list(range(65)), 0, [1, 2, 3, 4, 5]), "1 to 64 tokens"),
        (lambda r: r.prefill([], 0, [1]), "1 to 64 tokens"),
        (lambda r: r.decode([1] * 5, [0] * 5, [[1]] * 5), "1 to 4 sequences"),
        (lambda r: r.prefill([100_000], 0, [1]), "input_ids out of range"),
        (lambda r: r.prefill([1], 0, [16]), "block_tables out of range"),
        (lambda r: r.decode([1], [300], [[1] * 19]), "max context 256"),
    ],
)
def test_out_of_range_calls_are_refused_before_running(runner, call, message):
    with pytest.raises(ProgramShapeError, match=message):
        call(runner)
