"""Coverage-guided fuzzing of the IDX reader (``nn_from_scratch.datasets.idx``) with atheris.

The property: whatever the bytes, :func:`read_idx_bytes` returns an array or raises one of
the reader's documented errors -- :class:`~nn_from_scratch.datasets.idx.IDXFormatError` or
:class:`~nn_from_scratch.datasets.idx.ChecksumError`, both ``DatasetFileError`` (a
``ValueError``). Anything else (IndexError, numpy's ValueError, MemoryError, OverflowError, a
hang, a large allocation) is a crash that libFuzzer reports, with the input saved as
``crash-<sha1>``.

The first byte of each input picks how the rest reaches the reader:

* ``0``: the rest as a raw IDX file;
* ``1``: the rest gzipped by the harness, so the fuzzer explores the IDX parser behind gzip;
* ``2``: the rest read as a ``.gz`` file itself (hostile gzip streams, bombs);
* ``3``: as ``0``, with an expected sha256 (the checksum path).

Run it (``pip install -e '.[fuzz]'``)::

    python fuzz/fuzz_idx.py --max-time 60          # the short run that .ci/run makes
    python fuzz/fuzz_idx.py --runs 1000000         # a long run: a million executions
    python fuzz/fuzz_idx.py --max-time 3600 --jobs 2 -- -print_final_stats=1

New interesting inputs go to a temporary directory unless ``--corpus-out DIR`` is given; the
seed corpus in ``fuzz/corpus/idx/`` is only read. Arguments after ``--`` go to libFuzzer.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["nn_from_scratch.datasets"]):
    from nn_from_scratch.datasets.idx import DatasetFileError, read_idx_bytes

SEED_CORPUS = Path(__file__).resolve().parent / "corpus" / "idx"
SOME_SHA256 = hashlib.sha256(b"").hexdigest()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    try:
        if mode == 0:
            read_idx_bytes(body, gzipped=False)
        elif mode == 1:
            read_idx_bytes(gzip.compress(body, compresslevel=1, mtime=0), gzipped=True)
        elif mode == 2:
            read_idx_bytes(body, gzipped=True)
        else:
            read_idx_bytes(body, sha256=SOME_SHA256, gzipped=False)
    except DatasetFileError:
        pass  # the documented errors: IDXFormatError, ChecksumError


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, _, libfuzzer = (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-time", type=int, help="stop after this many seconds (libFuzzer -max_total_time)")
    parser.add_argument("--runs", type=int, help="stop after this many executions (libFuzzer -runs)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes")
    parser.add_argument("--corpus-out", type=Path, help="keep the new inputs here (default: a temporary directory)")
    args = parser.parse_args(ours)

    flags = ["-rss_limit_mb=1024", "-malloc_limit_mb=256", "-timeout=10", "-max_len=4096", "-print_final_stats=1"]
    if args.max_time:
        flags.append(f"-max_total_time={args.max_time}")
    if args.runs:
        flags.append(f"-runs={args.runs}")
    if args.jobs > 1:
        flags += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
    with tempfile.TemporaryDirectory(prefix="fuzz-idx-") as scratch:
        out = args.corpus_out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        atheris.Setup([sys.argv[0], *flags, *libfuzzer, str(out), str(SEED_CORPUS)], test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
