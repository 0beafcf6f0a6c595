"""Integer matrix products through float BLAS, exact: float32 (2 to 4 times faster) while every partial sum stays
below 2^24, summed in float64 over slices of the inner axis when a whole row might not; float64 (2^53) otherwise.
Shared by the platforms' simulators (K210 KPU convolutions, the C twin's convolutions and dense layers)."""
import numpy as np

F32_EXACT = 1 << 24              # float32 holds every integer below this exactly
F64_EXACT = 1 << 53


def exact_dtype(largest_product, terms):
    """(dtype, terms per partial sum) that keep sums of integer products of magnitude <= largest_product exact."""
    largest = max(1, int(largest_product))
    chunk = (F32_EXACT - 1) // largest
    if chunk >= min(terms, 64):                       # fewer than 64 terms per float32 slice: float64 does it better
        return np.float32, chunk
    return np.float64, (F64_EXACT - 1) // largest


def exact_matmul(a, b, chunk):
    """a @ b of integer-valued float arrays (inner axis K), in slices of `chunk` terms summed in float64."""
    terms = a.shape[-1]
    if chunk >= terms:
        return a @ b
    out = np.zeros(a.shape[:-1] + b.shape[-1:], np.float64)
    for t0 in range(0, terms, chunk):
        out += a[..., t0:t0 + chunk] @ b[t0:t0 + chunk]
    return out
