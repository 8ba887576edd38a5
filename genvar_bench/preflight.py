"""A method checked on one batch before it trains (`check_method`).

Every figure of a row is built from the method's log weights and bound, so a method whose
log weights are not [k, B], whose bound is not [B], whose figures are not finite, or
whose p scores q's draws otherwise than log p(x, tau) - log q(tau | x) (a fused
`log_ratio` used with a q it does not hold for) is refused before any training, with
one sentence naming the method and what is wrong, rather than trained and tabulated.

The check leaves no trace: it runs on a copy of the method (or, where the method cannot
be copied, on the method itself, whose state and training flags are then put back), on
its own random generator (`torch.random.fork_rng`, the batch's CUDA device included),
without gradients. A row's numbers are the same whether it ran or not.

It passes where a method is well formed, which is not that it is right: a q that claims
a family it is not of (`InferenceModel.q_family`) goes unnoticed where, on this batch and
at these initial weights, the error is within the tolerance (a flow whose couplings start
at the identity, say).
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch

from genvar_bench.core import GenerativeModel, InferenceModel, Method, scores
from genvar_bench.registry import record_of

# Draws per example (k) of the check: 3, or 4 where the batch has 3 examples, so that a
# transposed [B, k] cannot pass for [k, B].
CHECK_SAMPLES = 3
# The seed of the check's own generators.
CHECK_SEED = 20160601


class MethodCheckError(RuntimeError):
    """A method refused before training; the message says which and why."""


def check_method(method: Method, batch: torch.Tensor) -> None:
    """Before the first training step, on one batch x [B, ...] on the method's device:
    - `method.log_weights(x, k)` is [k, B] and finite;
    - `method.bound(x)` is [B] and finite;
    - where q draws latents (`can_sample`) and both q and p have log densities
      (`has_log_prob`), p's `log_ratio` at q's draw equals p.log_prob - q.log_prob at that
      draw, to within float rounding (relative tolerance sqrt(eps) of the dtype).
    Scoring needs what the scorer's `prepare_check` readies (the DAE's prior, the RBM's log Z),
    on the copy. Raises `MethodCheckError` saying what is wrong; leaves the method's
    state, its training flags and the random generators as they were."""
    name = record_of(method).name
    if not torch.is_tensor(batch) or batch.dim() < 1 or batch.shape[0] < 1:
        raise ValueError(f"check_method needs a batch [B, ...] of at least one example, got "
                         f"{type(batch).__name__} {tuple(getattr(batch, 'shape', ()))}")
    devices = []
    if batch.device.type == "cuda":
        devices = [batch.device.index if batch.device.index is not None
                   else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.default_generator.manual_seed(CHECK_SEED)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(CHECK_SEED)
        with _isolated(method) as subject:
            subject.eval()
            _run_checks(subject, repr(name), batch)


def _run_checks(method: Method, name: str, x: torch.Tensor) -> None:
    batch = x.shape[0]
    k = CHECK_SAMPLES if batch != CHECK_SAMPLES else CHECK_SAMPLES + 1
    scorer = record_of(method).scorer
    _call(name, "prepare_check(batch)", lambda batch: scorer.prepare_check(method, batch), x)
    what = f"log_weights(batch, {k})"
    _expect(name, what, _call(name, what, method.log_weights, x, k), (k, batch), "[k, B]")
    _expect(name, "bound(batch)", _call(name, "bound(batch)", method.bound, x), (batch,), "[B]")

    q, p = method.q, method.p
    if not (q.can_sample and scores(q, InferenceModel) and scores(p, GenerativeModel)):
        return  # no draw of latent layers, or no densities to compare with (RBM, diffusion)
    draw = _call(name, f"q.sample(batch, {k})", q.sample, x, k)
    what = f"p.log_ratio at q's draw ({type(p).__name__}, {type(q).__name__})"
    ratio = _expect(name, what, _call(name, what, p.log_ratio, x, draw, q), (k, batch), "[k, B]")
    what = "p.log_prob - q.log_prob at q's draw"
    exact = _expect(name, what, _call(
        name, what, lambda: p.log_prob(x, draw.latents) - q.log_prob(x, draw.latents)),
        (k, batch), "[k, B]")
    tolerance = math.sqrt(torch.finfo(ratio.dtype).eps)
    scale = max(1.0, exact.abs().max().item())
    if not torch.allclose(ratio, exact.to(ratio.dtype), rtol=tolerance, atol=tolerance * scale):
        gap = (ratio.double() - exact.double()).abs().max().item()
        raise MethodCheckError(
            f"method {name}: {type(p).__name__}.log_ratio at the draws of q ({type(q).__name__}, "
            f"q_family={getattr(q, 'q_family', None)!r}) differs from p.log_prob - q.log_prob "
            f"by up to {gap:.3g} nats (tolerance {tolerance * scale:.2g}), so its log weights, "
            "bounds and test NLL would be wrong.")


def _call(name: str, what: str, function, *args):
    """function(*args); any exception becomes a MethodCheckError naming the method."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - every failure of the method is the method's
        reason = " ".join(str(error).split()) or "(no message)"
        raise MethodCheckError(f"method {name}: {what} raised {type(error).__name__}: "
                               f"{reason}") from error


def _expect(name: str, what: str, value, shape: tuple[int, ...], meaning: str) -> torch.Tensor:
    """value, after checking it is a floating tensor of `shape` with finite entries."""
    if not torch.is_tensor(value):
        raise MethodCheckError(f"method {name}: {what} returned {type(value).__name__}, "
                               f"expected a tensor {meaning} = {list(shape)}")
    if tuple(value.shape) != shape:
        raise MethodCheckError(f"method {name}: {what} has shape {list(value.shape)}, "
                               f"expected {meaning} = {list(shape)}")
    if not value.is_floating_point():
        raise MethodCheckError(f"method {name}: {what} has dtype {value.dtype}, expected a "
                               "floating-point tensor")
    bad = ~torch.isfinite(value)
    if bad.any():
        first = value[bad].flatten()[0].item()
        raise MethodCheckError(f"method {name}: {what} has {int(bad.sum())} non-finite "
                               f"entries of {value.numel()} (the first: {first})")
    return value


@contextlib.contextmanager
def _isolated(method: Method):
    """A deep copy of the method to check; where it cannot be copied, the method itself,
    its state (parameters, buffers, extra state) and training flags restored after."""
    try:
        duplicate = copy.deepcopy(method)
    except Exception:  # noqa: BLE001 - an uncopyable attribute: check in place instead
        duplicate = None
    if duplicate is not None:
        yield duplicate
        return
    state = {key: value.detach().clone() if torch.is_tensor(value) else copy.deepcopy(value)
             for key, value in method.state_dict().items()}
    modes = [(module, module.training) for module in method.modules()]
    try:
        yield method
    finally:
        method.load_state_dict(state)
        for module, mode in modes:
            module.training = mode
