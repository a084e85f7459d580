"""Coverage-guided fuzzing of the model-file loader (``nn_from_scratch.serialization``) with atheris.

The property: whatever the bytes, :func:`~nn_from_scratch.serialization.load_model_bytes`
(the loader of :func:`load_model`, for bytes in memory) returns a model or raises
:class:`~nn_from_scratch.errors.ModelFileError`. Anything else (TypeError, IndexError,
OverflowError, RecursionError, MemoryError, numpy's errors, a hang, a large allocation) is a
crash that libFuzzer reports, with the input saved as ``crash-<sha1>``.

The first byte of each input picks how the rest reaches the loader:

* ``0``: the rest as a whole model file (the safetensors container, its header and metadata;
  a mutated payload mostly meets the checksum);
* ``1``: the rest as ``architecture JSON + b"\\0" + tensor list JSON``, from which the harness
  forges a file *with a correct checksum*, as an attacker would: the architecture (every
  metadata field, every layer config) and the tensors' names, dtypes and shapes reach the
  validation behind the checksum. The tensor list is ``{"name": ["F32", [5, 3]], ...}``; the
  harness fills the data (at most 1 MiB in all).

Run it (``pip install -e '.[fuzz]'``)::

    python fuzz/fuzz_model_file.py --max-time 50       # the short run that .ci/run makes
    python fuzz/fuzz_model_file.py --runs 250000       # a long run
    python fuzz/fuzz_model_file.py --write-seed-corpus # rebuild fuzz/corpus/model/ from small models

New interesting inputs go to a temporary directory unless ``--corpus-out DIR`` is given; the
seed corpus in ``fuzz/corpus/model/`` is only read. Arguments after ``--`` go to libFuzzer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["nn_from_scratch"]):
    import numpy as np

    from nn_from_scratch.errors import ModelFileError
    from nn_from_scratch.serialization import _digest, load_model_bytes

SEED_CORPUS = Path(__file__).resolve().parent / "corpus" / "model"
MAX_FORGED_BYTES = 1 << 20
_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "|u1", "BOOL": "|b1"}


def container(header: dict, chunks: list[bytes]) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def forge(architecture: str, spec: dict) -> bytes | None:
    """A model file holding ``architecture`` and tensors of the given dtypes and shapes, with
    its checksum recomputed; None when the spec is not one (the input is then uninteresting)."""
    if not isinstance(spec, dict):
        return None
    tensors, header, chunks, offset = {}, {}, [], 0
    for name, entry in spec.items():
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0] in _DTYPES
                and isinstance(entry[1], list)
                and len(entry[1]) <= 8 and all(type(s) is int and 0 <= s <= MAX_FORGED_BYTES for s in entry[1])):
            return None
        dtype = np.dtype(_DTYPES[entry[0]])
        count = int(np.prod(entry[1], dtype=object)) if entry[1] else 1
        if offset + count * dtype.itemsize > MAX_FORGED_BYTES:
            return None
        raw = (np.arange(count, dtype=np.int64) * 37 % 251).astype(np.uint8).tobytes()
        raw = (raw * dtype.itemsize)[: count * dtype.itemsize]
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(entry[1])
        if dtype.kind == "f":
            array = np.nan_to_num(array)  # finite values: NaN weights are legal, but noise here
        tensors[name] = array
        header[name] = {"dtype": entry[0], "shape": entry[1], "data_offsets": [offset, offset + array.nbytes]}
        chunks.append(array.tobytes())
        offset += array.nbytes
    header["__metadata__"] = {"format": "nn_from_scratch", "format_version": "1", "architecture": architecture,
                              "sha256": _digest(architecture, tensors)}
    return container(header, chunks)


def split_forged(body: bytes) -> bytes | None:
    arch, _, spec = body.partition(b"\0")
    try:
        spec_value = json.loads(spec) if spec else {}
    except (ValueError, RecursionError):
        return None
    return forge(arch.decode("utf-8", errors="replace"), spec_value)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 2, data[1:]
    if mode == 1:
        forged = split_forged(body)
        if forged is None:
            return
        body = forged
    try:
        load_model_bytes(body, name="<fuzz>")
    except ModelFileError:
        pass  # the documented error


def write_seed_corpus(directory: Path) -> None:
    """Small models of every kind the format holds, each as a mode-0 and a mode-1 seed."""
    from nn_from_scratch import Input, Model, Sequential
    from nn_from_scratch import serialization
    from nn_from_scratch.losses import BinaryCrossEntropy, MSELoss, SoftMaxLoss
    from nn_from_scratch.neurons import BatchNormalization, Convolution, LayerNormalization, Linear
    from nn_from_scratch.nodes import Add, Dropout, MaxPooling, ReLU, Tanh, Vectorization
    from nn_from_scratch.optimizers import Adam, GradientDescent, RMSProp
    import safetensors.numpy as st_numpy

    def graph():
        x = Input(shape=(4,))
        h = Linear(4, 4)(x)
        return Model(x, Linear(4, 2)(Add()([h, ReLU()(h)])), loss=MSELoss(), optimizer=RMSProp(1e-2, momentum=0.5,
                                                                                            centered=True), seed=3)

    models = {
        "mlp_adam": Sequential([Linear(4, 3), ReLU(), Linear(3, 2)], loss=SoftMaxLoss(), optimizer=Adam(1e-2),
                               input_shape=(4,), seed=0),
        "mlp_sgd_bn_dropout": Sequential([Linear(4, 3), BatchNormalization(), Tanh(), Dropout(0.2), Linear(3, 1)],
                                         loss=BinaryCrossEntropy(), optimizer=GradientDescent(0.1, momentum=0.9),
                                         input_shape=(4,), seed=1),
        "conv": Sequential([Convolution(kernel_size=3, output_layers=2, padding=1), MaxPooling(2), Vectorization(),
                            LayerNormalization(8), Linear(output_dim=2)], loss=SoftMaxLoss(), input_shape=(1, 4, 4),
                           seed=2),
        "graph_rmsprop": graph(),
    }
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        if model.optimizer is not None:
            x = rng.normal(size=(8, *model.input_shape))
            y = rng.integers(0, 2, 8) if isinstance(model.loss, (SoftMaxLoss, BinaryCrossEntropy)) else rng.normal(
                size=(8, *model.output_shape))
            if isinstance(model.loss, BinaryCrossEntropy):
                y = y.reshape(8, 1).astype(float)
            model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        tensors, metadata = serialization.model_to_tensors(model)
        whole = st_numpy.save(tensors, metadata=metadata)
        spec = {k: [{"f": "F", "i": "I", "u": "U"}[a.dtype.kind] + str(8 * a.dtype.itemsize), list(a.shape)]
                for k, a in tensors.items()}
        forged = metadata["architecture"].encode() + b"\0" + json.dumps(spec).encode()
        for mode, body in ((0, whole), (1, forged)):
            entry = bytes([mode]) + body
            (directory / f"{name}-{mode}-{hashlib.sha1(entry).hexdigest()[:10]}").write_bytes(entry)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, libfuzzer = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-time", type=int, help="stop after this many seconds (libFuzzer -max_total_time)")
    parser.add_argument("--runs", type=int, help="stop after this many executions (libFuzzer -runs)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes")
    parser.add_argument("--corpus-out", type=Path, help="keep the new inputs here (default: a temporary directory)")
    parser.add_argument("--write-seed-corpus", action="store_true", help=f"rebuild {SEED_CORPUS} and exit")
    args = parser.parse_args(ours)
    if args.write_seed_corpus:
        write_seed_corpus(SEED_CORPUS)
        return

    flags = ["-rss_limit_mb=2048", "-malloc_limit_mb=256", "-timeout=10", "-max_len=16384", "-print_final_stats=1"]
    if args.max_time:
        flags.append(f"-max_total_time={args.max_time}")
    if args.runs:
        flags.append(f"-runs={args.runs}")
    if args.jobs > 1:
        flags += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
    with tempfile.TemporaryDirectory(prefix="fuzz-model-") as scratch:
        out = args.corpus_out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        atheris.Setup([sys.argv[0], *flags, *libfuzzer, str(out), str(SEED_CORPUS)], test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
