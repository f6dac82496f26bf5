"""Tests for open_r1_egsw.methods.controller: the adaptive EGSW controller (METHOD.md section 4). CPU only."""

import json
import math

import pytest

from open_r1_egsw.methods.controller import AdaptiveEGSWController


@pytest.mark.parametrize(
    "target,param,direction_when_below",
    [
        ("entropy", "alpha", +1),  # entropy too low -> raise alpha
        ("entropy", "temperature", -1),  # entropy too low -> lower P
        ("ess", "alpha", -1),  # ESS too low -> lower alpha
        ("ess", "temperature", +1),  # ESS too low -> raise P
    ],
)
def test_controller_directions(target, param, direction_when_below):
    below = AdaptiveEGSWController(target=target, target_value=0.5, param=param, value=1.0, lr=0.2)
    new = below.update(0.3)
    assert math.copysign(1, new - 1.0) == direction_when_below
    assert new == pytest.approx(math.exp(direction_when_below * 0.2 * (0.5 - 0.3) / 0.5))  # the one formula
    above = AdaptiveEGSWController(target=target, target_value=0.5, param=param, value=1.0, lr=0.2)
    assert math.copysign(1, above.update(0.9) - 1.0) == -direction_when_below
    at = AdaptiveEGSWController(target=target, target_value=0.5, param=param, value=1.0, lr=0.2)
    assert at.update(0.5) == 1.0 and at.num_updates == 1


def test_controller_clamps():
    c = AdaptiveEGSWController(target="entropy", target_value=1.0, param="alpha", value=1.0, lr=5.0, max_value=2.0)
    assert c.update(0.0) == 2.0  # exp(5) clamped
    assert c.update(100.0) == c.min_value  # exp(-495) clamped
    assert c.num_updates == 2
    zero = AdaptiveEGSWController(target="ess", target_value=0.0, param="temperature", value=1.0, lr=1e-9)
    assert zero.update(1.0) == pytest.approx(math.exp(-1e-9 / zero.eps))  # eps guards the zero target


def test_controller_state_dict_round_trip():
    c = AdaptiveEGSWController(target="ess", target_value=0.7, param="temperature", value=1.3, lr=0.37)
    for measured in (0.2, 0.9, 0.55):
        c.update(measured)
    state = json.loads(json.dumps(c.state_dict()))  # plain JSON types
    assert state == c.state_dict()
    other = AdaptiveEGSWController(target="entropy", target_value=2.0, param="alpha", value=0.5)
    other.load_state_dict(state)
    assert other.state_dict() == c.state_dict()
    for measured in (0.1, 0.8, 0.65, 0.3):
        assert other.update(measured) == c.update(measured)  # bit-identical
    assert other.num_updates == c.num_updates == 7
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "lr"})


@pytest.mark.parametrize(
    "override,name",
    [
        ({"target": "kl"}, "target"),
        ({"param": "beta"}, "param"),
        ({"target_value": float("nan")}, "target_value"),
        ({"lr": -0.1}, "lr"),
        ({"min_value": 0.0}, "min_value"),
        ({"max_value": 1e-4}, "max_value"),
        ({"value": 50.0}, "value"),
        ({"num_updates": -1}, "num_updates"),
    ],
)
def test_controller_rejects_bad_arguments(override, name):
    kwargs = {"target": "entropy", "target_value": 0.5, "param": "alpha", "value": 1.0} | override
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        AdaptiveEGSWController(**kwargs)


def test_controller_rejects_non_finite_measurement():
    c = AdaptiveEGSWController(target="entropy", target_value=0.5, param="alpha", value=1.0)
    with pytest.raises(ValueError, match="measured"):
        c.update(float("nan"))
    assert c.value == 1.0 and c.num_updates == 0
