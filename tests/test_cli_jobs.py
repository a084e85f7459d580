"""Every subcommand of ``python -m nn_from_scratch``, run as a subprocess on a small model: what it
prints is checked against the model run in this process (and torch for the probabilities), and
one bad input each ends in exactly one line on stderr with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nn_from_scratch", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=cwd)


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``train`` on 300 MNIST images with --save, --plot and --threads: the model every other test uses."""
    root = tmp_path_factory.mktemp("cli")
    result = run("train", "--model", "seed", "--train-size", "300", "--epochs", "1", "--no-progress",
                 "--save", root / "seed.safetensors", "--plot", root / "plots", "--threads", "1", "--seed", "3")
    return root, result


def test_train(trained):
    root, result = trained
    assert result.returncode == 0, result.stderr
    assert "test accuracy:" in result.stdout and f"wrote {root / 'plots' / 'history.png'}" in result.stdout
    from nn_from_scratch import load_model

    model = load_model(root / "seed.safetensors")
    assert model.epoch == 1
    png = (root / "plots" / "history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_train_bad_arguments(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_usage_error(run("train", "--threads", "0"), "--threads")
    assert_usage_error(run("train", "--epochs", "1", "--train-size", "50", "--plot", tmp_path / "file" / "sub"),
                       "--plot", "cannot create")
    assert_usage_error(run("train", "--dataset", "cifar"), "--dataset")


def test_train_help_has_examples():
    for command in ("train", "evaluate", "predict", "summary", "gradcheck", "compare"):
        result = run(command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout
        assert f"python -m nn_from_scratch {command} " in result.stdout


def test_evaluate(trained):
    root, _ = trained
    result = run("evaluate", root / "seed.safetensors", "--dataset", "mnist", "--limit", "400")
    assert result.returncode == 0, result.stderr
    from sklearn.metrics import accuracy_score, confusion_matrix

    from nn_from_scratch import load_model
    from nn_from_scratch.datasets import mnist

    _, (x, y) = mnist.load_data()
    model = load_model(root / "seed.safetensors")
    predicted = model.predict(x[:400, None].astype(np.float32) / 255).argmax(axis=1)
    lines = result.stdout.splitlines()
    assert lines[0] == f"accuracy: {accuracy_score(y[:400], predicted):.4f} (400 images of mnist)"
    assert any(line.split()[:1] == ["precision"] for line in lines)  # the per-class table
    start = lines.index("confusion matrix (rows: true class, columns: predicted class)")
    table = np.array([[int(v) for v in line.split()[2:]] for line in lines[start + 2:start + 12]])
    np.testing.assert_array_equal(table, confusion_matrix(y[:400], predicted, labels=range(10)))


def test_evaluate_bad_path(tmp_path):
    assert_usage_error(run("evaluate", tmp_path / "missing.safetensors"), "missing.safetensors", "no such file")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    assert_usage_error(run("evaluate", tmp_path / "junk.safetensors"), "junk.safetensors")


def test_predict(trained, tmp_path):
    import torch
    from PIL import Image

    from nn_from_scratch import load_model
    from nn_from_scratch.datasets import mnist

    root, _ = trained
    _, (x, _) = mnist.load_data()
    np.save(tmp_path / "three.npy", x[:3])
    Image.fromarray(x[3]).save(tmp_path / "one.png")
    result = run("predict", root / "seed.safetensors", tmp_path / "three.npy", tmp_path / "one.png")
    assert result.returncode == 0, result.stderr
    model = load_model(root / "seed.safetensors")
    logits = model.predict(x[:4, None].astype(np.float32) / 255)
    p = torch.softmax(torch.from_numpy(logits.astype(np.float64)), dim=1).numpy()
    names = [f"{tmp_path / 'three.npy'}[{k}]" for k in range(3)] + [str(tmp_path / "one.png")]
    expected = [f"{n}: class {p[k].argmax()} (probability {p[k].max():.4f})" for k, n in enumerate(names)]
    assert result.stdout.splitlines() == expected


def test_predict_bad_inputs(trained, tmp_path):
    root, _ = trained
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5)))
    assert_usage_error(run("predict", root / "seed.safetensors", tmp_path / "wrong.npy"), "(1, 28, 28)", "(5, 5)")
    (tmp_path / "a.txt").write_text("1 2 3")
    assert_usage_error(run("predict", root / "seed.safetensors", tmp_path / "a.txt"), ".npy or .png")
    (tmp_path / "fake.png").write_bytes(b"no png here")
    assert_usage_error(run("predict", root / "seed.safetensors", tmp_path / "fake.png"), "not a PNG")


def test_summary(trained, tmp_path):
    root, _ = trained
    result = run("summary", root / "seed.safetensors")
    assert result.returncode == 0, result.stderr
    # the seed notebook's Keras summary: 36 + 392 + 8010 = 8438 parameters
    assert "Total params: 8,438" in result.stdout
    assert [line.split()[-1] for line in result.stdout.splitlines() if "(Convolution)" in line] == ["36", "392"]
    by_name = run("summary", "resnet")
    assert by_name.returncode == 0 and "Add" in by_name.stdout
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    assert_usage_error(run("summary", tmp_path / "junk.safetensors"), "cannot load model")


def test_gradcheck():
    result = run("gradcheck", "--model", "seed", "--batch", "1")
    assert result.returncode == 0, result.stderr
    assert "8,438 parameters agree with central finite differences" in result.stdout
    assert_usage_error(run("gradcheck", "--model", "vgg"), "--model", "vgg")


def test_compare(tmp_path):
    result = run("compare", "--model", "seed", "--reference", "torch", "--batch", "2", "--plot", tmp_path / "c.png")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("compare vs torch, float64, local")
    rows = [line.split()[1] for line in lines[3:10]]
    assert rows == ["Convolution", "ReLU", "Convolution", "ReLU", "Vectorization", "Linear", "loss"]
    assert lines[-2].startswith("OK: every tensor agrees within 1e-10")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert_usage_error(run("compare", "--model", "seed", "--reference", "jax"), "--reference", "jax")
    assert_usage_error(run("compare", "--model", "seed", "--plot", tmp_path / "no" / "c.png"), "no such directory")
