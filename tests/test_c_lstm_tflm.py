"""emc's int8 LSTM next to TF Lite Micro's (issue 11): the same Keras LSTM quantised by TF's converter into an int8
UNIDIRECTIONAL_SEQUENCE_LSTM (run by the tflite-micro package's reference kernels) and by emc, both compared with
Keras float on the same sequences.

The two cannot agree byte for byte, by design of their quantisation: TF Lite Micro feeds the hidden state back as
int8 with the output's scale and keeps the cell state in int16 at a power-of-two scale from the calibrated range,
with one weight scale per gate matrix; emc keeps h in int16 (Q0.15), computes gates in Q3.12 and quantises weights
per gate row. So this checks the numbers instead: emc must be at least as close to float as TF Lite Micro.
Keras 3 LSTMs convert to a WHILE loop whose int8 calibration crashes TF's converter (tensorflow#75140), so TF gets
the same weights in a tf_keras LSTM, which converts to the fused op.
"""
import numpy as np
import pytest

import emc

tf = pytest.importorskip("tensorflow", reason="TF's converter quantises the reference LSTM")
tf_keras = pytest.importorskip("tf_keras", reason="tf_keras (Keras 2) builds the LSTM TF fuses into one op")
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="the tflite-micro package (pip install tflite-micro) runs TF's int8 kernels")
keras = pytest.importorskip("keras")

STEPS, FEATURES, UNITS, OUTPUTS = 12, 4, 16, 3


def sequences(n, seed):
    """Sine waves of random frequency, phase and amplitude per feature, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, STEPS)[None, :, None]
    waves = np.sin(2 * np.pi * (t * rng.uniform(0.5, 3, (n, 1, FEATURES)) + rng.uniform(0, 1, (n, 1, FEATURES))))
    return (waves * rng.uniform(0.3, 1, (n, 1, FEATURES))).astype(np.float32)


def models():
    """The same LSTM(return_sequences) + Dense in Keras 3 (for emc) and in tf_keras with batch 1 (for TF)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((STEPS, FEATURES))
    ours = keras.Model(inp, keras.layers.Dense(OUTPUTS)(keras.layers.LSTM(UNITS, return_sequences=True)(inp)))
    tinp = tf_keras.Input((STEPS, FEATURES), batch_size=1)
    theirs = tf_keras.Model(tinp, tf_keras.layers.Dense(OUTPUTS)(tf_keras.layers.LSTM(UNITS, return_sequences=True)(tinp)))
    theirs.set_weights(ours.get_weights())          # i, f, c, o gate order and layouts are the same in both
    return ours, theirs


def tflm_outputs(model, calibration, x):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    ops = [d["op_name"] for d in interpreter._get_ops_details()]
    cell = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int16]
    (in_scale, in_zp), (out_scale, out_zp) = (interpreter.get_input_details()[0]["quantization"],
                                              interpreter.get_output_details()[0]["quantization"])
    micro = runtime.Interpreter.from_bytes(flatbuffer)
    outs = []
    for sample in x:
        micro.set_input(np.clip(np.round(sample / in_scale) + in_zp, -128, 127).astype(np.int8)[None], 0)
        micro.invoke()
        outs.append(micro.get_output(0)[0])
    return ops, cell, (np.asarray(outs, np.float64) - out_zp) * out_scale


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_emc_lstm_is_as_close_to_keras_as_tflite_micros_int8_lstm():
    ours, theirs = models()
    calibration, x = sequences(64, 0), sequences(16, 1)
    reference = ours.predict(x, verbose=0)
    np.testing.assert_allclose(theirs.predict(x, batch_size=1, verbose=0), reference, atol=1e-5)
    ops, cell_state, tflm = tflm_outputs(theirs, calibration, x)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops and cell_state, "TF's int8 LSTM: one fused op, int16 cell state"
    art = emc.convert(ours, platform="c", dataset=calibration, dataset_func="img_neg1_1", name="lstm")
    c_out = art.predict(x)[0]
    c_cos, tflm_cos = cosine(c_out, reference), cosine(tflm, reference)
    print(f"LSTM({UNITS}) over {STEPS} steps, cosine with Keras float: emc C {c_cos:.5f}, TF Lite Micro {tflm_cos:.5f}; "
          f"mean abs error emc {np.abs(c_out - reference).mean():.4f}, TFLM {np.abs(tflm - reference).mean():.4f}")
    assert tflm_cos > 0.95                          # TF's kernels did run the model
    assert c_cos >= 0.99 and c_cos >= tflm_cos - 0.002
