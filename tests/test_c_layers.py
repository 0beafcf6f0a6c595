"""The layers the C platform gained for issue 11 (1-D pooling, Conv2DTranspose, ...): the int8 kernels against
scalar integer references written here, the float ops against Keras, and the C against the simulator."""
import shutil

import numpy as np
import pytest

from emc.layers import Act, Conv2DTranspose
from test_platform_c import check_against, one_op, ref_requant, sat

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the host C compiler gcc is not installed")
RNG = np.random.default_rng(11)


def conv_transpose_reference(step, xs):
    """Scatter loops over Python ints: out[oy][ox] gathers x[iy][ix] * w[ky][kx] where iy*s + ky = oy + top."""
    p, a = step.params, step.arrays
    x = xs[0]
    (h, w, cin), (oh, ow, cout) = p["in_shape"], p["out_shape"]
    (kh, kw), (sh, sw), (top, left) = p["kernel"], p["stride"], p["pad"]
    acc = [[[int(a["bias"][o]) for o in range(cout)] for _ in range(ow)] for _ in range(oh)]
    for iy in range(h):
        for ix in range(w):
            for ky in range(kh):
                for kx in range(kw):
                    oy, ox = iy * sh + ky - top, ix * sw + kx - left
                    if 0 <= oy < oh and 0 <= ox < ow:
                        for o in range(cout):
                            acc[oy][ox][o] += sum((int(x[iy, ix, c]) - p["in_zp"]) * int(a["weights"][o, ky, kx, c])
                                                  for c in range(cin))
    out = [[[sat(ref_requant(acc[y][xx][o], a["mult"][o], a["shift"][o]) + p["out_zp"], p["act_min"], p["act_max"])
             for o in range(cout)] for xx in range(ow)] for y in range(oh)]
    return out


@pytest.mark.parametrize("kernel, strides, crops, act", [
    (3, 2, (0, 1, 0, 1), "linear"),          # Keras 'same', k=3 s=2
    (4, 2, (1, 1, 1, 1), "relu"),            # Keras 'same', k=4 s=2
    (2, 3, (0, -1, 0, -2), "linear"),        # 'valid' with the stride above the kernel: bias-only rows
    (3, 1, (1, 1, 0, 2), "relu6"),
])
def test_conv_transpose_kernel(kernel, strides, crops, act):
    w = RNG.normal(0, 0.4, (kernel, kernel, 3, 4))
    art, q = one_op(lambda: Conv2DTranspose(w, RNG.normal(0, 0.2, 4), strides, crops, Act(act)), [(4, 5, 3)])
    check_against(art, q, conv_transpose_reference)
