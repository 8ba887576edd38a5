"""The op library's one mechanism (genvar_bench/ops/registry.py): both backends' op
sets, and every training-path op checked by the shared harness of tests/helpers.py
(float64, CPU: the training path exists on the CPU only)."""
import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library)
from genvar_bench.ops import REFERENCE, get_ops, registry
from helpers import check_training_path, generator_for, make_diffusion_inputs, make_iwae_inputs
from test_sbn_ops import make_sbn_inputs


def test_both_backends_have_the_same_ops():
    fused = get_ops("fused")
    assert sorted(vars(fused)) == sorted(vars(REFERENCE)) == sorted(registry.REFERENCE)
    assert {"iwae_log_weights", "iwae_bound", "sbn_log_weights", "mixture_log_density",
            "diffusion_binomial_kl", "diffusion_gaussian_kl", "rbm_gibbs"} <= set(vars(fused))


def _cases(generator):
    """op name -> (arguments, the inputs that get a gradient)."""
    iwae = make_iwae_inputs(generator, 3, 4, 9, 5)
    sbn = make_sbn_inputs(generator, 3, 4, 9, 5)
    binomial = make_diffusion_inputs(generator, "binomial", 3, 4, 9, num_steps=50)
    gaussian = make_diffusion_inputs(generator, "gaussian", 3, 4, 9, num_steps=50)
    return {"iwae_log_weights": (iwae.tensors(), (0, 2, 3, 4)),
            "sbn_log_weights": (sbn.tensors(), (0, 2, 3, 4)),
            "diffusion_binomial_kl": (binomial.args(), (2,)),
            "diffusion_gaussian_kl": (gaussian.args(), (2, 3))}


@pytest.mark.parametrize("op_name", ["iwae_log_weights", "sbn_log_weights",
                                     "diffusion_binomial_kl", "diffusion_gaussian_kl"])
def test_training_path(request, op_name):
    generator = generator_for(request)
    args, wrt = _cases(generator)[op_name]
    check_training_path(op_name, get_ops("fused").__dict__[op_name], REFERENCE.__dict__[op_name],
                        args, wrt, generator)


def test_the_training_path_is_not_taken_under_compile():
    """torch.compile(fullgraph=True) traces the plain op: AOTAutograd cannot trace
    buffers held on ctx."""
    generator = torch.Generator().manual_seed(0)
    args, _ = _cases(generator)["iwae_log_weights"]
    leaves = [arg.detach().clone().requires_grad_(index != 1) for index, arg in enumerate(args)]
    traced = []

    def recording_backend(graph_module, example_inputs):
        traced.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module

    torch._dynamo.reset()
    compiled = torch.compile(get_ops("fused").iwae_log_weights, fullgraph=True,
                             backend=recording_backend)
    value = compiled(*leaves)
    assert "genvar.iwae_log_weights" in traced, traced
    assert not any("and_grad" in target for target in traced), traced
    torch.testing.assert_close(value, REFERENCE.iwae_log_weights(*args))


def test_gradients_name_the_inputs_as_the_schema_does():
    """Gradients names an op's inputs by its schema's argument names (the reference's
    parameters carry the same), and the registry turns them into positions."""
    from genvar_bench.ops.iwae import iwae_log_weights_ref

    gradients = registry.Gradients(differentiable=("logits", "z", "mu", "logvar"),
                                   no_gradient={"x": "no gradient for x"},
                                   buffers_for=("logits",), scale_args=("z", "mu", "logvar"))
    slots = registry._slots("iwae_log_weights", iwae_log_weights_ref, gradients)
    assert slots.differentiable == (0, 2, 3, 4) and slots.no_gradient == {1: "no gradient for x"}
    assert slots.buffers_for == (0,) and slots.scale_args == (2, 3, 4)
    with pytest.raises(ValueError, match="has no argument 'log_var'"):
        registry._slots("iwae_log_weights", iwae_log_weights_ref,
                        registry.Gradients(differentiable=("log_var",)))
