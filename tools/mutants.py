#!/usr/bin/env python3
"""Mutation testing: plant one known bug at a time in a COPY of the library and check that the
tests guarding that code fail.

Each mutant is a :class:`Mutant` -- a file, an exact snippet of it, what the snippet becomes, and
the tests to run. The working tree is never touched: ``src/``, ``tests/``, ``pyproject.toml`` are
copied to a temporary directory once, each mutant is written into the copy, its tests run there
(``PYTHONPATH`` points at the copy's ``src``, so the copy is what gets imported), and the file is
restored before the next one.

Two families:

* the **named mutants** below, one or more per kernel, layer, loss, optimizer, callback,
  serialization path and converter: plausible bugs (a sign, a missing term, an off-by-one, a
  dropped branch);
* with ``--stubs``, **stub mutants** generated for every exported layer, loss and optimizer:
  the layer's ``forward`` or ``backward`` returns zeros of the right shape (parameter gradients
  zeroed too), a loss returns 0 and a zero gradient, an optimizer's ``update`` does nothing.
  Each must be caught by the tests that name its class.

A mutant is **killed** when its tests fail (or error, or time out), **survived** when they all
pass, **stale** when its snippet is no longer in the file exactly once (the code moved on: fix the
entry). The script exits 1 unless every mutant is killed and none is stale.

    python3 tools/mutants.py                 # the named mutants
    python3 tools/mutants.py --stubs         # plus the generated stubs
    python3 tools/mutants.py -k pool         # only mutants whose name contains "pool"
    python3 tools/mutants.py --list          # names, files and tests, without running
    python3 tools/mutants.py --baseline      # first check that the selected tests pass unmutated
    python3 tools/mutants.py --only-stubs --every-test-must-fail   # no selected test passes a stub

It takes a few minutes per dozen mutants (each runs a pytest process with ``-x``), so it is not
part of ``.ci/run``: run it before closing an issue that touches these areas.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "src/nn_from_scratch"


@dataclass
class Mutant:
    name: str
    file: str  # relative to the repository root
    original: str  # exact snippet, present once; "" appends ``mutated`` to the file instead
    mutated: str
    tests: list[str] = field(default_factory=list)  # pytest arguments (files, node ids, -k ...)
    # Other places the same bug can be planted, (file, original, mutated), tried in order when
    # the first is stale: code that is being moved between modules.
    alternatives: list[tuple[str, str, str]] = field(default_factory=list)


def M(name: str, file: str, original: str, mutated: str, *tests: str, alt: tuple = ()) -> Mutant:
    return Mutant(name, f"{PKG}/{file}", original, mutated, list(tests), [(f"{PKG}/{f}", o, m) for f, o, m in alt])


# Test selections reused below.
T_GRAD = "tests/test_gradients.py"
T_SWEEP = "tests/test_reference_sweep.py"
T_KERN = "tests/test_kernels.py"
T_POOL = "tests/test_pooling.py"
T_OPT = "tests/test_optimizers.py"
T_CB = "tests/test_callbacks.py"
T_SER = "tests/test_serialization.py"
T_INT = "tests/test_interop.py"
T_EDGE = "tests/test_api_edges.py"
T_MODES = "tests/test_layers_modes.py"
T_MODEL = "tests/test_model.py"
T_GEOM = "tests/test_geometry.py"

MUTANTS: list[Mutant] = [
    # -- kernels -------------------------------------------------------------------------------
    M("kernels.same_padding: extra pixel at the top/left", "kernels/geometry.py",
      "return total // 2, total - total // 2", "return total - total // 2, total // 2", T_GEOM),
    M("kernels.output_hw: off by one", "kernels/geometry.py",
      "oh = (h + pt + pb - dh * (self.kh - 1) - 1) // sh + 1", "oh = (h + pt + pb - dh * (self.kh - 1)) // sh + 1",
      T_KERN, T_SWEEP, "-k", "Convolution or Pooling or conv or pool"),
    M("kernels.col2im: overlapping taps overwrite instead of add", "kernels/conv.py",
      "xp[:, :, rows, columns] += taps[:, p, q].transpose(1, 0, 2, 3)",
      "xp[:, :, rows, columns] = taps[:, p, q].transpose(1, 0, 2, 3)", T_KERN),
    M("kernels.max_pool2d_backward: non-finite dL/dy branch dropped", "kernels/pooling.py",
      "        if finite:\n            np.multiply(dy, argmax == t, out=share)",
      "        if True:\n            np.multiply(dy, argmax == t, out=share)", T_EDGE, "-k", "max_pooling"),
    M("kernels.max_pool2d_forward: ties go to the last element", "kernels/pooling.py",
      "np.greater(tap, y, out=better)", "np.greater_equal(tap, y, out=better)", T_POOL, "-k", "ties or tie"),
    M("kernels.avg_pool2d_divisor: count_include_pad=False divides by the full window", "kernels/pooling.py",
      "    if count_include_pad:\n        return np.full((oh, ow), geom.kh * geom.kw, dtype=dtype)",
      "    if True:\n        return np.full((oh, ow), geom.kh * geom.kw, dtype=dtype)", T_POOL, T_SWEEP, "-k", "average or Average"),
    M("kernels.avg_pool2d_backward: share not divided", "kernels/pooling.py",
      "    share = dy / divisor\n", "    share = dy * 1.0\n", T_SWEEP, "-k", "AveragePooling"),
    # -- layers --------------------------------------------------------------------------------
    M("ReLU.backward: gradient at x == 0 and below", "nodes/activations.py",
      "return (dL_dy * (y > 0)).astype(y.dtype, copy=False)", "return (dL_dy * (y >= 0)).astype(y.dtype, copy=False)",
      T_SWEEP, "-k", "ReLU"),
    M("LeakyReLU.backward: negative slope forgotten", "nodes/activations.py",
      "return np.where(self._require_cache(\"_x\") > 0, dL_dy, self.alpha * dL_dy)",
      "return np.where(self._require_cache(\"_x\") > 0, dL_dy, dL_dy)", T_GRAD, "-k", "LeakyReLU"),
    M("Sigmoid.backward: y instead of y(1 - y)", "nodes/activations.py",
      "return dL_dy * y * (1 - y)", "return dL_dy * y", T_GRAD, "-k", "Sigmoid"),
    M("Tanh.backward: 1 - y instead of 1 - y^2", "nodes/activations.py",
      "return dL_dy * (1 - y * y)", "return dL_dy * (1 - y)", T_GRAD, "-k", "Tanh"),
    M("SoftMax.backward: Jacobian's outer-product term dropped", "nodes/activations.py",
      "return y * (dL_dy - np.sum(dL_dy * y, axis=-1, keepdims=True))", "return y * dL_dy", T_GRAD, "-k", "SoftMax"),
    M("Vectorization.forward: features reversed", "nodes/reshape.py",
      "return x.reshape(x.shape[0], -1)", "return x.reshape(x.shape[0], -1)[:, ::-1]", T_SWEEP, "-k", "Vectorization"),
    M("Linear.forward: bias subtracted", "neurons/linear.py",
      "y += self.W[0]  # in place", "y -= self.W[0]  # in place", T_SWEEP, "-k", "Linear"),
    M("Linear.backward: bias gradient averaged", "neurons/linear.py",
      "np.sum(dL_dy, axis=0, out=grad[0])", "np.mean(dL_dy, axis=0, out=grad[0])", T_GRAD, "-k", "Linear"),
    M("Convolution.backward: bias gradient dropped", "neurons/convolution.py",
      "        if self.use_bias:\n            self.accumulate_gradient(\"B\", db)",
      "        if self.use_bias:\n            self.accumulate_gradient(\"B\", db * 0)", T_SWEEP, "-k", "Convolution"),
    M("BatchNormalization: unbiased variance in the normalisation", "neurons/batchnorm.py",
      "var = sq_sum / m\n", "var = sq_sum / (m - 1)\n", T_SWEEP, "-k", "BatchNormalization"),
    M("BatchNormalization: momentum weighs the old running mean", "neurons/batchnorm.py",
      "self.running_mean[...] = f * mean + (1.0 - f) * self.running_mean",
      "self.running_mean[...] = (1.0 - f) * mean + f * self.running_mean", T_MODES, "-k", "batchnorm"),
    M("Dropout: survivors multiplied by the keep rate", "nodes/dropout.py",
      "mask /= x.dtype.type(1.0 - self.rate)", "mask *= x.dtype.type(1.0 - self.rate)", T_MODES, "-k", "dropout"),
    M("Dropout: keeps with probability rate", "nodes/dropout.py",
      "mask = (rng.random(x.shape, dtype=np.float32) >= self.rate)", "mask = (rng.random(x.shape, dtype=np.float32) < self.rate)",
      T_MODES, "-k", "dropout"),
    M("GlobalAveragePooling.backward: not divided by the area", "nodes/pooling.py",
      "share = dL_dy / spatial", "share = dL_dy * 1.0", T_SWEEP, "-k", "GlobalAveragePooling"),
    # -- losses --------------------------------------------------------------------------------
    M("SoftMaxLoss.backward: not divided by the batch", "losses.py",
      "return (scaled - self._target) / self._softmax.shape[0]", "return scaled - self._target", T_SWEEP, "-k", "SoftMaxLoss"),
    M("SoftMaxLoss: label smoothing spreads a/(k-1)", "losses.py",
      "            if a:\n                target = target * (1 - a) + a / k\n",
      "            if a:\n                target = target * (1 - a) + a / (k - 1)\n", T_SWEEP, "-k", "SoftMaxLoss",
      alt=[("losses.py", "                    target = target * (1 - a) + a / k\n                self._target_sum = None",
            "                    target = target * (1 - a) + a / (k - 1)\n                self._target_sum = None")]),
    M("MSELoss.backward: factor 2 dropped", "losses.py",
      "return 2 * self._diff / self._diff.size", "return self._diff / self._diff.size", T_SWEEP, "-k", "MSELoss"),
    M("BinaryCrossEntropy.backward: sign flipped", "losses.py",
      "return (self._sigmoid - self._target) / self._target.size", "return (self._target - self._sigmoid) / self._target.size",
      T_SWEEP, "-k", "BinaryCrossEntropy"),
    # -- initialisers --------------------------------------------------------------------------
    M("initializers.he_normal: std sqrt(1/fan_in)", "initializers.py",
      "return _truncated_normal(shape, np.sqrt(2.0 / fan_in), rng, dtype)",
      "return _truncated_normal(shape, np.sqrt(1.0 / fan_in), rng, dtype)", T_EDGE, "-k", "initializer or fans"),
    M("initializers.glorot_normal: std sqrt(1/(fan_in+fan_out))", "initializers.py",
      "np.sqrt(2.0 / (fan_in + fan_out))", "np.sqrt(1.0 / (fan_in + fan_out))", T_EDGE, "-k", "initializer or fans"),
    # -- optimizers ----------------------------------------------------------------------------
    M("GradientDescent: Nesterov ignored", "optimizers.py",
      "grad = grad + self.momentum * velocity if self.nesterov else velocity", "grad = velocity", T_OPT),
    M("Adam: no bias correction of the first moment", "optimizers.py",
      "step_size = self.lr / (1.0 - self.beta1**step)", "step_size = self.lr", T_OPT),
    M("AdamW: decay not scaled by the learning rate", "optimizers.py",
      "param *= 1.0 - self.lr * self.weight_decay", "param *= 1.0 - self.weight_decay", T_OPT),
    M("RMSProp: square average without (1 - alpha)", "optimizers.py",
      "square_avg += (1.0 - self.alpha) * (grad * grad)", "square_avg += grad * grad", T_OPT),
    M("Optimizer.step: clipping scales up instead of down", "interfaces.py",
      "if scale < 1.0:", "if scale > 1.0:", T_OPT),
    # -- model ---------------------------------------------------------------------------------
    M("Sequential.compile: loss ignored", "model_base.py",
      "        if loss is not None:\n            self.loss = loss", "        if loss is not None:\n            pass", T_EDGE, "-k", "compile",
      alt=[("model.py", "        if loss is not None:\n            self.loss = loss", "        if loss is not None:\n            pass")]),
    M("Sequential.fit: validation_split rounds down", "training.py",
      "split_at = int(math.ceil(len(x) * (1.0 - validation_split)))", "split_at = int(len(x) * (1.0 - validation_split))",
      T_EDGE, "-k", "validation_split",
      alt=[("model.py", "split_at = int(math.ceil(len(x) * (1.0 - validation_split)))",
            "split_at = int(len(x) * (1.0 - validation_split))")]),
    M("Sequential(seed=): user weights re-drawn", "model_base.py",
      " and not getattr(layer, \"user_weights\", False)", "", T_EDGE, "-k", "weights_the_user_passed",
      alt=[("model.py", "not layer.user_weights and ", "")]),
    M("Sequential(seed=): trained (adopted) layers re-drawn", "model_base.py",
      "not getattr(layer, \"adopted\", False) and ", "", T_EDGE, "-k", "trained_layers"),
    M("Sequential.fit: shuffle ignored", "data.py",
      "order = rng.permutation(self.samples) if self.shuffle else None", "order = None", T_MODEL, "-k", "shuffle",
      alt=[("model.py", "self.rng.permutation(n)", "np.arange(n)")]),
    # -- callbacks -----------------------------------------------------------------------------
    M("callbacks mode='auto': accuracy minimised", "callbacks.py",
      "(\"max\" if \"acc\" in monitor else \"min\")", "\"min\"", T_EDGE, "-k", "mode_auto"),
    M("StepDecay: gamma applied one epoch early", "callbacks.py",
      "return self.initial_lr * self.gamma ** (epoch // self.step_size)",
      "return self.initial_lr * self.gamma ** ((epoch + 1) // self.step_size)", T_CB),
    M("CosineDecay: cosine over twice the period", "callbacks.py",
      "cosine = 0.5 * (1.0 + math.cos(math.pi * t / self.decay_steps))",
      "cosine = 0.5 * (1.0 + math.cos(0.5 * math.pi * t / self.decay_steps))", T_CB),
    M("ModelCheckpoint: save_best_only saves every epoch", "callbacks.py",
      "            if value is None or not self._improved(value, self.best):\n                return",
      "            if value is None:\n                return", T_CB, "-k", "checkpoint"),
    # -- serialization -------------------------------------------------------------------------
    M("load_weights: an unbuilt model is not built", "serialization.py",
      "if not model.built and architecture.get(\"input_shape\") is not None:", "if False:", T_EDGE, "-k", "load_weights"),
    M("save: buffers not written", "serialization.py",
      "        for name, b in layer.buffers().items():\n            yield f\"layers.{i}.buffers.{name}\", b",
      "        for name, b in {}.items():\n            yield f\"layers.{i}.buffers.{name}\", b", T_SER),
    # -- converters ----------------------------------------------------------------------------
    M("to_torch: asymmetric average pool loses its zero padding", "interop/torch.py",
      "return TorchTwin([nn.ZeroPad2d((left, right, top, bottom)), nn.AvgPool2d(layer.pool_size, layer.stride)])",
      "return TorchTwin([nn.AvgPool2d(layer.pool_size, layer.stride)])", T_EDGE, "-k", "to_torch"),
    M("to_torch: Linear weight not transposed", "interop/torch.py",
      "_assign(linear.weight, layer.W[1:].T)", "_assign(linear.weight, layer.W[1:].reshape(linear.weight.shape))", T_INT),
    M("to_keras: batch-norm momentum passed as is", "interop/keras.py",
      "momentum=1.0 - layer.momentum,", "momentum=layer.momentum,", T_EDGE, "-k", "momentum"),
    M("to_keras: batch norm after Flatten ignores the HWC order", "interop/keras.py",
      "vector = ctx.layout if ctx.layout.kind == \"flat\" else PLAIN  # per-feature", "vector = PLAIN  # per-feature",
      T_EDGE, "-k", "after_flatten"),
    M("to_keras: Dense rows after Flatten not permuted", "interop/keras.py",
      "kernel = layer.W[1:] if perm is None else layer.W[1:][perm]", "kernel = layer.W[1:]", T_INT, "-k", "keras"),
]


# -- stub mutants -----------------------------------------------------------------------------
STUB_LAYER = '''

# --- mutant: {cls}.{method} stubbed to zeros ---
import numpy as _mutant_np


def _mutant_wrap(cls):
    original = cls.{method}

    def stub(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if "{method}" == "backward":
            for name in getattr(self, "parameter_names", ()):
                grad = getattr(self, "_" + name + "_pd", None)
                if grad is not None:
                    grad[...] = 0
        if out is None:
            return None
        if isinstance(out, (list, tuple)):
            return type(out)(_mutant_np.zeros_like(o) for o in out)
        return _mutant_np.zeros_like(out)

    cls.{method} = stub


_mutant_wrap({cls})
'''

STUB_LOSS = '''

# --- mutant: {cls} stubbed (loss 0, gradient 0) ---
import numpy as _mutant_np


def _mutant_wrap(cls):
    forward, backward = cls.forward, cls.backward

    def stub_forward(self, *args, **kwargs):
        return type(forward(self, *args, **kwargs))(0)

    def stub_backward(self, *args, **kwargs):
        return _mutant_np.zeros_like(backward(self, *args, **kwargs))

    cls.forward, cls.backward = stub_forward, stub_backward


_mutant_wrap({cls})
'''

STUB_OPTIMIZER = '''

# --- mutant: {cls}.update does nothing ---
{cls}.update = lambda self, param, grad: None
'''


# Layers that the table (layer_cases.py) cannot hold -- merges take a list of inputs -- and the
# tests that check their values instead.
OWN_TESTS = {name: ["tests/test_graph.py::test_merge_layers_match_torch_with_broadcasting"]
             for name in ("Add", "Concatenate", "Multiply")}
# Random augmentation layers: no fixed function to difference; their tests check exact known
# cases (quarter turns, whole-pixel shifts), the adjoint identity and seeding.
OWN_TESTS.update({name: ["tests/test_keras_api.py", "-k", "augmentation or random_rotation or random_crop"]
                  for name in ("RandomCrop", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom")})


def stub_mutants(root: str) -> list[Mutant]:
    """Zero stubs for every layer in ``nodes.__all__`` / ``neurons.__all__``, every loss and
    every optimizer, read from the copy at ``root``."""
    sys.path.insert(0, os.path.join(root, "src"))
    try:
        for name in [m for m in sys.modules if m == "nn_from_scratch" or m.startswith("nn_from_scratch.")]:
            del sys.modules[name]
        lib = importlib.import_module("nn_from_scratch")
        nodes, neurons = importlib.import_module("nn_from_scratch.nodes"), importlib.import_module("nn_from_scratch.neurons")
        losses, optimizers = importlib.import_module("nn_from_scratch.losses"), importlib.import_module("nn_from_scratch.optimizers")
        from nn_from_scratch.interfaces import Layer, Optimizer

        found: list[Mutant] = []

        def rel(cls) -> str:
            return os.path.relpath(inspect.getsourcefile(cls), root)

        table = collect(root, [T_GRAD, T_SWEEP])
        optimizer_tests = collect(root, [T_OPT])

        def cases(ids: list[str], prefix: str, fallback: list[str]) -> list[str]:
            """The parametrized tests of one case of the table: ids ``...[<prefix>-...]``, so that
            ``ReLU`` does not select ``LeakyReLU`` nor ``Convolution`` ``TransposedConvolution``."""
            chosen = [i for i in ids if "[" in i and (i.split("[", 1)[1].lower().startswith(prefix.lower() + "-")
                                                      or i.split("[", 1)[1].lower() == prefix.lower() + "]")]
            return chosen or fallback

        layers = [getattr(m, n) for m in (nodes, neurons) for n in getattr(m, "__all__", [])]
        for cls in sorted({c for c in layers if inspect.isclass(c) and issubclass(c, Layer) and not inspect.isabstract(c)
                           and not issubclass(c, losses.Loss)}, key=lambda c: c.__name__):
            tests = cases(table, cls.__name__, OWN_TESTS.get(cls.__name__, [T_GRAD, T_SWEEP, "-k", cls.__name__]))
            for method in ("forward", "backward"):
                found.append(Mutant(f"stub {cls.__name__}.{method} -> zeros", rel(cls), "",
                                    STUB_LAYER.format(cls=cls.__name__, method=method), tests))
            # Both at once: zeros that are consistent with each other (what a deleted layer looks
            # like to a finite-difference check, which alone would not notice).
            found.append(Mutant(f"stub {cls.__name__}.forward+backward -> zeros", rel(cls), "",
                                STUB_LAYER.format(cls=cls.__name__, method="forward")
                                + STUB_LAYER.format(cls=cls.__name__, method="backward"), tests))
        for cls in sorted({c for c in vars(losses).values() if inspect.isclass(c) and issubclass(c, losses.Loss)
                           and c is not losses.Loss and not inspect.isabstract(c)}, key=lambda c: c.__name__):
            found.append(Mutant(f"stub {cls.__name__} -> 0", rel(cls), "", STUB_LOSS.format(cls=cls.__name__),
                                cases(table, cls.__name__, [T_GRAD, T_SWEEP, "-k", cls.__name__])))
        for cls in sorted({c for c in vars(optimizers).values() if inspect.isclass(c) and issubclass(c, Optimizer)
                           and c is not Optimizer and not inspect.isabstract(c)}, key=lambda c: c.__name__):
            prefix = {"GradientDescent": "sgd"}.get(cls.__name__, cls.__name__)
            found.append(Mutant(f"stub {cls.__name__}.update -> no-op", rel(cls), "", STUB_OPTIMIZER.format(cls=cls.__name__),
                                cases(optimizer_tests, prefix, [T_OPT, "-k", cls.__name__])))
        del lib
        return found
    finally:
        sys.path.pop(0)


def collect(root: str, tests: list[str]) -> list[str]:
    """Node ids of ``tests`` in the copy (``pytest --collect-only``)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "src"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           *tests], cwd=root, env=env, capture_output=True, text=True)
    return [line.strip() for line in proc.stdout.splitlines() if "::" in line]


# -- running ----------------------------------------------------------------------------------
def make_copy() -> str:
    """The library and its tests, copied from the working tree into a temporary directory."""
    root = tempfile.mkdtemp(prefix="nn_mutants_")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".hypothesis")
    for name in ("src", "tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(root, name), ignore=ignore)
    shutil.copy2(os.path.join(ROOT, "pyproject.toml"), root)
    return root


def run_tests(root: str, tests: list[str], timeout: float, stop_first: bool = True) -> tuple[str, str, float]:
    """Run pytest in the copy; returns (outcome, last line, seconds). outcome: passed/failed/timeout."""
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "src"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-W", "ignore"]
    cmd += (["-x"] if stop_first else []) + tests
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result within {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else proc.stderr.strip().splitlines()[-1:] and proc.stderr.strip().splitlines()[-1] or ""
    if proc.returncode == 0:
        return "passed", last, seconds
    if proc.returncode == 5:  # no test collected: the selection is wrong, not the mutant caught
        return "empty", last, seconds
    return "failed", last, seconds


def apply(root: str, mutant: Mutant) -> tuple[str, str] | None:
    """Write the mutant into the copy; return (file, original text), or None when it is stale."""
    for file, original, mutated in [(mutant.file, mutant.original, mutant.mutated), *mutant.alternatives]:
        path = os.path.join(root, file)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        if original:
            if text.count(original) != 1:
                continue
            new = text.replace(original, mutated)
        else:
            new = text + mutated
        with open(path, "w") as f:
            f.write(new)
        return file, text
    return None


def restore(root: str, planted: tuple[str, str]) -> None:
    file, text = planted
    with open(os.path.join(root, file), "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default=None, help="only mutants whose name contains this (case-insensitive; a,b: either)")
    parser.add_argument("--stubs", action="store_true", help="add the generated stub mutants (layers, losses, optimizers)")
    parser.add_argument("--only-stubs", action="store_true", help="run the stub mutants only")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant (default 600)")
    parser.add_argument("--baseline", action="store_true", help="first run each selection unmutated: it must pass")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--every-test-must-fail", action="store_true",
                        help="run each selection to the end (no -x) and count a mutant killed only when not one of "
                             "its selected tests passes: no test that names the subject passes with it broken")
    args = parser.parse_args(argv)

    root = make_copy()
    try:
        mutants = [] if args.only_stubs else list(MUTANTS)
        if args.stubs or args.only_stubs:
            mutants += stub_mutants(root)
        if args.k:  # "a,b": any of them
            wanted = [w.strip().lower() for w in args.k.split(",") if w.strip()]
            mutants = [m for m in mutants if any(w in m.name.lower() for w in wanted)]
        if args.list:
            for m in mutants:
                print(f"{m.name}\n    {m.file}  ->  pytest {' '.join(m.tests)}")
            print(f"{len(mutants)} mutants")
            return 0
        if args.baseline:
            selections = sorted({tuple(m.tests) for m in mutants})
            print(f"baseline: {len(selections)} test selections, unmutated")
            for tests in selections:
                outcome, last, seconds = run_tests(root, list(tests), args.timeout)
                print(f"  {outcome:7s} {seconds:6.1f}s  pytest {' '.join(tests)}  [{last}]", flush=True)
                if outcome != "passed":
                    print("baseline failed: a mutant would count as killed for nothing; fix the tests first")
                    return 2
        counts = {"killed": 0, "survived": 0, "stale": 0}
        survivors, stale = [], []
        for i, m in enumerate(mutants, 1):
            planted = apply(root, m)
            if planted is None:
                status, detail, seconds = "stale", "snippet not found exactly once", 0.0
            else:
                try:
                    outcome, detail, seconds = run_tests(root, m.tests, args.timeout, stop_first=not args.every_test_must_fail)
                    passing = re.search(r"(\d+) passed", detail)
                    if args.every_test_must_fail and outcome == "failed" and passing:
                        outcome = "passed"  # some selected test did not notice
                        detail = f"{passing.group(1)} selected tests still pass: {detail}"
                finally:
                    restore(root, planted)
                status = "survived" if outcome in ("passed", "empty") else "killed"
                if outcome == "empty":
                    detail = "no test selected: " + detail
            counts[status] += 1
            (survivors if status == "survived" else stale if status == "stale" else []).append(m)
            print(f"[{i:2d}/{len(mutants)}] {status.upper():8s} {seconds:6.1f}s  {m.name}  ({m.file}; {detail})", flush=True)
        print(f"\n{len(mutants)} mutants: {counts['killed']} killed, {counts['survived']} survived, {counts['stale']} stale")
        for m in survivors:
            print(f"  SURVIVED: {m.name}  (pytest {' '.join(m.tests)})")
        for m in stale:
            print(f"  STALE:    {m.name}  ({m.file}: the snippet moved; update the entry)")
        return 0 if not survivors and not stale else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
