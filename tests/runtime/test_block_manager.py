from ingot.runtime.block_manager import PAD_BLOCK, BlockManager
from ingot.runtime.sampling_params import SamplingParams
from ingot.runtime.sequence import Sequence


def seq(tokens, request_id="r"):
    return Sequence(request_id, list(tokens), SamplingParams())


def compute_all(manager, s):
    s.num_computed_tokens = s.num_tokens
    manager.seal(s)


def test_allocation_never_hands_out_the_padding_block_and_frees_everything():
    manager = BlockManager(num_blocks=5, block_size=4)
    a = seq(range(16))
    assert manager.allocate(a)
    assert PAD_BLOCK not in a.block_table and len(a.block_table) == 4
    assert not manager.allocate(seq(range(100, 104), "b"))  # all 4 usable blocks are taken
    manager.free_blocks(a)
    assert manager.num_used == 0


def test_shared_prefix_reuses_full_blocks_but_never_the_last_token():
    manager = BlockManager(num_blocks=16, block_size=4)
    a = seq(range(10))
    manager.allocate(a)
    compute_all(manager, a)
    b = seq(list(range(8)) + [50, 51, 52])
    assert manager.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.num_computed_tokens == 8
    assert manager.ref_counts[a.block_table[0]] == 2
    exact = seq(range(8), "c")  # the whole prompt is cached: its last block is still computed
    manager.allocate(exact)
    assert exact.num_computed_tokens == 4 and exact.block_table[1] != a.block_table[1]
    assert manager.prefix_hit_tokens == 12


def test_freed_cached_blocks_are_reused_by_key_until_evicted_least_recent_first():
    manager = BlockManager(num_blocks=4, block_size=2)  # 3 usable blocks
    a = seq([1, 2, 3, 4, 5])
    manager.allocate(a)
    compute_all(manager, a)
    first_blocks = list(a.block_table)
    manager.free_blocks(a)
    again = seq([1, 2, 3, 4, 9])
    manager.allocate(again)
    assert again.block_table[:2] == first_blocks[:2] and again.num_computed_tokens == 4
    manager.free_blocks(again)
    other = seq([7, 7, 7, 7, 7, 7], "o")  # needs all 3 blocks: evicts every cached prefix
    manager.allocate(other)
    assert manager.cached == {}
    manager.free_blocks(other)
    back = seq([1, 2, 3, 4, 5])
    manager.allocate(back)
    assert back.num_computed_tokens == 0


def test_append_takes_a_block_only_when_the_last_one_is_full():
    manager = BlockManager(num_blocks=8, block_size=4)
    s = seq(range(4))
    manager.allocate(s)
    s.append_token(99)  # the 5th token needs a second block
    assert manager.can_append(s)
    manager.append(s)
    assert len(s.block_table) == 2
    s.append_token(100)
    manager.append(s)
    assert len(s.block_table) == 2
