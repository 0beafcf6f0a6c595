"""A zoo of Keras architectures with seeded random weights, shared by frontend and platform tests.

Import it as `from zoo import KERAS_ZOO, ZOO_INFO, sample_inputs` (tests/ is on sys.path under pytest).
KERAS_ZOO[name]() builds a model. ZOO_INFO[name]["kpu_eligible"] says whether the K210 path can take the whole
model with every convolution on the KPU: one input; convolutions 1x1/3x3 (depthwise 3x3, multiplier 1), no
dilation, stride 1 unpadded or symmetric 'same', stride 2 unpadded (after an explicit ZeroPadding2D); 2x2/2
pools; global average pool; BN; relu/relu6/leaky_relu (sigmoid, softmax at heads); dense, flatten, add,
concatenate, nearest upsampling, pad/crop, Rescaling/Normalization at the input.
"""
import numpy as np

from support import all_keras_layers, randomise_keras_batchnorm, smooth_images

KERAS_ZOO = {}
ZOO_INFO = {}


def zoo(name, kpu_eligible):
    def wrap(fn):
        KERAS_ZOO[name] = fn
        ZOO_INFO[name] = {"kpu_eligible": kpu_eligible}
        return fn
    return wrap


def _keras():
    import keras
    return keras


def finish(model, seed=0, calibrate=False):
    """Randomise BatchNorm statistics so that folding them is really exercised.

    calibrate=True (deep networks): each BatchNorm's mean and variance are its input's statistics on smooth
    probe images, randomly perturbed, so that the signal neither dies nor explodes with depth and the output
    really depends on the input (with unrelated statistics a 28-layer MobileNet's output is constant).
    """
    rng = np.random.default_rng(seed)
    probe = smooth_images(tuple(model.inputs[0].shape[1:]), 16, rng) if calibrate else None
    return randomise_keras_batchnorm(model, rng, probe)


def scale_convs(model, seed=0):
    """Rescale each Conv2D kernel so that its output has unit spread on smooth probe images: a deep stack of
    squashing activations otherwise shrinks the signal until the output no longer depends on the input."""
    keras = _keras()
    probe = smooth_images(tuple(model.inputs[0].shape[1:]), 16, np.random.default_rng(seed))
    for layer in all_keras_layers(model):
        if type(layer).__name__ == "Conv2D":
            spread = float(np.std(np.asarray(layer(keras.Model(model.inputs, layer.input)([probe])))))
            kernel, *rest = layer.get_weights()
            layer.set_weights([kernel / max(spread, 1e-6)] + rest)
    return model


def conv_bn_relu(x, filters, kernel=3, strides=1, act="relu"):
    k = _keras().layers
    if strides == 2 and kernel == 3:
        x = k.ZeroPadding2D(1)(x)
        x = k.Conv2D(filters, 3, strides=2, padding="valid", use_bias=False)(x)
    else:
        x = k.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = k.BatchNormalization()(x)
    return k.ReLU(max_value=6.0)(x) if act == "relu6" else k.Activation(act)(x)


@zoo("lenet", True)
def lenet():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(1)
    inp = keras.Input((28, 28, 1))
    x = k.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = k.MaxPooling2D(2)(x)
    x = k.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = k.MaxPooling2D(2)(x)
    x = k.Flatten()(x)
    x = k.Dense(32, activation="relu")(x)
    return keras.Model(inp, k.Dense(10)(x), name="lenet")


@zoo("maixemc_cifar", False)   # 3x3 stride-2 max pool: a CPU layer on the K210, still convertible
def maixemc_cifar():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 32, 3))
    x = inp
    for filters in (32, 64):
        x = k.Conv2D(filters, 3, padding="same")(x)
        x = k.BatchNormalization()(x)
        x = k.ReLU()(x)
        x = k.MaxPooling2D(3, 2, padding="same")(x)
    x = k.Flatten()(x)
    x = k.Dense(16, activation="relu")(x)
    return finish(keras.Model(inp, k.Dense(10)(x), name="maixemc_cifar"))


@zoo("mobilenet_v1_025", True)
def mobilenet_v1_025(size=128, alpha=0.25):
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((size, size, 3))
    x = conv_bn_relu(inp, int(32 * alpha), 3, 2, "relu6")
    for filters, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (1024, 2)]:
        if stride == 2:
            x = k.ZeroPadding2D(1)(x)
        x = k.DepthwiseConv2D(3, strides=stride, padding="valid" if stride == 2 else "same", use_bias=False)(x)
        x = k.BatchNormalization()(x)
        x = k.ReLU(max_value=6.0)(x)
        x = conv_bn_relu(x, int(filters * alpha), 1, 1, "relu6")
    x = k.GlobalAveragePooling2D()(x)
    x = k.Dropout(0.2)(x)
    return finish(keras.Model(inp, k.Dense(100, activation="softmax")(x), name="mobilenet_v1_025"), calibrate=True)


@zoo("mobilenet_v2_style", True)
def mobilenet_v2_style():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(4)
    inp = keras.Input((32, 32, 3))
    x = conv_bn_relu(inp, 16, 3, 1, "relu6")
    for _ in range(2):
        y = conv_bn_relu(x, 48, 1, 1, "relu6")
        y = k.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = k.BatchNormalization()(y)
        y = k.ReLU(max_value=6.0)(y)
        y = k.Conv2D(16, 1, use_bias=False)(y)
        y = k.BatchNormalization()(y)
        x = k.Add()([x, y])
    x = k.GlobalAveragePooling2D()(x)
    return finish(keras.Model(inp, k.Dense(10)(x), name="mobilenet_v2_style"))


@zoo("resnet_small", True)
def resnet_small():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 3))
    x = conv_bn_relu(inp, 16)
    for filters, stride in [(16, 1), (32, 2)]:
        y = conv_bn_relu(x, filters, 3, stride)
        y = k.Conv2D(filters, 3, padding="same")(y)
        y = k.BatchNormalization()(y)
        shortcut = x if stride == 1 else k.Conv2D(filters, 1, strides=2)(x)
        x = k.ReLU()(k.Add()([shortcut, y]))
    x = k.GlobalAveragePooling2D()(x)
    return finish(keras.Model(inp, k.Dense(10)(x), name="resnet_small"))


@zoo("unet_like", True)
def unet_like():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(6)
    inp = keras.Input((16, 16, 3))
    e1 = conv_bn_relu(inp, 8)
    e2 = conv_bn_relu(k.MaxPooling2D(2)(e1), 16)
    b = conv_bn_relu(k.MaxPooling2D(2)(e2), 16)
    d2 = conv_bn_relu(k.Concatenate()([k.UpSampling2D(2)(b), e2]), 16)
    d1 = conv_bn_relu(k.Concatenate()([k.UpSampling2D(2)(d2), e1]), 8)
    return finish(keras.Model(inp, k.Conv2D(2, 1)(d1), name="unet_like"))


@zoo("detector_two_heads", True)
def detector_two_heads():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(7)
    inp = keras.Input((32, 32, 3))
    x = conv_bn_relu(inp, 16, 3, 2)
    x = conv_bn_relu(x, 32, 3, 2)
    boxes = k.Conv2D(4 * 3, 1, name="boxes")(x)
    scores = k.Conv2D(2 * 3, 1, activation="sigmoid", name="scores")(x)
    return finish(keras.Model(inp, [boxes, scores], name="detector_two_heads"))


@zoo("two_inputs", False)
def two_inputs():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(8)
    a, b = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="meta")
    x = k.GlobalAveragePooling2D()(k.Conv2D(8, 3, padding="same", activation="relu")(a))
    y = k.Dense(8, activation="tanh")(b)
    return keras.Model([a, b], k.Dense(3)(k.Concatenate()([x, y])), name="two_inputs")


@zoo("separable_dilated", False)
def separable_dilated():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(9)
    inp = keras.Input((20, 20, 4))
    x = k.SeparableConv2D(8, 3, padding="same", activation="relu", depth_multiplier=2)(inp)
    x = k.Conv2D(8, 3, dilation_rate=2, padding="same", activation="elu")(x)
    x = k.DepthwiseConv2D(5, strides=2, padding="same", depth_multiplier=2)(x)
    return keras.Model(inp, k.GlobalMaxPooling2D()(x), name="separable_dilated")


@zoo("strided_same_odd", False)
def strided_same_odd():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(10)
    inp = keras.Input((15, 18, 3))
    x = k.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = k.Conv2D(8, 5, strides=(2, 1), padding="same")(x)
    x = k.Conv2D(4, (1, 3), padding="valid", activation="relu6")(x)
    return keras.Model(inp, k.Flatten()(x), name="strided_same_odd")


@zoo("pools_padding", False)
def pools_padding():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(11)
    inp = keras.Input((17, 13, 3))
    x = k.Conv2D(6, 3, padding="same")(inp)
    a = k.AveragePooling2D(3, 2, padding="same")(x)
    b = k.MaxPooling2D(3, 2, padding="same")(x)
    x = k.Concatenate()([a, b])
    x = k.AveragePooling2D(2, padding="valid")(x)
    return keras.Model(inp, k.GlobalAveragePooling2D(keepdims=True)(x), name="pools_padding")


@zoo("activations", False)
def activations():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(12)
    inp = keras.Input((6, 6, 4))
    x = inp
    for act in ("sigmoid", "tanh", "hard_sigmoid", "swish", "silu", "hard_swish", "softplus", "softsign", "elu",
                "relu6", "leaky_relu", keras.activations.tanh, keras.activations.hard_silu):
        x = k.Conv2D(4, 1, activation=act)(x)
    x = k.LeakyReLU(negative_slope=0.1)(x)
    x = k.ReLU(negative_slope=0.05)(x)
    x = k.ELU(alpha=0.5)(x)
    x = k.Activation(keras.activations.relu6)(x)
    x = k.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.1, 0.4))(x)
    x = k.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.1, 0.4), shared_axes=[1, 2])(x)
    x = k.Flatten()(x)
    return scale_convs(keras.Model(inp, k.Softmax()(k.Dense(5)(x)), name="activations"))


@zoo("pad_crop", True)
def pad_crop():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(13)
    inp = keras.Input((12, 12, 3))
    x = k.ZeroPadding2D(((1, 1), (1, 1)))(inp)
    x = k.Conv2D(8, 3, padding="valid", activation="relu")(x)
    x = k.Cropping2D(((2, 2), (2, 2)))(x)
    x = k.ZeroPadding2D(((2, 2), (2, 2)))(x)
    return keras.Model(inp, k.Conv2D(4, 1)(x), name="pad_crop")


@zoo("conv1d", False)
def conv1d():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(14)
    inp = keras.Input((32, 3))
    x = k.Conv1D(8, 5, padding="same", activation="relu")(inp)
    x = k.Conv1D(8, 3, strides=2, padding="valid")(x)
    x = k.Conv1D(6, 3, dilation_rate=2, padding="causal", activation="tanh")(x)
    return keras.Model(inp, k.Dense(4)(k.Flatten()(x)), name="conv1d")


@zoo("kws_conv1d_pools", False)
def kws_conv1d_pools():
    """A keyword-spotting / sensor style Conv1D net: every 1-D pooling layer, 'same' and 'valid'."""
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(22)
    inp = keras.Input((49, 10))
    x = k.Conv1D(16, 3, padding="same", activation="relu")(inp)
    x = k.MaxPooling1D(2)(x)
    x = k.Conv1D(16, 3, padding="same", activation="relu")(x)
    x = k.AveragePooling1D(3, strides=2, padding="same")(x)
    x = k.Conv1D(12, 3, activation="relu")(x)
    y = k.MaxPooling1D(3, strides=1, padding="same")(x)
    pooled = k.Concatenate()([k.GlobalAveragePooling1D()(x), k.GlobalMaxPooling1D()(y)])
    return keras.Model(inp, k.Dense(6)(pooled), name="kws_conv1d_pools")


@zoo("conv_transpose_decoder", False)
def conv_transpose_decoder():
    """An encoder-decoder with Conv2DTranspose: 'same' and 'valid', stride below, equal to and above the kernel,
    output_padding, and a BatchNorm after a transposed conv."""
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(23)
    inp = keras.Input((12, 12, 3))
    x = k.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = k.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = k.Activation("relu")(k.BatchNormalization()(x))
    x = k.Conv2DTranspose(6, 4, strides=2, padding="valid", activation="relu")(x)
    x = k.Conv2DTranspose(6, 2, strides=3, padding="valid", output_padding=1)(x)
    x = k.Conv2DTranspose(4, 3, strides=1, padding="same", activation="tanh")(x)
    return finish(keras.Model(inp, k.Conv2D(2, 1)(x), name="conv_transpose_decoder"))


@zoo("recurrent_sensor", False)
def recurrent_sensor():
    """A sensor / keyword-spotting sequence net: LSTM and GRU returning sequences, SimpleRNN and LSTM the last step."""
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(24)
    inp = keras.Input((20, 6))
    x = k.LSTM(16, return_sequences=True, bias_initializer="random_normal")(inp)
    x = k.GRU(12, return_sequences=True, bias_initializer="random_normal")(x)
    a = k.SimpleRNN(8, bias_initializer="random_normal")(x)
    b = k.LSTM(8, use_bias=False)(x)
    return keras.Model(inp, k.Dense(4)(k.Concatenate()([a, b])), name="recurrent_sensor")


@zoo("mlp_iris", True)
def mlp_iris():
    """A top-level Sequential model (the rest of the zoo is functional)."""
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(15)
    return keras.Sequential([keras.Input((4,)), k.Dense(10, activation="relu"), k.Dense(3, activation="softmax")],
                            name="mlp_iris")


@zoo("merge_ops", False)
def merge_ops():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(16)
    inp = keras.Input((8, 8, 4))
    a = k.Conv2D(4, 1)(inp)
    b = k.Conv2D(4, 3, padding="same")(inp)
    x = k.Multiply()([a, b])
    x = k.Subtract()([x, a])
    x = k.Average()([x, b, a])
    x = k.Maximum()([x, a])
    x = k.Minimum()([x, b])
    return keras.Model(inp, k.Reshape((16, 16))(x), name="merge_ops")


@zoo("rescaling_input", True)
def rescaling_input():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(17)
    inp = keras.Input((16, 16, 3))
    x = k.Rescaling(1 / 127.5, offset=-1)(inp)
    x = conv_bn_relu(x, 8)
    x = k.MaxPooling2D(2)(x)
    x = conv_bn_relu(x, 8, 1, 1, "leaky_relu")
    return finish(keras.Model(inp, k.Dense(3)(k.GlobalAveragePooling2D()(x)), name="rescaling_input"))


@zoo("nested_sequential", True)
def nested_sequential():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(18)
    body = keras.Sequential([keras.Input((8, 8, 2)), k.Conv2D(4, 3, padding="same"), k.BatchNormalization(),
                             k.ReLU()], name="body")
    inp = keras.Input((8, 8, 2))
    x = body(inp)
    return finish(keras.Model(inp, k.Dense(3)(k.Flatten()(x)), name="nested_sequential"))



@zoo("normalization_input", True)
def normalization_input():
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(19)
    inp = keras.Input((12, 12, 3))
    x = k.Normalization(mean=[0.45, 0.5, 0.55], variance=[0.05, 0.08, 0.1])(inp)
    x = conv_bn_relu(x, 8)
    x = k.MaxPooling2D(2)(x)
    return finish(keras.Model(inp, k.Dense(4)(k.GlobalAveragePooling2D()(x)), name="normalization_input"))


@zoo("shared_and_nested", True)
def shared_and_nested():
    """One Conv2D layer called on two branches, and a nested functional model with two outputs."""
    keras = _keras()
    k = keras.layers
    keras.utils.set_random_seed(20)
    inp = keras.Input((16, 16, 3))
    stem = conv_bn_relu(inp, 8)
    shared = k.Conv2D(8, 3, padding="same", activation="relu", name="shared_conv")
    a = shared(stem)
    b = shared(k.MaxPooling2D(2)(stem))
    sub_in = keras.Input((16, 16, 8))
    sub = keras.Model(sub_in, [k.Conv2D(8, 1)(sub_in), conv_bn_relu(sub_in, 8)], name="two_out_block")
    p, q = sub(a)
    x = k.Concatenate()([k.Add()([p, q]), k.UpSampling2D(2)(b)])
    return finish(keras.Model(inp, k.Conv2D(4, 1)(x), name="shared_and_nested"))


def sample_inputs(model, n=2, seed=0):
    """Seeded random inputs for every model input (list when several)."""
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(0, 1, size=(n,) + tuple(t.shape[1:])).astype(np.float32) for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]
