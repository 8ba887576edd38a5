"""One mechanism for every `genvar` op: `define_op` registers an op's fake kernel and
autograd formula, and, where it has one, its CPU training path, and puts its fused
entry point and its reference in the two backends' op sets (`FUSED`, `REFERENCE`).

Most ops come as four compiled ops that follow one naming scheme:
- `genvar::<name>(inputs) -> outputs`: the op;
- `genvar::<name>_backward(grad, inputs) -> gradients of the differentiable inputs`;
- the CPU training path, `genvar::<name>_and_grad(inputs) -> (outputs, buffers)`: the
  forward also writes the derivatives of the output in the inputs listed in `buffers_for`
  while it has the transcendentals at hand, and
  `genvar::<name>_and_grad_backward_(grad, buffers, inputs at scale_args)` scales them in
  place into those gradients (and returns the other inputs' gradients, if any). On a CPU
  the cost is the transcendentals, on a GPU the bytes, where recomputing is cheaper; under
  torch.compile the plain op runs, as the training path keeps its buffers on ctx, which
  AOTAutograd cannot trace.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from genvar_bench._extension import extension_available

# name -> the fused entry point / the reference; filled by define_op
FUSED: dict[str, Callable] = {}
REFERENCE: dict[str, Callable] = {}


@dataclass(frozen=True)
class Gradients:
    """How an op's gradients map onto its inputs, each input named as in the op's schema
    (`torch.ops.genvar.<name>`; without the op library, the reference's parameters, which
    carry the same names).

    differentiable: the inputs that get a gradient, in the order the `_backward` op
    returns them (one tensor when there is one); the others get None, and those in
    `no_gradient` raise its message when a gradient is asked of them.
    buffers_for / scale_args: of the training path, see the module docstring.
    """

    differentiable: tuple[str, ...]
    no_gradient: dict[str, str] = field(default_factory=dict)
    buffers_for: tuple[str, ...] = ()
    scale_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Slots:
    """A Gradients with each input name replaced by its position in the op's arguments."""

    differentiable: tuple[int, ...]
    no_gradient: dict[int, str]
    buffers_for: tuple[int, ...]
    scale_args: tuple[int, ...]


def _argument_names(name: str, reference: Callable) -> list[str]:
    """The op's argument names: from its schema when the op library has the op, else from
    the reference's signature; where both exist they must agree."""
    from_reference = list(inspect.signature(reference).parameters)
    if not (extension_available() and hasattr(torch.ops.genvar, name)):
        return from_reference
    from_schema = [argument.name
                   for argument in getattr(torch.ops.genvar, name).default._schema.arguments]
    if from_schema != from_reference:
        raise TypeError(f"genvar::{name} takes ({', '.join(from_schema)}) but its reference "
                        f"{reference.__name__} takes ({', '.join(from_reference)})")
    return from_schema


def _slots(name: str, reference: Callable, gradients: Gradients) -> _Slots:
    names = _argument_names(name, reference)

    def position(argument: str) -> int:
        if argument not in names:
            raise ValueError(f"genvar::{name} has no argument {argument!r} (its arguments: "
                             f"{', '.join(names)})")
        return names.index(argument)

    return _Slots(differentiable=tuple(map(position, gradients.differentiable)),
                  no_gradient={position(argument): message
                               for argument, message in gradients.no_gradient.items()},
                  buffers_for=tuple(map(position, gradients.buffers_for)),
                  scale_args=tuple(map(position, gradients.scale_args)))


def _full(gradients: _Slots, num_inputs: int, by_input: dict[int, torch.Tensor], ctx):
    return tuple(by_input.get(index) if ctx.needs_input_grad[index] else None
                 for index in range(num_inputs))


def _check_requests(ctx, gradients: _Slots):
    for index, message in gradients.no_gradient.items():
        if ctx.needs_input_grad[index]:
            raise RuntimeError(message)


def _recompute(name: str, gradients: _Slots, grad, inputs, ctx):
    """The plain op's backward: the `_backward` op on the saved inputs."""
    values = getattr(torch.ops.genvar, f"{name}_backward")(grad, *inputs)
    values = values if isinstance(values, (tuple, list)) else (values,)
    return _full(gradients, len(inputs), dict(zip(gradients.differentiable, values)), ctx)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _save_inputs_and_buffers(ctx, inputs, output):
    # The first backward scales the buffers in place into the gradients, so no second
    # copy exists. They have no grad_fn: holding them on ctx makes no reference cycle.
    # The inputs are kept for a second backward, which recomputes.
    ctx.mark_non_differentiable(*output[-len(ctx.buffer_slots):])
    ctx.set_materialize_grads(False)  # no zero gradients for the buffers
    ctx.buffers = output[-len(ctx.buffer_slots):]
    ctx.save_for_backward(*inputs)


def _register_autograd(name: str, gradients: _Slots):
    def backward(ctx, grad, *_):
        _check_requests(ctx, gradients)
        num_inputs = len(ctx.needs_input_grad)
        if grad is None or not any(ctx.needs_input_grad[i] for i in gradients.differentiable):
            return (None,) * num_inputs
        inputs = ctx.saved_tensors
        buffers, ctx.buffers = getattr(ctx, "buffers", None), None
        if buffers is None:  # the plain op, or a second backward through the training path
            return _recompute(name, gradients, grad, inputs, ctx)
        others = getattr(torch.ops.genvar, f"{name}_and_grad_backward_")(
            grad, *buffers, *(inputs[index] for index in gradients.scale_args))
        returned = [index for index in gradients.differentiable
                    if index not in gradients.buffers_for]
        by_input = dict(zip(gradients.buffers_for, buffers))
        by_input.update(zip(returned, others or ()))
        return _full(gradients, num_inputs, by_input, ctx)

    torch.library.register_autograd(f"genvar::{name}", backward, setup_context=_save_inputs)
    if gradients.buffers_for:
        def setup_training_path(ctx, inputs, output):
            ctx.buffer_slots = gradients.buffers_for
            _save_inputs_and_buffers(ctx, inputs, output)

        torch.library.register_autograd(f"genvar::{name}_and_grad", backward,
                                        setup_context=setup_training_path)


def _register_fakes(name: str, fake: Callable, gradients: _Slots | None):
    torch.library.register_fake(f"genvar::{name}")(fake)
    if gradients is None:
        return

    def backward_fake(grad, *inputs):
        fake(*inputs)  # the shape checks
        values = tuple(torch.empty_like(inputs[index]) for index in gradients.differentiable)
        return values[0] if len(values) == 1 else values

    torch.library.register_fake(f"genvar::{name}_backward")(backward_fake)
    if not gradients.buffers_for:
        return

    def training_fake(*inputs):
        outputs = fake(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return (*outputs, *(torch.empty_like(inputs[index]) for index in gradients.buffers_for))

    returned = [index for index in gradients.differentiable if index not in gradients.buffers_for]

    def scale_fake(grad, *rest):
        extra = rest[len(gradients.buffers_for):]
        by_position = dict(zip(gradients.scale_args, extra))
        values = tuple(torch.empty_like(by_position[index]) for index in returned)
        return values or None

    torch.library.register_fake(f"genvar::{name}_and_grad")(training_fake)
    torch.library.register_fake(f"genvar::{name}_and_grad_backward_")(scale_fake)


def training_path(name: str, gradients: _Slots, buffer_names: tuple[str, ...]) -> Callable:
    """The fused entry point: `genvar::<name>_and_grad` on a CPU when an input with a
    buffer needs a gradient (its first output), else `genvar::<name>`."""
    def entry(*inputs):
        if (inputs[gradients.buffers_for[0]].device.type == "cpu" and torch.is_grad_enabled()
                and any(inputs[index].requires_grad for index in gradients.buffers_for)
                and not torch.compiler.is_compiling()):
            return getattr(torch.ops.genvar, f"{name}_and_grad")(*inputs)[0]
        return getattr(torch.ops.genvar, name)(*inputs)
    entry.__name__ = entry.__qualname__ = f"fused_{name}"
    entry.__doc__ = (f"`genvar::{name}`, or on a CPU when one of {', '.join(buffer_names)} "
                     f"needs a gradient, the training path `genvar::{name}_and_grad` "
                     "(registry.py).")
    return entry


def define_op(name: str, reference: Callable, fake: Callable, gradients: Gradients | None = None,
              fused: Callable | None = None,
              autograd: tuple[Callable, Callable] | None = None,
              backward_fake: Callable | None = None) -> Callable | None:
    """Registers `genvar::<name>` (fake kernels, autograd and training path as above; an
    op whose autograd does not follow the scheme passes its own (backward, setup_context)
    as `autograd`, and the fake kernel of its `_backward` op) and adds it to both
    backends' op sets. Returns the fused entry point: `fused`, the training path when
    `gradients` has buffers, else the op itself; without the op library, `fused` or the
    training path (None when the op has neither)."""
    slots = None
    if gradients is not None:
        slots = _slots(name, reference, gradients)
        if fused is None and slots.buffers_for:
            fused = training_path(name, slots, gradients.buffers_for)
    REFERENCE[name] = reference
    if not (extension_available() and hasattr(torch.ops.genvar, name)):
        return fused
    _register_fakes(name, fake, slots)
    if backward_fake is not None:
        torch.library.register_fake(f"genvar::{name}_backward")(backward_fake)
    if autograd is not None:
        backward, setup_context = autograd
        torch.library.register_autograd(f"genvar::{name}", backward, setup_context=setup_context)
    elif slots is not None:
        _register_autograd(name, slots)
    FUSED[name] = fused or getattr(torch.ops.genvar, name)
    return FUSED[name]
