"""The HiRED paper's published efficiency figures: what reports and the memory model compare with."""

# HiRED paper, Table 4: LLaVA-Next-7B on a Tesla P40 (24 GB), 15 new tokens, 600x600 images (the
# release's script: github.com/hasanar1f/HiRED run_HiRED_sys_report.py, reference fidelity).
# (end-to-end tokens/s, TTFT s, peak memory GB as torch max_memory_allocated); None: out of memory.
PAPER_TABLE4 = {
    1: {"full": (0.49, 19.49, 16.04), 0.4: (1.40, 6.91, 14.33), 0.2: (2.30, 4.21, 13.76)},
    2: {"full": (0.66, 44.37, 21.84), 0.4: (2.04, 14.31, 16.81), 0.2: (3.68, 7.89, 15.07)},
    4: {"full": None, 0.4: (2.22, 26.38, 20.36), 0.2: (4.28, 13.60, 16.99)},
}
PAPER_MODELS = {"llava-next-7b", "llava-hf/llava-v1.6-vicuna-7b-hf"}
PAPER_MEMORY_GIB = 24.0  # the P40's memory

# how the GPU study measures the paper's grid: Table 4's 15 new tokens; 2 warm-up and 5 measured requests
PAPER_NEW_TOKENS = 15
PAPER_WARMUP, PAPER_REPEATS = 2, 5  # the eager decode is host-bound at batch 1: its run-to-run spread is wide
