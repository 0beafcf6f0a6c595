"""TF Lite Micro conformance: zoo models quantised by TF's converter and by emc from the same representative data.

Where every int8 activation tensor of emc's program has the quantisation of one of TF's (scale within 1e-6
relative, equal zero point) and vice versa, emc's C outputs must equal TF Lite Micro's reference kernels byte for
byte on the same int8 inputs. Models whose parameters differ (emc keeps a pre-activation tensor that TF fuses
away, TF fixes tanh's output scale to 1/128 ...) are reported with their share of equal bytes, not asserted.
"""
import numpy as np
import pytest

import emc
from emc.calibrate import calibrate
from emc.passes import optimize
from emc.platforms import c as cplat

tf = pytest.importorskip("tensorflow", reason="TF's converter (emc[keras]) quantises the reference models")
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="the tflite-micro package (pip install tflite-micro) runs TF's int8 kernels")
from zoo import KERAS_ZOO  # noqa: E402

# lenet and the cifar net coincide; resnet_small (ReLU after Add) and kws_conv1d_pools (average pools) do not
MODELS = ("lenet", "maixemc_cifar", "resnet_small", "kws_conv1d_pools")


def tf_int8_flatbuffer(model, data):
    """TF's full-integer quantisation of a Keras model (int8 input and output) with this representative data."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def activation_params(flatbuffer):
    """(scale, zero point) of every per-tensor int8 tensor of a .tflite model: the activations (per-channel
    weights report scale 0 in this field, biases are int32)."""
    details = tf.lite.Interpreter(model_content=flatbuffer).get_tensor_details()
    return {(float(d["quantization"][0]), int(d["quantization"][1])) for d in details
            if d["dtype"] == np.int8 and d["quantization"][0] > 0}


def coincide(ours, theirs):
    def found(p, pool):
        return any(abs(p[0] - q[0]) <= 1e-6 * q[0] and p[1] == q[1] for q in pool)
    return all(found(p, theirs) for p in ours) and all(found(q, ours) for q in theirs)


@pytest.mark.parametrize("name", MODELS)
def test_emc_c_equals_tflm_where_the_quantisation_coincides(name):
    model = KERAS_ZOO[name]()
    data = np.random.default_rng(0).uniform(0, 1, (64,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    flatbuffer = tf_int8_flatbuffer(model, data)
    graph = optimize(emc.load_model(model))
    art = cplat.convert(graph, calibrate(graph, [data]), name=name)
    ours = {t.quant for t in art.program.tensors.values()}
    same = coincide(ours, activation_params(flatbuffer))
    q = art.quantize_inputs(data[:16])[0]
    tflm = runtime.Interpreter.from_bytes(flatbuffer, arena_size=1 << 22)
    theirs = []
    for sample in q:
        tflm.set_input(sample[None], 0)
        tflm.invoke()
        theirs.append(np.array(tflm.get_output(0)[0]))
    share = float(np.mean(np.array(theirs) == art.predict_int8([q])[0]))
    print(f"{name}: quantisation coincides with TF's: {same}; bytes equal to TF Lite Micro: {share:.3f}")
    if same:
        assert share == 1.0, f"{name}: emc's C differs from TF Lite Micro although the quantisation coincides"
    if name in ("lenet", "maixemc_cifar"):
        assert same, f"{name}: emc's quantisation no longer coincides with TF's"
