"""Where a prompt's prefill is cut into steps, with static programs of fixed sizes (a Tenstorrent artifact's)."""

import pytest

from ingot.runtime.scheduler import prefill_chunk

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
