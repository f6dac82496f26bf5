"""An adaptive controller for EGSW's alpha or temperature P (not in either paper; docs/METHOD.md section 4).

After each generation batch it moves one parameter multiplicatively toward a target mean entropy or weight ESS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

_TARGETS = ("entropy", "ess")
_PARAMS = ("alpha", "temperature")
# sign of d(measured)/d(log value): +1 if raising the parameter raises the measured quantity
_SIGNS: dict[tuple[str, str], int] = {
    ("entropy", "alpha"): +1,  # more weight on high-entropy tokens -> more exploration -> entropy up
    ("entropy", "temperature"): -1,  # flatter weights dilute the alpha * H / P bonus -> entropy down
    ("ess", "alpha"): -1,  # a larger spread of A + alpha H -> more uneven weights -> ESS down
    ("ess", "temperature"): +1,  # flatter weights -> ESS up
}


@dataclass
class AdaptiveEGSWController:
    """Proportional log-space controller of EGSW's `param` ("alpha" or "temperature") toward `target_value`.

    `update(measured)` sets value <- clamp(value * exp(sign * lr * (target_value - measured) / max(|target_value|,
    eps)), min_value, max_value), `sign` from `_SIGNS`; `target` is "entropy" (mean normalised token entropy) or
    "ess" (weight effective sample size). value, min_value and max_value are positive; lr = 0 freezes the value.
    """

    target: str
    target_value: float
    param: str
    value: float
    lr: float = 0.1
    min_value: float = 1e-3
    max_value: float = 10.0
    num_updates: int = 0

    eps = 1e-8  # class constant, not a field

    def __post_init__(self) -> None:
        if self.target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}, got {self.target!r}")
        if self.param not in _PARAMS:
            raise ValueError(f"param must be one of {_PARAMS}, got {self.param!r}")
        for name in ("target_value", "value", "lr", "min_value", "max_value"):
            raw = getattr(self, name)
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                raise ValueError(f"{name} must be a finite number, got {raw!r}")
            setattr(self, name, float(raw))
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr!r}")
        if self.min_value <= 0:
            raise ValueError(f"min_value must be > 0 (the update is multiplicative), got {self.min_value!r}")
        if self.max_value < self.min_value:
            raise ValueError(f"max_value must be >= min_value ({self.min_value!r}), got {self.max_value!r}")
        if not self.min_value <= self.value <= self.max_value:
            raise ValueError(
                f"value must lie in [min_value, max_value] = [{self.min_value!r}, {self.max_value!r}], got {self.value!r}"
            )
        if isinstance(self.num_updates, bool) or not isinstance(self.num_updates, int) or self.num_updates < 0:
            raise ValueError(f"num_updates must be an integer >= 0, got {self.num_updates!r}")

    @property
    def sign(self) -> int:
        """+1 if raising the parameter raises the measured quantity, else -1."""
        return _SIGNS[(self.target, self.param)]

    def update(self, measured: float) -> float:
        """One step toward `target_value`; returns the new value. A non-finite `measured` raises ValueError."""
        measured = float(measured)
        if not math.isfinite(measured):
            raise ValueError(f"measured must be finite, got {measured!r}")
        error = (self.target_value - measured) / max(abs(self.target_value), self.eps)  # relative, unitless
        new_value = self.value * math.exp(self.sign * self.lr * error)
        self.value = float(min(max(new_value, self.min_value), self.max_value))
        self.num_updates += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state; `load_state_dict` restores it exactly."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict`, validated like `__init__` (ValueError on bad, missing or unknown keys)."""
        names = {f.name for f in fields(self)}
        missing, unknown = names - set(state), set(state) - names
        if missing or unknown:
            raise ValueError(f"state keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
        restored = AdaptiveEGSWController(**{name: state[name] for name in names})
        for name in names:
            setattr(self, name, getattr(restored, name))
