"""The sigmoid-belief-network op: `genvar::sbn_log_weights`.

Shapes use k (samples per example), B (batch), D (data dimension) and
H (binary latent units).
"""
import torch

from genvar_bench._extension import extension_available


def _bernoulli_log_prob(logits, values):
    """sum over the last axis of values * l - softplus(l); softplus(l) = -log sigmoid(-l)
    is exact for every l and has gradient sigmoid(l) everywhere."""
    return (values * logits + torch.nn.functional.logsigmoid(-logits)).sum(-1)


def sbn_log_weights_ref(logits, x, h, prior_logits, q_logits):
    """log w[k, b] = log p(x_b | h_kb) + log p(h_kb) - log q(h_kb | x_b), binary h.

    p(x|h) is Bernoulli with logits `logits` [k, B, D] evaluated at x [B, D];
    p(h) is a factorised Bernoulli with logits `prior_logits` [H]; q(h|x) a
    factorised Bernoulli with logits `q_logits` [B, H]; h [k, B, H] holds 0/1
    samples (any real values are accepted: the formula is linear in h).
    Returns [k, B].
    """
    return (_bernoulli_log_prob(logits, x) + _bernoulli_log_prob(prior_logits, h)
            - _bernoulli_log_prob(q_logits, h))


def fused_sbn_log_weights(logits, x, h, prior_logits, q_logits):
    """`genvar::sbn_log_weights`, or on CPU when logits need a gradient,
    `genvar::sbn_log_weights_and_grad`: the forward writes d log_w / d logits while
    it has exp(-|l|) at hand and the backward only scales it (as for
    fused_iwae_log_weights, and for the same reasons). Under torch.compile the plain
    op runs: the training path's backward keeps its buffer on ctx, which
    AOTAutograd cannot trace."""
    if (logits.device.type == "cpu" and logits.requires_grad and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()):
        return torch.ops.genvar.sbn_log_weights_and_grad(logits, x, h, prior_logits,
                                                        q_logits)[0]
    return torch.ops.genvar.sbn_log_weights(logits, x, h, prior_logits, q_logits)


def _check_log_weights_shapes(logits, x, h, prior_logits, q_logits):
    torch._check(logits.dim() == 3, lambda: f"logits must be [k, B, D], got {logits.shape}")
    torch._check(logits.shape[0] > 0, lambda: "logits must have k > 0 samples")
    num_samples, batch, data_dim = logits.shape
    torch._check(x.shape == (batch, data_dim), lambda: f"x must be [B, D], got {x.shape}")
    torch._check(h.dim() == 3 and h.shape[:2] == (num_samples, batch),
                 lambda: f"h must be [k, B, H], got {h.shape}")
    torch._check(prior_logits.shape == h.shape[2:],
                 lambda: f"prior_logits must be [H], got {prior_logits.shape}")
    torch._check(q_logits.shape == (batch, h.shape[2]),
                 lambda: f"q_logits must be [B, H], got {q_logits.shape}")


def _no_gradient_for_x(ctx):
    if ctx.needs_input_grad[1]:
        raise RuntimeError("sbn_log_weights has no gradient with respect to x (the data)")


def _register():
    @torch.library.register_fake("genvar::sbn_log_weights")
    def _(logits, x, h, prior_logits, q_logits):
        _check_log_weights_shapes(logits, x, h, prior_logits, q_logits)
        return logits.new_empty(logits.shape[:2])

    @torch.library.register_fake("genvar::sbn_log_weights_backward")
    def _(grad_log_weights, logits, x, h, prior_logits, q_logits):
        _check_log_weights_shapes(logits, x, h, prior_logits, q_logits)
        return (torch.empty_like(logits), torch.empty_like(h),
                torch.empty_like(prior_logits), torch.empty_like(q_logits))

    @torch.library.register_fake("genvar::sbn_log_weights_and_grad")
    def _(logits, x, h, prior_logits, q_logits):
        _check_log_weights_shapes(logits, x, h, prior_logits, q_logits)
        return logits.new_empty(logits.shape[:2]), torch.empty_like(logits)

    @torch.library.register_fake("genvar::sbn_log_weights_and_grad_backward_")
    def _(grad_log_weights, dlogits, h, prior_logits, q_logits):
        return torch.empty_like(h), torch.empty_like(prior_logits), torch.empty_like(q_logits)

    def log_weights_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def log_weights_backward(ctx, grad_log_weights):
        _no_gradient_for_x(ctx)
        logits, x, h, prior_logits, q_logits = ctx.saved_tensors
        grad_logits, grad_h, grad_prior, grad_q = torch.ops.genvar.sbn_log_weights_backward(
            grad_log_weights, logits, x, h, prior_logits, q_logits)
        return grad_logits, None, grad_h, grad_prior, grad_q

    def and_grad_setup(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        # No zero [k, B, D] gradient for the non-differentiable dlogits output.
        ctx.set_materialize_grads(False)
        # The first backward scales dlogits in place into the logits gradient. dlogits
        # has no grad_fn, so holding it on ctx makes no reference cycle; the inputs
        # are kept for a second backward.
        ctx.dlogits = output[1]
        ctx.save_for_backward(*inputs)

    def and_grad_backward(ctx, grad_log_weights, _):
        _no_gradient_for_x(ctx)
        if grad_log_weights is None:
            return None, None, None, None, None
        logits, x, h, prior_logits, q_logits = ctx.saved_tensors
        dlogits, ctx.dlogits = ctx.dlogits, None
        if dlogits is None:  # a second backward through the same graph: recompute
            grads = torch.ops.genvar.sbn_log_weights_backward(
                grad_log_weights, logits, x, h, prior_logits, q_logits)
            return grads[0], None, *grads[1:]
        grad_h, grad_prior, grad_q = torch.ops.genvar.sbn_log_weights_and_grad_backward_(
            grad_log_weights, dlogits, h, prior_logits, q_logits)
        return dlogits, None, grad_h, grad_prior, grad_q

    torch.library.register_autograd("genvar::sbn_log_weights", log_weights_backward,
                                    setup_context=log_weights_setup)
    torch.library.register_autograd("genvar::sbn_log_weights_and_grad", and_grad_backward,
                                    setup_context=and_grad_setup)


if extension_available():
    _register()
