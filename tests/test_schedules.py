from itertools import pairwise

import pytest
import torch

from ovit_ray.training.schedules import (
    TargetWindow,
    build_lr_schedule,
    sparsity_steps,
    sparsity_steps_through_targets,
)


def test_linear_steps_hit_endpoints_and_grid():
    steps = sparsity_steps(0.4, 0.9, 0, 80, 20, "linear")
    assert [e for e, _ in steps] == [0, 20, 40, 60, 80]
    assert [round(s, 6) for _, s in steps] == [0.4, 0.525, 0.65, 0.775, 0.9]


def test_end_epoch_included_off_grid():
    steps = sparsity_steps(0.5, 0.9, 20, 90, 20, "linear")
    assert [e for e, _ in steps] == [20, 40, 60, 80, 90]
    assert steps[0][1] == 0.5 and steps[-1][1] == pytest.approx(0.9)


def test_cubic_is_front_loaded_vs_linear():
    lin = dict(sparsity_steps(0.0, 0.8, 0, 100, 10, "linear"))
    cub = dict(sparsity_steps(0.0, 0.8, 0, 100, 10, "cubic"))
    assert cub[0] == lin[0] == 0.0 and cub[100] == pytest.approx(0.8)
    assert cub[50] == pytest.approx(0.8 * (1 - 0.5**3))
    assert all(cub[e] > lin[e] for e in range(10, 100, 10))
    gaps = [cub[e + 10] - cub[e] for e in range(0, 100, 10)]
    assert gaps == sorted(gaps, reverse=True)  # fast early, slow late


def test_start_equals_end_is_single_final_step():
    assert sparsity_steps(0.3, 0.7, 5, 5, 2) == [(5, 0.7)]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(init=1.0), "init"),
        (dict(final=-0.1), "final"),
        (dict(final=0.2), "final"),
        (dict(end_epoch=-1), "end_epoch"),
        (dict(update_frequency=0), "update_frequency"),
        (dict(interpolation="quadratic"), "interpolation"),
    ],
)
def test_sparsity_steps_bad_inputs_name_argument(kwargs, name):
    args = dict(init=0.3, final=0.9, start_epoch=0, end_epoch=10, update_frequency=2, interpolation="linear")
    args.update(kwargs)
    with pytest.raises(ValueError, match=name) as exc:
        sparsity_steps(**args)
    assert repr(next(iter(kwargs.values()))) in str(exc.value)


def test_through_targets_hits_every_target_with_windows():
    plan = sparsity_steps_through_targets([0.5, 0.6, 0.9], window_epochs=3, start_epoch=1)
    assert plan.steps == [(1, 0.5), (4, 0.6), (7, 0.9)]
    assert plan.windows == [TargetWindow(0.5, 1, 4), TargetWindow(0.6, 4, 7), TargetWindow(0.9, 7, 10)]
    assert plan.total_epochs == 10


def test_through_targets_with_intermediate_steps():
    plan = sparsity_steps_through_targets(
        [0.4, 0.8], window_epochs=5, steps_per_target=2, update_frequency=2, interpolation="linear"
    )
    assert plan.steps == [(0, 0.2), (2, 0.4), (7, pytest.approx(0.6)), (9, 0.8)]
    assert [(w.start, w.end) for w in plan.windows] == [(2, 7), (9, 14)]
    assert {s for _, s in plan.steps} >= {0.4, 0.8}  # targets exactly, not approximately


@pytest.mark.parametrize(
    ("targets", "kwargs", "name"),
    [
        ([0.5, 0.5], {}, "targets"),
        ([0.6, 0.5], {}, "targets"),
        ([], {}, "targets"),
        ([1.2], {}, "targets"),
        ([0.5], {"window_epochs": 0}, "window_epochs"),
        ([0.5], {"steps_per_target": 0}, "steps_per_target"),
        ([0.3], {"init": 0.4}, "targets"),
    ],
)
def test_through_targets_bad_inputs(targets, kwargs, name):
    args = {"window_epochs": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        sparsity_steps_through_targets(targets, **args)


def test_cyclic_linear_cycles():
    s = build_lr_schedule("cyclic_linear", max_lr=1.0, min_lr=0.1, total_steps=30, cycle_starts=[10, 20])
    for start in (0, 10, 20):
        cycle = [s.lr_at(i) for i in range(start, start + 10)]
        assert cycle[0] == 1.0  # first step of a cycle is max, not min
        assert cycle[-1] == pytest.approx(0.1)  # min reached on the last step
        assert all(a > b for a, b in pairwise(cycle))
    assert s.lr_at(10) > s.lr_at(9)  # jump back at each pruning step
    assert s.lr_at(5) == pytest.approx(1.0 - 0.9 * 5 / 9)
    assert s.lr_at(1000) == s.lr_at(29)


def test_cyclic_with_warmup_first_step_after_warmup_is_max():
    s = build_lr_schedule(
        "cyclic_linear", max_lr=2.0, min_lr=0.0, total_steps=20, cycle_starts=[0, 2, 12], warmup_steps=4
    )
    warm = [s.lr_at(i) for i in range(4)]
    assert warm[0] > 0 and all(a < b for a, b in pairwise(warm)) and warm[-1] < 2.0
    assert s.lr_at(4) == 2.0 and s.lr_at(12) == 2.0
    assert s.lr_at(11) == pytest.approx(0.0) and s.lr_at(19) == pytest.approx(0.0)


def test_cosine_endpoints_and_midpoint():
    s = build_lr_schedule("cosine", max_lr=1.0, min_lr=0.0, total_steps=101)
    assert s.lr_at(0) == 1.0 and s.lr_at(100) == pytest.approx(0.0) and s.lr_at(50) == pytest.approx(0.5)
    vals = [s.lr_at(i) for i in range(101)]
    assert all(a >= b for a, b in pairwise(vals))


def test_constant_and_lambdalr_integration():
    assert build_lr_schedule("constant", max_lr=0.3, min_lr=0.0, total_steps=5).lr_at(4) == 0.3
    s = build_lr_schedule("cyclic_linear", max_lr=0.5, min_lr=0.05, total_steps=6, cycle_starts=[3])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, s)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([s.lr_at(i) for i in range(6)])
    assert seen == pytest.approx([0.5, 0.275, 0.05, 0.5, 0.275, 0.05])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"name": "step"}, "name"),
        ({"max_lr": 0.0}, "max_lr"),
        ({"min_lr": 2.0}, "min_lr"),
        ({"total_steps": 0}, "total_steps"),
        ({"warmup_steps": 10}, "warmup_steps"),
        ({"cycle_starts": [3, 12]}, "cycle_starts"),
    ],
)
def test_lr_bad_inputs_name_argument(kwargs, name):
    args = {"name": "cyclic_linear", "max_lr": 1.0, "min_lr": 0.1, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=name):
        build_lr_schedule(args.pop("name"), **args)
