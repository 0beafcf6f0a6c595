"""The models K210 users deploy: keras.applications MobileNet v1 / v2 (weights=None, BatchNorm statistics from probe
images) with their own preprocessing (img_neg1_1), and a CIFAR-style CNN with Conv-ReLU-BatchNorm blocks and maps
down to 2x2 -- converted without refusal and simulated close to float (issue 10)."""
import functools

import numpy as np
import pytest

import emc
from conftest import reference_path
from support import input_dependence, randomise_keras_batchnorm, smooth_images

keras = pytest.importorskip("keras")


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def imagenet(shape, n=8):
    return emc.datasets.load_dataset(reference_path("images", "imagenet"), shape, dataset_func="img_neg1_1",
                                     max_samples=n)


@functools.lru_cache(maxsize=None)
def application(name):
    keras.utils.set_random_seed(0)               # weights=None: the same random weights on every run
    if name == "mobilenet":
        model = keras.applications.MobileNet(alpha=0.25, input_shape=(128, 128, 3), weights=None)
    else:
        model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    return randomise_keras_batchnorm(model, 0, imagenet(model.input_shape[1:]))


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("name", ["mobilenet", "mobilenet_v2"])
def test_keras_applications_with_their_preprocessing(name, version):
    model = application(name)
    shape = model.input_shape[1:]
    data = imagenet(shape)
    art = emc.convert(model, platform="k210", dataset=data, dataset_func="img_neg1_1", version=version)
    rows = [r for r in art.report.rows if r.get("unit") == "KPU"]
    assert rows
    float_out, device_out = art.graph.run(data)[0], art.simulate(data)[0]
    assert input_dependence(float_out) > 0.05
    assert cosine(float_out, device_out) >= 0.98


def activations_rounded(graph, ranges, x):
    """The float graph with every inner tensor rounded to uint8 codes at its calibrated range (written here, not
    emc's quantiser): what any device with per-tensor 8-bit activations can at best compute."""
    def rounded(name, value):
        if name not in ranges or name in graph.outputs:
            return value
        lo, hi = min(ranges[name][0], 0.0), max(ranges[name][1], 0.0)
        scale = max(hi - lo, 1e-12) / 255.0
        zero = np.round(-lo / scale)
        return ((np.clip(np.round(value / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)

    values = dict(zip(graph.inputs, [x]))
    for node in graph:
        if node.name not in values:
            values[node.name] = rounded(node.name, node.op.forward([values[s] for s in node.inputs]))
    return values[graph.outputs[0]]


@pytest.mark.parametrize("version", [3, 4])
def test_mobilenet_v2_beats_rounding_each_map_at_one_scale(version):
    """Random depthwise kernels on smooth images behind BatchNorm gains up to 30 amplify the rounding of their
    inputs: rounding every tensor at its calibrated range scores ~0.977; the K210, whose maps between convs are
    rescaled per channel (equalize.py), does better."""
    model = application("mobilenet_v2")
    data = imagenet(model.input_shape[1:])
    art = emc.convert(model, platform="k210", dataset=data, dataset_func="img_neg1_1", version=version)
    float_out = art.graph.run(data)[0]
    bound = cosine(float_out, activations_rounded(art.graph, art.calibration.ranges, data))
    device = cosine(float_out, art.simulate(data)[0])
    assert input_dependence(float_out) > 0.05
    assert bound < 0.99                       # the net is sensitive to 8-bit activations, so this says something
    assert device >= bound + 0.003, (device, bound)


def cifar_cnn():
    """Conv-ReLU-BatchNorm blocks with max pools 32 -> 2, a no-op MaxPooling2D(1), a 1x1 conv on the 2x2 map."""
    k = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((32, 32, 3))
    x = inp
    for width in (16, 32, 32, 32):
        x = k.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = k.BatchNormalization()(x)
        x = k.MaxPooling2D(2)(x)
    x = k.MaxPooling2D(1, 1)(x)
    x = k.Conv2D(32, 1, activation="relu")(x)
    x = k.BatchNormalization()(x)
    out = k.Dense(10, activation="softmax")(k.Flatten()(x))
    model = keras.Model(inp, out)
    return randomise_keras_batchnorm(model, 1, smooth_images((32, 32, 3), 8, np.random.default_rng(0)))


@pytest.mark.parametrize("platform,version", [("k210", 3), ("k210", 4), ("c", None)])
def test_cifar_style_cnn_with_batchnorm_after_activation(platform, version):
    model = cifar_cnn()
    x = smooth_images((32, 32, 3), 16, np.random.default_rng(1))
    options = {} if version is None else {"version": version}
    art = emc.convert(model, platform=platform, dataset=x, **options)
    kinds = [n.op.kind for n in art.graph]
    assert kinds.count("batch_norm") <= 4 and kinds.count("pool2d") == 4     # last BN folded, no-op pool gone
    float_out, device_out = art.graph.run(x)[0], art.simulate(x)[0]
    assert input_dependence(float_out) > 0.05
    assert cosine(float_out, device_out) >= 0.99


def test_memory_refusal_names_the_biggest_weights_and_carries_the_report():
    from emc import layers as L
    from emc.graph import Graph
    rng = np.random.default_rng(2)
    g = Graph()
    i = g.add_input((8, 8, 3))
    c = g.add(L.Conv2D(rng.normal(size=(3, 3, 3, 16)).astype(np.float32), None, pads=(1, 1, 1, 1)), i)
    g.set_outputs(g.add(L.Dense(rng.normal(size=(1024, 600)).astype(np.float32), None), g.add(L.Flatten(), c)))
    x = smooth_images((8, 8, 3), 4, rng)
    with pytest.raises(emc.PlatformLimitError, match=r"exceed the 200,000 bytes of SRAM; biggest weights: "
                                                     r"'dense' \(.*\) [0-9,]+ B.*biggest main-memory tensors: '") as e:
        emc.convert(g, platform="k210", dataset=x, version=3, ram_limit=200_000)
    assert "K210 kmodel v3" in str(e.value.report) and "dense" in str(e.value.report)
