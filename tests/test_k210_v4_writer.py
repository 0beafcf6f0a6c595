"""kmodel v4 writer: convert -> v4 bytes -> emc's v4 reader -> nncase v0.2 runtime simulation, against emc's float
executor; models v3 cannot hold (5x5 and dilated convolutions on the CPU); structure, determinism and errors.
"""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from test_k210_roundtrip import (built, calibration_data, cosine, input_dependence, keras_cases,  # noqa: E402
                                 tl_cases)

V4_ONLY = ["activations", "merge_ops", "pools_padding", "separable_dilated", "strided_same_odd"]   # v3 refuses


def convert_v4(name, quant_func="minmax"):
    from emc.convert import convert
    from emc.frontends import load_model
    model = built(name)
    data, dataset_func = calibration_data(load_model(model), name)
    return convert(model, dataset=data, dataset_func=dataset_func, quant_func=quant_func, version=4), data


@pytest.mark.parametrize("quant_func", ["minmax", "kld"])
@pytest.mark.parametrize("name", keras_cases() + tl_cases() + V4_ONLY)
def test_zoo_model_round_trip_v4(name, quant_func):
    from emc.platforms.k210.kmodel import load_kmodel
    art, data = convert_v4(name, quant_func)
    parsed = load_kmodel(art.kmodel)
    assert parsed.version == 4 and parsed.header.target == 1
    assert parsed.to_bytes() == art.kmodel              # every body re-encodes from what the reader decoded
    assert len(parsed.outputs) == len(art.graph.outputs)
    assert parsed.header.constants % 8 == 0 and all(node.offset % 8 == 0 for node in parsed.nodes)
    for node in parsed.nodes:                            # KPU blocks at multiples of 256 in the file, as nncase
        if node.name == "kpu_conv2d":
            bn = node.offset + 120 + node.skips[0]
            act = bn + 8 * node.arg.out_shape[0] + node.skips[1]
            weights = act + 144 + node.skips[2]
            assert bn % 256 == act % 256 == weights % 256 == 0
    assert str(parsed) and str(art.report)
    if name not in V4_ONLY and name != "mlp_iris" and name != "tl_mlp":
        assert any(node.name == "kpu_conv2d" for node in parsed.nodes)
    reference = art.graph.run(data)
    assert min(map(input_dependence, reference)) > 1e-3          # else the cosine below could not fail
    cosines = [cosine(ref, sim) for ref, sim in zip(reference, art.simulate(data))]
    assert min(cosines) >= 0.99, cosines


def five_by_five(keras):
    keras.utils.set_random_seed(1)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.Conv2D(8, 5, padding="same", activation="relu", name="five")(x)
    y = k.Conv2D(8, 3, padding="same", activation="relu", name="three")(y)
    y = k.DepthwiseConv2D(5, padding="same", activation="sigmoid", name="dw_five")(y)
    y = k.MaxPooling2D(2)(y)
    y = k.GlobalAveragePooling2D()(y)
    return keras.Model(x, k.Dense(4, name="logits")(y))


def refused_by_v3_converted_by_v4(build, v3_message):
    """(v4 artefact, data) of a Keras model that kmodel v3 refuses with a message matching v3_message."""
    keras = pytest.importorskip("keras")
    import emc
    from emc.convert import convert
    model = build(keras)
    data = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    with pytest.raises(emc.PlatformLimitError, match=v3_message):
        convert(model, dataset=data, version=3)
    return convert(model, dataset=data, version=4), data


def test_check_without_data_knows_the_version():
    keras = pytest.importorskip("keras")
    from emc.frontends import load_model
    from emc.passes import optimize
    from emc.platforms import k210
    graph = optimize(load_model(five_by_five(keras)))
    assert any("'five'" in p and "5x5" in p for p in k210.check(graph))
    assert k210.check(graph, version=4) == []


def test_a_5x5_convolution_runs_on_the_cpu_in_v4_and_is_refused_by_v3():
    art, data = refused_by_v3_converted_by_v4(five_by_five, r"'five'.*5x5.*--version 4.*float32 conv2d: [0-9,]+ float "
                                                            r"MACs")
    nodes = [node.name for node in art.model.nodes]
    assert nodes.count("conv2d") == 2 and "kpu_conv2d" in nodes            # 5x5s on the CPU, the 3x3 on the KPU
    assert any("'five' runs on the CPU" in note for note in art.report.notes)
    reference, simulated = art.graph.run(data)[0], art.simulate(data)[0]
    assert cosine(reference, simulated) >= 0.99
    assert np.mean(reference.argmax(1) == simulated.argmax(1)) >= 0.9


def tf_same_strided(keras):
    keras.utils.set_random_seed(3)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    y = k.DepthwiseConv2D(3, strides=2, padding="same", activation="relu", name="dw_s2")(y)
    y = k.Conv2D(16, 1, activation="relu")(y)
    return keras.Model(x, k.Dense(5)(k.GlobalAveragePooling2D()(y)))


@pytest.mark.parametrize("version", [3, 4])
def test_tf_same_stride_2_runs_on_the_kpu(version):
    """Even sizes. The 3x3 conv as nncase v0.2 does it: a zero row above and below, pool 6 (right-top), the first
    row dropped. The depthwise one (no KPU pooling after a depthwise conv) at stride 1, then rows and columns
    1, 3, 5 ... picked on the CPU: v4's strided_slice; v3's 1x1 QUANTIZED_MAX_POOL2D of stride 2 reads the
    streamed map in place from (1, 1) on and keeps every other row and column."""
    keras = pytest.importorskip("keras")
    from emc.convert import convert
    model = tf_same_strided(keras)
    data = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    art = convert(model, dataset=data, version=version)
    if version == 4:
        nodes = art.model.nodes
        assert "conv2d" not in [n.name for n in nodes]
        pads = [[(p.before, p.after) for p in n.body.paddings] for n in nodes if n.name == "pad"]
        assert [(0, 0), (0, 0), (1, 1), (0, 0)] in pads
        # the input copied to main memory (identity conv) for the pad, the stem with pool 6, depthwise, 1x1
        assert [n.arg.pool_type for n in nodes if n.name == "kpu_conv2d"] == [0, 6, 0, 0]
        slices = [(n.shape("in_shape"), tuple(n.body.begin), tuple(n.body.strides)) for n in nodes
                  if n.name == "strided_slice"]
        assert slices == [((1, 8, 9, 8), (0, 0, 1, 0), (1, 1, 1, 1)), ((1, 8, 8, 8), (0, 0, 1, 1), (1, 1, 2, 2))]
    else:
        layers = art.model.layers
        assert [layer.arg.pool_type for layer in layers if layer.name == "K210_CONV"] == [0, 6, 0, 0]
        names = [layer.name for layer in layers]
        assert names.count("QUANTIZED_CONCAT") == 1            # the stem's first row dropped; no shifted copy
        dw = [layer for layer in layers if layer.name == "K210_CONV"][2]
        pick = [layer for layer in layers if layer.name == "QUANTIZED_MAX_POOL2D"][-1]     # after the pad
        assert pick.body.main_mem_in_address == dw.body.main_mem_out_address + 8 + 1     # from (1, 1) of 8x8
    assert cosine(art.graph.run(data)[0], art.simulate(data)[0]) >= 0.99


def test_tf_same_stride_2_after_a_signed_tensor_in_v3():
    """v3 pads with code 0 only: a TF-'same' stride-2 conv whose input has another zero point runs at stride 1
    and has its rows and columns picked on the CPU instead of going through pool 6."""
    keras = pytest.importorskip("keras")
    from emc.convert import convert
    keras.utils.set_random_seed(3)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.Conv2D(8, 3, strides=2, padding="same", name="s2")(k.Conv2D(4, 1, name="signed")(x))
    model = keras.Model(x, k.Dense(3)(k.GlobalAveragePooling2D()(y)))
    data = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    art = convert(model, dataset=data, version=3)
    layers = art.model.layers
    assert [layer.arg.pool_type for layer in layers if layer.name == "K210_CONV"] == [0, 0]
    assert [layer.name for layer in layers][2] == "QUANTIZED_MAX_POOL2D"       # reads the map in place, no copy
    assert layers[2].body.main_mem_in_address == layers[1].body.main_mem_out_address + 16 + 1
    assert cosine(art.graph.run(data)[0], art.simulate(data)[0]) >= 0.99


@pytest.mark.parametrize("version", [3, 4])
def test_tf_same_stem_through_pool6_equals_the_float_conv(version):
    """Layer level: the KPU's pool-6 form of a TF-'same' stride-2 conv against the float conv (no later layers);
    kmodel v3 pads with QUANTIZED_MAX_POOL2D's code 0 (the input's zero point is 0 here) and crops by CONCAT."""
    keras = pytest.importorskip("keras")
    from emc.convert import convert
    keras.utils.set_random_seed(8)
    x = keras.Input((16, 16, 3))
    model = keras.Model(x, keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x))
    data = np.random.default_rng(1).uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
    art = convert(model, dataset=data, version=version)
    pools = [layer.arg.pool_type for layer in (art.model.nodes if version == 4 else art.model.layers)
             if layer.name in ("kpu_conv2d", "K210_CONV")]
    assert pools == [0, 6]                                      # the input copied to main memory, the stem
    reference, simulated = art.graph.run(data)[0], art.simulate(data)[0]
    step = (reference.max() - reference.min()) / 255
    assert np.abs(reference - simulated).max() <= 2 * step     # within two output codes everywhere


def segmentation_head(keras):
    keras.utils.set_random_seed(5)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.Conv2D(8, 3, padding="same", activation="relu")(x)
    return keras.Model(x, k.Conv2D(4, 1, activation="softmax", name="classes")(y))


def test_softmax_over_the_channels_of_a_map_in_v4():
    art, data = refused_by_v3_converted_by_v4(segmentation_head, "softmax over the channels.*kmodel v4")
    simulated = art.simulate(data)[0]
    assert simulated.shape == (16, 16, 16, 4)
    np.testing.assert_allclose(simulated.sum(axis=-1), 1.0, atol=1e-5)
    assert cosine(art.graph.run(data)[0], simulated) >= 0.99


def dense_to_map(keras):
    keras.utils.set_random_seed(6)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    code = k.Dense(48, activation="relu")(k.Flatten()(k.Conv2D(4, 3, strides=4, padding="valid")(x)))
    y = k.Conv2D(8, 3, padding="same", activation="relu")(k.Reshape((4, 4, 3), name="unflatten")(code))
    return keras.Model(x, k.Dense(2)(k.GlobalAveragePooling2D()(y)))


def test_a_vector_reshaped_to_a_map_in_v4():
    art, data = refused_by_v3_converted_by_v4(dense_to_map, "'unflatten'.*reorders channels.*kmodel v4")
    assert any(n.name == "transpose" and tuple(n.body.perm) == (0, 3, 1, 2) for n in art.model.nodes)
    assert cosine(art.graph.run(data)[0], art.simulate(data)[0]) >= 0.99


def signed_padding(keras):
    keras.utils.set_random_seed(9)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.Conv2D(4, 1, name="signed")(x)                             # linear: a zero point inside its range
    y = k.MaxPooling2D(2)(k.ZeroPadding2D(2, name="zero_pad")(y))    # a pad the next conv cannot absorb
    y = k.Conv2D(4, 3, padding="valid", name="valid")(k.ZeroPadding2D(2)(y))   # folded: 1 on the KPU, 1 on the CPU
    return keras.Model(x, k.Dense(3)(k.GlobalAveragePooling2D()(y)))


def test_zero_padding_of_a_signed_tensor_in_v4():
    """v3's CPU padding gives code 0, which is real 0 only after a ReLU; v4's pad writes the zero point."""
    art, data = refused_by_v3_converted_by_v4(signed_padding, "'zero_pad'.*code 0")
    codes = [int(n.body.pad_value.storage[0]) for n in art.model.nodes if n.name == "pad"]
    assert len(codes) == 2 and all(code > 0 for code in codes)      # zero points, not code 0
    assert cosine(art.graph.run(data)[0], art.simulate(data)[0]) >= 0.99


def test_two_output_head_gives_both_outputs():
    art, data = convert_v4("detector_two_heads")
    assert len(art.model.outputs) == 2
    raw = art.run(art.to_pixels(data))
    assert [r.shape[1] for r in raw] == [int(np.prod(shape)) for shape in art.graph.output_shapes]


def test_v4_files_are_deterministic_and_saved_atomically(tmp_path):
    import emc
    from emc.frontends import load_model
    model = built("resnet_small")
    data, dataset_func = calibration_data(load_model(model), "resnet_small")
    paths = [tmp_path / "a.kmodel", tmp_path / "b.kmodel"]
    for path in paths:
        emc.save_kmodel(model, path, data, dataset_func=dataset_func, version=4)
    first = paths[0].read_bytes()
    assert first[:4] == b"LDMK" and first == paths[1].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.kmodel", "a.kmodel.emc.json", "b.kmodel",
                                                           "b.kmodel.emc.json"]      # no temporary files left


def test_run_kmodel_on_a_written_v4_file_equals_the_artefact(tmp_path):
    import emc
    art, data = convert_v4("unet_like")
    path = tmp_path / "unet.kmodel"
    art.save(path)
    pixels = art.to_pixels(data[:3])
    from_file = emc.run_kmodel(str(path), pixels)
    for a, b in zip(from_file, art.run(pixels)):
        np.testing.assert_array_equal(a, b)
    assert "K210 kmodel v4" in str(art.report)


def test_v4_still_lists_every_problem_before_writing(tmp_path):
    keras = pytest.importorskip("keras")
    import emc
    k = keras.layers
    x = keras.Input((8, 8, 3))
    y = k.Conv2D(4, 1)(x)
    rows = [k.Flatten()(k.Dense(3, name=f"rows_{n}")(k.Reshape((n, 256 // n))(y))) for n in (16, 32)]
    model = keras.Model(x, k.Dense(2)(k.Concatenate()(rows)))
    data = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    target = tmp_path / "bad.kmodel"
    with pytest.raises(emc.PlatformLimitError) as err:
        emc.save_kmodel(model, target, data, version=4)
    problems = err.value.problems
    assert len(problems) == 2 and all("flatten first" in p for p in problems)
    assert "'rows_16'" in problems[0] and "'rows_32'" in problems[1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", [3, 4])
def test_layers_over_the_kpu_channel_limit_are_split(version):
    """A dense layer on a map with 1100 outputs: over the KPU's 1024 channels, two KPU layers for channels 0-1023
    and 1024-1099; the dense head reading them becomes two partial KPU layers and a quantized sum."""
    keras = pytest.importorskip("keras")
    from emc.convert import convert
    keras.utils.set_random_seed(7)
    k = keras.layers
    x = keras.Input((8, 8, 3))
    y = k.Dense(1100, activation="relu", name="wide")(k.Conv2D(4, 1, activation="relu")(x))
    model = keras.Model(x, k.Dense(3)(k.GlobalAveragePooling2D()(y)))
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)
    art = convert(model, dataset=data, version=version)
    kpu = {r["layer"] for r in art.report.rows if r["unit"] == "KPU"}
    assert {"wide:0-1024", "wide:1024-1100"} <= kpu
    assert not any("runs on the CPU" in note for note in art.report.notes)
    assert cosine(art.graph.run(data)[0], art.simulate(data)[0]) >= 0.99


def squeeze_excite(keras):
    keras.utils.set_random_seed(2)
    k = keras.layers
    x = keras.Input((16, 16, 3))
    y = k.Conv2D(8, 3, padding="same", activation="relu")(x)
    gate = k.Dense(8, activation="sigmoid")(k.GlobalAveragePooling2D()(y))
    y = k.Multiply(name="excite")([y, k.Reshape((1, 1, 8))(gate)])
    y = k.Conv2D(4, 1, activation="relu")(y)
    return keras.Model(x, k.Dense(3)(k.GlobalAveragePooling2D()(y)))


def test_squeeze_excitation_broadcast_multiply_in_v4():
    art, data = refused_by_v3_converted_by_v4(squeeze_excite, "'excite'.*use kmodel v4")
    shapes = [(n.shape("in_a_shape"), n.shape("in_b_shape")) for n in art.model.nodes if n.name == "binary"]
    assert ((1, 8, 16, 16), (1, 8, 1, 1)) in shapes
    assert cosine(art.graph.run(data)[0], art.simulate(data)[0]) >= 0.99


@pytest.mark.parametrize("seed", range(20))
def test_quantized_add_fields_match_float_within_one_code(seed):
    """The quantized_binary fields, run through the runtime's integer arithmetic, against the float sum."""
    from emc.platforms.k210.v4.ops_common import mul_and_carry_shift, wrap32
    from emc.platforms.k210.lowering.quantize import Quant
    from emc.platforms.k210.v4.writer import quantized_add_v4
    rng = np.random.default_rng(seed)
    qa, qb = Quant(rng.uniform(1e-3, 0.5), rng.integers(0, 256)), Quant(rng.uniform(1e-3, 0.5), rng.integers(0, 256))
    qo = Quant(rng.uniform(1e-3, 1.0), rng.integers(0, 256))
    ca, cb = rng.choice([1.0, 0.5]), rng.choice([1.0, -1.0, 0.5])
    f = quantized_add_v4(qa, ca, qb, cb, qo)
    a, b = np.meshgrid(np.arange(256), np.arange(256))
    x = mul_and_carry_shift(a + f["input_a_offset"], f["input_a_mul"], f["input_a_shift"])
    y = mul_and_carry_shift(b + f["input_b_offset"], f["input_b_mul"], f["input_b_shift"])
    r = mul_and_carry_shift(wrap32(x + y), f["output_mul"], f["output_shift"])
    got = np.clip(wrap32(r + f["output_offset"]), 0, 255)
    real = ca * (a - qa.zero_point) * qa.scale + cb * (b - qb.zero_point) * qb.scale
    want = np.clip(np.round(real / qo.scale) + qo.zero_point, 0, 255)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("version", [3, 4])
def test_tf_same_stem_on_img_neg1_1_pads_with_real_zero(version):
    """img_neg1_1's zero point is 127.5, between two pixel codes: the TF-'same' stride-2 stem pads one copy of the
    input with 127 and one with 128, each with half the weights, so its last row and column (which read the
    padding) are as close to the float conv as the rest. Pixels near 127.5 keep the output range small, where a
    single pad code (half a pixel step off) shows as several output codes."""
    keras = pytest.importorskip("keras")
    from emc.convert import convert
    keras.utils.set_random_seed(9)
    x = keras.Input((16, 16, 3))
    model = keras.Model(x, keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x))
    pixels = np.random.default_rng(2).integers(115, 141, (8, 16, 16, 3))
    data = (pixels / 127.5 - 1.0).astype(np.float32)
    art = convert(model, dataset=data, dataset_func="img_neg1_1", version=version)
    assert not any("pixel steps off" in note for note in art.report.notes)
    reference, simulated = art.graph.run(data)[0], art.simulate(data)[0]
    step = (reference.max() - reference.min()) / 255
    assert np.abs(reference - simulated).max() <= 1.5 * step
