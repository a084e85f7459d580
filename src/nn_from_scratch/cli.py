"""The command line: ``python -m nn_from_scratch train``.

Trains a named model (see :mod:`nn_from_scratch.zoo`) on the bundled MNIST with softmax
cross-entropy and :meth:`Sequential.fit <nn_from_scratch.model.Sequential.fit>` (shuffled every
epoch by the model's seeded generator), shows a progress bar with the running loss and accuracy,
and prints the test accuracy. Each model has its own defaults (``zoo.RECIPES``):

* ``--model seed`` (the default): the seed notebook's CNN and settings -- plain SGD, learning
  rate 0.1, batch 50, 1 epoch, inputs ``x / 255``;
* ``--model lenet``: LeNet-5 with batch norm, Adam at 4e-3 with a per-batch cosine decay to 0,
  batch 64, 3 epochs, inputs ``x / 255``;
* ``--model resnet`` / ``--model mobilenet`` (:func:`zoo.resnet`, :func:`zoo.mobilenet`):
  SGD with Nesterov momentum and weight decay, a warm-up then cosine decay, label smoothing,
  random 2-pixel crops and horizontal flips (:class:`~nn_from_scratch.augment.RandomCropFlip`),
  on Fashion-MNIST by default.

``--dataset mnist|fashion_mnist`` picks the data (default: the model's recipe).

Any of ``--epochs``, ``--batch-size``, ``--lr``, ``--preprocessing`` overrides the recipe.
``--dtype float64`` trains in double precision, ``--save PATH`` writes the trained model
(safetensors), and ``--distributed`` trains data-parallel under MPI
(``mpiexec -n 2 python -m mpi4py -m nn_from_scratch train --distributed``; the same weights as
one process, up to rounding). ``python -m nn_from_scratch export MODEL.safetensors --onnx
OUT.onnx`` converts a saved model to ONNX.

The other subcommands, one per job (``python -m nn_from_scratch COMMAND --help`` shows examples):
``evaluate MODEL --dataset ...`` (accuracy, per-class table, confusion matrix), ``predict MODEL
FILE...`` (class and probability of ``.npy`` arrays and PNG images), ``summary MODEL``,
``gradcheck --model NAME`` (finite differences) and ``compare --model NAME --reference
torch|keras`` (the per-layer table of :func:`nn_from_scratch.verify.compare`). A bad path or
argument ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Sequence

import numpy as np
from . import zoo
from .augment import RandomCropFlip
from .callbacks import CosineDecay
from .datasets import DATASETS, load_dataset
from .losses import SoftMaxLoss
from .model import Sequential
from .optimizers import Adam, GradientDescent


@dataclass
class TrainResult:
    """What :func:`train` measured.

    Args:
        test_accuracy: accuracy on the 10,000 test images (``nan`` on ranks other than 0).
        epoch_losses: the mean training loss of each epoch.
        train_seconds: wall time of ``fit``.
        images_per_second: training images processed per second.
        root: False on the ranks other than 0 of a distributed run.
        history: ``fit``'s per-epoch logs (``loss``, ``accuracy`` ...).

    Example:
        >>> TrainResult(test_accuracy=0.9).epoch_losses
        []
    """

    test_accuracy: float
    epoch_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    root: bool = True  # False on the ranks other than 0 of a distributed run
    history: dict[str, list[float]] = field(default_factory=dict)  # fit's per-epoch logs


def accuracy(model: Sequential, x: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Share of ``x`` whose highest logit is the right class.

    Args:
        model: a model whose ``predict`` gives logits ``(N, K)``.
        x: the inputs, ``(N, ...)`` as the model takes them.
        labels: the integer classes, ``(N,)``.
        batch_size: images per ``predict`` batch.

    Returns:
        A float in [0, 1].

    Example:
        >>> W = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])       # bias row, then the identity
        >>> model = Sequential([Linear(input_dim=2, output_dim=2, W=W)])
        >>> accuracy(model, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), np.array([0, 1, 1]))
        0.6666666666666666
    """
    predicted = model.predict(x, batch_size=batch_size).argmax(axis=1)
    return float(np.mean(predicted == labels))




def train(
    model: str = "seed",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    train_size: int | None = None,
    preprocessing: str | None = None,
    progress: bool = True,
    dataset: str | None = None,
    dtype: str = "float32",
    save: str | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Train ``zoo.MODELS[model]`` on ``dataset`` (``"mnist"`` or ``"fashion_mnist"``; the first
    ``train_size`` images, default all) and measure its accuracy on the 10,000 test images.
    Arguments left as None take the model's recipe (``zoo.RECIPES``).

    ``dtype``: ``"float32"`` or ``"float64"`` (weights and inputs). ``save``: write the trained
    model there (safetensors, :meth:`~nn_from_scratch.model_base.BaseModel.save`).
    ``distributed``: data-parallel over the ranks of the MPI job this runs in
    (:mod:`nn_from_scratch.distributed`; the same global batches as one process); rank 0 alone
    shows progress and saves, and the test accuracy is measured on rank 0 only (``nan`` on the
    other ranks).

    Args:
        model: a name in ``zoo.MODELS`` (``"seed"``, ``"lenet"``, ``"resnet"``, ``"mobilenet"``).
        epochs: passes over the training images.
        batch_size: images per step.
        lr: the learning rate.
        seed: seeds the weights and the shuffling.
        train_size: use the first ``train_size`` training images (default all 60,000).
        preprocessing: how pixels are scaled (the recipe's choice when None).
        progress: show a progress bar.
        dataset: ``"mnist"`` or ``"fashion_mnist"``.
        dtype: ``"float32"`` or ``"float64"``.
        save: a path to write the trained model to, or None.
        distributed: data-parallel over the ranks of the MPI job.

    Returns:
        A :class:`TrainResult`.

    Example:
        >>> result = train("seed", epochs=1, train_size=1000, progress=False)    # doctest: +SKIP
        >>> result.test_accuracy > 0.5, len(result.epoch_losses)                  # doctest: +SKIP
        (True, 1)
    """
    if model not in zoo.MODELS:
        raise ValueError(f"train: unknown model {model!r}; choose one of {sorted(zoo.MODELS)}")
    recipe = zoo.RECIPES.get(model, zoo.RECIPES["seed"])
    epochs = recipe.epochs if epochs is None else epochs
    batch_size = recipe.batch_size if batch_size is None else batch_size
    lr = recipe.lr if lr is None else lr
    preprocessing = recipe.preprocessing if preprocessing is None else preprocessing
    (x_train, y_train), (x_test, y_test) = load_dataset(recipe.dataset if dataset is None else dataset)
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_train = zoo.preprocess_images(x_train, preprocessing, dtype=np.dtype(dtype))
    x_test = zoo.preprocess_images(x_test, preprocessing, dtype=np.dtype(dtype))

    net = zoo.MODELS[model](seed=seed, dtype=np.dtype(dtype))
    strategy = None
    if distributed:
        from .distributed import DataParallel

        strategy = DataParallel()
    net.loss = SoftMaxLoss(label_smoothing=recipe.label_smoothing)
    net.optimizer = Adam(lr) if recipe.optimizer == "adam" else GradientDescent(
        lr, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    callbacks = []
    if recipe.schedule == "cosine":
        steps_per_epoch = -(-len(x_train) // batch_size)
        warmup = min(recipe.warmup_epochs, epochs - 1) * steps_per_epoch if epochs > 1 else 0
        callbacks.append(CosineDecay(decay_steps=epochs * steps_per_epoch - warmup, unit="batch", warmup_steps=warmup))
    if recipe.crop_padding or recipe.flip:
        augment = RandomCropFlip(x_train, padding=recipe.crop_padding, flip=recipe.flip)
        x_train = augment.images
        callbacks.append(augment)
    start = time.perf_counter()
    history = net.fit(x_train, y_train.astype(np.intp), epochs=epochs, batch_size=batch_size, shuffle=True,
                      callbacks=callbacks, verbose=1 if progress else 0, distributed=strategy)
    seconds = time.perf_counter() - start
    n_seen = epochs * len(x_train)
    root = strategy is None or strategy.is_root
    if save is not None and root:
        net.save(save)
    return TrainResult(accuracy(net, x_test, y_test) if root else float("nan"), history.history["loss"], seconds,
                       n_seen / seconds if seconds else 0.0, root, dict(history.history))


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, with a bad value reported in one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, low: float, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, finite and at least ``low``, else a one-line error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (kind is float and low == 0 and value == 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, "a positive integer")
non_negative_int = _number(int, 0, "an integer >= 0")
positive_float = _number(float, 0, "a positive finite number")
positive_int.__doc__ = """An argparse ``type=``: the integer written in ``text``, at least 1.

    Args:
        text: the command-line string.

    Raises:
        argparse.ArgumentTypeError: not an integer, or below 1 (argparse prints it in one line).

    Example:
        >>> positive_int("3")
        3
    """
non_negative_int.__doc__ = """An argparse ``type=``: the integer written in ``text``, at least 0.

    Args:
        text: the command-line string.

    Raises:
        argparse.ArgumentTypeError: not an integer, or negative (argparse prints it in one line).

    Example:
        >>> non_negative_int("0")
        0
    """
positive_float.__doc__ = """An argparse ``type=``: the finite number written in ``text``, above 0.

    Args:
        text: the command-line string.

    Raises:
        argparse.ArgumentTypeError: not a number, not finite, or not above 0.

    Example:
        >>> positive_float("0.5")
        0.5
    """


def _export(model_path: str, onnx_path: str, opset: int | None) -> int:
    """``export MODEL.safetensors --onnx OUT.onnx``: load the model, write it as ONNX."""
    from .interop import onnx as onnx_interop
    from .serialization import load_model

    model = load_model(model_path)
    onnx_interop.to_onnx(model, onnx_path, opset=opset if opset is not None else onnx_interop.DEFAULT_OPSET)
    _print(f"wrote {onnx_path} (ONNX opset {opset if opset is not None else onnx_interop.DEFAULT_OPSET})")
    return 0


class _OutputError(Exception):
    """stdout could not be written (a full disk, a closed pipe)."""


def _print(text: str) -> None:
    """``print``, flushed at once, so that an unwritable stdout (a full disk, a closed pipe) is
    met here, where it can be reported in one line, rather than at interpreter exit."""
    try:
        print(text)
        sys.stdout.flush()
    except OSError as error:
        raise _OutputError(error.strerror or str(error)) from error


def _check_plot_dir(parser: argparse.ArgumentParser, directory: str) -> None:
    """``--plot DIR``: create DIR if needed; a path that cannot be a directory is a usage error."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.exit(2, f"{parser.prog} train: error: --plot needs matplotlib: pip install 'nn_from_scratch[plot]'\n")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        parser.exit(2, f"{parser.prog} train: error: --plot {directory!r}: cannot create the directory "
                       f"({error.strerror or error})\n")


def _add_jobs(job: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    """The subcommands of :mod:`nn_from_scratch.cli_jobs`."""
    e = job("evaluate", "accuracy, per-class precision/recall/F1 and the confusion matrix of a saved model on a test set",
            "  python -m nn_from_scratch evaluate lenet.safetensors --dataset mnist\n"
            "  python -m nn_from_scratch evaluate resnet.safetensors --dataset fashion_mnist --limit 2000")
    e.add_argument("model_path", metavar="MODEL", help="a saved model (train --save, model.save)")
    e.add_argument("--dataset", choices=DATASETS, default="mnist", help="whose test images (default: mnist)")
    e.add_argument("--limit", type=positive_int, default=None, help="only the first N test images")
    e.add_argument("--preprocessing", choices=zoo.PREPROCESSING, default="scale", help="as in training (default: scale)")
    q = job("predict", "the class and probability of images in .npy or PNG files",
            "  python -m nn_from_scratch predict lenet.safetensors digit.png\n"
            "  python -m nn_from_scratch predict lenet.safetensors batch.npy one.npy --dataset mnist")
    q.add_argument("model_path", metavar="MODEL", help="a saved model")
    q.add_argument("files", metavar="FILE", nargs="+",
                   help=".npy (uint8 pixels or ready float inputs; one image or a batch) or .png (Pillow: the [images] extra)")
    q.add_argument("--preprocessing", choices=zoo.PREPROCESSING, default="scale", help="for uint8 pixels (default: scale)")
    q.add_argument("--dataset", choices=DATASETS, default=None, help="print that dataset's class names too")
    s = job("summary", "the layers, output shapes and parameter counts of a saved model (or a zoo model by name)",
            "  python -m nn_from_scratch summary lenet.safetensors\n"
            "  python -m nn_from_scratch summary resnet")
    s.add_argument("model", metavar="MODEL", help=f"a saved model, or one of {sorted(zoo.MODELS)}")
    g = job("gradcheck", "check a zoo model's backpropagation against central finite differences (float64)",
            "  python -m nn_from_scratch gradcheck --model seed\n"
            "  python -m nn_from_scratch gradcheck --model lenet --batch 2 --seed 3")
    g.add_argument("--model", choices=sorted(zoo.MODELS), required=True, help="which zoo model")
    g.add_argument("--batch", type=positive_int, default=2, help="random inputs in the batch (default: 2)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seeds the weights and the inputs")
    c = job("compare", "compare a zoo model with its torch or Keras twin layer by layer (outputs, dL/dx, gradients)",
            "  python -m nn_from_scratch compare --model seed --reference torch\n"
            "  python -m nn_from_scratch compare --model resnet --reference keras --dtype float32 --plot cmp.png")
    c.add_argument("--model", choices=sorted(zoo.MODELS), required=True, help="which zoo model")
    c.add_argument("--reference", choices=("torch", "keras"), default="torch", help="the twin's framework (default: torch)")
    c.add_argument("--batch", type=positive_int, default=4, help="random inputs in the batch (default: 4)")
    c.add_argument("--seed", type=non_negative_int, default=0, help="seeds the weights and the inputs")
    c.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="both sides (default: float64)")
    c.add_argument("--mode", choices=("local", "end_to_end"), default="local",
                   help="local: each layer on our inputs; end_to_end: each side runs on its own outputs")
    c.add_argument("--plot", metavar="PNG", default=None, help="also draw the report (plots.plot_comparison)")


def _run_job(args: argparse.Namespace) -> int:
    from . import cli_jobs

    if args.command == "evaluate":
        return cli_jobs.evaluate(args.model_path, args.dataset, args.preprocessing, args.limit, _print)
    if args.command == "predict":
        names = cli_jobs._class_names(args.dataset) if args.dataset == "fashion_mnist" else None
        return cli_jobs.predict(args.model_path, args.files, args.preprocessing, names, _print)
    if args.command == "summary":
        return cli_jobs.summary(args.model, _print)
    if args.command == "gradcheck":
        return cli_jobs.gradcheck(args.model, args.batch, args.seed, _print)
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        raise cli_jobs.UsageError(f"--plot {args.plot!r}: no such directory {os.path.dirname(args.plot)!r}")
    return cli_jobs.compare(args.model, args.reference, args.batch, args.seed, args.dtype, args.mode, args.plot, _print)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m nn_from_scratch`` command. Returns the exit status: 0, 2 for a bad
    argument (one line on stderr), 1 when the output cannot be written (one line on stderr).

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``), e.g.
            ``["train", "--model", "lenet"]``.

    Returns:
        The exit status. A bad argument is reported by argparse, which raises ``SystemExit(2)``
        after its one line on stderr rather than returning.

    Example:
        >>> main(["summary", "seed"])               # prints the layer table  # doctest: +SKIP
        0
        >>> main(["train", "--epochs", "0"])        # one line on stderr
        Traceback (most recent call last):
          ...
        SystemExit: 2
    """
    try:
        return _main(argv)
    except _OutputError as error:
        print(f"python -m nn_from_scratch: cannot write the output: {error}", file=sys.stderr)
        # Point stdout at /dev/null, so the interpreter's last flush of the unwritten text does
        # not fail again with a traceback.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1


def _main(argv: Sequence[str] | None = None) -> int:
    parser = _OneLineErrors(prog="python -m nn_from_scratch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    def job(name: str, help: str, examples: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, epilog="examples:\n" + examples,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    p = job("train", "train a model on MNIST or Fashion-MNIST and print its test accuracy",
            "  python -m nn_from_scratch train --model lenet --epochs 1 --save lenet.safetensors\n"
            "  python -m nn_from_scratch train --model resnet --dataset fashion_mnist --threads 2 --plot curves/\n"
            "  python -m nn_from_scratch train --epochs 2 --lr 0.05 --seed 1 --dtype float64")
    p.add_argument("--model", choices=sorted(zoo.MODELS), default="seed", help="which model (default: seed, the notebook's CNN)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the model's recipe (seed 1, lenet 3)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the model's recipe (seed 50, lenet 64)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (default: seed 0.1 with SGD, lenet 4e-3 with Adam and cosine decay)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seeds the initial weights and the shuffling")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="mnist or fashion_mnist (default: the model's recipe; resnet and mobilenet: fashion_mnist)")
    p.add_argument("--train-size", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument("--preprocessing", choices=zoo.PREPROCESSING, default=None,
                   help="standardize: (x - 33.318) / 78.567; scale: x / 255 (default: scale)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating type of the weights and inputs (default: float32)")
    p.add_argument("--save", metavar="PATH", default=None, help="write the trained model to PATH (safetensors)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="BLAS threads (nn_from_scratch.set_num_threads; default: OPENBLAS/OMP/MKL_NUM_THREADS if set, "
                        "else the library's: the cores other processes leave idle, re-measured every 0.5 s while "
                        "training, at least 1 -- nn_from_scratch.threads.adapt)")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="write the learning curves to DIR/history.png (needs matplotlib: the [plot] extra)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI ranks: mpiexec -n 2 python -m mpi4py -m nn_from_scratch train --distributed")
    e = commands.add_parser("export", help="convert a saved model (safetensors) to ONNX")
    e.add_argument("model_path", metavar="MODEL.safetensors", help="a model written by train --save or model.save")
    e.add_argument("--onnx", metavar="OUT.onnx", required=True, help="where to write the ONNX model")
    e.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: interop.onnx.DEFAULT_OPSET)")
    _add_jobs(job)
    args = parser.parse_args(argv)  # the types above refuse bad values: one line, exit status 2
    if args.command == "export":
        return _export(args.model_path, args.onnx, args.opset)
    if args.command != "train":
        from . import cli_jobs

        try:
            return _run_job(args)
        except cli_jobs.UsageError as error:
            parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    if args.plot is not None:
        _check_plot_dir(parser, args.plot)
    from .threads import set_num_threads

    # Without --threads the library's default follows the load (threads.adapt: one thread on a
    # busy machine, where two collapse).
    limits = args.threads is not None
    if limits:
        set_num_threads(args.threads)
    try:
        result = train(args.model, args.epochs, args.batch_size, args.lr, args.seed, args.train_size,
                       args.preprocessing, progress=not args.no_progress, dataset=args.dataset,
                       dtype=args.dtype, save=args.save, distributed=args.distributed)
    finally:
        if limits:
            set_num_threads(None)
    if not result.root:
        return 0
    if args.plot is not None:
        from .plots import plot_history

        path = os.path.join(args.plot, "history.png")
        plot_history(result.history, path=path, title=f"{args.model} on {args.dataset or zoo.RECIPES.get(args.model, zoo.RECIPES['seed']).dataset}")
        _print(f"wrote {path}")
    _print(f"trained {args.model} for {len(result.epoch_losses)} epoch(s) in {result.train_seconds:.1f} s "
           f"({result.images_per_second:.0f} images/s); last epoch loss {result.epoch_losses[-1]:.4f}")
    _print(f"test accuracy: {result.test_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
