"""TensorLayer 2.x static models with seeded random weights (the TensorLayer side of the test zoo)."""
import numpy as np

from support import perturbed_statistics, probe_statistics, smooth_images

TL_ZOO = {}
TL_ZOO_INFO = {}


def tl_modules():
    """Import TensorLayer (numpy 2 lacks np.float, which TensorLayer 2.2.5's SeparableConv2d still uses)."""
    if not hasattr(np, "float"):
        np.float = float
    import tensorflow as tf
    import tensorlayer as tl
    return tf, tl


def zoo(name, kpu_eligible):
    def wrap(fn):
        TL_ZOO[name] = fn
        TL_ZOO_INFO[name] = {"kpu_eligible": kpu_eligible}
        return fn
    return wrap


_BUILDS = iter(range(1_000_000))


def unique(name):
    """TensorLayer refuses a model name used before in the process."""
    return f"{name}_{next(_BUILDS)}"


def randomise(model, seed, calibrate=False):
    """Random weights everywhere, BatchNorm statistics included (variances positive); calibrate=True for a deep
    chain: BatchNorm statistics from the data (calibrate_batchnorm_chain)."""
    rng = np.random.default_rng(seed)
    for w in model.all_weights:
        shape = tuple(w.shape)
        if "moving_var" in w.name:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in w.name:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = np.prod(shape[:-1]) if len(shape) > 1 else 4
            value = rng.normal(0, 1 / np.sqrt(fan_in), shape)
        w.assign(value.astype(np.float32))
    model.eval()
    if calibrate:
        calibrate_batchnorm_chain(model, rng)
    return model


def calibrate_batchnorm_chain(model, rng):
    """A chain model's BatchNorm statistics from its input's statistics on smooth probe images (perturbed), so
    that a deep random network's output still depends on its input (see zoo.finish)."""
    layers = model.all_layers
    x = smooth_images(tuple(layers[0].shape[1:]), 16, rng)        # the _InputLayer: [None, H, W, C]
    for layer in layers[1:]:
        if type(layer).__name__ == "BatchNorm":
            mean, var = perturbed_statistics(probe_statistics(np.asarray(x)), rng)
            for w in layer.all_weights:
                if "moving_mean" in w.name:
                    w.assign(mean)
                elif "moving_var" in w.name:
                    w.assign(var)
        x = layer.forward(x)


def maixemc_cifar_layers(tf, tl, ni):
    from tensorlayer.layers import BatchNorm, Conv2d, Dense, Flatten, MaxPool2d
    n = Conv2d(32, (3, 3), (1, 1), padding="SAME", name="conv1")(ni)
    n = BatchNorm(act=tf.nn.relu, name="batch1")(n)
    n = MaxPool2d((3, 3), (2, 2), padding="SAME", name="pool1")(n)
    n = Conv2d(64, (3, 3), (1, 1), padding="SAME", name="conv2")(n)
    n = BatchNorm(act=tf.nn.relu, name="batch2")(n)
    n = MaxPool2d((3, 3), (2, 2), padding="SAME", name="pool2")(n)
    n = Flatten(name="flatten")(n)
    n = Dense(16, act=tf.nn.relu, name="denserelu")(n)
    return Dense(10, name="output")(n)


@zoo("tl_maixemc_cifar", False)
def tl_maixemc_cifar():
    tf, tl = tl_modules()
    from tensorlayer.layers import Input
    ni = Input([None, 32, 32, 3], name="input")
    return randomise(tl.models.Model(ni, maixemc_cifar_layers(tf, tl, ni), name=unique("cnn")), 1)


@zoo("tl_mobilenet_like", True)
def tl_mobilenet_like():
    tf, tl = tl_modules()
    from tensorlayer.layers import (BatchNorm, Conv2d, Dense, DepthwiseConv2d, GlobalMeanPool2d, Input,
                                    ZeroPad2d)
    ni = Input([None, 32, 32, 3])
    n = ZeroPad2d(((1, 1), (1, 1)))(ni)
    n = Conv2d(8, (3, 3), (2, 2), padding="VALID", b_init=None)(n)
    n = BatchNorm(act=tf.nn.relu6)(n)
    for filters, stride in [(16, 1), (32, 2), (32, 1)]:
        if stride == 2:
            n = ZeroPad2d(((1, 1), (1, 1)))(n)
        n = DepthwiseConv2d((3, 3), (stride, stride), padding="VALID" if stride == 2 else "SAME", b_init=None)(n)
        n = BatchNorm(act=tf.nn.relu6)(n)
        n = Conv2d(filters, (1, 1), (1, 1), b_init=None)(n)
        n = BatchNorm(act=tf.nn.relu6)(n)
    n = GlobalMeanPool2d()(n)
    return randomise(tl.models.Model(ni, Dense(10)(n), name=unique("mobilenet_like")), 2, calibrate=True)


@zoo("tl_branchy", True)
def tl_branchy():
    tf, tl = tl_modules()
    from tensorlayer.layers import Concat, Conv2d, Elementwise, Flatten, Dense, Input, MaxPool2d
    ni = Input([None, 16, 16, 3])
    a = Conv2d(8, (3, 3), (1, 1), act=tf.nn.relu)(ni)
    b = Conv2d(8, (1, 1), (1, 1), act=lambda x: tl.act.lrelu(x, 0.1))(ni)
    s = Elementwise(tf.add)([a, b])
    c = Concat(-1)([s, a])
    n = MaxPool2d((2, 2), (2, 2), padding="SAME")(c)
    return randomise(tl.models.Model(ni, Dense(4)(Flatten()(n)), name=unique("branchy")), 3)


@zoo("tl_separable_pools", False)
def tl_separable_pools():
    tf, tl = tl_modules()
    from tensorlayer.layers import (Dense, GlobalMaxPool2d, Input, MaxPool2d, MeanPool2d, SeparableConv2d,
                                    UpSampling2d, Dropout)
    ni = Input([None, 12, 12, 4])
    n = SeparableConv2d(8, (3, 3), (1, 1), act=tf.nn.relu, padding="same")(ni)
    n = MeanPool2d((3, 3), (2, 2), padding="SAME")(n)
    n = UpSampling2d((2, 2), method="nearest")(n)
    n = MaxPool2d((2, 2), (1, 1), padding="VALID")(n)
    n = Dropout(0.8)(GlobalMaxPool2d()(n))
    return randomise(tl.models.Model(ni, Dense(3, act=tf.nn.sigmoid)(n), name=unique("separable_pools")), 4)


@zoo("tl_mlp", True)
def tl_mlp():
    tf, tl = tl_modules()
    from tensorlayer.layers import Dense, Input
    ni = Input([None, 4])
    n = Dense(10, act=tf.nn.relu)(ni)
    return randomise(tl.models.Model(ni, Dense(3)(n), name=unique("mlp")), 5)


# ---- frontend-only cases: TensorLayer features the platform zoos need not carry --------------------------------
TL_FRONTEND_CASES = {}


def frontend_case(fn):
    TL_FRONTEND_CASES[fn.__name__] = fn
    return fn


@frontend_case
def tl_shared_multi_output():
    """A layer called twice, two outputs, dilation, depth multiplier, PRelu, Reshape, BatchNorm1d, string acts."""
    tf, tl = tl_modules()
    from tensorlayer.layers import (BatchNorm1d, Concat, Conv2d, Dense, DepthwiseConv2d, Elementwise, Input,
                                    PadLayer, PRelu, Reshape)
    ni = Input([None, 10, 10, 3])
    shared = Conv2d(4, (3, 3), (1, 1), act="lrelu0.1", padding="SAME")
    a = shared(ni)
    b = Conv2d(3, (3, 3), (1, 1), dilation_rate=(2, 2), padding="SAME", act=tf.nn.leaky_relu)(ni)
    c = shared(b)
    d = Elementwise(tf.subtract)([a, c])
    e = DepthwiseConv2d((3, 3), (2, 2), padding="SAME", depth_multiplier=2, act=tf.nn.tanh)(PRelu()(d))
    f = Reshape([-1, 5 * 5 * 8])(e)
    g = BatchNorm1d(act="relu6")(Dense(6, b_init=None)(f))
    k = Concat(1)([a, c])                                 # along height
    m = Elementwise(tf.maximum, act=tf.nn.sigmoid)([k, PadLayer([[0, 0], [5, 5], [0, 0], [0, 0]])(a)])
    n = Elementwise(tf.multiply)([Elementwise(tf.minimum)([a, c]), a])
    model = tl.models.Model(ni, [g, m, n], name=unique("shared_multi_output"))
    return randomise(model, 11)


@frontend_case
def tl_two_inputs():
    """Two inputs, concatenated on the channel axis; the model's input order is kept."""
    tf, tl = tl_modules()
    from tensorlayer.layers import Concat, Conv2d, Dense, GlobalMeanPool2d, Input, MeanPool2d
    x1, x2 = Input([None, 8, 8, 2]), Input([None, 8, 8, 1])
    n = Concat(-1)([Conv2d(3, (1, 1), (1, 1))(x2), x1])
    n = MeanPool2d((2, 2), (2, 2), padding="VALID")(Conv2d(4, (5, 5), (2, 2), padding="SAME", act=tf.nn.elu)(n))
    n = Dense(3, act=tf.nn.softmax)(GlobalMeanPool2d()(n))
    return randomise(tl.models.Model([x1, x2], n, name=unique("two_inputs")), 12)
