"""Do the unit tests notice a wrong meaning? A mutation check of the library.

Each entry of `MUTATIONS` changes one line of the library into something
plausible but wrong: a slip a careful person could make and a quick read
could miss. For each, in a scratch copy of the repository, this script
applies the change, runs the unit tests of the module it touches without real
CIFAR-10 data, and prints whether they fail ("caught") or pass ("missed").

    python tests/mutate.py                 # every mutation
    python tests/mutate.py --only explain  # those whose file or description matches
    python tests/mutate.py --check         # only check that every change applies and
                                           # every selection picks a test

It is not part of `make test`. Every mutation on the list should be caught
(a selected test fails); one that is missed names a meaning no test states,
and an error (no test selected, or a crash before the tests) proves nothing. Add a mutation with each
new piece of meaning, and at least two per module.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Mutation:
    path: str  # under convmixer_lib/
    before: str  # text that occurs exactly once in the file
    after: str
    meaning: str  # the wrong meaning, in words
    tests: tuple  # pytest arguments: test files under tests/, and -k to pick the tests
    backend: str = "tensorflow"  # the Keras backend the tests run on (KERAS_BACKEND)


MUTATIONS = [
    # the JAX backend
    Mutation("data.py", "    return keras.layers.Pipeline(", "    return keras.Sequential(",
             "the augmentation as a keras.Sequential inside tf.data, which only TensorFlow runs",
             ("test_data.py", "-k", "training_dataset_is_augmented"), backend="jax"),
    # training.py
    Mutation("training.py", '("BatchNorm statistics", self.model.non_trainable_weights)',
             '("BatchNorm statistics", [])',
             "non-finite BatchNorm statistics go unnoticed", ("test_training.py", "-k", "non_finite")),
    Mutation("training.py", "                             if not np.isfinite(value))",
             "                             if np.isinf(value))",
             "a NaN validation loss is recorded", ("test_training.py", "-k", "non_finite")),
    Mutation("training.py", "        if loss is not None and not np.isfinite(float(loss)):",
             "        if loss is not None and np.isinf(float(loss)):",
             "a NaN loss goes unnoticed and the run is recorded as finished", ("test_training.py", "-k", "diverging")),
    Mutation("training.py", "    check_number(\"learning_rate\", learning_rate, 0, low_open=True)\n"
             "    check_int(\"total_steps\"", "    check_number(\"learning_rate\", learning_rate, -1)\n"
             "    check_int(\"total_steps\"",
             "a negative learning rate accepted", ("test_training.py", "-k", "out_of_range")),
    Mutation("training.py", "                    averaged.on_test_end()",
             "                    pass",
             "the backup holds the averaged weights and their statistics: a resumed run "
             "trains on from them", ("test_recipes.py", "-k", "resumed")),
    Mutation("training.py", "round(warmup * steps)", "round(warmup * epochs)",
             "the warm-up counted in epochs instead of steps", ("test_recipes.py", "-k", "warmup_and_cosine")),
    Mutation("training.py", "values in zip(*per_batch)]", "values in zip(*per_batch[-1:])]",
             "BatchNorm re-estimated from the last batch only", ("test_recipes.py", "-k", "average_those_of_the_batches")),
    Mutation("training.py", "        super().on_test_end(logs)\n        self._restore_raw_statistics()",
             "        super().on_test_end(logs)",
             "the raw weights validated with the averaged weights' statistics",
             ("test_recipes.py", "-k", "own_statistics_back")),
    Mutation("training.py", "np.add.at(confusion, (labels, predicted), 1)",
             "np.add.at(confusion, (predicted, labels), 1)",
             "the confusion matrix with predicted classes in rows", ("test_training.py", "-k", "constant_predictor")),
    Mutation("training.py", "CategoricalCrossentropy(label_smoothing=label_smoothing)",
             "CategoricalCrossentropy(label_smoothing=label_smoothing / 10)",
             "label smoothing a tenth of the setting", ("test_recipes.py", "-k", "smoothed_targets")),
    # randaugment.py
    Mutation("randaugment.py", "tf.where(image >= s, 255.0 - image, image)",
             "tf.where(image > s, 255.0 - image, image)",
             "solarize leaves the threshold's own value", ("test_randaugment.py", "-k", "solarize")),
    Mutation("randaugment.py", '"posterize": 8 - round(4 * m),', '"posterize": round(4 * m) + 4,',
             "posterize keeps more bits as the magnitude grows", ("test_randaugment.py", "-k", "strengths or posterize")),
    Mutation("randaugment.py", "_affine(image, [1.0, 0.0, -s], [0.0, 1.0, 0.0])",
             "_affine(image, [1.0, 0.0, s], [0.0, 1.0, 0.0])",
             "translate_x moves the other way for a given sign", ("test_randaugment.py", "-k", "translations")),
    Mutation("randaugment.py", "_blend(image, tf.reduce_mean(_grayscale(image)), 1 + s)",
             "_blend(image, tf.reduce_mean(image, axis=(0, 1)), 1 + s)",
             "contrast around each channel's mean instead of the grey mean",
             ("test_randaugment.py", "-k", "contrast")),
    Mutation("randaugment.py", "index = tf.random.uniform([], 0, len(OPERATIONS), dtype=tf.int32)",
             "index = tf.random.uniform([], 0, len(OPERATIONS) - 1, dtype=tf.int32)",
             "the last operation is never drawn", ("test_randaugment.py", "-k", "chained")),
    # data.py
    Mutation("data.py", "values.max() >= limit", "values.max() > limit",
             "a label equal to the number of classes passes (one-hot turns it into zeros)",
             ("test_arguments.py", "-k", "classes")),
    Mutation("data.py", "translate=not augment.endswith(FLIP_ONLY_SUFFIX)", "translate=True",
             "RandAugment's flip-only variant shifts the images as well",
             ("test_randaugment.py", "-k", "flip_only")),
    Mutation("data.py", "[translation, flip] if translate else [flip]", "[translation, flip]",
             "make_augmenter shifts the images even when asked not to",
             ("test_randaugment.py", "-k", "flip_only")),
    Mutation("data.py", "(x_train[validation_size:], y_train[validation_size:]),\n"
             "        (x_train[:validation_size], y_train[:validation_size]),",
             "(x_train[:-validation_size], y_train[:-validation_size]),\n"
             "        (x_train[-validation_size:], y_train[-validation_size:]),",
             "the last training images validate instead of the first", ("test_data.py", "-k", "split")),
    Mutation("data.py", '"horizontal", seed=None if seed is None else (seed + 1) % SEED_LIMIT)',
             '"vertical", seed=None if seed is None else (seed + 1) % SEED_LIMIT)',
             "training images flipped upside down", ("test_data.py", "-k", "flip")),
    Mutation("data.py", "seed=None if seed is None else (seed + 1) % SEED_LIMIT)",
             "seed=seed)",
             "the flip seeded like the shift, following its first draws",
             ("test_data.py", "-k", "independently")),
    Mutation("data.py", "images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)",
             "images = data.reshape(-1, 32, 32, 3)",
             "CIFAR-10's channel planes read as interleaved pixels", ("test_data.py", "-k", "channels_last or official_layout")),
    # model.py
    Mutation("model.py", "x = layers.Add(name=f\"block{block}_residual\")([x, block_input])",
             "x = layers.Add(name=f\"block{block}_residual\")([x, x])",
             "the residual connection adds the block's output to itself", ("test_model.py", "-k", "papers or residual or spatial_mixing")),
    Mutation("model.py", "layers.Conv2D(filters, patch_size, strides=patch_size, name=STEM_CONV)",
             "layers.Conv2D(filters, patch_size, strides=1, padding=\"same\", name=STEM_CONV)",
             "patches that overlap (stride 1) instead of tiling the image", ("test_model.py", "-k", "papers or resolution or parameters")),
    # fast/__init__.py
    Mutation("fast/__init__.py", "        if isinstance(layer, keras.layers.DepthwiseConv2D):",
             "        if False:",
             "accelerate leaves the depthwise convolutions as they are", ("test_fast.py", "-k", "accelerate_swaps")),
    Mutation("fast/__init__.py", "                and producer.get_config()[\"activation\"] == \"gelu\"",
             "                and True",
             "accelerate fuses ReLU with BatchNorm as if it were GELU", ("test_fast.py", "-k", "accelerate_swaps")),
    # fast/layers.py
    Mutation("fast/layers.py", "moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))",
             "moving.assign(moving * (1.0 - self.momentum) + batch * self.momentum)",
             "the fused BatchNorm's moving averages weigh the new batch by the momentum",
             ("test_fast.py", "-k", "matches_keras_gelu")),
    Mutation("fast/layers.py", "g = keras.activations.gelu(inputs, approximate=False)",
             "g = keras.activations.gelu(inputs, approximate=True)",
             "the fallback computes the tanh approximation of GELU", ("test_fast.py", "-k", "fallback")),
    # fast/ops.py
    Mutation("fast/ops.py", "dy, op.inputs[0], op.inputs[1], op.outputs[1], op.outputs[2],",
             "dy, op.inputs[0], op.inputs[1], op.inputs[3], op.inputs[4],",
             "the fused layer's gradient taken with the moving statistics, not the batch's",
             ("test_fast.py", "-k", "matches_keras_gelu")),
    Mutation("fast/ops.py", "    return [dz, dgamma, dbeta, None, None]",
             "    return [dz, dbeta, dgamma, None, None]",
             "the fused layer's gradients for gamma and beta swapped", ("test_fast.py", "-k", "matches_keras_gelu")),
    # explain.py, images.py
    Mutation("images.py", "(bits > 16 or values.min() < 0",
             "(values.min() < 0",
             "a 32-bit TIFF within 16 bits' values is read as a 16-bit picture",
             ("test_explain.py", "-k", "bad_image_files")),
    Mutation("images.py", "        grey = np.round(values * 255 / 65535).astype(np.uint8)",
             "        grey = np.clip(values, 0, 255).astype(np.uint8)",
             "16-bit greyscale clipped to white instead of scaled", ("test_explain.py", "-k", "16_bit")),
    Mutation("images.py", "            if width * height > max_pixels:",
             "            if width * height > max_pixels and False:",
             "a picture larger than the limit is decoded", ("test_explain.py", "-k", "bad_image_files")),
    Mutation("explain.py", "maps = np.maximum((weights * features).sum(axis=-1), 0)",
             "maps = np.abs((weights * features).sum(axis=-1))",
             "Grad-CAM keeps negative evidence as if it were positive", ("test_explain.py", "-k", "grad_cam")),
    Mutation("explain.py", "gradients = _gradient(lambda x: keras.ops.sum(logits(x) * chosen), features)",
             "gradients = _gradient(lambda x: keras.ops.sum(keras.ops.softmax(logits(x)) * chosen), features)",
             "Grad-CAM differentiates the probability instead of the logit", ("test_explain.py", "-k", "grad_cam")),
    Mutation("training.py", "    check_images(images, labels, image_size=model.input_shape[1],",
             "    check_images(images, labels, image_size=None,",
             "evaluate accepts images of another size than the model's", ("test_model.py", "-k", "wrong_input")),
    Mutation("explain.py", "drops[:, i] = base[:, None] - chosen",
             "drops[:, i] = chosen - base[:, None]",
             "occlusion records the rise instead of the drop", ("test_explain.py", "-k", "occlusion")),
    Mutation("explain.py", "mirrored = model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)",
             "mirrored = model.predict(images[:, ::-1], batch_size=batch_size, verbose=0)",
             "test-time flips turn images upside down", ("test_explain.py", "-k", "flips")),
    # rundir.py
    Mutation("rundir.py", "        if record[\"val_accuracy\"] > self._best:",
             "        if record[\"val_accuracy\"] > self._best or True:",
             "the last epoch's weights kept instead of the best one's", ("test_training.py", "-k", "best_epochs_not_the_last")),
    # records.py
    Mutation("records.py", "        read_json(history)", "        pass",
             "a resume with a damaged history.json writes run.json before it is refused",
             ("test_rundir.py", "-k", "resume_before_anything")),
    Mutation("records.py", "    if os.path.isfile(lock):", "    if False:",
             "a run directory another process trains is let through the early check",
             ("test_rundir.py", "-k", "one_trainer")),
    Mutation("records.py", "    if not overwrite:\n        _check_not_finished(run_dir)",
             "    if overwrite:\n        _check_not_finished(run_dir)",
             "the early check refuses a finished run only with --overwrite",
             ("test_rundir.py", "-k", "never_trained_over")),
    Mutation("records.py", "if recorded.get(key, \"(not set)\") != requested.get(key, \"(not set)\")",
             "if not key.startswith(\"model.\") and recorded.get(key, \"(not set)\") != requested.get(key, \"(not set)\")",
             "a run resumes with another model", ("test_rundir.py", "-k", "other_settings or differing")),
    # recipes.py
    Mutation("recipes.py", "\"change\": 100 * (metrics[\"best_val_accuracy_flips\"]\n"
             "                             - full[\"best_val_accuracy_flips\"]),",
             "\"change\": 100 * (full[\"best_val_accuracy_flips\"]\n"
             "                             - metrics[\"best_val_accuracy_flips\"]),",
             "a removed ingredient's cost counted with the wrong sign", ("test_recipes.py", "-k", "leave_one_out_rows")),
    Mutation("choices.py", "settings.update({key: value for key, value in changes.items() if value is not None})",
             "settings.update({key: value for key, value in changes.items() if value})",
             "a change to 0 (no warm-up, no smoothing) is ignored", ("test_recipes.py", "-k", "recipe_settings_apply or records_the_recipe")),
    # ablations.py
    Mutation("ablations.py", "(1 - r[\"val_accuracy\"]) / (1 - r[\"val_accuracy\"] + r[\"difference\"])",
             "(1 - r[\"val_accuracy\"]) / (1 - r[\"val_accuracy\"] - r[\"difference\"])",
             "a change's errors measured against the wrong baseline", ("test_ablations.py", "-k", "own_budget")),
    Mutation("choices.py", "\"seed\": BASELINE_SEEDS[0], \"factor\": factor, \"value\": value})",
             "\"seed\": BASELINE_SEEDS[-1], \"factor\": factor, \"value\": value})",
             "the changes trained with another seed than the first baseline's",
             ("test_ablations.py", "-k", "varied_alone")),
    Mutation("ablations.py", "\"difference\": r[\"val_accuracy\"] - mean[\"val_accuracy\"],",
             "\"difference\": r[\"val_accuracy\"] - max(accuracies),",
             "a change measured against the best seed instead of the seeds' mean",
             ("test_ablations.py", "-k", "seeds_mean")),
    # plots.py
    Mutation("plots.py", "    ax.imshow(confusion, cmap=\"Blues\")",
             "    ax.imshow(np.transpose(confusion), cmap=\"Blues\")",
             "the confusion matrix drawn with true classes in columns", ("test_plots.py", "-k", "confusion")),
    Mutation("plots.py", "        ax.imshow(images[i].astype(np.uint8))",
             "        ax.imshow(images[-1 - i].astype(np.uint8))",
             "images drawn under each other's titles", ("test_plots.py", "-k", "images_grid")),
    Mutation("plots.py", '_accuracy_per_epoch_axes(by_epoch, f"{title} per epoch", ylabel)',
             '_accuracy_per_epoch_axes(by_epoch, f"{title} per epoch")',
             "a published log's test accuracy labelled validation accuracy",
             ("test_plots.py", "-k", "epoch_and_hour")),
    # checks.py
    Mutation("checks.py", "    return check_int(name, value, 1)", "    return check_int(name, value, 0)",
             "0 accepted as a positive integer", ("test_model.py", "-k", "bad_configuration")),
    Mutation("checks.py", "if (isinstance(value, bool) or not isinstance(value, numbers.Integral)",
             "if (not isinstance(value, numbers.Integral)",
             "True accepted as the integer 1", ("test_model.py", "-k", "bad_configuration")),
    # cli.py
    Mutation("cli.py", "    check_trainable(args.run_dir, args.overwrite)",
             "    check_trainable(args.run_dir, True)",
             "a finished run directory is refused only after TensorFlow starts",
             ("test_cli.py", "-k", "before_tensorflow and finished")),
    Mutation("checks.py", "    check_bn_images(settings[\"bn_images\"], settings[\"ema\"])\n",
             "    pass\n", "a re-estimate without averaged weights is refused only after the data are read",
             ("test_cli.py", "-k", "before_tensorflow")),
    Mutation("cli.py", "    check_devices(args.devices)  # before the data are read\n", "",
             "more devices than visible are refused only after the data are read",
             ("test_cli.py", "-k", "more_devices")),
    Mutation("checks.py", "    if image_size % patch_size:\n", "    if image_size < patch_size:\n",
             "a patch size that does not divide the image is accepted",
             ("test_cli.py", "-k", "before_tensorflow")),
    Mutation("cli.py", "predict_images(model, args.images, top=args.top, flips=args.flips)",
             "predict_images(model, args.images, top=3, flips=args.flips)",
             "--top ignored", ("test_explain.py", "-k", "predict_prints")),
    Mutation("cli.py", "model = {key: getattr(args, key) for key in (\"filters\", \"depth\", \"kernel_size\", \"patch_size\")}",
             "model = {key: getattr(args, key) for key in (\"filters\", \"depth\")}",
             "--kernel-size and --patch-size ignored", ("test_cli.py", "test_recipes.py", "-k", "train_then_evaluate or records_the_recipe")),
    # machine.py
    Mutation("machine.py", "return \"AVX-512\" if \"avx512f\" in flags else",
             "return \"AVX-512\" if \"avx512bw\" in flags else",
             "AVX-512 recognised by another flag", ("test_devices.py", "-k", "fields_it_names")),
    Mutation("machine.py", "if line.split(\":\", 1)[0].strip() == name:",
             "if name in line:",
             "a field found inside another field's name", ("test_devices.py", "-k", "fields_it_names")),
    # notebook.py
    Mutation("notebook.py", "return f\"{100 * fraction:.{digits}f}%\"",
             "return f\"{fraction:.{digits}%}\"[:-1] + \" %\"",
             "percentages written with a space", ("test_notebook.py",)),
    Mutation("notebook.py", "lines = lines[: docstring.lineno - 1] + lines[docstring.end_lineno :]",
             "lines = lines[: docstring.lineno - 1] + lines[docstring.end_lineno - 1 :]",
             "the docstring's last line left in the shown source", ("test_notebook.py",)),
    # choices.py, the full budget
    Mutation("choices.py", '"full": {"recipe": "fast", "epochs": 4, "train_size": None},',
             '"full": {"recipe": "fast", "epochs": 4, "train_size": 45_000 // 2},',
             "the full budget trained on half the training images",
             ("test_ablations.py", "-k", "full_budget")),
    # resnet.py, vit.py, mlp_mixer.py
    Mutation("resnet.py", "strides = 2 if stage > 1 and block == 1 else 1",
             "strides = 2 if stage > 1 else 1",
             "every block of a later stage halves the resolution",
             ("test_architectures.py", "-k", "flops_counted")),
    Mutation("resnet.py", 'x = _conv_bn(x, width, 3, 1, f"{name}_2", sync)',
             'x = _conv_bn(x, width, 1, 1, f"{name}_2", sync)',
             "the second convolution of each block 1x1",
             ("test_architectures.py", "-k", "by_hand")),
    Mutation("vit.py", "layers.MultiHeadAttention(heads, dim // heads, name=",
             "layers.MultiHeadAttention(heads, dim, name=",
             "each head attends with all the token's dimensions",
             ("test_architectures.py", "-k", "by_hand")),
    Mutation("vit.py", 'x = layers.Add(name=f"block{block}_add2")([x, y])',
             "x = y",
             "the MLP's residual connection left out",
             ("test_architectures.py", "-k", "branches")),
    Mutation("mlp_mixer.py", 'x = layers.Add(name=f"block{block}_add1")([x, layers.Permute((2, 1))(y)])',
             'x = layers.Permute((2, 1))(y)',
             "the token-mixing MLP's residual connection left out",
             ("test_architectures.py", "-k", "branches")),
    Mutation("mlp_mixer.py", "        y = layers.Permute((2, 1))(y)\n        y = layers.Dense(token_mlp_dim",
             "        y = layers.Dense(token_mlp_dim",
             "the token-mixing MLP's first layer applied across channels",
             ("test_architectures.py", "-k", "by_hand")),
    Mutation("mlp_mixer.py", "        y = layers.Permute((2, 1))(y)\n        y = layers.Dense(token_mlp_dim",
             "        y = layers.Reshape((dim, tokens))(y)\n        y = layers.Dense(token_mlp_dim",
             "the tokens reshaped instead of transposed before the token MLP",
             ("test_architectures.py", "-k", "mixes")),
    Mutation("vit.py", 'name=f"block{block}_attention")(y, y)',
             'name=f"block{block}_attention")(y, x)',
             "attention's keys and values read the tokens before the LayerNorm",
             ("test_architectures.py", "-k", "normalized")),
    Mutation("resnet.py", 'layers.Add(name=f"{name}_add")([x, shortcut])',
             'layers.Add(name=f"{name}_add")([x, x])',
             "the residual block's shortcut left out",
             ("test_architectures.py", "-k", "zeroed")),
    # cli.py: the start-up lines
    Mutation("cli.py", "            sys.stderr.write(hidden.read().decode(errors=\"replace\"))\n",
             "",
             "the hidden start-up lines lost when the start fails",
             ("test_cli.py", "-k", "start_fails")),
    Mutation("cli.py", "        os.dup2(hidden.fileno(), 2)\n", "",
             "TensorFlow's start-up lines shown",
             ("test_cli.py", "-k", "start_up_log")),
    Mutation("cli.py", "import tempfile\n", "import tempfile\n\nimport tensorflow as tf\n",
             "the command line imports TensorFlow before it parses its arguments",
             ("test_cli.py", "-k", "before_tensorflow")),
    Mutation("cli.py", "    check_names(args.only, args.budget)\n", "    pass\n",
             "an unknown configuration not refused before TensorFlow starts",
             ("test_cli.py", "-k", "before_tensorflow")),
    # architectures.py
    Mutation("architectures.py", 'architecture = arguments.pop("architecture", "convmixer")',
             'architecture = arguments.pop("architecture", "resnet")',
             "a config.json without an architecture read as another model than ConvMixer",
             ("test_architectures.py", "-k", "rebuilds")),
    Mutation("architectures.py", "    return dict(config)\n",
             '    return {key: value for key, value in config.items() if key != "architecture"}\n',
             "config.json loses the architecture's name",
             ("test_architectures.py", "-k", "rebuilds or reloads")),
    # flops.py
    Mutation("flops.py", "return projections + heads * tokens * tokens * (key_dim + value_dim)",
             "return projections + heads * tokens * tokens * key_dim",
             "the attention weights' product with the values not counted",
             ("test_architectures.py", "-k", "flops_counted")),
    Mutation("flops.py", "return 2 * sum(_multiply_adds(layer) for layer in model.layers)",
             "return sum(_multiply_adds(layer) for layer in model.layers)",
             "multiply-adds reported as operations",
             ("test_architectures.py", "-k", "flops_counted")),
    # backends.py
    Mutation("backends.py", "batch = slice(step * batch_size, (step + 1) * batch_size)",
             "batch = slice(0, batch_size)",
             "every training step on the first batch",
             ("test_backends.py", "-k", "train_steps")),
    Mutation("backends.py", 'env={**os.environ, **_CPU_ONLY, "KERAS_BACKEND": backend}',
             'env={**os.environ, **_CPU_ONLY}',
             "the process runs on the caller's backend, not the one asked for",
             ("test_backends.py", "-k", "train_steps")),
    Mutation("backends.py", '{"median": float(median), "min": float(low), "max": float(high)}',
             '{"median": float(median), "min": float(high), "max": float(low)}',
             "a range's ends read the wrong way round",
             ("test_backends.py", "-k", "read_throughput")),
    # compare.py
    Mutation("compare.py", "if best == max(tried) and index < len(RATES) - 1",
             "if best == min(tried) and index < len(RATES) - 1",
             "the grid grows upwards when the best rate is the lowest",
             ("test_compare.py", "-k", "grows")),
    Mutation("compare.py", '_train(run_dir, splits, model, "short", next_rates[0], test=False,',
             '_train(run_dir, splits, model, "short", next_rates[0], test=True,',
             "the grid runs see the test images",
             ("test_compare.py", "-k", "chooses")),
    Mutation("compare.py", "        if finished:\n            _check_rate(run_dir, metrics, rate)",
             "        if False:\n            _check_rate(run_dir, metrics, rate)",
             "reading the records accepts a full-budget run at another rate than its grid's",
             ("test_compare.py", "-k", "otherwise")),
    Mutation("compare.py", """    return {"parameters": built.count_params(), "flops": forward_flops(built)}""",
             """    return {"parameters": built.count_params(), "flops": built.count_params()}""",
             "the forward operations recorded and described are the parameter count",
             ("test_compare.py", "-k", "describe_models")),
    Mutation("rundir.py", '        "backend": backend,', '        "backend": "jax",',
             "the records name another backend than the one that trained them",
             ("test_training.py", "-k", "records_agree")),
    Mutation("recipes.py", "            test_split if test else None,",
             "            test_split,",
             "train_recipe(test=False) tests anyway",
             ("test_compare.py", "-k", "chooses")),
    Mutation("recipes.py", "return name if seed == DEFAULT_SEED else",
             "return name if seed <= DEFAULT_SEED else",
             "a run of seed 1 is named, and skipped, as the run of seed 42",
             ("test_recipes.py", "-k", "recipe_runs")),
    Mutation("recipes.py", "print(name, *(f\"--{key.replace('_', '-')}={value}\"",
             "print(name, *(f\"--{key.replace('_', '-')}={value}\" if key != \"seed\" else \"\"",
             "make recipe-runs trains every run with the default seed",
             ("test_recipes.py", "-k", "recipe_runs")),
    Mutation("training.py", "    with_flips = predict_with_flips(model, images, batch_size, plain=plain)",
             "    with_flips = predict_with_flips(model, images, batch_size)",
             "both evaluations predict the images twice", ("test_recipes.py", "-k", "flips_at_test_time")),
    Mutation("training.py", "    return score(plain, labels), score(with_flips, labels)",
             "    return score(with_flips, labels), score(plain, labels)",
             "the records' test accuracies swapped: mirror images scored as the images alone",
             ("test_recipes.py", "-k", "flips_at_test_time")),
]


def _scratch_copy():
    """A copy of the repository's tracked and untracked files, without build outputs."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    scratch = tempfile.mkdtemp(prefix="mutate-")
    for name in filter(None, listed):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            target = os.path.join(scratch, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
    return scratch


def _apply(mutation, root):
    path = os.path.join(root, "convmixer_lib", mutation.path)
    with open(path) as f:
        text = f.read()
    count = text.count(mutation.before)
    if count != 1:
        raise SystemExit(f"error: {mutation.path}: {mutation.before!r} occurs {count} times; "
                         "expected exactly once.")
    return path, text, text.replace(mutation.before, mutation.after)


def _pytest_command(mutation):
    """pytest on the tests `mutation` names (pytest exits 5 if they select none)."""
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            *(os.path.join("tests", t) if t.endswith(".py") else t for t in mutation.tests)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="mutations whose file or meaning contains this text")
    parser.add_argument("--check", action="store_true",
                        help="only check that the changes apply and select tests")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS
              if not args.only or args.only in m.path or args.only in m.meaning]
    scratch = _scratch_copy()
    environment = {k: v for k, v in os.environ.items() if k != "CIFAR10_PATH"}
    environment["KERAS_HOME"] = os.path.join(scratch, ".keras")  # no cached dataset either
    # The library of the scratch copy, also in the processes the tests start
    # (the installed one is the unchanged checkout's).
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [scratch, os.environ.get("PYTHONPATH")]))
    if args.check:  # every selection runs a test and passes on the unchanged library
        baseline_failures = [m.meaning for m in chosen if subprocess.run(
            _pytest_command(m), cwd=scratch, env={**environment, "KERAS_BACKEND": m.backend},
            capture_output=True).returncode != 0]
        if baseline_failures:
            raise SystemExit(f"error: these selections fail on the unchanged library: "
                             f"{baseline_failures}")
    missed = 0
    try:
        for mutation in chosen:
            path, original, mutated = _apply(mutation, scratch)
            if args.check:
                continue
            with open(path, "w") as f:
                f.write(mutated)
            start = time.perf_counter()
            result = subprocess.run(_pytest_command(mutation), cwd=scratch,
                                    env={**environment, "KERAS_BACKEND": mutation.backend},
                                    capture_output=True, text=True)
            with open(path, "w") as f:
                f.write(original)
            # pytest: 1 a test failed, 0 all passed; anything else (5: no test
            # selected, 2-4: an error before the tests ran) proves nothing.
            verdict = {1: "caught", 0: "MISSED"}.get(result.returncode,
                                                     f"ERROR {result.returncode}")
            missed += verdict != "caught"
            print(f"{verdict:<8}{mutation.path:<15} {mutation.meaning} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        shutil.rmtree(scratch)
    if args.check:
        print(f"{len(chosen)} mutations apply, each selecting tests")
    else:
        print(f"{len(chosen) - missed} of {len(chosen)} caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
