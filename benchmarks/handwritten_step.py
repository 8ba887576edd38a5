"""How much is left to take from the autograd side of the IWAE step: the suite's fused step
against a step whose forward and backward are written out by hand (no autograd at all: one
addmm per layer, tanh in place, the gradient of every layer written in closed form, fused
Adam), and against the plain PyTorch step of benchmarks/test_training_step.py. Interleaved
in one process, round robin, medians of steps per second.

    OMP_NUM_THREADS=1 python -m benchmarks.handwritten_step --k 5

The hand-written step is checked first: from the same parameters and noise its loss and
every gradient equal autograd's on the plain model (to 1e-4 relative), so it computes the
same update. It is the fastest a fused MLP forward/backward op could make this step
without changing its matrix products.
"""
from __future__ import annotations

import argparse
import math
import statistics

import torch

from benchmarks.plain_models import PlainGaussianModel, iwae_loss
from benchmarks.test_training_step import BATCH, DATASETS, batch_of, plain_step, suite_step
from benchmarks.training_levers import round_robin


def linears(sequential):
    return [module for module in sequential if isinstance(module, torch.nn.Linear)]


def linear_backward(layer, inputs, grad_out, need_input=True):
    """Accumulates nothing: writes the layer's weight and bias gradients; returns the input's."""
    torch.mm(grad_out.t(), inputs, out=layer.weight.grad)
    torch.sum(grad_out, 0, out=layer.bias.grad)
    return grad_out @ layer.weight if need_input else None


def handwritten_iwae(model, x, num_samples):
    """One IWAE forward and backward of `model` (a PlainGaussianModel) by hand; the
    gradients land in the parameters' .grad; returns the loss."""
    encoder, decoder = linears(model.encoder), linears(model.decoder)
    batch = x.shape[0]
    latent = encoder[2].out_features // 2
    with torch.no_grad():
        h1 = torch.addmm(encoder[0].bias, x, encoder[0].weight.t()).tanh_()
        h2 = torch.addmm(encoder[1].bias, h1, encoder[1].weight.t()).tanh_()
        out = torch.addmm(encoder[2].bias, h2, encoder[2].weight.t())
        mu, logvar = out[:, :latent], out[:, latent:]
        std = torch.exp(0.5 * logvar)
        noise = torch.randn(num_samples, batch, latent)
        z = (mu + std * noise).reshape(num_samples * batch, latent)
        d1 = torch.addmm(decoder[0].bias, z, decoder[0].weight.t()).tanh_()
        d2 = torch.addmm(decoder[1].bias, d1, decoder[1].weight.t()).tanh_()
        logits = torch.addmm(decoder[2].bias, d2, decoder[2].weight.t())
        xk = x.repeat(num_samples, 1)
        log_likelihood = (xk * logits - torch.nn.functional.softplus(logits)).sum(-1)
        # log p(x, z) - log q(z | x), the log(2 pi) terms cancelling, as in the plain model
        log_w = ((log_likelihood - 0.5 * (z * z).sum(-1)).reshape(num_samples, batch)
                 + 0.5 * (noise * noise).sum(-1) + 0.5 * logvar.sum(-1))
        loss = -(torch.logsumexp(log_w, 0) - math.log(num_samples)).mean()
        grad_log_w = -torch.softmax(log_w, 0) / batch  # [k, B]
        column = grad_log_w.reshape(num_samples * batch, 1)
        grad = (xk - torch.sigmoid(logits)).mul_(column)
        grad = linear_backward(decoder[2], d2, grad).mul_(1 - d2 * d2)
        grad = linear_backward(decoder[1], d1, grad).mul_(1 - d1 * d1)
        grad_z = linear_backward(decoder[0], z, grad).sub_(z * column).reshape(num_samples, batch, latent)
        grad_mu = grad_z.sum(0)
        grad_logvar = (grad_z * noise).sum(0) * (0.5 * std) + 0.5 * grad_log_w.sum(0)[:, None]
        grad = torch.cat([grad_mu, grad_logvar], 1)
        grad = linear_backward(encoder[2], h2, grad).mul_(1 - h2 * h2)
        grad = linear_backward(encoder[1], h1, grad).mul_(1 - h1 * h1)
        linear_backward(encoder[0], x, grad, need_input=False)
    return loss


def handwritten_step(num_samples, dataset):
    data_dim, _ = DATASETS[dataset]
    torch.manual_seed(0)
    model = PlainGaussianModel(data_dim)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4, fused=True)
    batch = batch_of(data_dim)

    def step():
        handwritten_iwae(model, batch, num_samples)
        optimizer.step()
    return step


def check(num_samples, dataset):
    """The hand-written loss and gradients against autograd's on the same draws."""
    data_dim, _ = DATASETS[dataset]
    torch.manual_seed(0)
    reference, model = PlainGaussianModel(data_dim).double(), PlainGaussianModel(data_dim).double()
    model.load_state_dict(reference.state_dict())
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    x = batch_of(data_dim).double()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(1)
        expected = iwae_loss(reference, x, num_samples)
        expected.backward()
        torch.manual_seed(1)
        got = handwritten_iwae(model, x, num_samples)
    finally:
        torch.set_default_dtype(torch.float32)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-10, atol=1e-10)
    for (name, want), have in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(have.grad, want.grad, rtol=1e-4, atol=1e-10, msg=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=None, help="per round (default 40, 6 at k >= 50)")
    args = parser.parse_args(argv)
    check(args.k, args.dataset)
    steps_per_round = args.steps or (6 if args.k >= 50 else 40)
    steps = {"suite (fused)": suite_step("iwae", args.k, args.dataset, "fused"),
             "plain eager": plain_step("iwae", args.k, args.dataset, compiled=False),
             "hand-written": handwritten_step(args.k, args.dataset)}
    rates = round_robin(steps, args.rounds, steps_per_round)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"iwae k={args.k} {args.dataset} (batch {BATCH}, {torch.get_num_threads()} threads); "
          "hand-written gradients equal autograd's")
    for name, rate in medians.items():
        print(f"  {name:14s} {rate:7.1f} steps/s  {rate / medians['plain eager']:.2f}x plain eager"
              f"  {rate / medians['suite (fused)']:.2f}x suite")


if __name__ == "__main__":
    main()
