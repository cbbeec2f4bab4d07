"""Linear ramp of a regularizer's drop_prob (DropBlock paper, Sec. 3: "linearly decreasing keep_prob")."""
from __future__ import annotations

from ._checks import check_drop_prob, check_int, check_positive_int
from .base import Regularizer


class LinearScheduler(Regularizer):
    """Wraps a regularizer and ramps its ``drop_prob`` linearly from ``start_value`` to ``stop_value`` over
    ``nr_steps`` calls of :meth:`step`, then holds ``stop_value`` (the paper ramps over the whole training).

    The wrapped module gets ``start_value`` at construction. Forward and explain delegate to it.
    """

    def __init__(self, module: Regularizer, start_value: float, stop_value: float, nr_steps: int):
        super().__init__()
        self.module = module
        self.start_value = check_drop_prob(start_value, "start_value")
        self.stop_value = check_drop_prob(stop_value, "stop_value")
        self.nr_steps = check_positive_int(nr_steps, "nr_steps")
        self.steps_done = 0
        self.module.drop_prob = self.start_value

    @property
    def drop_prob(self) -> float:
        return self.module.drop_prob

    def step(self) -> None:
        self._go_to(self.steps_done + 1)

    def _go_to(self, steps_done: int) -> None:
        self.steps_done = steps_done
        progress = min(steps_done, self.nr_steps) / self.nr_steps
        self.module.drop_prob = self.start_value + (self.stop_value - self.start_value) * progress

    def get_extra_state(self) -> dict[str, int]:
        """The ramp's progress goes into ``state_dict()``, so a checkpoint resumes the ramp where it was."""
        return {"steps_done": self.steps_done}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self._go_to(check_int(state["steps_done"], "steps_done", 0))

    def stages(self, x, generator, explain):
        return self.module.stages(x, generator, explain)

    def forward(self, x, generator=None):
        return self.module(x, generator)

    def extra_repr(self) -> str:
        return f"start_value={self.start_value}, stop_value={self.stop_value}, nr_steps={self.nr_steps}, " \
               f"steps_done={self.steps_done}"
