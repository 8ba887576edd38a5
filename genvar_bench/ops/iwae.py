"""The IWAE ops: `genvar::iwae_log_weights` and `genvar::iwae_bound`.

Shapes use k (samples per example), B (batch), D (data dimension) and
Z (latent dimension).
"""
import math

import torch

from genvar_bench._extension import extension_available


def iwae_log_weights_ref(logits, x, z, mu, logvar):
    """log w[k, b] = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b).

    p(x|z) is Bernoulli with logits `logits` [k, B, D] evaluated at x [B, D];
    p(z) = N(0, I); q(z|x) = N(mu, diag(exp(logvar))) with mu, logvar [B, Z];
    z [k, B, Z]. Returns [k, B]. The log(2 pi) terms of the two Gaussians cancel.
    """
    # softplus(l) = -log sigmoid(-l): exact for every l (F.softplus cuts off at 20),
    # and its gradient is sigmoid(l) everywhere, l = 0 included.
    softplus = -torch.nn.functional.logsigmoid(-logits)
    bernoulli = (x * logits - softplus).sum(-1)
    gaussian = 0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar - z**2).sum(-1)
    return bernoulli + gaussian


def iwae_bound_ref(log_weights):
    """bound[b] = logsumexp_k log_weights[k, b] - log k; weights = softmax over k.

    log_weights [k, B] -> (bound [B], weights [k, B]). A column that is all
    -inf has bound -inf and weights 0: no sample is possible under the model.
    A NaN anywhere in a column gives NaN bound and weights in that column only.
    """
    num_samples = log_weights.shape[0]
    column_max = log_weights.detach().amax(0)
    shift = torch.where(torch.isfinite(column_max), column_max, torch.zeros_like(column_max))
    shifted = torch.exp(log_weights - shift)
    total = shifted.sum(0)
    bound = torch.log(total) + shift - math.log(num_samples)
    weights = torch.where(total == 0, torch.zeros_like(shifted), shifted / total)
    return bound, weights


def fused_iwae_log_weights(logits, x, z, mu, logvar):
    """`genvar::iwae_log_weights`, or on CPU when logits need a gradient,
    `genvar::iwae_log_weights_and_grad`: on a CPU the cost is the transcendentals,
    so the forward writes d log_w / d logits while it has exp(-|l|) at hand and the
    backward only scales it; on a GPU the cost is bytes, and recomputing is cheaper.
    Under torch.compile the plain op runs: the training path's backward keeps its
    buffer on ctx, which AOTAutograd cannot trace."""
    if (logits.device.type == "cpu" and logits.requires_grad and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()):
        return torch.ops.genvar.iwae_log_weights_and_grad(logits, x, z, mu, logvar)[0]
    return torch.ops.genvar.iwae_log_weights(logits, x, z, mu, logvar)


def _check_log_weights_shapes(logits, x, z, mu, logvar):
    torch._check(logits.dim() == 3, lambda: f"logits must be [k, B, D], got {logits.shape}")
    torch._check(logits.shape[0] > 0, lambda: "logits must have k > 0 samples")
    num_samples, batch, data_dim = logits.shape
    torch._check(x.shape == (batch, data_dim), lambda: f"x must be [B, D], got {x.shape}")
    torch._check(z.dim() == 3 and z.shape[:2] == (num_samples, batch),
                 lambda: f"z must be [k, B, Z], got {z.shape}")
    torch._check(mu.shape == (batch, z.shape[2]), lambda: f"mu must be [B, Z], got {mu.shape}")
    torch._check(logvar.shape == mu.shape, lambda: f"logvar must be [B, Z], got {logvar.shape}")


def _register():
    @torch.library.register_fake("genvar::iwae_log_weights")
    def _(logits, x, z, mu, logvar):
        _check_log_weights_shapes(logits, x, z, mu, logvar)
        return logits.new_empty(logits.shape[:2])

    @torch.library.register_fake("genvar::iwae_log_weights_backward")
    def _(grad_log_weights, logits, x, z, mu, logvar):
        _check_log_weights_shapes(logits, x, z, mu, logvar)
        return (torch.empty_like(logits), torch.empty_like(z),
                torch.empty_like(mu), torch.empty_like(logvar))

    @torch.library.register_fake("genvar::iwae_log_weights_and_grad")
    def _(logits, x, z, mu, logvar):
        _check_log_weights_shapes(logits, x, z, mu, logvar)
        return logits.new_empty(logits.shape[:2]), torch.empty_like(logits)

    @torch.library.register_fake("genvar::iwae_log_weights_and_grad_backward_")
    def _(grad_log_weights, dlogits, z, mu, logvar):
        return torch.empty_like(z), torch.empty_like(mu), torch.empty_like(logvar)

    @torch.library.register_fake("genvar::iwae_bound")
    def _(log_weights):
        torch._check(log_weights.dim() == 2 and log_weights.shape[0] > 0,
                     lambda: f"log_weights must be [k, B] with k > 0, got {log_weights.shape}")
        return log_weights.new_empty(log_weights.shape[1:]), torch.empty_like(log_weights)

    @torch.library.register_fake("genvar::iwae_bound_backward")
    def _(grad_bound, grad_weights, weights):
        return torch.empty_like(weights)

    def log_weights_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def log_weights_backward(ctx, grad_log_weights):
        if ctx.needs_input_grad[1]:
            raise RuntimeError("iwae_log_weights has no gradient with respect to x (the data)")
        logits, x, z, mu, logvar = ctx.saved_tensors
        grad_logits, grad_z, grad_mu, grad_logvar = torch.ops.genvar.iwae_log_weights_backward(
            grad_log_weights, logits, x, z, mu, logvar)
        return grad_logits, None, grad_z, grad_mu, grad_logvar

    def and_grad_setup(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        # No zero [k, B, D] gradient for the non-differentiable dlogits output.
        ctx.set_materialize_grads(False)
        # The first backward scales dlogits in place into the logits gradient, so no
        # second [k, B, D] tensor exists. dlogits has no grad_fn: holding it on ctx
        # makes no reference cycle. The inputs are kept for a second backward.
        ctx.dlogits = output[1]
        ctx.save_for_backward(*inputs)

    def and_grad_backward(ctx, grad_log_weights, _):
        if ctx.needs_input_grad[1]:
            raise RuntimeError("iwae_log_weights has no gradient with respect to x (the data)")
        if grad_log_weights is None:
            return None, None, None, None, None
        logits, x, z, mu, logvar = ctx.saved_tensors
        dlogits, ctx.dlogits = ctx.dlogits, None
        if dlogits is None:  # a second backward through the same graph: recompute
            grads = torch.ops.genvar.iwae_log_weights_backward(
                grad_log_weights, logits, x, z, mu, logvar)
            return grads[0], None, *grads[1:]
        grad_z, grad_mu, grad_logvar = torch.ops.genvar.iwae_log_weights_and_grad_backward_(
            grad_log_weights, dlogits, z, mu, logvar)
        return dlogits, None, grad_z, grad_mu, grad_logvar

    def bound_setup(ctx, inputs, output):
        ctx.save_for_backward(output[1])

    def bound_backward(ctx, grad_bound, grad_weights):
        (weights,) = ctx.saved_tensors
        return torch.ops.genvar.iwae_bound_backward(grad_bound, grad_weights, weights)

    torch.library.register_autograd("genvar::iwae_log_weights", log_weights_backward,
                                    setup_context=log_weights_setup)
    torch.library.register_autograd("genvar::iwae_log_weights_and_grad", and_grad_backward,
                                    setup_context=and_grad_setup)
    torch.library.register_autograd("genvar::iwae_bound", bound_backward,
                                    setup_context=bound_setup)


if extension_available():
    _register()
