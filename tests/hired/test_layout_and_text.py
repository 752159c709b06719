"""Token layout against hand-derived counts, and the offline tokenizer against the real one."""

import pytest

from hired.layout import image_layout
from workloads.presets import VICUNA_TEMPLATE

# (height, width) -> (grid, un-padded canvas, N_full, stock tokens), derived by hand:
# 672x672 and 600x600 pick the 672x672 pinpoint: 2x2 grid, nothing to un-pad:
#   576 + 48*48 = 2880 (+48 newlines).
# 300x1000 (h x w) picks 336x1008: 1x3 grid; un-pad keeps int(300*72/1000)=21 rows -> padding (24-21)//2=1
#   -> rows 1..22: 22 rows x 72 = 1584 -> 2160 (+22 newlines).
# 1008x336 picks 1008x336: 3x1 grid, no padding: 576 + 72*24 = 2304 (+72 newlines).
CASES = {
    (672, 672): ((2, 2), (48, 48), 2880, 2928),
    (600, 600): ((2, 2), (48, 48), 2880, 2928),
    (300, 1000): ((1, 3), (22, 72), 2160, 2182),
    (1008, 336): ((3, 1), (72, 24), 2304, 2376),
}


@pytest.mark.parametrize("size", list(CASES))
def test_layout_counts(tiny, size):
    layout = image_layout(size, tiny.model.config)
    grid, canvas, n_full, stock = CASES[size]
    assert (layout.grid, layout.canvas, layout.n_full, layout.stock_tokens) == (grid, canvas, n_full, stock)
    assert layout.candidates[:576].tolist() == list(range(576))  # base tokens first, raster order
    assert len(set(layout.candidates.tolist())) == n_full  # no token twice


def test_layout_order_is_canvas_raster(tiny):
    layout = image_layout((672, 672), tiny.model.config)
    # canvas row 0 = row 0 of partition 1 (cols 0..23) then row 0 of partition 2 (cols 24..47)
    row0 = layout.candidates[576 : 576 + 48].tolist()
    assert row0 == [576 + j for j in range(24)] + [2 * 576 + j for j in range(24)]


def test_offline_tokenizer_matches_real_vicuna_tokenizer(tiny):
    # The real tokenizer (llama-2 tokenizer.model, legacy=False) gives these 19 ids for the default prompt:
    # <s> ▁US ER : ▁ <image> <0x0A> What ▁is ▁shown ▁in ▁this ▁image ? ▁A SS IST ANT :
    real = [
        1,
        3148,
        1001,
        29901,
        29871,
        32000,
        13,
        5618,
        338,
        4318,
        297,
        445,
        1967,
        29973,
        319,
        1799,
        9047,
        13566,
        29901,
    ]
    assert tiny.prompt_ids("What is shown in this image?") == real
    assert VICUNA_TEMPLATE.count("<image>") == 1


def test_offline_tokenizer_counts_unknown_words_once(tiny):
    short = tiny.prompt_ids("Describe it.")
    longer = tiny.prompt_ids("Describe it in great detail, please.")
    assert len(longer) - len(short) == 5  # in, great, detail, ",", please
