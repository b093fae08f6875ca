"""The numbers every layer shares, each under one name, and the one integer helper (no torch: the heuristics are
pure Python). The C++ side has the same two constants in csrc/kernels/params.h (kScaleBlock, and the TMA rule in the
launchers' alignment checks)."""

# Every scale covers 128 elements of K (and 128 rows of N for 128x128 weight blocks).
SCALE_BLOCK = 128
# TMA: every base address and every non-innermost global stride must be a multiple of 16 bytes.
TMA_ALIGNMENT_BYTES = 16


def ceil_div(x, y):
    """Rounded-up integer division (works on SymInts too)."""
    return (x + y - 1) // y
