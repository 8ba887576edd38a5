"""Training profiles: dataset, sample counts and the learning-rate schedule.

The IWAE paper (Burda et al. 2016) trains with Adam (beta1 0.9, beta2 0.999,
eps 1e-4), batch 20, in 8 stages: stage i runs 3^(i-1) epochs at learning
rate 1e-3 * 10^(-(i-1)/7), 3280 passes in all. `paper` is that schedule;
`standard` and `quick` are its first stages.
"""
from __future__ import annotations

from dataclasses import dataclass


def paper_stages(num_stages: int) -> tuple[tuple[int, float], ...]:
    """(epochs, learning rate) of the first `num_stages` stages of the paper schedule."""
    return tuple((3**stage, 1e-3 * 10 ** (-stage / 7)) for stage in range(num_stages))


@dataclass(frozen=True)
class Profile:
    name: str
    dataset: str
    num_samples: tuple[int, ...]
    stages: tuple[tuple[int, float], ...]
    batch_size: int = 20
    eval_samples: int = 5000
    adam_eps: float = 1e-4
    # T of the diffusion models (the paper's 1000; fewer for quick runs)
    diffusion_steps: int = 1000

    @property
    def epochs(self) -> int:
        return sum(epochs for epochs, _ in self.stages)

    def scaled(self, epochs: int) -> "Profile":
        """The same profile cut or stretched to `epochs` passes, learning rates kept in order."""
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        stages, left = [], epochs
        for stage_epochs, rate in self.stages:
            take = min(stage_epochs, left)
            if take:
                stages.append((take, rate))
            left -= take
        if left:
            stages[-1] = (stages[-1][0] + left, stages[-1][1])
        return Profile(self.name, self.dataset, self.num_samples, tuple(stages),
                       self.batch_size, self.eval_samples, self.adam_eps, self.diffusion_steps)


PROFILES = {
    # digits, in a few minutes on a 2-core CPU: the first 5 paper stages (121 epochs)
    "quick": Profile("quick", "digits", (1, 5), paper_stages(5), diffusion_steps=100),
    # MNIST for tens of epochs: the first 4 paper stages (40 epochs)
    "standard": Profile("standard", "mnist", (1, 5, 50), paper_stages(4)),
    # the full 3280-pass schedule of the IWAE paper; meant for a GPU
    "paper": Profile("paper", "mnist", (1, 5, 50), paper_stages(8)),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
