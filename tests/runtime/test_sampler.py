import math

import pytest
import torch

from ingot.errors import SamplingParamsError
from ingot.runtime.sampler import SampleRequest, Sampler, make_generator
from ingot.runtime.sampling_params import SamplingParams


def request(prompt=(), output=(), eos=(), **params) -> SampleRequest:
    sampling = SamplingParams(**params)
    return SampleRequest(sampling, list(prompt), list(output), make_generator(sampling.seed), list(eos))


def sample_one(logits: list[float], **kwargs) -> int:
    return Sampler().sample(torch.tensor([logits]), [request(**kwargs)])[0].token_id


def draws(logits: list[float], times: int, **params) -> set[int]:
    req = request(**params)
    batch = torch.tensor([logits])
    return {Sampler().sample(batch, [req])[0].token_id for _ in range(times)}


def log_probs(*probs: float) -> list[float]:
    return [math.log(p) for p in probs]


def test_greedy_is_argmax_per_row():
    logits = torch.randn(6, 1000, generator=torch.Generator().manual_seed(0))
    tokens = Sampler().sample(logits, [request(temperature=0) for _ in range(6)])
    assert [t.token_id for t in tokens] == logits.argmax(dim=-1).tolist()


def test_sampling_leaves_the_logits_untouched():
    logits = torch.randn(2, 100)
    before = logits.clone()
    requests = [request(logit_bias={3: 50.0}, temperature=0), request(repetition_penalty=2.0, prompt=[1])]
    Sampler().sample(logits, requests)
    assert torch.equal(logits, before)


def test_a_seed_gives_the_same_tokens_alone_and_in_any_batch():
    steps = torch.randn(20, 500, generator=torch.Generator().manual_seed(1))
    alone = request(seed=42, temperature=1.0, top_p=0.95)
    others = [request(seed=7, temperature=0.8), request(temperature=0), request(temperature=1.3, top_k=50)]
    seq_alone, seq_batched = [], []
    for step in steps:
        seq_alone.append(Sampler().sample(step.unsqueeze(0), [alone])[0].token_id)
    batched = request(seed=42, temperature=1.0, top_p=0.95)
    for step in steps:
        rows = [others[0], batched, others[1], others[2]]
        seq_batched.append(Sampler().sample(step.expand(4, -1).clone(), rows)[1].token_id)
    assert seq_alone == seq_batched
    assert len(set(seq_alone)) > 1  # really sampled, not collapsed to greedy


def test_different_seeds_draw_different_tokens():
    uniform = torch.zeros(1, 1000)
    sequences = []
    for seed in (1, 2):
        req = request(seed=seed)
        sequences.append([Sampler().sample(uniform, [req])[0].token_id for _ in range(20)])
    assert sequences[0] != sequences[1]  # equal by chance with probability 1e-60


def test_top_k_one_is_greedy():
    logits = torch.randn(16, 1000, generator=torch.Generator().manual_seed(2))
    tokens = Sampler().sample(logits, [request(temperature=1.5, top_k=1, seed=i) for i in range(16)])
    assert [t.token_id for t in tokens] == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("top_p", [1e-6, 1e-300])  # 1e-300 is 0 in float32: found by the schema fuzzer
def test_a_tiny_top_p_keeps_only_the_top_token(top_p):
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(3)).tolist()
    top = max(range(5000), key=logits.__getitem__)
    assert draws(logits, 30, temperature=2.0, top_p=top_p, seed=0) == {top}


@pytest.mark.parametrize("top_p, kept", [(0.75, {0, 1}), (0.85, {0, 1, 2})])
def test_top_p_keeps_the_smallest_set_reaching_it(top_p, kept):
    assert draws(log_probs(0.5, 0.3, 0.15, 0.05), 300, top_p=top_p, seed=0) == kept


def test_top_p_over_a_flat_distribution_looks_past_the_top_thousand_tokens():
    logits = -torch.arange(5000.0) * 1e-4  # nearly flat: the top 1024 hold about a fifth of the mass
    probs = logits.softmax(dim=0)
    last_kept = int((probs.cumsum(dim=0) < 0.5).sum())
    seen = draws(logits.tolist(), 200, top_p=0.5, seed=0)
    assert max(seen) <= last_kept
    assert max(seen) > 1024


def test_min_p_drops_tokens_below_its_share_of_the_top_probability():
    assert draws(log_probs(0.6, 0.3, 0.1), 300, min_p=0.2, seed=0) == {0, 1}  # 0.1 < 0.2 * 0.6


@pytest.mark.parametrize(
    "logits, kwargs, expected",
    [
        ([2.0, 1.9, 0.0], dict(), 0),
        ([2.0, 1.9, 0.0], dict(repetition_penalty=1.2, prompt=[0]), 1),  # 2.0 / 1.2 < 1.9
        ([2.0, 1.9, 0.0], dict(repetition_penalty=1.2, output=[0]), 1),
        ([-1.0, -1.1, -5.0], dict(repetition_penalty=1.2, prompt=[0]), 1),  # -1.0 * 1.2 < -1.1
        ([2.0, 1.9, 0.0], dict(presence_penalty=0.5, output=[0]), 1),
        ([2.0, 1.9, 0.0], dict(presence_penalty=2.0, prompt=[0]), 0),  # only the output counts
        ([2.0, 1.9, 0.0], dict(frequency_penalty=0.05, output=[0]), 0),  # 2.0 - 0.05 > 1.9
        ([2.0, 1.9, 0.0], dict(frequency_penalty=0.05, output=[0, 0, 0]), 1),  # 2.0 - 0.15 < 1.9
    ],
)
def test_penalties_move_the_greedy_choice(logits, kwargs, expected):
    assert sample_one(logits, temperature=0, **kwargs) == expected


def test_logit_bias_forces_and_forbids_tokens():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(4)).tolist()
    assert draws(logits, 20, logit_bias={7: 100.0}, seed=0) == {7}
    top = max(range(1000), key=logits.__getitem__)
    assert sample_one(logits, temperature=0, logit_bias={top: -100.0}) != top


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_min_tokens_bans_eos_and_stop_tokens_until_reached(ignore_eos):
    logits = [0.0, 0.0, 0.0, 9.0, 8.0, 7.0]  # eos 3, then stop token 4, then 5
    common = dict(temperature=0, eos=[3], stop_token_ids=[4], min_tokens=2, ignore_eos=ignore_eos)
    assert sample_one(logits, output=[], **common) == 5
    assert sample_one(logits, output=[0], **common) == 5
    assert sample_one(logits, output=[0, 1], **common) == 3


def test_logprobs_are_log_softmax_of_the_raw_logits():
    logits = torch.randn(2, 1000, generator=torch.Generator().manual_seed(5))
    reqs = [request(logprobs=5, temperature=0.5, logit_bias={9: 100.0}, seed=0), request(logprobs=None, temperature=0)]
    forced, plain = Sampler().sample(logits, reqs)
    raw = logits.log_softmax(dim=-1)
    assert forced.token_id == 9
    assert forced.logprob == pytest.approx(raw[0, 9].item(), abs=1e-5)  # not the ~0 of the biased distribution
    values, ids = raw[0].topk(5)
    assert [token for token, _ in forced.top_logprobs] == ids.tolist()
    assert [lp for _, lp in forced.top_logprobs] == pytest.approx(values.tolist(), abs=1e-5)
    assert plain.top_logprobs == []
    assert plain.logprob == pytest.approx(raw[1].max().item(), abs=1e-5)


def test_zero_logprobs_gives_the_chosen_token_only():
    (token,) = Sampler().sample(torch.randn(1, 50), [request(logprobs=0, temperature=0)])
    assert token.top_logprobs == []
    assert token.logprob <= 0


def test_a_row_count_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 requests"):
        Sampler().sample(torch.randn(3, 10), [request(), request()])


@pytest.mark.parametrize(
    "param, value",
    [
        ("n", 0),
        ("max_tokens", 0),
        ("min_tokens", -1),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -2),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 2.5),
        ("presence_penalty", -2.5),
        ("frequency_penalty", 2.5),
        ("logprobs", -1),
        ("logprobs", 21),
        ("seed", 2**64),
    ],
)
def test_out_of_range_values_name_the_parameter(param, value):
    with pytest.raises(SamplingParamsError) as error:
        SamplingParams(**{param: value})
    assert error.value.param == param
    assert str(value) in str(error.value) and "\n" not in str(error.value)


def test_min_tokens_may_not_exceed_max_tokens():
    with pytest.raises(SamplingParamsError, match=r"min_tokens must be in \[0, max_tokens=4\], got 5") as error:
        SamplingParams(max_tokens=4, min_tokens=5)
    assert error.value.param == "min_tokens"


def test_logit_bias_values_are_limited_to_100():
    with pytest.raises(SamplingParamsError, match=r"\[-100, 100\]") as error:
        SamplingParams(logit_bias={5: 100.5})
    assert error.value.param == "logit_bias"


def test_boundary_values_are_accepted():
    SamplingParams(
        temperature=0, top_p=1, top_k=-1, min_p=1, max_tokens=3, min_tokens=3, logprobs=20,
        presence_penalty=-2, frequency_penalty=2, logit_bias={0: -100, 1: 100}, seed=-1,
    )


@pytest.mark.parametrize(
    "values, param",
    [
        (dict(logit_bias={100: 1.0}), "logit_bias"),
        (dict(logit_bias={-1: 1.0}), "logit_bias"),
        (dict(stop_token_ids=[5, 100]), "stop_token_ids"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused(values, param):
    with pytest.raises(SamplingParamsError, match=r"in \[0, 100\)") as error:
        SamplingParams(**values).validate_vocab(100)
    assert error.value.param == param


def test_token_ids_inside_the_vocabulary_pass():
    SamplingParams(logit_bias={0: 1.0, 99: -1.0}, stop_token_ids=[99]).validate_vocab(100)


@pytest.mark.parametrize(
    "param, value",
    [
        ("temperature", 1e308),  # finite in JSON, infinite in float32
        ("temperature", math.inf),
        ("top_p", math.nan),
        ("min_p", math.nan),
        ("repetition_penalty", math.inf),
        ("repetition_penalty", 1e39),
        ("repetition_penalty", 1e-300),  # 0 in float32: a division by zero
        ("presence_penalty", math.nan),
        ("frequency_penalty", math.inf),
    ],
)
def test_values_that_are_not_finite_in_float32_are_refused(param, value):
    with pytest.raises(SamplingParamsError) as error:
        SamplingParams(**{param: value})
    assert error.value.param == param


@pytest.mark.parametrize("bias", [math.nan, math.inf, -math.inf])
def test_logit_bias_values_must_be_finite(bias):
    with pytest.raises(SamplingParamsError) as error:
        SamplingParams(logit_bias={5: bias})
    assert error.value.param == "logit_bias"


def unchecked(params: SamplingParams, **values: object) -> SamplingParams:
    """``params`` with ``values`` set past validation: what a gap in the checks would let through."""
    for name, value in values.items():
        object.__setattr__(params, name, value)
    return params


def test_a_row_that_turns_nan_falls_back_to_the_greedy_choice_instead_of_raising():
    """temperature 1e308 is infinite in float32: the banned eos (-inf) divided by it is NaN, min_p then kept nothing
    and argmax of an empty row raised, failing the whole step."""
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(6))
    logits[0, 3] = 50.0  # eos, banned by min_tokens: the greedy fallback must still honour the ban
    params = unchecked(SamplingParams(min_p=0.1, min_tokens=1, max_tokens=4, seed=0), temperature=1e308)
    sample = SampleRequest(params, [], [], make_generator(0), [3])
    (token,) = Sampler().sample(logits, [sample])
    expected = logits[0].clone()
    expected[3] = -math.inf
    assert token.token_id == int(expected.argmax())


@pytest.mark.parametrize("special", [math.inf, math.nan])
def test_logits_that_are_not_finite_still_give_a_token_in_the_vocabulary(special):
    logits = torch.zeros(1, 100)
    logits[0, 42] = special
    for params in (dict(temperature=1.0, seed=0), dict(temperature=1.0, min_p=0.5, seed=0), dict(top_p=0.5, seed=0)):
        (token,) = Sampler().sample(logits, [request(**params)])
        assert 0 <= token.token_id < 100


def test_a_full_vocabulary_logit_bias_is_turned_into_tensors_once_per_request_not_per_step(monkeypatch):
    """Rebuilding the bias tensors from a 150k-entry dict at every step cost ~40 ms a token."""
    vocab = 150_000
    logits = torch.randn(1, vocab)
    sample = request(temperature=1.0, seed=0, logit_bias={token: 0.5 for token in range(vocab)})
    built = []
    make_tensor = torch.tensor

    def counting(data, *args, **kwargs):
        if hasattr(data, "__len__") and len(data) == vocab:
            built.append(len(data))
        return make_tensor(data, *args, **kwargs)

    monkeypatch.setattr(torch, "tensor", counting)
    for _ in range(5):
        Sampler().sample(logits, [sample])
    assert built == []
    greedy = request(temperature=0, logit_bias={token: 0.5 for token in range(vocab)})
    assert Sampler().sample(logits, [greedy])[0].token_id == int(logits.argmax())  # a uniform bias changes nothing
