"""HiRED paper mode on hand-made attention maps: regions, budget split, top-k, whole selection."""

import math

import pytest
import torch

from hired.layout import image_layout, top_per_row
from hired.methods.hired import region_scores, select_hired, split_budget


def one_hot_map(*cells: tuple[int, int], side: int = 24) -> torch.Tensor:
    a = torch.zeros(side, side)
    for r, c in cells:
        a[r, c] += 1.0
    return a.flatten()


@pytest.mark.parametrize(
    ("grid", "token", "region"),
    [
        ((2, 2), (11, 11), 0),  # rows 0..11, cols 0..11
        ((2, 2), (11, 12), 1),
        ((2, 2), (12, 0), 2),
        ((2, 2), (23, 23), 3),
        ((1, 3), (23, 7), 0),  # column bands 0..7, 8..15, 16..23, all rows
        ((1, 3), (0, 8), 1),
        ((1, 3), (5, 16), 2),
        ((3, 1), (7, 23), 0),  # row bands
        ((3, 1), (8, 0), 1),
        ((3, 1), (16, 5), 2),
    ],
)
def test_region_of_a_base_token(grid, token, region):
    scores = region_scores(one_hot_map(token), grid, 24)
    expected = torch.zeros(grid[0] * grid[1])
    expected[region] = 1.0
    assert torch.equal(scores, expected)


def test_region_scores_sum_blocks():
    a = torch.arange(576, dtype=torch.float32)
    grid = a.view(24, 24)
    scores = region_scores(a, (2, 2), 24)
    assert scores.tolist() == [
        grid[:12, :12].sum().item(),
        grid[:12, 12:].sum().item(),
        grid[12:, :12].sum().item(),
        grid[12:, 12:].sum().item(),
    ]


def test_split_equal_scores_ties_go_to_lower_index():
    # n0 = floor(0.5 * 100) = 50; 50 over 4 equal cells = 12.5 each -> 12 each + 2 left to cells 0 and 1
    assert split_budget(100, torch.ones(4), [576] * 4, 0.5, 576) == [50, 13, 13, 12, 12]


def test_split_largest_remainder():
    # n0 = floor(10.5) = 10, n_sub = 11; exact 1.1, 2.2, 3.3, 4.4 -> floors 1,2,3,4, the 1 left goes to .4
    assert split_budget(21, torch.tensor([0.1, 0.2, 0.3, 0.4]), [576] * 4, 0.5, 576) == [10, 1, 2, 3, 5]


def test_split_caps_refill_other_cells_by_score():
    # n_sub = 20; cell 0 would get 14.3 > cap 5: capped; the 15 left split 3:1 -> 11.25, 3.75 -> 11, 4
    assert split_budget(40, torch.tensor([10.0, 3.0, 1.0]), [5, 100, 100], 0.5, 576) == [20, 5, 11, 4]


def test_split_overflow_goes_back_to_base():
    # sub-images hold 9 in all; the budget's other 31 tokens go to the base partition
    assert split_budget(40, torch.ones(3), [3, 3, 3], 0.5, 576) == [31, 3, 3, 3]


def test_split_alpha_capped_by_base_size():
    # alpha * 2000 = 1000 > 576 base tokens: N_0 = 576
    counts = split_budget(2000, torch.ones(4), [576] * 4, 0.5, 576)
    assert counts[0] == 576 and sum(counts) == 2000


def test_split_tiny_budget_leaves_partitions_empty():
    # n0 = 1, n_sub = 2: exact 1.25, .25, .25, .25 -> floors 1,0,0,0; the 1 left: equal remainders -> cell 0
    assert split_budget(3, torch.tensor([5.0, 1.0, 1.0, 1.0]), [576] * 4, 0.5, 576) == [1, 2, 0, 0, 0]


def test_split_without_signal_shares_by_size():
    assert split_budget(40, torch.zeros(2), [30, 10], 0.5, 576) == [20, 15, 5]


def test_split_rejects_budget_beyond_candidates():
    with pytest.raises(ValueError):
        split_budget(100, torch.ones(2), [10, 10], 0.5, 50)


@pytest.mark.parametrize("n_budget", [1, 7, 100, 577, 1000, 1928])
def test_split_always_exact_and_within_caps(n_budget):
    g = torch.Generator().manual_seed(n_budget)
    scores = torch.rand(3, generator=g) ** 4
    caps = [576, 200, 576]
    counts = split_budget(n_budget, scores, caps, 0.5, 576)
    assert sum(counts) == n_budget
    assert counts[0] <= 576 and all(0 <= c <= cap for c, cap in zip(counts[1:], caps, strict=True))


def top_tokens(scores, valid, k):
    """The kept positions of one row, ascending."""
    return top_per_row(scores[None], valid[None], torch.tensor([k]))[0].nonzero().flatten()


def test_top_tokens_ties_and_validity():
    scores = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0])
    everything = torch.ones(5, dtype=torch.bool)
    assert top_tokens(scores, everything, 2).tolist() == [1, 2]
    not_one = torch.tensor([True, False, True, True, True])
    assert top_tokens(scores, not_one, 2).tolist() == [2, 4]
    assert top_tokens(scores, not_one, 3).tolist() == [2, 3, 4]  # returned in raster order


def scores(layout, init_map: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-made head-summed CLS attention: base scores at l_init, random per-partition scores at l_final."""
    final = torch.rand(layout.partitions, 576, generator=torch.Generator().manual_seed(seed))
    return init_map, final


@pytest.mark.parametrize(("size", "budget"), [((600, 600), 0.2), ((300, 1000), 0.1), ((1008, 336), 0.37)])
def test_select_hired_exact_budget_and_split(tiny, size, budget):
    layout = image_layout(size, tiny.model.config)
    init, final = scores(layout, torch.rand(576, generator=torch.Generator().manual_seed(3)), seed=4)
    n_budget = math.floor(budget * layout.n_full + 0.5)
    positions = select_hired(layout, init, final, n_budget, 0.5)
    assert positions.tolist() == sorted(set(positions.tolist()))  # stock order, no repeats
    assert len(positions) == n_budget
    kept = layout.candidates[positions]
    per_partition = torch.bincount(kept // 576, minlength=layout.partitions).tolist()
    caps = layout.valid_per_partition()[1:].tolist()
    assert per_partition == split_budget(n_budget, region_scores(init, layout.grid, 24), caps, 0.5, 576)
    # within each partition, the kept tokens are the top ones by l_final attention
    for p in range(layout.partitions):
        mine = kept[kept // 576 == p] % 576
        valid = layout.candidates[layout.candidates // 576 == p] % 576
        dropped = sorted(set(valid.tolist()) - set(mine.tolist()))
        if len(mine) and dropped:
            assert final[p, mine].min() >= final[p, dropped].max()


def test_select_hired_follows_regions_not_chunks(tiny):
    """All layer-0 attention in the top rows: a 3x1 grid gives the whole sub budget to the top cell,
    a 1x3 grid (column bands) spreads it evenly."""
    top_rows = torch.zeros(24, 24)
    top_rows[:8] = 1.0
    tall = image_layout((1008, 336), tiny.model.config)  # 3x1
    wide = image_layout((336, 1008), tiny.model.config)  # 1x3
    for layout, expected in [(tall, [1.0, 0.0, 0.0]), (wide, [1 / 3] * 3)]:
        init, final = scores(layout, top_rows.flatten(), 5)
        kept = layout.candidates[select_hired(layout, init, final, 300, 0.5)]
        counts = torch.bincount(kept // 576, minlength=4)[1:].float()
        assert torch.allclose(counts / counts.sum(), torch.tensor(expected), atol=0.01)
