"""Loading a sweep file: validate it, resolve its search space, and check every value a trial can take
against the run model, so a bad knob fails before Ray starts (one line per problem)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.yaml_files import clip_line, read_yaml_mapping, short_repr
from ovit_ray.orchestration.specs.search_space import STRATEGIES, Dist, Scalar, load_space, spaces_dir
from ovit_ray.orchestration.specs.sweep import MAX_TRIALS, SweepConfig
from ovit_ray.orchestration.specs.validation import report_problems, validate_file


def _ends(dist: Dist) -> list[Scalar]:
    """The extreme values of a knob (both ends of a range, the smallest and largest of a numeric list)."""
    values = dist.values_to_check()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sorted({min(values), max(values)})
    return [values[0], values[-1]] if len(values) > 1 else values


def _value_problems(sweep: SweepConfig) -> list[str]:
    """Knob values against the run model: the base first (one line if it is wrong, not one per knob),
    then each value of each knob, then the extreme values of each pair of knobs together (e.g. an
    lr_min range reaching above an lr_max range), so no trial fails on a value the file allows."""
    first = {k: d.values_to_check()[0] for k, d in sweep.knobs.items()}
    try:
        sweep.trial_config(first)
    except ValueError as err:
        return [f"train (with the first value of each knob): {err}"]
    problems, sound = [], []
    for name, dist in sweep.knobs.items():
        if name == "strategy":
            continue
        for value in dist.values_to_check():
            try:
                sweep.trial_config({**first, name: value})
            except ValueError as err:
                problems.append(f"search.space.{name}: {short_repr(value)} is not a valid {name} ({err})")
                break
        else:
            if dist.kind != "fixed":
                sound.append(name)
    for i, a in enumerate(sound):
        for b in sound[i + 1 :]:
            bad = next(
                (
                    (x, y, err)
                    for x in _ends(sweep.knobs[a])
                    for y in _ends(sweep.knobs[b])
                    for err in [_invalid(sweep, {**first, a: x, b: y})]
                    if err
                ),
                None,
            )
            if bad:
                problems.append(
                    f"search.space: {a}={short_repr(bad[0])} with {b}={short_repr(bad[1])} is not a "
                    f"valid run ({bad[2]}); narrow the ranges"
                )
    return problems


def _invalid(sweep: SweepConfig, knobs: dict[str, Any]) -> str | None:
    try:
        sweep.trial_config(knobs)
    except ValueError as err:
        return str(err)
    return None


def _check_consistency(sweep: SweepConfig) -> list[str]:
    """Cross-field rules pydantic cannot see (one line per root cause): algorithm vs distributions,
    knob values vs the run model, sizes."""
    problems = []
    algorithm = sweep.search.algorithm
    kinds = {name: dist.kind for name, dist in sweep.knobs.items()}
    if algorithm == "optuna" and "grid" in kinds.values():
        problems.append(
            f"search.space: Optuna samples, it cannot run a grid ({', '.join(k for k, v in kinds.items() if v == 'grid')}); "
            "use choice, or search.algorithm grid/random"
        )
    sampled = [k for k, v in kinds.items() if v not in ("grid", "fixed")]
    if algorithm == "grid" and sampled:
        problems.append(
            f"search.space: search.algorithm grid needs grid or fixed values, got sampled {', '.join(sampled)}"
        )
    strategy = sweep.knobs.get("strategy")
    if strategy is not None and (
        strategy.kind not in ("fixed", "grid", "choice")
        or any(v not in STRATEGIES for v in strategy.values_to_check())
    ):
        problems.append(
            f"search.space.strategy: must take values in {list(STRATEGIES)}, got "
            f"{short_repr(strategy.values_to_check())}"
        )
    if sweep.max_trials > MAX_TRIALS:
        problems.append(
            f"search: {sweep.max_trials} trials (grid points x num_samples); at most {MAX_TRIALS}"
        )
    else:
        problems += _value_problems(sweep)
    if algorithm == "grid" and sweep.search.num_samples != 1:
        problems.append(
            "search.num_samples: a grid runs every point exactly once (add a seed grid for "
            f"repeats), got {sweep.search.num_samples}"
        )
    if sweep.strategy == "both" and algorithm == "optuna" and kinds.get("strategy") != "grid":
        # (a `both` grid is named by the grid line above: one root cause, one line)
        problems.append(
            "strategy: 'both' runs each strategy as a grid point, which needs search.algorithm "
            "grid or random, got optuna"
        )
    modes = [o.metric for o in sweep.search.objectives]
    if len(set(modes)) != len(modes):
        problems.append(f"search.objectives: each metric at most once, got {modes}")
    return problems


def load_sweep(path: str | Path) -> SweepConfig:
    """Read, validate and resolve a sweep file; `ValueError` (one line per problem) on any mistake."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file")
    if "space" in raw:
        raise ValueError(
            clip_line(
                f"{path}: space: not a sweep key (use search.space and search.overrides), "
                f"got {short_repr(raw['space'])}"
            )
        )
    sweep = validate_file(SweepConfig, raw, path)
    space_name = sweep.search.space
    if not space_name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(
            clip_line(f"{path}: search.space: a file stem in search_spaces/, got {short_repr(space_name)}")
        )
    space_path = spaces_dir(path) / f"{space_name}.yaml"
    if not space_path.is_file():
        raise ValueError(f"{path}: search.space: no search space {space_name!r} (looked for {space_path})")
    space = load_space(space_path)
    sweep = sweep.model_copy(update={"space": {**space.params, **sweep.search.overrides}})
    problems = _check_consistency(sweep)
    if problems:
        raise report_problems(path, problems)
    return sweep
