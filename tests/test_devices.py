"""Data-parallel training on two devices computes what one device computes.

The CPU is split into two logical devices, which must happen before TensorFlow
starts, so each case runs in a fresh Python process."""

import json
import subprocess
import sys
import textwrap

_TRAIN = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from convmixer_lib.fast import accelerate
    from convmixer_lib.fast.layers import GeluBatchNorm
    from convmixer_lib.model import build_convmixer
    from convmixer_lib.training import distribution

    devices = int(sys.argv[1])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128, 32, 32, 3)).astype("uint8")
    labels = rng.integers(0, 10, (128, 1))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    strategy = distribution(devices)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = accelerate(build_convmixer(
            filters=8, depth=1, kernel_size=3, patch_size=4,
            synchronized_batchnorm=strategy.num_replicas_in_sync > 1))
        model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=1e-4),
                      loss="sparse_categorical_crossentropy")
        history = model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "fused": any(isinstance(layer, GeluBatchNorm) for layer in model.layers),
        "loss": history.history["loss"],
        "weights": [w.tolist() for w in model.get_weights()],
    }))
""")


def _train(devices):
    result = subprocess.run([sys.executable, "-c", _TRAIN, str(devices)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_replicas_train_like_one_device():
    import numpy as np

    one, two = _train(1), _train(2)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # accelerate leaves the model as it is on 2: plain, synchronized BatchNorm
    assert one["fused"] and not two["fused"]
    # 8 steps of AdamW at 1e-2 on the same global batches: float32 sums in
    # another order, so agreement to about 1e-4, not bit for bit.
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=2e-4)


def test_more_devices_than_visible_are_refused():
    import pytest

    from convmixer_lib.training import distribution

    with pytest.raises(ValueError, match="asked for 64 devices, TensorFlow sees"):
        distribution(64)


def test_the_machine_is_read_from_the_fields_it_names(monkeypatch):
    from convmixer_lib import machine

    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
            "cpu family model name hint\t: not this one\n"
            "model name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse2 avx2 avx512bw\n")
    monkeypatch.setattr(machine, "_cpuinfo", lambda: text)
    assert machine.processor_name() == "Example CPU @ 2.0GHz"
    assert machine.vector_extensions() == "AVX2"  # avx512bw alone is not AVX-512 F
    monkeypatch.setattr(machine, "_cpuinfo", lambda: text.replace("avx512bw", "avx512f"))
    assert machine.vector_extensions() == "AVX-512"
