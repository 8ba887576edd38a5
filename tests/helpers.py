"""Shared test helpers: devices, dtypes, tolerances, inputs of the IWAE, SBN and diffusion
ops, memory layouts, poisoning.

Shapes use k (samples per example), B (batch), D (data dimension) and Z
(latent dimension), as in genvar_bench/ops/.
"""
import dataclasses
import zlib
from dataclasses import dataclass, fields

import pytest
import torch

from genvar_bench._extension import cuda_ops_built

CUDA_OPS_AVAILABLE = torch.cuda.is_available() and cuda_ops_built()
# "cuda" is always listed so that it shows as skipped, never silently missing.
requires_cuda_ops = pytest.mark.skipif(not CUDA_OPS_AVAILABLE,
                                       reason="needs a GPU and the genvar CUDA kernels")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda_ops)]
DTYPES = [torch.float32, torch.float64]


def dtype_id(dtype):
    """"float32" rather than pytest's "dtype0" in test ids."""
    return str(dtype).removeprefix("torch.")
# Float64 kernels must agree with the float64 reference to about this relative error.
FLOAT64_RTOL = 1e-10
# A low-precision kernel may be this many times worse than the same-dtype PyTorch reference.
REFERENCE_ERROR_FACTOR = 4.0


def generator_for(request) -> torch.Generator:
    """A CPU generator seeded from the test's id: each test draws its own fresh
    inputs, and a failure replays exactly."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@dataclass
class LogWeightInputs:
    """The tensor arguments of a log-weight op, in order; `x` is the data, the one input
    that never requires grad."""

    def tensors(self):
        return tuple(getattr(self, field.name) for field in fields(self))

    def map(self, function):
        return type(self)(*(function(tensor) for tensor in self.tensors()))

    def to(self, dtype=None, device=None):
        return self.map(lambda tensor: tensor.to(dtype=dtype, device=device))

    def requiring_grad(self):
        """Fresh leaves; every input but the data x requires grad."""
        return self.map(lambda tensor: tensor.detach().clone().requires_grad_(tensor is not self.x))

    def differentiable(self):
        return tuple(tensor for tensor in self.tensors() if tensor is not self.x)


@dataclass
class IwaeInputs(LogWeightInputs):
    """The inputs of iwae_log_weights: logits [k, B, D], x [B, D], z [k, B, Z],
    mu and logvar [B, Z]."""
    logits: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


@dataclass
class SbnInputs(LogWeightInputs):
    """The inputs of sbn_log_weights: logits [k, B, D], x [B, D], h [k, B, H],
    prior_logits [H], q_logits [B, H]."""
    logits: torch.Tensor
    x: torch.Tensor
    h: torch.Tensor
    prior_logits: torch.Tensor
    q_logits: torch.Tensor


def planted(generator, values, planted_values):
    """`values` with `planted_values` written at random positions."""
    flat = values.view(-1)
    positions = torch.randperm(flat.numel(), generator=generator)[:len(planted_values)]
    flat[positions] = torch.tensor(planted_values, dtype=flat.dtype)[:len(positions)]
    return values


def make_iwae_inputs(generator, num_samples, batch, data_dim, latent_dim, *, dtype=torch.float64,
                     device="cpu", logits_scale=3.0, planted_logits=()):
    """Random inputs, drawn in float64 on the CPU and then cast, so that a float64
    reference on upcast float32 inputs sees exactly the kernel's inputs.

    logits are N(0, logits_scale^2); `planted_logits` values (e.g. +-80, +-1e4)
    replace logits at random positions. x is binary, as for binarized MNIST, and
    z is a draw from q(z | x)."""
    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    logits = planted(generator, normal(num_samples, batch, data_dim) * logits_scale, planted_logits)
    half = torch.full((batch, data_dim), 0.5, dtype=torch.float64)
    x = torch.bernoulli(half, generator=generator)
    mu = normal(batch, latent_dim)
    logvar = normal(batch, latent_dim) * 0.5
    z = mu + torch.exp(0.5 * logvar) * normal(num_samples, batch, latent_dim)
    return IwaeInputs(logits, x, z, mu, logvar).to(dtype=dtype, device=device)


def make_sbn_inputs(generator, num_samples, batch, data_dim, latent_dim, *, dtype=torch.float64,
                    device="cpu", logits_scale=3.0, planted_logits=()):
    """Random inputs drawn in float64 on the CPU, then cast (so the float64 reference
    on upcast inputs sees exactly the kernel's inputs). x and h are binary;
    `planted_logits` go into logits, prior_logits and q_logits alike."""
    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * logits_scale

    def coin_flips(*shape):
        return torch.bernoulli(torch.full(shape, 0.5, dtype=torch.float64), generator=generator)

    inputs = SbnInputs(
        planted(generator, normal(num_samples, batch, data_dim), planted_logits),
        coin_flips(batch, data_dim), coin_flips(num_samples, batch, latent_dim),
        planted(generator, normal(latent_dim), planted_logits),
        planted(generator, normal(batch, latent_dim), planted_logits))
    return inputs.to(dtype=dtype, device=device)


def make_log_weights(generator, num_samples, batch, *, dtype=torch.float64, device="cpu",
                     scale=10.0):
    """Random log_weights [k, B] for iwae_bound."""
    log_weights = torch.randn(num_samples, batch, generator=generator, dtype=torch.float64) * scale
    return log_weights.to(dtype=dtype, device=device)


def beta_schedule(name, num_steps):
    """betas [T] float64: "paper", beta_t = 1 / (T - t + 1) with beta_1 = 1e-3
    (Sohl-Dickstein et al. 2015; beta_T = 1), or "linear", 1e-4 to 0.02 (Ho et al. 2020)."""
    if name == "linear":
        return torch.linspace(1e-4, 0.02, num_steps, dtype=torch.float64)
    steps = torch.arange(1, num_steps + 1, dtype=torch.float64)
    betas = 1 / (num_steps - steps + 1)
    betas[0] = 1e-3
    return betas


@dataclass
class DiffusionInputs:
    """The arguments of a diffusion KL op: x0 [B, D], xt [T', B, D], the network outputs
    [T', B, D] (logits; or mean and log_var), steps [T', B] int64, betas [T] float64."""
    x0: torch.Tensor
    xt: torch.Tensor
    outputs: tuple
    steps: torch.Tensor
    betas: torch.Tensor

    def args(self):
        return (self.x0, self.xt, *self.outputs, self.steps, self.betas)

    def to(self, dtype=None, device=None):
        """Data and outputs cast to dtype; everything moved to device (betas stays float64)."""
        def move(tensor, cast=True):
            return tensor.to(dtype=dtype if cast else None, device=device)
        return DiffusionInputs(move(self.x0), move(self.xt), tuple(map(move, self.outputs)),
                               move(self.steps, False), move(self.betas, False))

    def requiring_grad(self):
        """Fresh leaves for the outputs, which alone require grad."""
        outputs = tuple(output.detach().clone().requires_grad_() for output in self.outputs)
        return DiffusionInputs(self.x0, self.xt, outputs, self.steps, self.betas)


def make_diffusion_inputs(generator, kind, num_slices, batch, data_dim, *, num_steps=1000,
                          schedule="paper", dtype=torch.float64, device="cpu"):
    """Random arguments of diffusion_{kind}_kl, kind "binomial" or "gaussian", drawn in
    float64 on the CPU and then cast. steps are uniform in [1, T], with t = 1 and t = T
    planted in the first two entries. Binomial: binary x0 and xt, logits N(0, 3^2).
    Gaussian: x0 N(0, 1), xt a draw from q(x_t | x_0), mean N(0, 1), log_var N(-3, 1)."""
    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    betas = beta_schedule(schedule, num_steps)
    steps = torch.randint(1, num_steps + 1, (num_slices, batch), generator=generator)
    steps.view(-1)[:2] = torch.tensor([1, num_steps])[:steps.numel()]
    shape = (num_slices, batch, data_dim)
    if kind == "binomial":
        half = torch.full((batch, data_dim), 0.5, dtype=torch.float64)
        x0 = torch.bernoulli(half, generator=generator)
        xt = torch.bernoulli(half.expand(shape), generator=generator)
        outputs = (normal(*shape) * 3,)
    else:
        x0 = normal(batch, data_dim)
        abar = torch.cumprod(1 - betas, 0)[steps - 1].unsqueeze(-1)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * normal(*shape)
        outputs = (normal(*shape), normal(*shape) - 3)
    return DiffusionInputs(x0, xt, outputs, steps, betas).to(dtype=dtype, device=device)


def _largest_finite_magnitude(expected):
    finite_values = expected[torch.isfinite(expected)]
    return finite_values.abs().max().item() if finite_values.numel() else 1.0


def assert_close_float64(actual, expected):
    """Agreement to FLOAT64_RTOL relative to the largest value: sums whose terms
    cancel leave small entries with errors of the size of the big ones."""
    atol = FLOAT64_RTOL * _largest_finite_magnitude(expected)
    torch.testing.assert_close(actual, expected, rtol=FLOAT64_RTOL, atol=atol, equal_nan=True)


def assert_within_reference_error(actual, same_dtype_reference, float64_reference):
    """The kernel's largest error against the float64 reference (run on upcast
    inputs) is at most REFERENCE_ERROR_FACTOR times the same-dtype PyTorch
    reference's largest error, plus one unit in the last place of the largest value
    (the same-dtype reference can be exact by luck). Non-finite entries must sit
    in the same places with the same values."""
    finite = torch.isfinite(float64_reference)
    torch.testing.assert_close(actual.double()[~finite], float64_reference[~finite], equal_nan=True)

    def largest_error(candidate):
        difference = candidate.double()[finite] - float64_reference[finite]
        return difference.abs().max().item() if difference.numel() else 0.0

    kernel_error, reference_error = largest_error(actual), largest_error(same_dtype_reference)
    floor = torch.finfo(actual.dtype).eps * _largest_finite_magnitude(float64_reference)
    allowed = REFERENCE_ERROR_FACTOR * reference_error + floor
    assert kernel_error <= allowed, (
        f"{actual.dtype} kernel error {kernel_error:.3g} exceeds {REFERENCE_ERROR_FACTOR:g} x "
        f"the PyTorch reference's error {reference_error:.3g} + floor {floor:.3g}")


def assert_close_to_reference(actual, same_dtype_reference, float64_reference):
    """float64 results must match the float64 reference to FLOAT64_RTOL; lower
    precision is judged relative to the same-dtype reference's own error (STYLE.md).
    Tuples and lists are compared element by element."""
    if isinstance(actual, (tuple, list)):
        for parts in zip(actual, same_dtype_reference, float64_reference, strict=True):
            assert_close_to_reference(*parts)
        return
    assert actual.shape == float64_reference.shape, (actual.shape, float64_reference.shape)
    assert actual.dtype == same_dtype_reference.dtype, (actual.dtype, same_dtype_reference.dtype)
    assert actual.device == same_dtype_reference.device, (
        actual.device, same_dtype_reference.device)
    if actual.dtype == torch.float64:
        assert_close_float64(actual, float64_reference)
    else:
        assert_within_reference_error(actual, same_dtype_reference, float64_reference)


def reference_pair(reference, *inputs):
    """`reference` run on the inputs as given and on float64 upcasts of them."""
    upcast = [tensor.double() if tensor.is_floating_point() else tensor for tensor in inputs]
    return reference(*inputs), reference(*upcast)


def poison_allocator(shapes, dtype, device, copies=4):
    """Allocates NaN-filled tensors of `shapes` and frees them, so that an op that
    next allocates outputs of those sizes is likely handed NaN garbage rather than
    fresh zero pages: an element the kernel forgets to write then shows as NaN.

    Returns whether the poisoning took: a probe allocation of the first shape
    came back mostly NaN. The CUDA caching allocator reuses blocks of one size
    reliably; glibc malloc on the CPU usually does, but overwrites a few bytes of
    a freed block with its own bookkeeping, hence "mostly", and may hand a small
    block to another allocation first, hence several copies of each."""
    garbage = [torch.full(shape, float("nan"), dtype=dtype, device=device)
               for shape in shapes for _ in range(copies)]
    del garbage
    probe = torch.empty(shapes[0], dtype=dtype, device=device)
    took = probe.numel() > 0 and probe.isnan().float().mean().item() > 0.5
    del probe  # back to the allocator, still NaN, for the op to pick up
    return took



# ---------------------------------------------------------------------------
# The shared harness of the ops registered through genvar_bench/ops/registry.py:
# every op family's training path is checked by the same code.

class OpCalls(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the names of the genvar ops dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "genvar":
            self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def gradients_of(function, args, wrt, grad_output):
    """d <function(*args), grad_output> / d args[i] for i in wrt, on fresh leaves."""
    leaves = [arg.detach().clone().requires_grad_(index in wrt) if arg.is_floating_point()
              else arg for index, arg in enumerate(args)]
    output = function(*leaves)
    return output, torch.autograd.grad(output, [leaves[index] for index in wrt], grad_output)


def check_training_path(op_name, entry, reference, args, wrt, generator):
    """The CPU training path of `genvar::<op_name>` (`entry`, the fused entry point):
    it runs `<op_name>_and_grad` when a buffered input needs a gradient and the plain op
    otherwise; its value and gradients equal the plain op's and the float64 reference's;
    a second backward through the same graph (which recomputes) gives the same gradients."""
    plain = getattr(torch.ops.genvar, op_name)
    value = plain(*args)
    grad_output = torch.randn(value.shape, generator=generator, dtype=torch.float64).to(value)
    with OpCalls() as calls:
        entry_value, entry_grads = gradients_of(entry, args, wrt, grad_output)
    assert calls.names[0] == f"{op_name}_and_grad", calls.names
    assert f"{op_name}_and_grad_backward_" in calls.names, calls.names
    with OpCalls() as calls, torch.no_grad():
        entry(*args)
    assert calls.names == [op_name]
    plain_value, plain_grads = gradients_of(plain, args, wrt, grad_output)
    _, reference_grads = gradients_of(reference, args, wrt, grad_output)
    torch.testing.assert_close(entry_value, plain_value, rtol=0, atol=0)
    torch.testing.assert_close(entry_value, reference(*args), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(entry_grads, plain_grads, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entry_grads, reference_grads, rtol=1e-10, atol=1e-10)
    leaves = [arg.detach().clone().requires_grad_(index in wrt) if arg.is_floating_point()
              else arg for index, arg in enumerate(args)]
    output = entry(*leaves)
    first = torch.autograd.grad(output, [leaves[i] for i in wrt], grad_output, retain_graph=True)
    second = torch.autograd.grad(output, [leaves[i] for i in wrt], grad_output)
    torch.testing.assert_close(second, first, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Small pieces the op tests share.


def shape_id(shape):
    """"3x2x5" rather than pytest's "shape0" in test ids."""
    return "x".join(map(str, shape))


def random_like(generator, tensor):
    """N(0, 1) drawn in float64 on the CPU, cast and moved like `tensor`."""
    return torch.randn(tensor.shape, generator=generator, dtype=torch.float64).to(tensor)


def replaced(inputs, **changes):
    """A copy of an inputs dataclass with some fields changed."""
    return dataclasses.replace(inputs, **changes)


def gradients(function, inputs, wrt, grad_outputs):
    """Gradients of function(*inputs) (one output or a tuple) with respect to inputs[i]
    for i in `wrt`, contracted with grad_outputs, taken on fresh leaves."""
    leaves = [tensor.detach().clone().requires_grad_(index in wrt)
              for index, tensor in enumerate(inputs)]
    outputs = function(*leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return torch.autograd.grad(outputs, [leaves[index] for index in wrt], grad_outputs)


# Memory layouts: the same values as `tensor`, stored otherwise.

def transposed(tensor):
    """The last two dimensions swapped in memory; a 1-d tensor strided instead."""
    return strided(tensor) if tensor.dim() == 1 else tensor.mT.contiguous().mT


def strided(tensor):
    """Every other element of a buffer twice as long in the last dimension."""
    buffer = tensor.new_empty(*tensor.shape[:-1], 2 * tensor.shape[-1])
    view = buffer[..., ::2]
    view.copy_(tensor)
    return view


def misaligned(tensor):
    """Contiguous, but starting one element into its storage: the base pointer is not
    16-byte aligned (the CUDA kernels' packed loads must notice)."""
    buffer = tensor.new_empty(tensor.numel() + 1)
    view = buffer[1:].view(tensor.shape)
    view.copy_(tensor)
    return view


def build_specs(args, profile, data_dim: int = 64, kind: str = "binary") -> list:
    """The specs `run` would train for parsed `args`, on data of this size and kind."""
    from types import SimpleNamespace

    from genvar_bench.cli.run import build_configs

    data = SimpleNamespace(name="digits" if kind == "binary" else "digits-grey",
                           binarization="test", data_dim=data_dim, kind=kind)
    return [spec for spec, _ in build_configs(args, profile, data)]


def prepare_scoring(method, train_data, **settings) -> None:
    """Readies a trained method for scoring, as the runner does (its scorer's `prepare`)."""
    from genvar_bench.registry import record_of

    record_of(method).scorer.prepare(method, train_data, **settings)


def test_nll(method, x, eval_samples: int):
    """(per-example NLL, estimator, terms) by the method's scorer."""
    from genvar_bench.registry import record_of

    return record_of(method).scorer.test_nll(method, x, eval_samples)


test_nll.__test__ = False  # a helper, not a test
