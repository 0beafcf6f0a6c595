"""Train CIFAR-10 classifiers for the K210: a TensorLayer CNN like Maix-EMC's example and a Keras CNN.

    python examples/cifar/cifar10_train.py [--framework tl|keras|both] [--epochs 30] [--out out/cifar]

The data comes from keras.datasets.cifar10, which downloads it once (170 MB, cached in ~/.keras/datasets).
Offline and without that cache the script stops with a message saying so. `--synthetic N` trains on N
random images instead: it checks the script end to end without the data (the models learn nothing).
Both models take img_0_1 input (pixel / 255), which is what cifar10_to_kmodel.py converts with.
Writes cifar10_tl.h5 (TensorLayer, Model.save with weights) and cifar10_keras.keras.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SEED = 0


def load_cifar10(synthetic=0):
    """(x_train, y_train, x_test, y_test): float32 NHWC in [0, 1] and int labels."""
    if synthetic:
        rng = np.random.default_rng(SEED)
        x = rng.random((synthetic, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, 10, synthetic)
        split = max(1, synthetic // 5)
        return x[split:], y[split:], x[:split], y[:split]
    import keras
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as err:                     # urllib / socket / OSError / broken archive: all mean "no data"
        raise SystemExit(f"cifar10_train: cannot get CIFAR-10 ({type(err).__name__}: {err}).\n"
                         f"keras.datasets.cifar10 downloads it from the internet once and caches it in "
                         f"~/.keras/datasets: run it once with a network connection. To check this script "
                         f"without the data, run it with --synthetic 256.")
    return (x_train.astype(np.float32) / 255.0, y_train.reshape(-1).astype(np.int64),
            x_test.astype(np.float32) / 255.0, y_test.reshape(-1).astype(np.int64))


# ---- TensorLayer: the network of Maix-EMC's example (conv-bn-relu-maxpool3x3s2 twice, dense 16, dense 10) ------
def tensorlayer_modules():
    if not hasattr(np, "float"):                 # TensorLayer 2.2.5 still uses np.float, gone in numpy 2
        np.float = float
    import tensorflow as tf
    import tensorlayer as tl
    return tf, tl


def tensorlayer_model():
    tf, tl = tensorlayer_modules()
    from tensorlayer.layers import BatchNorm, Conv2d, Dense, Flatten, Input, MaxPool2d
    ni = Input([None, 32, 32, 3], name="input")
    n = Conv2d(32, (3, 3), (1, 1), padding="SAME", name="conv1")(ni)
    n = BatchNorm(decay=0.99, act=tf.nn.relu, name="batch1")(n)
    n = MaxPool2d((3, 3), (2, 2), padding="SAME", name="pool1")(n)
    n = Conv2d(64, (3, 3), (1, 1), padding="SAME", name="conv2")(n)
    n = BatchNorm(decay=0.99, act=tf.nn.relu, name="batch2")(n)
    n = MaxPool2d((3, 3), (2, 2), padding="SAME", name="pool2")(n)
    n = Flatten(name="flatten")(n)
    n = Dense(16, act=tf.nn.relu, name="denserelu")(n)
    n = Dense(10, name="output")(n)
    return tl.models.Model(inputs=ni, outputs=n, name="cnn")


def augment(tf, images):
    """Random flips and small shifts: cheap augmentation that keeps the img_0_1 input range."""
    images = tf.image.random_flip_left_right(images)
    padded = tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    return tf.image.random_crop(padded, tf.shape(images))


def train_tensorlayer(data, epochs, batch_size, out):
    tf, tl = tensorlayer_modules()
    tf.random.set_seed(SEED)
    x_train, y_train, x_test, y_test = data
    net = tensorlayer_model()
    optimizer = tf.optimizers.Adam(1e-3)
    rng = np.random.default_rng(SEED)
    for epoch in range(epochs):
        start, losses = time.time(), []
        net.train()
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = augment(tf, tf.constant(x_train[idx])), tf.constant(y_train[idx])
            with tf.GradientTape() as tape:
                loss = tl.cost.cross_entropy(net(xb), yb, name="train_loss")
            grads = tape.gradient(loss, net.trainable_weights)
            optimizer.apply_gradients(zip(grads, net.trainable_weights))
            losses.append(float(loss))
        net.eval()
        accuracy = evaluate_logits(lambda xb: net(tf.constant(xb)).numpy(), x_test, y_test, batch_size)
        print(f"tensorlayer epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, test accuracy {accuracy:.4f} "
              f"({time.time() - start:.0f} s)")
    path = os.path.join(out, "cifar10_tl.h5")
    net.save(path, save_weights=True)
    return path


# ---- Keras: a K210-friendly CNN (3x3 convs, 2x2 pools, global average pool) -------------------------------------
def keras_model():
    import keras
    from keras import layers

    def block(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        return layers.MaxPooling2D(2)(x)

    inputs = keras.Input((32, 32, 3))
    x = block(inputs, 32)
    x = block(x, 64)
    x = block(x, 128)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="cifar10_keras")


def train_keras(data, epochs, batch_size, out):
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(SEED)
    x_train, y_train, x_test, y_test = data
    model = keras_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    batches = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(10000, seed=SEED)
               .batch(batch_size).map(lambda x, y: (augment(tf, x), y)))
    model.fit(batches, epochs=epochs, validation_data=(x_test, y_test), shuffle=False, verbose=2)
    path = os.path.join(out, "cifar10_keras.keras")
    model.save(path)
    return path


def evaluate_logits(predict, x, y, batch_size):
    hits = 0
    for i in range(0, len(x), batch_size):
        hits += int(np.sum(np.argmax(predict(x[i:i + batch_size]), axis=1) == y[i:i + batch_size]))
    return hits / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("tl", "keras", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=os.path.join("out", "cifar"), help="output folder (default out/cifar)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="train on N random images (checks the script offline; learns nothing)")
    args = parser.parse_args(argv)
    data = load_cifar10(args.synthetic)
    os.makedirs(args.out, exist_ok=True)
    written = []
    if args.framework in ("tl", "both"):
        written.append(train_tensorlayer(data, args.epochs, args.batch_size, args.out))
    if args.framework in ("keras", "both"):
        written.append(train_keras(data, args.epochs, args.batch_size, args.out))
    for path in written:
        print(f"wrote {path}; next: python examples/cifar/cifar10_to_kmodel.py {path} --dataset IMAGES_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
