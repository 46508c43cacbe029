"""The per-block math against brute force: Fisher inverse, greedy elimination, OBS closed forms."""

import itertools

import pytest
import torch
from reference_elimination import reference_greedy_eliminate

from ovit_ray.tensor_math.blocks import from_blocks, to_blocks, valid_mask
from ovit_ray.tensor_math.chunking import even_chunks
from ovit_ray.tensor_math.elimination import (
    greedy_eliminate,
    obs_loss,
    obs_update,
    prefix_weights,
    woodfisher_update,
)
from ovit_ray.tensor_math.fisher import (
    accumulate_outer,
    fisher_from_sums,
    inverse_fisher,
    invert_spd,
    sherman_morrison_inverse,
)
from ovit_ray.tensor_math.selection import is_nm_valid, nm_prune_mask, select_smallest

F64 = {"dtype": torch.float64}


def random_problem(n=6, block=8, m=40, seed=0):
    """Weights, correlated gradients and the resulting dampened Fisher / inverse, in fp64."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(n, block, block, generator=gen, **F64)
    grads = torch.einsum("nij,knj->kni", mixing, torch.randn(m, n, block, generator=gen, **F64))
    weights = torch.randn(n, block, generator=gen, **F64)
    sums = torch.zeros(n, block, block, **F64)
    accumulate_outer(sums, grads)
    fisher = fisher_from_sums(sums, m, damp=1e-3, dtype=torch.float64)
    return weights, grads, fisher, invert_spd(fisher)


@pytest.mark.parametrize("compiled", [True, False])  # the per-block kernel (the CPU default) and LAPACK's
def test_batched_fisher_inverse_equals_sherman_morrison(compiled):
    _, grads, fisher, _ = random_problem()
    reference = sherman_morrison_inverse(grads, damp=1e-3)
    inverse = invert_spd(fisher, compiled=compiled)
    torch.testing.assert_close(inverse, reference, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(fisher @ inverse, torch.eye(8, **F64).expand_as(fisher), rtol=0, atol=1e-8)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_compiled_inverse_is_as_accurate_as_lapack(block):
    """Norm-wise error against float64 LAPACK: float64 on ill-conditioned blocks (rank m < B, lambda 1e-6, so
    condition numbers ~1e7), float32 on the default problem, no worse than LAPACK's own float32 error."""
    _, _, fisher, _ = random_problem(n=4, block=block, m=block // 2 + 1, seed=block)

    def error(inverse: torch.Tensor, truth: torch.Tensor) -> float:
        return float((inverse.double() - truth).norm() / truth.norm())

    ill = fisher.clone()
    ill.diagonal(dim1=1, dim2=2).sub_(1e-3 - 1e-6)
    kernel = invert_spd(ill, compiled=True)
    assert kernel.is_contiguous() and torch.equal(kernel, kernel.transpose(1, 2))
    assert error(kernel, invert_spd(ill, compiled=False)) < 1e-6
    single = fisher.float()
    truth = invert_spd(single.double(), compiled=False)
    lapack_error = error(invert_spd(single, compiled=False), truth)
    assert error(invert_spd(single, compiled=True), truth) <= 4 * lapack_error + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_dampening_equals_fisher_from_sums(dtype):
    """The compiled inverse folds lambda * I + sums / count into its copy of each block (float64 sums here,
    so a float32 result also checks the cast); LAPACK inverts `fisher_from_sums`' blocks."""
    _, grads, _, _ = random_problem(n=3, block=16, m=40)
    sums = torch.zeros(3, 16, 16, **F64)
    accumulate_outer(sums, grads)
    folded = inverse_fisher(sums, 40, 1e-2, dtype, compiled=True)
    assert folded.dtype == dtype and torch.equal(folded, folded.transpose(1, 2))
    truth = inverse_fisher(sums, 40, 1e-2, torch.float64, compiled=False)

    def error(inverse: torch.Tensor) -> float:
        return float((inverse.double() - truth).norm() / truth.norm())

    assert error(folded) <= 4 * error(inverse_fisher(sums, 40, 1e-2, dtype, compiled=False)) + 1e-12
    with pytest.raises(ValueError, match="num_grads must be > 0"):
        inverse_fisher(sums, 0, 1e-2, dtype)


def test_accumulating_in_groups_equals_all_at_once():
    _, grads, _, _ = random_problem()
    at_once, grouped = torch.zeros(6, 8, 8, **F64), torch.zeros(6, 8, 8, **F64)
    accumulate_outer(at_once, grads)
    for group in grads.split(7):
        accumulate_outer(grouped, group)
    torch.testing.assert_close(grouped, at_once)


def joint_obs_from_inverse(w, h, pruned):
    """Textbook OBS for a set S: w - H[:, S] (H_SS)^-1 w_S, S zeroed."""
    s = pruned.nonzero().squeeze(1)
    out = w - h[:, s] @ torch.linalg.solve(h[s][:, s], w[s])
    out[s] = 0
    return out


@pytest.mark.parametrize("steps", range(1, 8))
def test_greedy_prefix_equals_exact_joint_obs(steps):
    weights, _, fisher, inverse = random_problem()
    result = greedy_eliminate(weights, inverse.clone(), steps=steps)
    pruned = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, result.order, True)
    expected = torch.stack(
        [joint_obs_from_inverse(w, h, s) for w, h, s in zip(weights, inverse, pruned, strict=True)]
    )
    torch.testing.assert_close(result.weights, expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(obs_update(weights, fisher, pruned), expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(
        result.losses[:, -1], obs_loss(weights, inverse, pruned), rtol=1e-7, atol=1e-12
    )


def test_losses_never_decrease_and_every_weight_is_eliminated_once():
    weights, _, _, inverse = random_problem(n=20, block=16, seed=3)
    result = greedy_eliminate(weights, inverse.clone())
    assert (result.losses.diff(dim=1) >= 0).all()
    assert (result.order.sort(dim=1).values == torch.arange(16)).all()
    assert torch.count_nonzero(result.weights) == 0


def test_greedy_first_choice_is_the_best_single_weight_and_no_subset_beats_optimum():
    weights, _, _, inverse = random_problem(n=4, block=6, seed=5)
    result = greedy_eliminate(weights, inverse.clone(), steps=3)
    for b in range(4):
        singles = [
            obs_loss(weights[b : b + 1], inverse[b : b + 1], torch.eye(6, dtype=torch.bool)[j : j + 1])
            for j in range(6)
        ]
        assert int(result.order[b, 0]) == int(torch.stack(singles).argmin())
        best = min(
            float(
                obs_loss(weights[b : b + 1], inverse[b : b + 1], torch.tensor([[j in s for j in range(6)]]))
            )
            for s in itertools.combinations(range(6), 3)
        )
        assert float(result.losses[b, -1]) >= best - 1e-12


def test_already_zero_weights_go_first_at_no_cost():
    weights, _, _, inverse = random_problem()
    weights[:, [1, 4]] = 0
    result = greedy_eliminate(weights, inverse.clone())
    assert set(result.order[:, :2].flatten().tolist()) == {1, 4}
    assert torch.all(result.losses[:, :2] == 0)


def test_nm_groups_stop_at_quota():
    weights, _, _, inverse = random_problem(n=5, block=8)
    result = greedy_eliminate(weights, inverse.clone(), group_size=4, group_quota=2)
    pruned = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, result.order, True)
    assert result.order.shape == (5, 4)
    assert is_nm_valid(pruned.reshape(-1), n_keep=2, group_size=4)
    assert (pruned.reshape(-1, 4).sum(dim=1) == 2).all()


def test_woodfisher_update_is_sum_of_single_updates():
    weights, _, _, inverse = random_problem()
    pruned = torch.zeros_like(weights, dtype=torch.bool)
    pruned[:, 2] = True  # a single weight: WoodFisher and exact OBS must coincide
    expected = torch.stack(
        [joint_obs_from_inverse(w, h, s) for w, h, s in zip(weights, inverse, pruned, strict=True)]
    )
    torch.testing.assert_close(woodfisher_update(weights, inverse, pruned), expected)


def test_blocks_round_trip_and_padding_is_invalid():
    flat = torch.arange(10.0, **F64)
    blocks = to_blocks(flat, 4)
    assert blocks.shape == (3, 4) and blocks[2, 2:].eq(0).all()
    assert torch.equal(from_blocks(blocks, 10), flat)
    assert valid_mask(10, 4).sum() == 10 and not valid_mask(10, 4)[2, 2:].any()


def test_select_smallest_is_exact_and_prefers_already_pruned():
    costs = [torch.tensor([[0.3, float("-inf")], [0.1, 0.2]]), torch.tensor([[0.05, 5.0]])]
    valid = [torch.ones(2, 2, dtype=torch.bool), torch.tensor([[True, False]])]
    picked = select_smallest(costs, valid, 2)
    assert picked[0].tolist() == [[False, True], [False, False]] and picked[1].tolist() == [[True, False]]
    with pytest.raises(ValueError, match="cannot prune 6"):
        select_smallest(costs, valid, 6)


def test_nm_magnitude_mask_keeps_largest():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 3.0, 1.0, 2.0, 0.0])
    pruned = nm_prune_mask(scores, n_keep=2, group_size=4)
    assert pruned.tolist() == [True, False, False, True, False, True, False, True]


RESTRUCTURED = [  # (blocks, B, N:M group size and quota, masked start)
    (6, 8, None, None, False),
    (20, 16, None, None, True),
    (10, 16, 4, 2, False),
    (9, 32, 4, 2, True),
    (7, 24, 8, 5, True),
    (4, 64, None, None, True),  # B=64 with a masked start
]


@pytest.mark.parametrize(("n", "block", "group", "quota", "masked"), RESTRUCTURED)
@pytest.mark.parametrize("panel", [1, 3, 8, 64, "compiled"])
@pytest.mark.parametrize("keep", [False, True])
def test_restructured_elimination_matches_reference(n, block, group, quota, masked, panel, keep):
    """The compiled per-block loop (the CPU default) and every panel width of the batched form (1 = eager
    rank-1, >= steps = fully lazy) give the reference's order, losses and weights."""
    weights, _, _, inverse = random_problem(n=n, block=block, m=3 * block, seed=block)
    if masked:
        weights[:, [1, 5]] = 0
    nm = {} if group is None else {"group_size": group, "group_quota": quota}
    expected = reference_greedy_eliminate(weights, inverse.clone(), **nm)
    steps = expected.order.shape[1]
    buffer = torch.empty(n, steps, block, **F64) if keep else None
    form = {"compiled": True} if panel == "compiled" else {"compiled": False, "panel": panel}
    result = greedy_eliminate(weights, inverse.clone(), downdates=buffer, **form, **nm)
    assert torch.equal(result.order, expected.order)
    torch.testing.assert_close(result.losses, expected.losses, rtol=1e-9, atol=1e-12)
    pruned = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, result.order, True)
    if group is None:
        torch.testing.assert_close(result.weights, expected.weights, rtol=1e-8, atol=1e-10)
    else:  # the reference zeroed survivors of full N:M groups too; the joint OBS closed form is the truth
        joint = torch.stack(
            [joint_obs_from_inverse(w, h, s) for w, h, s in zip(weights, inverse, pruned, strict=True)]
        )
        torch.testing.assert_close(result.weights, joint, rtol=1e-7, atol=1e-9)
    if keep:  # any per-block prefix, from the kept downdates, equals the reference stopped there
        kept = torch.randint(0, steps + 1, (n,), generator=torch.Generator().manual_seed(n))
        got = prefix_weights(weights, result.downdates, result.coeffs, kept)
        for b, k in enumerate(kept.tolist()):
            got[b, result.order[b, :k]] = 0
            want = (
                weights[b]
                if k == 0
                else reference_greedy_eliminate(
                    weights[b : b + 1], inverse[b : b + 1].clone(), steps=k, **nm
                ).weights[0]
            )
            if group is not None:
                want = joint_obs_from_inverse(
                    weights[b],
                    inverse[b],
                    torch.zeros(block, dtype=torch.bool).index_fill_(0, result.order[b, :k], True),
                )
            torch.testing.assert_close(got[b], want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("compiled", [True, False])
def test_elimination_uses_lapacks_column_major_inverse_in_place(compiled):
    """LAPACK's inverse comes back column-major; the elimination reads it as its (equal) transpose, no copy."""
    weights, _, fisher, _ = random_problem(n=5, block=16, m=48, seed=3)
    inverse = invert_spd(fisher, compiled=False)
    assert not inverse.is_contiguous()
    scratch = inverse.clone()
    form = {"compiled": compiled, "panel": 4}  # the panel (batched form only) folds into H every 4 steps
    result = greedy_eliminate(weights, scratch, **form)
    expected = greedy_eliminate(weights, inverse.contiguous(), **form)
    assert torch.equal(result.order, expected.order)
    torch.testing.assert_close(result.losses, expected.losses, rtol=1e-12, atol=0)
    assert not torch.equal(scratch, inverse)  # the scratch itself was worked on


def test_float32_elimination_follows_float64_reference():
    """The fast path in float32 picks the float64 reference's order on a well-conditioned problem."""
    weights, _, _, inverse = random_problem(n=30, block=32, m=96, seed=7)
    expected = reference_greedy_eliminate(weights, inverse.clone())
    result = greedy_eliminate(weights.float(), inverse.float())
    assert (result.order == expected.order).float().mean() > 0.97
    torch.testing.assert_close(result.losses[:, -1].double(), expected.losses[:, -1], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("compiled", [True, False])
def test_inverse_names_the_block_that_is_not_positive_definite(compiled):
    """The error names the first block that Cholesky cannot factor."""
    fisher = torch.eye(64, **F64).repeat(4, 1, 1)
    fisher[2, 60, 60] = -1.0
    fisher[3, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="Fisher block 2 is not positive definite"):
        invert_spd(fisher, compiled=compiled)
    fisher[2] = torch.eye(64, **F64)
    with pytest.raises(ValueError, match="Fisher block 3 is not positive definite"):
        invert_spd(fisher, compiled=compiled)  # a NaN alone


@pytest.mark.parametrize(
    ("total", "rows", "workers", "sizes"),
    [
        (10, 4, 1, [4, 3, 3]),
        (10, 4, 2, [3, 3, 2, 2]),
        (3, 100, 2, [2, 1]),
        (1, 100, 4, [1]),
        (0, 4, 2, []),
        (2304, 682, 2, [576] * 4),
    ],
)
def test_even_chunks_cover_everything_in_a_multiple_of_the_workers(total, rows, workers, sizes):
    chunks = even_chunks(total, rows, workers)
    assert [c.stop - c.start for c in chunks] == sizes
    assert [c.start for c in chunks] == [sum(sizes[:i]) for i in range(len(sizes))]
