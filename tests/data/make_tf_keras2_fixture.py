"""Writes tfkeras2_mini.h5 and its outputs with real tf.keras 2 (pip install tf-keras): a MobileNetV2-style
net in the 2020-era layout (Conv1_pad asymmetric padding, a nested Sequential and a nested Functional model,
'dtype' inside every initializer config as tf.keras 2.2 wrote it, ':0' weight names). Run once; the files are
committed so that tests need neither tf_keras nor TensorFlow to check emc's reader against tf.keras' outputs."""
import json
import pathlib

import h5py
import numpy as np
import tf_keras as keras

HERE = pathlib.Path(__file__).resolve().parent
k = keras.layers


def build():
    keras.utils.set_random_seed(42)
    inp = keras.Input((32, 32, 3), name="input_1")
    x = k.ZeroPadding2D(((0, 1), (0, 1)), name="Conv1_pad")(inp)
    x = k.Conv2D(8, 3, strides=2, padding="valid", use_bias=False, name="Conv1")(x)
    x = k.BatchNormalization(epsilon=1e-3, momentum=0.999, name="bn_Conv1")(x)
    x = k.ReLU(6.0, name="Conv1_relu")(x)
    body = keras.Sequential([k.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw"),
                             k.BatchNormalization(name="dw_bn"), k.ReLU(6.0, name="dw_relu"),
                             k.Conv2D(8, 1, use_bias=False, name="project"), k.BatchNormalization(name="project_bn")],
                            name="block_1")
    y = body(x)
    x = k.Add(name="block_1_add")([x, y])
    sub_in = keras.Input((16, 16, 8), name="sub_in")
    s = k.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep")(sub_in)
    s2 = k.Conv2D(12, 1, activation="sigmoid", name="gate")(sub_in)
    sub = keras.Model(sub_in, [s, s2], name="block_2")
    a, b = sub(x)
    x = k.Multiply(name="gated")([a, b])
    x = k.MaxPooling2D(2, name="pool")(x)
    x = k.LeakyReLU(alpha=0.1, name="leaky")(x)
    x = k.GlobalAveragePooling2D(name="gap")(x)
    x = k.Dropout(0.2, name="drop")(x)
    model = keras.Model(inp, k.Dense(5, activation="softmax", name="Logits")(x), name="mobilenetv2_mini")
    rng = np.random.default_rng(0)
    for layer in [l for m in (model, body, sub) for l in m.layers]:
        if isinstance(layer, k.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


def add_initializer_dtypes(path):
    """tf.keras 2.2 wrote 'dtype' into initializer configs, which Keras 3 refuses; emc must not mind."""
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key.endswith("_initializer") and isinstance(value, dict) and "config" in value:
                        value["config"]["dtype"] = "float32"
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(config)
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")


if __name__ == "__main__":
    model = build()
    x = np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    path = HERE / "tfkeras2_mini.h5"
    model.save(path, include_optimizer=False)
    add_initializer_dtypes(path)
    np.savez(HERE / "tfkeras2_mini_outputs.npz", x=x, y=np.asarray(model(x, training=False)),
             tf_keras_version=keras.__version__)
    print(path, path.stat().st_size, "bytes; tf.keras", keras.__version__)
