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
    alone = runner.prefill([tokens], [0], [[1]])[0]  # padded to 16 tokens
    step_by_step = runner.prefill([tokens[:3]], [0], [[2]])[0]
    for position in range(3, len(tokens)):
        step_by_step = runner.decode([tokens[position]], [position], [[2]])[0]
    torch.testing.assert_close(alone, step_by_step, rtol=1e-4, atol=1e-4)


def test_prompts_prefilled_together_get_the_logits_each_gets_alone(runner):
    """A prefill step pads its chunks to the longest and may carry a chunk that starts mid-prompt: neither the
    padding nor the other rows change a chunk's logits."""
    first, second, third = list(range(7, 40)), [5, 9, 11], list(range(60, 80))
    runner.prefill([first[:20]], [0], [[1, 2]])
    alone = [
        runner.prefill([first[20:]], [20], [[1, 2, 3]])[0],  # the rest of the first prompt
        runner.prefill([second], [0], [[4]])[0],
        runner.prefill([third], [0], [[5, 6]])[0],
    ]
    runner.prefill([first[:20]], [0], [[7, 8]])
    together = runner.prefill([first[20:], second, third], [20, 0, 0], [[7, 8, 9], [10], [11, 12]])
    torch.testing.assert_close(together, torch.stack(alone), rtol=1e-5, atol=1e-5)
    assert together.argmax(-1).tolist() == torch.stack(alone).argmax(-1).tolist()


def test_decode_pads_the_batch_and_returns_one_row_per_sequence(runner):
    runner.prefill([[1, 2, 3], [4, 5]], [0, 0], [[3], [4]])
    logits = runner.decode([9, 8, 7], [3, 2, 0], [[3], [4], [5]])  # 3 sequences run in the batch-4 bucket
    assert logits.shape == (3, runner.vocab_size)


def test_dynamic_programs_run_the_exact_shape_and_pad_only_below_their_range(runner, monkeypatch):
    """Padding computes tokens no one asked for: 33 tokens run as 33, not as the 64 bucket, 3 sequences as 3
    rows; only what is below a program's range (7 tokens: 16 at least) is padded."""
    shapes = []
    for program in runner.programs.values():
        monkeypatch.setattr(program, "run", lambda *inputs, run=program.run: shapes.append(tuple(inputs[0].shape)) or run(*inputs))
    runner.prefill([list(range(5, 38))], [0], [[1, 2, 3]])
    runner.prefill([list(range(5, 12))], [0], [[4]])
    runner.prefill([list(range(5, 25)), list(range(5, 12)), [9]], [0, 0, 0], [[5, 6], [7], [8]])
    runner.decode([9, 8, 7], [33, 7, 7], [[1, 2, 3], [4], [4]])
    assert shapes == [(1, 33), (1, 16), (3, 20), (3, 1)]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.prefill([list(range(65))], [0], [[1, 2, 3, 4, 5]]), "1 to 64 tokens"),
        (lambda r: r.prefill([[1], []], [0, 0], [[1], [2]]), "1 to 64 tokens"),
        (lambda r: r.prefill([[1]] * 5, [0] * 5, [[1]] * 5), "a prefill step holds 1 to 4 sequences"),
        (lambda r: r.decode([1] * 5, [0] * 5, [[1]] * 5), "a decode step holds 1 to 4 sequences"),
        (lambda r: r.prefill([[100_000]], [0], [[1]]), "input_ids out of range"),
        (lambda r: r.prefill([[1]], [0], [[16]]), "block_tables out of range"),
        (lambda r: r.decode([1], [300], [[1] * 19]), "max context 256"),
    ],
)
def test_out_of_range_calls_are_refused_before_running(runner, call, message):
    with pytest.raises(ProgramShapeError, match=message):
        call(runner)


def test_a_sequences_decode_logits_are_the_same_bits_alone_or_in_a_batch(runner):
    """One decode program for every batch size, summing every row alike: what else is in a step changes nothing."""
    runner.prefill([[11, 12, 13], [21, 22]], [0, 0], [[6], [7]])
    alone = runner.decode([14], [3], [[6]])[0]
    batched = runner.decode([14, 23, 31], [3, 2, 0], [[6], [7], [8]])[0]
    assert torch.equal(alone, batched)
