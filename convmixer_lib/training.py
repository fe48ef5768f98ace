"""Training (`run_experiment`: the example's recipe and the faster ones of
`recipes.py`) and evaluation (`evaluate`).

Everything a run writes goes into a run directory; `records.py` and `rundir.py`
keep it whole.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from .architectures import model_config
from .checks import (
    SEED_LIMIT,
    check_bn_images,
    check_int,
    check_number,
    check_positive_int,
    check_warmup,
)
from .choices import SCHEDULES
from .data import check_images
from .explain import predict_with_flips
from .records import BACKUP, BEST_WEIGHTS, METRICS, write_json
from .rundir import RunLog, load_plain_weights, segments, training_run


def evaluate(model, images, labels, batch_size=128, flips=False):
    """Evaluate `model` on uint8 `images` (n, 32, 32, 3) and `labels` (n,) or (n, 1).

    With `flips=True` each image's class probabilities are averaged with its
    mirror image's (horizontal-flip test-time augmentation).

    Returns:
        `score(probabilities, labels)` of the model's class probabilities.
    """
    check_images(images, labels, image_size=model.input_shape[1],
                 num_classes=model.output_shape[-1])
    check_positive_int("batch_size", batch_size)
    if flips:
        probabilities = predict_with_flips(model, images, batch_size)
    else:
        probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    return score(probabilities, labels)


def evaluate_plain_and_flips(model, images, labels, batch_size=128):
    """`evaluate` with `flips=False` and with `flips=True`, from one prediction
    of `images` and one of their mirror images (not three).

    Returns:
        `(plain, flips)`: the two `score` dicts.
    """
    check_images(images, labels, image_size=model.input_shape[1],
                 num_classes=model.output_shape[-1])
    check_positive_int("batch_size", batch_size)
    plain = model.predict(images, batch_size=batch_size, verbose=0)
    with_flips = predict_with_flips(model, images, batch_size, plain=plain)
    return score(plain, labels), score(with_flips, labels)


def score(probabilities, labels):
    """Score class `probabilities` (n, classes) against `labels` (n,) or (n, 1).

    Returns:
        A dict: `loss` (mean sparse categorical cross-entropy, nats), `accuracy`
        (fraction correct), `per_class_accuracy` (list, one fraction per class),
        `confusion_matrix` (list of lists, rows true class, columns predicted
        class, counts), `predictions` (uint8 array (n,) of predicted classes)
        and `confidences` (float32 array (n,), the probability of each
        predicted class).
    """
    labels = np.asarray(labels).reshape(-1)
    num_classes = probabilities.shape[1]
    loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "loss": float(np.mean(keras.ops.convert_to_numpy(loss))),
        "accuracy": float(np.mean(predicted == labels)),
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": confusion.tolist(),
        "predictions": predicted.astype(np.uint8),
        "confidences": probabilities.max(axis=1).astype(np.float32),
    }


def most_confident_mistakes(labels, predictions, confidences, count=16):
    """Indices of the `count` wrong predictions made with the highest confidence.

    Args:
        labels, predictions: class indices, arrays `(n,)` (labels may be `(n, 1)`).
        confidences: probability of each predicted class, array `(n,)`.

    Returns:
        An int array of at most `count` indices into the `n` images, most
        confident first.
    """
    check_int("count", count, 0)
    labels = np.asarray(labels).reshape(-1)
    predictions, confidences = np.asarray(predictions), np.asarray(confidences)
    if not labels.shape == predictions.shape == confidences.shape:
        raise ValueError(
            "`labels`, `predictions` and `confidences` must have one entry per image, "
            f"got shapes {labels.shape}, {predictions.shape}, {confidences.shape}."
        )
    wrong = np.flatnonzero(predictions != labels)
    return wrong[np.argsort(-confidences[wrong], kind="stable")][:count]


def distribution(devices=None):
    """A `tf.distribute` strategy that trains on `devices` devices, data-parallel.

    Build the model and call `run_experiment` inside `strategy.scope()`. Each
    batch of the datasets (the global batch) is split across the replicas;
    the learning rate and its schedule stay as they are, and BatchNorm
    synchronizes its statistics across replicas (see `build_convmixer`).

    Args:
        devices: how many; None: every GPU when TensorFlow sees more than one,
            else one device (always one on the JAX and PyTorch backends).
            Several devices are GPUs where TensorFlow sees any, else logical
            CPU devices (as tests configure them).

    Returns:
        `tf.distribute.MirroredStrategy` over the devices, or TensorFlow's
        default strategy for one device.

    Raises:
        ValueError: if fewer than `devices` devices are visible, or several
            are asked for on another Keras backend than TensorFlow.
    """
    devices = check_devices(devices)
    if devices == 1:  # the default strategy; on JAX and PyTorch its scope changes nothing
        return tf.distribute.get_strategy()
    available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in available[:devices]])


def check_devices(devices=None):
    """How many devices `distribution(devices)` trains on (`devices` as there),
    checked without building anything, so that a command can refuse the
    count before it reads any data.

    Raises:
        ValueError: if fewer than `devices` devices are visible, or several
            are asked for on another Keras backend than TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        if devices not in (None, 1):
            check_positive_int("devices", devices)
            raise ValueError(
                f"`devices`={devices}: training on several devices uses tf.distribute, "
                "which needs the TensorFlow backend; KERAS_BACKEND is "
                f"{keras.backend.backend()!r}.")
        return 1
    gpus = tf.config.list_logical_devices("GPU")
    available = gpus or tf.config.list_logical_devices("CPU")
    if devices is None:
        devices = len(gpus) if len(gpus) > 1 else 1
    check_positive_int("devices", devices)
    if devices > len(available):
        kind = "GPUs" if gpus else "CPU devices (and no GPU)"
        raise ValueError(f"asked for {devices} devices, TensorFlow sees {len(available)} {kind}.")
    return devices


def learning_rate_schedule(learning_rate, schedule, total_steps, warmup_steps=0):
    """The learning rate of `run_experiment`: a float or a Keras schedule.

    Args:
        learning_rate: the initial (for "constant": the only) learning rate;
            with a warm-up, the peak reached at its end.
        schedule: "constant", or "cosine": decay to 0 along a half cosine over
            the steps after the warm-up (half the peak rate at their midpoint).
        total_steps: the run's optimizer steps, epochs × batches per epoch.
        warmup_steps: first steps in which the rate rises linearly from 0 to
            `learning_rate` ("cosine" only), as Keras' `CosineDecay` does.
    """
    check_number("learning_rate", learning_rate, 0, low_open=True)
    check_int("total_steps", total_steps, 0)
    check_int("warmup_steps", warmup_steps, 0)
    if schedule == "constant":
        if warmup_steps:
            raise ValueError("A warm-up needs `schedule='cosine'`, got 'constant'.")
        return learning_rate
    if schedule == "cosine":
        if total_steps < 1:
            raise ValueError(
                "`schedule='cosine'` needs a training dataset of known, finite "
                f"length, got {total_steps} steps."
            )
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"`warmup_steps` must be between 0 and {total_steps - 1} (the run's "
                f"steps less one), got {warmup_steps}."
            )
        return keras.optimizers.schedules.CosineDecay(
            0.0, total_steps - warmup_steps,
            warmup_target=learning_rate, warmup_steps=warmup_steps,
        )
    raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")


def batchnorm_layers(model):
    """The layers of `model` that keep BatchNorm statistics: each has
    `moving_mean`, `moving_variance` (variables of shape `(channels,)`) and
    `momentum` (Keras' `BatchNormalization` and the library's `GeluBatchNorm`)."""
    return [layer for layer in model.layers
            if all(hasattr(layer, name) for name in ("moving_mean", "moving_variance",
                                                      "momentum"))]


def batchnorm_statistics(model):
    """Every BatchNorm layer's moving mean and variance, as a list of NumPy arrays."""
    return [keras.ops.convert_to_numpy(variable) for layer in batchnorm_layers(model)
            for variable in (layer.moving_mean, layer.moving_variance)]


def set_batchnorm_statistics(model, statistics):
    """Put `statistics` (from `batchnorm_statistics`) back into `model`."""
    variables = [variable for layer in batchnorm_layers(model)
                 for variable in (layer.moving_mean, layer.moving_variance)]
    for variable, value in zip(variables, statistics, strict=True):
        variable.assign(value)


def reestimate_batchnorm(model, batches, images=None):
    """Recompute every BatchNorm layer's statistics for the weights in `model`.

    Each layer's moving mean and variance become the average, over `batches`,
    of the mean and (biased) variance of its input in each batch, computed in
    a training-mode forward pass: what `torch.optim.swa_utils.update_bn`
    does for averaged weights. No weight is trained.

    Args:
        model: a model with BatchNorm layers (see `batchnorm_layers`).
        batches: an iterable of `(images, targets)` batches, images
            `(batch, height, width, 3)` as the model takes them.
        images: stop once at least this many images were used (None: all
            of `batches`).

    Returns:
        The number of images the statistics were computed on.

    Raises:
        ValueError: if `batches` yields no batch.
    """
    if images is not None:
        check_positive_int("images", images)
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    per_batch, used = [], 0
    try:
        for layer in layers:  # the moving statistics become each batch's own
            layer.momentum = 0.0
        for x, _ in batches:
            model(x, training=True)
            per_batch.append(batchnorm_statistics(model))
            used += len(x)
            if images is not None and used >= images:
                break
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not per_batch:
        raise ValueError("`batches` yielded no batch to re-estimate BatchNorm statistics on.")
    set_batchnorm_statistics(model, [np.mean(values, axis=0) for values in zip(*per_batch)])
    return used


class TrainingDiverged(FloatingPointError):
    """Training stopped because a loss, the weights, the BatchNorm statistics or
    a validation result became NaN or infinite; `what` says which, and when."""

    def __init__(self, message, what=None):
        super().__init__(message)
        self.what = what or message


class StopOnDivergence(keras.callbacks.Callback):
    """Stop training at the first step whose loss is not finite.

    Raises `TrainingDiverged` from that step, before the epoch ends, so the
    diverged epoch is neither recorded nor backed up: the run directory keeps
    its finished epochs and is never recorded as finished. (Keras'
    `TerminateOnNaN` lets the epoch end, which would record it.) At the end of
    an epoch it also checks the weights and the non-trainable weights (in the
    library's models, the BatchNorm statistics), which the epoch's last step
    may have made non-finite after computing a finite loss; place it first among the callbacks. `logs_check()` is a callback
    for just before the one that records the epoch: it stops the run if any
    number the epoch would record (validation losses and accuracies of the
    raw and averaged weights) is not finite.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = os.fspath(run_dir)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._stop(f"the loss became {float(loss)} at epoch {self.epoch + 1}, "
                       f"step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        for kind, weights in (("weights", self.model.trainable_weights),
                              ("BatchNorm statistics", self.model.non_trainable_weights)):
            if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in weights):
                self._stop(f"the {kind} became non-finite in the last step of epoch "
                           f"{epoch + 1}")

    def logs_check(self):
        """The callback that stops the run before a non-finite number is recorded."""
        stop = self

        class NonFiniteLogs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                bad = sorted(key for key, value in (logs or {}).items()
                             if not np.isfinite(value))
                if bad:
                    stop._stop(f"{', '.join(bad)} became "
                               f"{', '.join(str(float(logs[key])) for key in bad)} "
                               f"at the end of epoch {epoch + 1}")

        return NonFiniteLogs()

    def _stop(self, what):
        finished = f"{self.epoch} finished epoch" + ("" if self.epoch == 1 else "s")
        raise TrainingDiverged(
            f"training diverged: {what}; {self.run_dir!r} keeps its {finished} and "
            "resumes from them with the same settings, or train anew with a lower "
            "learning rate (--overwrite, overwrite=True).", what)


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Validate and keep the optimizer's averaged weights (`use_ema=True`).

    Keras' `SwapEMAWeights(swap_on_epoch=True)` puts the exponential moving
    average of the weights into the model for validation and for the
    callbacks that follow it at the end of each epoch (`RunLog` keeps them as
    the best weights). Keras averages the trainable weights only: the
    BatchNorm statistics in the model stay those of the raw weights. With
    `bn_batches`, this callback re-estimates them for the averaged weights
    (`reestimate_batchnorm`) before they are validated, keeps them with the
    averaged weights, and gives the raw weights their own back while they
    train. `raw_weights_back()`, the callback placed after the one that keeps
    the averaged weights and before `BackupAndRestore`, puts the raw weights
    and their statistics back into the model, so that the backup holds what
    trains on and a resumed run goes on from it.

    Args:
        val_dataset: the validation batches, targets one-hot.
        bn_batches: training batches to re-estimate the statistics on (None:
            no re-estimate), of which the first `bn_images` images are used.

    Each epoch's logs gain `raw_val_accuracy` and `raw_val_loss` (the raw
    weights), and with `bn_batches` also `stale_bn_val_accuracy` and
    `stale_bn_val_loss` (the averaged weights with the raw weights'
    statistics, as without the re-estimate) and `bn_seconds` (the time the
    re-estimate took).

    The re-estimate's batches come from the training dataset, so each one
    starts a new pass over it and moves its shuffle on: a run with
    `bn_batches` sees its images in another order than one without.
    """

    def __init__(self, val_dataset, bn_batches=None, bn_images=None):
        super().__init__(swap_on_epoch=True)
        self.val_dataset = val_dataset
        self.bn_batches, self.bn_images = bn_batches, bn_images
        self._raw_statistics = self._averaged_statistics = self._stale = None

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._restore_raw_statistics()

    def on_test_begin(self, logs=None):  # fit's validation
        super().on_test_begin(logs)  # the averaged weights are in the model now
        if self.bn_batches is not None:
            self._raw_statistics = batchnorm_statistics(self.model)
            self._stale = self._validate()  # with the raw weights' statistics
            start = time.perf_counter()
            reestimate_batchnorm(self.model, self.bn_batches, self.bn_images)
            self._bn_seconds = time.perf_counter() - start
            self._averaged_statistics = batchnorm_statistics(self.model)

    def on_test_end(self, logs=None):
        super().on_test_end(logs)
        self._restore_raw_statistics()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the raw weights are in the model now
            logs["raw_val_loss"], logs["raw_val_accuracy"] = self._validate()
        super().on_epoch_end(epoch, logs)  # the averaged weights are in the model now
        if self._averaged_statistics is not None:
            if logs is not None:
                logs["stale_bn_val_loss"], logs["stale_bn_val_accuracy"] = self._stale
                logs["bn_seconds"] = self._bn_seconds
            set_batchnorm_statistics(self.model, self._averaged_statistics)

    def raw_weights_back(self):
        """A callback that, at the end of each epoch but the last, puts the raw
        weights and their BatchNorm statistics back into the model (Keras'
        `SwapEMAWeights.on_test_end` swaps them back as after a validation)."""
        averaged = self

        class RawWeightsBack(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 < self.params["epochs"]:
                    averaged.on_test_end()

        return RawWeightsBack()

    def _validate(self):
        """(loss, accuracy) of the model as it is, on the validation batches.
        Never called after `super().on_epoch_end` of the last epoch: on JAX,
        Keras then gives the averaged weights' variables the model's arrays,
        which an evaluation would free."""
        results = self.model.evaluate(self.val_dataset, verbose=0, return_dict=True)
        return results["loss"], results["accuracy"]

    def _restore_raw_statistics(self):
        if self._raw_statistics is not None:
            set_batchnorm_statistics(self.model, self._raw_statistics)


def _one_hot(dataset, num_classes):
    """(images, class indices) batches as (images, one-hot float32 targets)."""
    return dataset.map(
        lambda x, y: (x, tf.one_hot(tf.reshape(tf.cast(y, tf.int32), [-1]), num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _test_record(model, val_dataset, test_data, history, run_dir, settings, details):
    """metrics.json: the best epoch's test results and how they were obtained.

    Test accuracy is measured on the images alone (`test_accuracy`) and with
    horizontal-flip test-time augmentation (`test_accuracy_flips`); validation
    accuracy with flips is measured too, so the choice can be made on it.
    Without `test_data` the test keys are left out.
    """
    val_images, val_labels = (np.concatenate(arrays) for arrays in
                              zip(*val_dataset.as_numpy_iterator()))
    tested = {}
    if test_data is not None:
        results, with_flips = evaluate_plain_and_flips(model, *test_data)
        tested = {
            "test_loss": results["loss"],
            "test_accuracy": results["accuracy"],
            "test_accuracy_flips": with_flips["accuracy"],
            "per_class_accuracy": results["per_class_accuracy"],
            "confusion_matrix": results["confusion_matrix"],
        }
    best = max(history, key=lambda h: h["val_accuracy"])
    run_segments = segments(run_dir, history)
    return {
        **tested,
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "best_val_accuracy_flips": evaluate(model, val_images, val_labels, flips=True)["accuracy"],
        "seconds_per_epoch": [h["seconds"] for h in history],
        **settings,
        "environment": run_segments[-1]["environment"],
        "segments": run_segments,
        **(details or {}),
    }


def run_experiment(
    model,
    train_dataset,
    val_dataset,
    test_data,
    run_dir,
    epochs=10,
    learning_rate=1e-3,
    weight_decay=1e-4,
    schedule="constant",
    warmup=0.0,
    label_smoothing=0.0,
    ema=0.0,
    bn_images=0,
    seed=None,
    settings=None,
    details=None,
    overwrite=False,
    callbacks=(),
    verbose="auto",
):
    """Train, keep the best epoch, test it once.

    Compiles `model` with AdamW and categorical cross-entropy, fits it for
    `epochs` epochs on `train_dataset`, validating on `val_dataset` after
    each, restores the weights of the epoch with the best validation accuracy
    and evaluates them on `test_data`. If `run_dir` holds an unfinished run
    with the same settings, training resumes after its last finished epoch.
    Called inside `distribution(N).scope()` (with the model built there too),
    it trains on N devices; the count is recorded and part of the settings.
    The defaults are the example's recipe; `choices.RECIPES` holds faster ones.

    Args:
        model: an uncompiled model, e.g. from `build_convmixer`.
        train_dataset, val_dataset: batched datasets of (images, class indices).
        test_data: `(images, labels)` arrays, used once, at the end; None
            for a run that is only validated (e.g. to choose a setting).
        run_dir: directory for everything the run writes; created if missing.
        epochs: total epochs, counting those of an interrupted run.
        learning_rate, weight_decay: AdamW's settings (the example: 1e-3, 1e-4);
            with a warm-up, `learning_rate` is the peak.
        schedule: "constant" keeps `learning_rate` throughout, as the example
            does; "cosine" decays it to 0 along a half cosine over all
            `epochs × len(train_dataset)` steps, so the last epochs settle.
        warmup: fraction of the steps (0 to 1) in which the learning rate rises
            linearly from 0 before the cosine decay (`learning_rate_schedule`).
        label_smoothing: the cross-entropy's target is `1 - label_smoothing`
            on the true class plus `label_smoothing / classes` on every class.
        ema: 0 (none), or the momentum of an exponential moving average of the
            weights kept by the optimizer (`use_ema`), e.g. 0.99: the average is
            validated, kept and tested; `raw_val_accuracy` records the raw
            weights' validation accuracy beside it.
        bn_images: with `ema`, re-estimate the BatchNorm statistics of the
            averaged weights on this many augmented training images before
            each validation, and keep them with those weights
            (`AveragedWeights`); 0: keep the raw weights' statistics, as
            Keras does.
        seed: recorded, and seeds Keras' global random generators before
            training (`keras.utils.set_random_seed`). The model's initial
            weights and the datasets' order and augmentation were drawn when
            they were built: seed those too (`train_recipe` does).
        settings: more settings that shape the result (e.g. the number of
            training images, the batch size): recorded in `metrics.json` and,
            with the model and the arguments above, compared when resuming.
        details: facts recorded without comparison (e.g. the command).
        overwrite: discard what `run_dir` holds, finished or not, instead of
            refusing a finished run or resuming an unfinished one.
        callbacks: more Keras callbacks for `fit`.
        verbose: Keras' progress output for `fit` (bars by default).

    Returns:
        `(history, metrics)`: the list of per-epoch records (`history.json`) and
        the dict written to `metrics.json`.

    Raises:
        ValueError: if `run_dir` holds a finished run (without `overwrite`) or
            an unfinished one with other settings; nothing is written then.
        BlockingIOError: if another process is training `run_dir`.
        TrainingDiverged: at the first step whose loss is not finite, or at
            the end of an epoch whose weights, BatchNorm statistics or
            validation results are not; the epochs finished before it stay
            recorded (`StopOnDivergence`).
    """
    check_positive_int("epochs", epochs)
    check_number("weight_decay", weight_decay, 0)
    check_warmup(warmup, schedule)
    check_number("label_smoothing", label_smoothing, 0, 1, high_open=True)
    check_number("ema", ema, 0, 1, high_open=True)
    check_bn_images(bn_images, ema)
    if seed is not None:
        check_int("seed", seed, 0, SEED_LIMIT)
        keras.utils.set_random_seed(seed)
    steps = epochs * int(train_dataset.cardinality()) if schedule == "cosine" else 0
    rate = learning_rate_schedule(learning_rate, schedule, steps, round(warmup * steps))
    settings = {
        "model": model_config(model),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "schedule": schedule,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "ema": ema,
        "bn_images": bn_images,
        "seed": seed,
        "devices": tf.distribute.get_strategy().num_replicas_in_sync,
        **(settings or {}),
    }
    num_classes = model.output_shape[-1]
    with training_run(run_dir, model, settings, details, overwrite) as segment:
        model.compile(
            optimizer=keras.optimizers.AdamW(
                learning_rate=rate, weight_decay=weight_decay,
                use_ema=ema > 0, ema_momentum=ema or 0.99,
            ),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            metrics=["accuracy"],
        )
        train_one_hot = _one_hot(train_dataset, num_classes)
        val_one_hot = _one_hot(val_dataset, num_classes)
        averaged = [AveragedWeights(val_one_hot, train_one_hot if bn_images else None,
                                    bn_images)] if ema > 0 else []
        log = RunLog(run_dir, segment)
        diverged = StopOnDivergence(run_dir)
        raw_back = [averaged[0].raw_weights_back()] if averaged else []
        backup = keras.callbacks.BackupAndRestore(
            os.path.join(run_dir, BACKUP), double_checkpoint=True
        )
        model.fit(
            train_one_hot,
            validation_data=val_one_hot,
            epochs=epochs,
            callbacks=[diverged, *callbacks, *averaged, diverged.logs_check(), log, *raw_back,
                       backup],
            shuffle=False,  # the training dataset shuffles itself
            verbose=verbose,
        )
        load_plain_weights(model, os.path.join(run_dir, BEST_WEIGHTS))
        metrics = _test_record(model, val_dataset, test_data, log.history, run_dir,
                               settings, details)
        write_json(os.path.join(run_dir, METRICS), metrics)
    return log.history, metrics
