"""Tests of the fused RBM Gibbs-sweep op (torch.ops.genvar.rbm_gibbs) against its
pure-PyTorch reference in genvar_bench/ops/rbm.py, which is the specification.

Shapes are (B, D, H): chains, visible and hidden units. Both draw the same Philox
numbers, so in float64 the samples agree exactly (a tie u == p aside, which has
probability about 1e-16 per unit); float32 may differ where p rounds across a u.
On the CPU each case runs with both products (GENVAR_RBM_PRODUCT=gather or blas)
and with the rule that picks one ("auto").
"""
import itertools

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels)
from genvar_bench.ops import REFERENCE, get_ops
from genvar_bench.ops.rbm import next_offset, philox4x32_10, rbm_gibbs_ref
from helpers import (DEVICES, generator_for, poison_allocator, requires_cuda_ops, shape_id)

rbm_gibbs = torch.ops.genvar.rbm_gibbs
# B = D = H = 1; D and H not multiples of 4 (nor of a vector); more columns than one tile.
SHAPES = [(1, 1, 1), (3, 13, 7), (6, 33, 70), (5, 150, 21)]
PRODUCTS = ["gather", "blas", "auto"]
# Bias of both layers: few active units (the gather adds rows) or most (it subtracts).
DENSITY_BIAS = {"low": -3.0, "high": 3.0}


def make_inputs(generator, chains, visible, hidden, *, bias=0.0, weight_scale=0.5,
                dtype=torch.float64, device="cpu"):
    """(v, weight, visible_bias, hidden_bias, base_visible_bias), drawn in float64 on
    the CPU and then cast. v is Bernoulli(sigmoid(bias))."""
    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    v = torch.bernoulli(torch.full((chains, visible), torch.tensor(bias).sigmoid().item(),
                                   dtype=torch.float64), generator=generator)
    tensors = (v, normal(visible, hidden) * weight_scale, normal(visible) * 0.5 + bias,
               normal(hidden) * 0.5 + bias, normal(visible))
    return tuple(tensor.to(dtype=dtype, device=device) for tensor in tensors)


def call(function, inputs, beta, sweeps, seed, offset, with_base=True):
    v, weight, visible_bias, hidden_bias, base = inputs
    return function(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
                    base if with_base else None)


@pytest.fixture(params=PRODUCTS)
def product(request, monkeypatch):
    monkeypatch.setenv("GENVAR_RBM_PRODUCT", request.param)
    return request.param


# ---------------------------------------------------------------------------
# The random stream


KNOWN_ANSWERS = [  # Random123's kat_vectors for philox4x32_10: counter, key, output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    cpp = torch.ops.genvar.philox4x32_10(torch.tensor(counter), *key)
    assert [hex(word) for word in cpp.tolist()] == [hex(word) for word in expected]
    python = philox4x32_10(counter, key)
    assert [hex(int(word)) for word in python] == [hex(word) for word in expected]


# ---------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("density", DENSITY_BIAS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_float64_matches_reference_exactly(request, product, device, shape, density):
    inputs = make_inputs(generator_for(request), *shape, bias=DENSITY_BIAS[density],
                         device=device)
    for beta, sweeps, with_base in itertools.product((0.0, 0.3, 1.0), (1, 3, 12), (False, True)):
        # 12 sweeps: "auto" takes the gather from kGatherMinSweeps (8) on; steps cross 2^32.
        args = (beta, sweeps, 2**40 + 7, 2**32 - 3, with_base)
        actual = call(rbm_gibbs, inputs, *args)
        expected = call(rbm_gibbs_ref, inputs, *args)
        for got, want in zip(actual, expected, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert torch.equal(got, want), (beta, sweeps, with_base)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_agrees_but_for_near_ties(request, product, device):
    """One sweep: only units whose p rounds across their u may differ."""
    inputs = make_inputs(generator_for(request), 64, 150, 70, device=device,
                         dtype=torch.float32)
    for beta in (0.3, 1.0):
        actual = call(rbm_gibbs, inputs, beta, 1, 11, 0)
        expected = call(rbm_gibbs_ref, inputs, beta, 1, 11, 0)
        for got, want in zip(actual, expected, strict=True):
            assert got.dtype == torch.float32
            assert (got != want).double().mean().item() <= 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_all_outputs_written(request, device):
    inputs = make_inputs(generator_for(request), 7, 33, 21, device=device)
    poison_allocator([(7, 33), (7, 21)], torch.float64, device)
    for output in call(rbm_gibbs, inputs, 1.0, 2, 3, 0):
        assert ((output == 0) | (output == 1)).all()


@pytest.mark.parametrize("shape", [(0, 5, 4), (3, 0, 4), (3, 5, 0)], ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_empty_sizes(request, product, device, shape):
    inputs = make_inputs(generator_for(request), *shape, device=device)
    for got, want in zip(call(rbm_gibbs, inputs, 0.5, 2, 1, 0),
                         call(rbm_gibbs_ref, inputs, 0.5, 2, 1, 0), strict=True):
        assert got.shape == want.shape and torch.equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_match_contiguous(request, device):
    v, weight, visible_bias, hidden_bias, base = make_inputs(generator_for(request), 6, 33, 21,
                                                             device=device)
    strided = (v.t().contiguous().t(), weight.t().contiguous().t(),
               torch.stack([visible_bias, visible_bias], 1)[:, 0], hidden_bias.flip(0).flip(0),
               torch.stack([base, base], 1)[:, 1])
    assert not strided[0].is_contiguous() and not strided[1].is_contiguous()
    for got, want in zip(call(rbm_gibbs, strided, 0.7, 2, 5, 1),
                         call(rbm_gibbs, (v, weight, visible_bias, hidden_bias, base), 0.7, 2,
                              5, 1), strict=True):
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------
# The stream: reproducible, fixed by (seed, offset), continued by next_offset


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_seed_and_offset_fix_the_stream(request, product, device, dtype):
    inputs = make_inputs(generator_for(request), 8, 40, 30, device=device, dtype=dtype)
    first = call(rbm_gibbs, inputs, 1.0, 3, 1234, 10)
    assert all(torch.equal(a, b) for a, b in zip(first, call(rbm_gibbs, inputs, 1.0, 3, 1234, 10)))
    for seed, offset in ((1235, 10), (1234, 12), (1234 + 2**32, 10)):
        other = call(rbm_gibbs, inputs, 1.0, 3, seed, offset)
        assert not torch.equal(first[1], other[1]), (seed, offset)
    # Two calls of n sweeps, chained by next_offset, are one call of 2 n sweeps.
    v, weight, visible_bias, hidden_bias, base = inputs
    middle, _ = call(rbm_gibbs, inputs, 1.0, 2, 99, 4)
    chained = call(rbm_gibbs, (middle, weight, visible_bias, hidden_bias, base), 1.0, 2, 99,
                   next_offset(4, 2))
    whole = call(rbm_gibbs, inputs, 1.0, 4, 99, 4)
    assert all(torch.equal(a, b) for a, b in zip(chained, whole, strict=True))


# ---------------------------------------------------------------------------
# Sampled statistics against the exact conditionals


def assert_frequencies(counts, trials, probabilities):
    """Binomial counts within 5 standard deviations (plus 1 count) of trials p."""
    mean = trials * probabilities
    sigma = (trials * probabilities * (1 - probabilities)).sqrt()
    excess = (counts - mean).abs() - 5 * sigma - 1
    assert (excess <= 0).all(), (counts, mean, sigma)


@pytest.mark.parametrize("device", DEVICES)
def test_one_sweep_samples_the_conditionals(request, device):
    """Identical chains: h ~ sigmoid(beta (v W + c)); v given each h configuration ~
    sigmoid(beta (h W' + b) + (1 - beta) b_A)."""
    chains, beta = 20000, 0.6
    v, weight, visible_bias, hidden_bias, base = make_inputs(generator_for(request), 1, 5, 3,
                                                             weight_scale=1.0, device=device)
    new_v, h = rbm_gibbs(v.expand(chains, -1), weight, visible_bias, hidden_bias, beta, 1, 7, 0,
                         base)
    p_h = torch.sigmoid(beta * (v[0] @ weight + hidden_bias))
    assert_frequencies(h.sum(0), chains, p_h)
    codes = (h * torch.tensor([1.0, 2.0, 4.0], dtype=h.dtype, device=device)).sum(1)
    for code in range(8):
        rows = codes == code
        if rows.sum() < 100:
            continue
        h_config = h[rows][0]
        p_v = torch.sigmoid(beta * (h_config @ weight.T + visible_bias) + (1 - beta) * base)
        assert_frequencies(new_v[rows].sum(0), rows.sum(), p_v)


@pytest.mark.parametrize("device", DEVICES)
def test_beta_zero_samples_the_base_model(request, device):
    chains = 20000
    v, weight, visible_bias, hidden_bias, base = make_inputs(generator_for(request), 1, 6, 4,
                                                             weight_scale=5.0, device=device)
    new_v, h = rbm_gibbs(v.expand(chains, -1), weight, visible_bias, hidden_bias, 0.0, 2, 3, 0,
                         base)
    assert_frequencies(new_v.sum(0), chains, torch.sigmoid(base))
    assert_frequencies(h.sum(0), chains, torch.full_like(hidden_bias, 0.5))


# ---------------------------------------------------------------------------
# The op in PyTorch's machinery


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(request, device):
    inputs = make_inputs(generator_for(request), 4, 9, 6, device=device)
    v, weight, visible_bias, hidden_bias, base = inputs
    torch.library.opcheck(rbm_gibbs, (v, weight, visible_bias, hidden_bias, 0.5, 2, 3, 4, base))
    torch.library.opcheck(rbm_gibbs, (v, weight, visible_bias, hidden_bias, 1.0, 1, 0, 0))


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_fullgraph_matches_eager(request, device):
    inputs = make_inputs(generator_for(request), 4, 9, 6, device=device, dtype=torch.float32)

    def chain_energy_term(v, weight, visible_bias, hidden_bias, base):
        new_v, h = rbm_gibbs(v, weight, visible_bias, hidden_bias, 0.5, 2, 3, 4, base)
        return (new_v @ weight * h).sum(1) + new_v @ visible_bias

    compiled = torch.compile(chain_energy_term, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(*inputs), chain_energy_term(*inputs))


def test_op_sets_list_it():
    assert REFERENCE.rbm_gibbs is rbm_gibbs_ref
    assert get_ops("fused").rbm_gibbs.__name__ == "fused_rbm_gibbs"


# ---------------------------------------------------------------------------
# Bad input: a clear error naming the argument


def _replace(index, function):
    def change(args):
        args = list(args)
        args[index] = function(args[index])
        return args
    return change


# name -> (change to valid float64 args (v, weight, b, c, beta, sweeps, seed, offset, b_A)
# with B = 3, D = 5, H = 4; the error message's start)
BAD_INPUTS = {
    "v rank 1": (_replace(0, lambda t: t[0]), r"v must have rank 2"),
    "v int64": (_replace(0, lambda t: t.long()), r"v must be float32 or float64"),
    "v float16": (_replace(0, lambda t: t.half()), r"v must be float32 or float64"),
    "weight rank 1": (_replace(1, lambda t: t[0]), r"weight must have rank 2"),
    "weight rows": (_replace(1, lambda t: t[:4]), r"weight must have shape \[D, H\]"),
    "weight float32": (_replace(1, lambda t: t.float()), r"weight has dtype Float but v"),
    "visible_bias shape": (_replace(2, lambda t: t[:4]), r"visible_bias must have shape \[D\]"),
    "visible_bias float32": (_replace(2, lambda t: t.float()), r"visible_bias has dtype"),
    "hidden_bias shape": (_replace(3, lambda t: t[:3]), r"hidden_bias must have shape \[H\]"),
    "hidden_bias float32": (_replace(3, lambda t: t.float()), r"hidden_bias has dtype"),
    "base shape": (_replace(8, lambda t: t[None]), r"base_visible_bias must have shape \[D\]"),
    "base float32": (_replace(8, lambda t: t.float()), r"base_visible_bias has dtype"),
    "beta negative": (_replace(4, lambda _: -0.1), r"beta must be in \[0, 1\], got -0.1"),
    "beta above 1": (_replace(4, lambda _: 1.5), r"beta must be in \[0, 1\], got 1.5"),
    "beta nan": (_replace(4, lambda _: float("nan")), r"beta must be in \[0, 1\], got nan"),
    "sweeps 0": (_replace(5, lambda _: 0), r"sweeps must be >= 1, got 0"),
    "seed negative": (_replace(6, lambda _: -1), r"seed must be in \[0, 2\^63\), got -1"),
    "offset negative": (_replace(7, lambda _: -2), r"offset must be >= 0 and leave room"),
    "offset at the end": (_replace(7, lambda _: 2**63 - 4), r"offset must be >= 0 and leave"),
    "v not binary": (_replace(0, lambda t: t.index_put((torch.tensor(1), torch.tensor(2)),
                                                       torch.tensor(0.5, dtype=t.dtype))),
                     r"v must hold binary values \(0 or 1\).*got v\[1, 2\] = 0.5"),
    "v nan": (_replace(0, lambda t: t.index_put((torch.tensor(2), torch.tensor(0)),
                                                torch.tensor(float("nan"), dtype=t.dtype))),
              r"v must hold binary values \(0 or 1\).*got v\[2, 0\] = nan"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_rejects_bad_input_naming_it(request, case):
    change, message = BAD_INPUTS[case]
    inputs = make_inputs(generator_for(request), 3, 5, 4)
    v, weight, visible_bias, hidden_bias, base = inputs
    args = change([v, weight, visible_bias, hidden_bias, 0.5, 2, 3, 4, base])
    with pytest.raises(RuntimeError, match=rf"^{message}"):
        rbm_gibbs(*args)


@requires_cuda_ops
@pytest.mark.parametrize("argument", [1, 2, 3, 8])
def test_rejects_mixed_devices(request, argument):
    args = list(make_inputs(generator_for(request), 3, 5, 4, device="cuda"))
    args = args[:4] + [0.5, 1, 0, 0, args[4]]
    args[argument] = args[argument].cpu()
    name = ["v", "weight", "visible_bias", "hidden_bias"] + [None] * 4 + ["base_visible_bias"]
    with pytest.raises(RuntimeError, match=rf"^{name[argument]} is on cpu but v is on cuda"):
        rbm_gibbs(*args)
