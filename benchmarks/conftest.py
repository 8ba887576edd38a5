"""Prints, after a benchmark run, how much faster the fused ops are than the
references, per benchmark group: a ratio of medians from the same run on the
same machine (STYLE.md: judge speed as a ratio, never against fixed times)."""
from collections import defaultdict

import pytest
import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    """torch and CUDA versions and the device name, beside pytest-benchmark's CPU info."""
    from genvar_bench.runner import device_model_name

    machine_info["torch"] = torch.__version__
    machine_info["cuda"] = torch.version.cuda
    machine_info["threads"] = torch.get_num_threads()
    machine_info["cpu_name"] = device_model_name(torch.device("cpu"))
    if torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()


def median_seconds_by_group(benchmarks):
    """{group: {implementation: median seconds}} for benchmarks that ran."""
    medians: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for bench in benchmarks:
        implementation = bench.extra_info.get("implementation")
        if implementation and bench.stats:  # no stats when skipped or disabled
            medians[bench.group][implementation] = bench.stats.median
    return medians


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return
    medians = median_seconds_by_group(session.benchmarks)
    if not medians:
        return
    terminalreporter.write_sep("-", "fused speed-up: reference median / fused median")
    for group, by_implementation in sorted(medians.items()):
        fused = by_implementation.get("fused")
        timings = "  ".join(f"{name} {seconds * 1e3:.3f} ms"
                            for name, seconds in sorted(by_implementation.items()))
        speedups = "  ".join(f"vs {name} {by_implementation[name] / fused:.2f}x"
                             for name in ("reference", "eager", "compiled")
                             if fused and name in by_implementation)
        if fused and {"eager", "compiled"} <= by_implementation.keys():
            plain = min(by_implementation["eager"], by_implementation["compiled"])
            speedups += f"  vs faster plain {plain / fused:.2f}x"
        if fused and "gemm" in by_implementation:  # the training-step benchmarks
            speedups += f"  GEMM-bound fraction {by_implementation['gemm'] / fused:.2f}"
        terminalreporter.write_line(f"{group}: {timings}  |  {speedups}")
