"""Where a prompt's prefill is cut into steps (with static programs of fixed sizes, a Tenstorrent artifact's), and
which prompts share a prefill step."""

import subprocess
import sys

import pytest

from ingot.runtime.block_manager import BlockManager
from ingot.runtime.sampling_params import SamplingParams
from ingot.runtime.scheduler import Scheduler, prefill_chunk
from ingot.runtime.sequence import Sequence

BUCKETS = [16, 32, 64, 128, 256, 512]


@pytest.mark.parametrize(
    "remaining, chunk",
    [
        (1, 1), (16, 16), (17, 17),  # 16 + 1 would compute as much as 32: one step
        (33, 32), (134, 128), (150, 128), (300, 256),  # the rest padded to a small bucket beats one big padding
        (200, 200), (255, 255),  # 128 + 72 (padded to 128) is no better than 256
        (512, 512), (1000, 512),  # the largest bucket bounds a step
    ],
)
def test_a_chunk_stops_at_a_bucket_when_padding_the_whole_would_compute_more(remaining, chunk):
    assert prefill_chunk(remaining, BUCKETS, cap=512) == chunk


def test_a_token_cap_bounds_the_chunk_and_still_avoids_needless_padding():
    assert prefill_chunk(134, BUCKETS, cap=100) == 100  # 100 in the 128 bucket: 64 + 36 (64) is no better
    assert prefill_chunk(90, BUCKETS, cap=100) == 64  # 64 + 26 (32) computes 96 tokens, 90 padded to 128 computes 128


SIZES = list(range(16, 513))  # a cpu artifact's dynamic prefill program: any chunk of 16 to 512 tokens


def _scheduler(max_prefill_batch: int = 32, max_prefill_tokens: int = 512) -> Scheduler:
    return Scheduler(BlockManager(256, 16), 32, SIZES, max_prefill_tokens, max_prefill_batch)


def _prefill_steps(scheduler: Scheduler, prompt_lengths: list[int]) -> list[list[int]]:
    """The prompt lengths of each prefill step, in order, until every prompt has been prefilled."""
    for i, length in enumerate(prompt_lengths):
        scheduler.add(Sequence(str(i), [1 + i] * length, SamplingParams(max_tokens=4)))
    steps = []
    while (step := scheduler.schedule()) is not None and step.kind == "prefill":
        steps.append([seq.num_tokens for seq in step.seqs])
        for seq, n in zip(step.seqs, step.num_tokens):
            seq.num_computed_tokens += n
            seq.append_token(0)  # its first output token
    return steps


def test_prompts_of_similar_length_share_a_prefill_step_up_to_the_token_cap():
    assert _prefill_steps(_scheduler(), [100] * 7) == [[100] * 5, [100] * 2]


def test_short_prompts_padded_to_the_smallest_chunk_share_a_step():
    assert _prefill_steps(_scheduler(), [3, 9, 16, 5]) == [[3, 9, 16, 5]]


def test_a_prompt_that_would_pad_the_others_too_much_waits_for_the_next_step_in_arrival_order():
    # 100 + 30 apart compute 130 tokens, together 200; the 100 after the 30 must not jump ahead of it
    assert _prefill_steps(_scheduler(), [100, 30, 100]) == [[100], [30], [100]]


def test_a_program_of_one_sequence_or_a_tight_cap_prefills_one_prompt_a_step():
    assert _prefill_steps(_scheduler(max_prefill_batch=1), [20, 20]) == [[20], [20]]
    assert _prefill_steps(_scheduler(max_prefill_tokens=30), [20, 20]) == [[20], [20]]


def test_the_scheduler_is_pure_arithmetic_without_torch():
    code = "import sys, ingot.runtime.scheduler; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
