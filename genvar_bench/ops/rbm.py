"""The RBM Gibbs-sweep op: `genvar::rbm_gibbs`.

Shapes use B (chains), D (visible units) and H (hidden units). The RBM has
energy E(v, h) = -v'Wh - b'v - c'h with W [D, H]; at inverse temperature
beta, with an optional base-rate visible bias b_A (the AIS base model of
Salakhutdinov & Murray 2008, zero weights), one sweep is

    h ~ Bernoulli(sigmoid(beta * (v W + c)))
    v ~ Bernoulli(sigmoid(beta * (h W' + b) + (1 - beta) * b_A))

Random numbers: Philox4x32-10 (Salmon et al. 2011), counter-based, so the
stream is fixed by (seed, offset) alone and every backend draws the same
numbers. Sweep s (0-based) of a call draws its hidden layer at step
offset + 2 s and its visible layer at step offset + 2 s + 1. Unit (row r,
column j) of a layer at a step uses word j % 4 of

    philox4x32_10(counter = (j // 4, r, step mod 2^32, step >> 32),
                  key = (seed mod 2^32, seed >> 32))

as x, sets u = (x >> 8) * 2^-24 (in [0, 1), exact in float32) and is on
when u < p. A call of n sweeps uses steps offset .. offset + 2n - 1, so the
next call continues the stream at offset + 2n (`next_offset`).
"""
import torch

from genvar_bench.ops.registry import define_op

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def _mulhilo(a, multiplier):
    """(hi, lo) 32-bit words of the 64-bit product of 32-bit a and the multiplier.
    int64 products wrap modulo 2^64, which keeps exactly the product's 64 bits."""
    product = a * multiplier
    return (product >> 32) & _MASK32, product & _MASK32


def philox4x32_10(counter, key):
    """Philox4x32-10 of int64 tensors holding 32-bit words: counter a tuple of 4
    broadcastable tensors (or ints), key a pair of ints. Returns 4 int64 tensors."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    k0, k1 = key
    for round_index in range(10):
        if round_index:
            k0, k1 = (k0 + PHILOX_W0) & _MASK32, (k1 + PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def philox_uniform(rows, columns, seed, step, dtype=torch.float32, device="cpu"):
    """The [rows, columns] uniforms u = (x >> 8) * 2^-24 of one layer at one step."""
    blocks = (columns + 3) // 4
    block = torch.arange(blocks, dtype=torch.int64, device=device)[None, :]
    row = torch.arange(rows, dtype=torch.int64, device=device)[:, None]
    words = philox4x32_10((block, row, step & _MASK32, step >> 32),
                          (seed & _MASK32, seed >> 32))
    x = torch.stack(torch.broadcast_tensors(*words), dim=-1).reshape(rows, blocks * 4)
    return ((x[:, :columns] >> 8).to(dtype) * 2.0 ** -24)


def next_offset(offset: int, sweeps: int) -> int:
    """Where the stream continues after a call of `sweeps` sweeps at `offset`."""
    return offset + 2 * sweeps


def check_rbm_gibbs_args(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
                         base_visible_bias=None):
    """The argument checks every backend makes (shapes, dtypes, ranges)."""
    torch._check(v.dim() == 2, lambda: f"v must be [B, D], got {tuple(v.shape)}")
    torch._check(weight.dim() == 2 and weight.shape[0] == v.shape[1],
                 lambda: f"weight must be [D, H] with D = {v.shape[1]}, got {tuple(weight.shape)}")
    torch._check(visible_bias.shape == (weight.shape[0],),
                 lambda: f"visible_bias must be [D], got {tuple(visible_bias.shape)}")
    torch._check(hidden_bias.shape == (weight.shape[1],),
                 lambda: f"hidden_bias must be [H], got {tuple(hidden_bias.shape)}")
    if base_visible_bias is not None:
        torch._check(base_visible_bias.shape == (weight.shape[0],),
                     lambda: f"base_visible_bias must be [D], got {tuple(base_visible_bias.shape)}")
    tensors = [v, weight, visible_bias, hidden_bias] + (
        [] if base_visible_bias is None else [base_visible_bias])
    torch._check(v.dtype in (torch.float32, torch.float64),
                 lambda: f"rbm_gibbs supports float32 and float64, got {v.dtype}")
    torch._check(all(t.dtype == v.dtype for t in tensors),
                 lambda: "rbm_gibbs tensors must share one dtype, got "
                         f"{[str(t.dtype) for t in tensors]}")
    torch._check(all(t.device == v.device for t in tensors),
                 lambda: "rbm_gibbs tensors must be on one device, got "
                         f"{[str(t.device) for t in tensors]}")
    torch._check(sweeps >= 1, lambda: f"sweeps must be >= 1, got {sweeps}")
    torch._check(0 <= seed < 2 ** 63, lambda: f"seed must be in [0, 2^63), got {seed}")
    torch._check(0 <= offset and offset + 2 * sweeps < 2 ** 63,
                 lambda: f"offset must be >= 0 and leave room for the sweeps, got {offset}")
    torch._check(0.0 <= beta <= 1.0, lambda: f"beta must be in [0, 1], got {beta}")


def rbm_gibbs_ref(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
                  base_visible_bias=None):
    """`sweeps` Gibbs sweeps v -> h -> v of B chains (see the module docstring).
    v [B, D] holds 0/1 values. Returns (v, h) after the last sweep: h [B, H] is the
    hidden sample the final v was drawn from."""
    check_rbm_gibbs_args(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
                         base_visible_bias)
    rows = v.shape[0]
    visible_dim, hidden_dim = weight.shape
    visible_shift = beta * visible_bias
    if base_visible_bias is not None:
        visible_shift = visible_shift + (1.0 - beta) * base_visible_bias
    h = v.new_zeros(rows, hidden_dim)
    for sweep in range(sweeps):
        step = offset + 2 * sweep
        p_h = torch.sigmoid(beta * (v @ weight + hidden_bias))
        h = (philox_uniform(rows, hidden_dim, seed, step, v.dtype, v.device) < p_h).to(v.dtype)
        p_v = torch.sigmoid(beta * (h @ weight.T) + visible_shift)
        v = (philox_uniform(rows, visible_dim, seed, step + 1, v.dtype, v.device)
             < p_v).to(v.dtype)
    return v, h


def rbm_gibbs_torch_rng(v, weight, visible_bias, hidden_bias, beta: float, sweeps: int,
                        base_visible_bias=None):
    """The same chain written the plain PyTorch way, with torch's own generator
    (torch.rand): not the Philox stream, so not equal draw for draw. The speed
    baseline of the benchmarks, since it is the fastest plain-PyTorch sweep."""
    visible_shift = beta * visible_bias
    if base_visible_bias is not None:
        visible_shift = visible_shift + (1.0 - beta) * base_visible_bias
    h = v.new_zeros(v.shape[0], weight.shape[1])
    for _ in range(sweeps):
        p_h = torch.sigmoid(beta * (v @ weight + hidden_bias))
        h = (torch.rand_like(p_h) < p_h).to(v.dtype)
        p_v = torch.sigmoid(beta * (h @ weight.T) + visible_shift)
        v = (torch.rand_like(p_v) < p_v).to(v.dtype)
    return v, h


def fused_rbm_gibbs(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
                    base_visible_bias=None):
    """`genvar::rbm_gibbs`: the same sweeps and the same random numbers as
    rbm_gibbs_ref, fused (see csrc/ops/rbm.cpp)."""
    return torch.ops.genvar.rbm_gibbs(v, weight, visible_bias, hidden_bias, float(beta),
                                      int(sweeps), int(seed), int(offset), base_visible_bias)


def _fake(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
          base_visible_bias=None):
    check_rbm_gibbs_args(v, weight, visible_bias, hidden_bias, beta, sweeps, seed, offset,
                         base_visible_bias)
    return torch.empty_like(v), v.new_empty(v.shape[0], weight.shape[1])


# No autograd: the chains' draws are held fixed in the CD and PCD updates.
define_op("rbm_gibbs", rbm_gibbs_ref, _fake, fused=fused_rbm_gibbs)
