"""nn_from_scratch.plots: every figure renders with Agg, is not blank, and carries the axes,
titles and labels it promises; the PNG written to ``path`` is that figure."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nn_from_scratch import plots, verify, zoo  # noqa: E402
from nn_from_scratch.losses import SoftMaxLoss  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)


def assert_not_blank(fig) -> None:
    rgb = pixels(fig)
    ink = np.mean(np.any(rgb < 250, axis=-1))  # share of pixels that are not white
    assert ink > 0.02, f"figure is (nearly) blank: {ink:.4f} of pixels drawn"
    assert rgb.std() > 10


def assert_png(path, fig) -> None:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        width, height = image.size
        assert (width, height) == tuple(int(round(v)) for v in fig.get_size_inches() * 100)
        assert np.asarray(image.convert("L")).std() > 10


def test_blank_figure_is_caught():
    fig = plt.figure()
    with pytest.raises(AssertionError):
        assert_not_blank(fig)


def test_plot_history(tmp_path):
    logs = {"loss": [2.3, 1.1, 0.7], "val_loss": [2.0, 1.2, 0.9], "accuracy": [0.3, 0.6, 0.8],
            "val_accuracy": [0.4, 0.5, 0.7], "learning_rate": [0.1, 0.05, 0.01]}
    fig = plots.plot_history(logs, path=tmp_path / "h.png")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    loss_ax = fig.axes[0]
    assert loss_ax.get_xlabel() == "epoch" and loss_ax.get_ylabel() == "loss"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["training", "validation"]
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), logs["loss"])
    np.testing.assert_array_equal(loss_ax.lines[1].get_ydata(), logs["val_loss"])
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [1, 2, 3])
    assert fig.axes[2].get_yscale() == "log"
    assert_not_blank(fig)
    assert_png(tmp_path / "h.png", fig)


def test_plot_history_takes_fit_history():
    model = zoo.seed_cnn(seed=0)
    model.compile("sgd", SoftMaxLoss())
    x = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    history = model.fit(x, np.arange(20) % 10, epochs=2, batch_size=10, validation_split=0.5)
    fig = plots.plot_history(history)
    assert "loss" in [ax.get_title() for ax in fig.axes]
    assert len(fig.axes[0].lines) == 2  # training and validation
    with pytest.raises(ValueError, match="plot_history"):
        plots.plot_history({})


def test_plot_filters(tmp_path):
    model = zoo.seed_cnn(seed=0)
    conv = model.layers[2]  # W (2, 4, 7, 7)
    fig = plots.plot_filters(conv, path=tmp_path / "f.png")
    images = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert [ax.get_title() for ax in images] == [f"{o},{i}" for o in range(2) for i in range(4)]
    np.testing.assert_array_equal(images[5].images[0].get_array(), conv.W[1, 1])
    assert "(2, 4, 7, 7)" in fig._suptitle.get_text()
    assert_not_blank(fig)
    assert_png(tmp_path / "f.png", fig)
    with pytest.raises(ValueError, match="plot_filters"):
        plots.plot_filters(model.layers[1])


def test_layer_outputs_match_the_model():
    model = zoo.seed_cnn(seed=0)
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    outs = plots.layer_outputs(model, x)
    assert [name for name, _ in outs] == ["convolution", "re_lu", "convolution_1", "re_lu_1", "vectorization", "linear"]
    # by hand: relu(conv1(x)) from the weights, and the last one is predict's output
    import torch

    w = torch.from_numpy(model.layers[0].W.astype(np.float64))
    assert model.layers[0].B is None  # the seed's convolutions have no bias
    expected = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)), w))
    np.testing.assert_allclose(outs[1][1], expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[-1][1], model.predict(x), rtol=1e-6)


def test_layer_outputs_of_a_graph_model():
    model = zoo.resnet(seed=0)
    x = np.random.default_rng(2).random((1, 1, 28, 28), dtype=np.float32)
    outs = plots.layer_outputs(model, x)
    assert len(outs) == len(model.nodes)
    assert [a.shape[1:] for _, a in outs] == [tuple(node.output.shape) for node in model.nodes]
    np.testing.assert_allclose(outs[-1][1], model.predict(x), rtol=1e-5)


@pytest.mark.parametrize("which", ["sequential", "graph"])
def test_plot_feature_maps(tmp_path, which):
    model = zoo.seed_cnn(seed=0) if which == "sequential" else zoo.resnet(seed=0)
    image = np.random.default_rng(3).random((1, 28, 28), dtype=np.float32)
    outs = plots.layer_outputs(model, image[None])
    layer = "convolution_1" if which == "sequential" else 3
    index = [n for n, _ in outs].index(layer) if isinstance(layer, str) else layer
    fig = plots.plot_feature_maps(model, image, layer=layer, path=tmp_path / "m.png")
    maps = outs[index][1][0]
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [f"channel {k}" for k in range(min(len(maps), 32))]
    np.testing.assert_allclose(shown[1].images[0].get_array(), maps[1], rtol=1e-6)
    assert outs[index][0] in fig._suptitle.get_text()
    assert_not_blank(fig)
    assert_png(tmp_path / "m.png", fig)
    with pytest.raises(ValueError, match="no layer named"):
        plots.plot_feature_maps(model, image, layer="nope")


def test_plot_feature_maps_of_a_vector_layer():
    fig = plots.plot_feature_maps(zoo.seed_cnn(seed=0), np.ones((1, 28, 28), np.float32), layer=-1)
    assert fig.axes[0].get_xlabel() == "feature" and len(fig.axes[0].patches) == 10


def test_plot_confusion_matrix(tmp_path):
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(4)
    y_true, y_pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    names = ["cat", "dog", "bird", "fish"]
    fig = plots.plot_confusion_matrix(y_true, y_pred, class_names=names, path=tmp_path / "c.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true" and ax.get_title() == "confusion matrix"
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    np.testing.assert_array_equal(ax.images[0].get_array(), confusion_matrix(y_true, y_pred))
    cells = [int(t.get_text()) for t in ax.texts]
    np.testing.assert_array_equal(cells, confusion_matrix(y_true, y_pred).ravel())
    assert_not_blank(fig)
    assert_png(tmp_path / "c.png", fig)


def test_plot_predictions(tmp_path):
    images = np.random.default_rng(5).random((6, 1, 28, 28))
    y_true = np.array([0, 1, 2, 3, 4, 5])
    scores = np.eye(10)[[0, 1, 7, 3, 4, 9]] * 5.0
    fig = plots.plot_predictions(images, y_true, scores, path=tmp_path / "p.png", cols=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["pred 0 / true 0", "pred 1 / true 1", "pred 7 / true 2", "pred 3 / true 3",
                      "pred 4 / true 4", "pred 9 / true 5"]
    red = [ax.title.get_color() == "red" for ax in fig.axes]
    assert red == [False, False, True, False, False, True]
    p = np.exp(5.0) / (np.exp(5.0) + 9)
    assert fig.axes[0].get_xlabel() == f"p = {p:.2f}"
    assert fig._suptitle.get_text().startswith("2 of 6 wrong")
    assert_not_blank(fig)
    assert_png(tmp_path / "p.png", fig)


def test_plot_comparison_marks_the_first_divergence(tmp_path):
    model = zoo.seed_cnn(dtype=np.float64, seed=0)
    x = np.random.default_rng(6).random((2, 1, 28, 28))
    y = np.array([3, 5])
    report = verify.compare(model, x, y, loss=SoftMaxLoss())
    fig = plots.plot_comparison(report)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "relative error" and ax.get_xlabel() == "layer"
    assert [t.get_text() for t in ax.get_xticklabels()] == [row.label for row in report.rows]
    assert ax.get_title().endswith("OK")
    tol_lines = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(tol_lines) == 1 and tol_lines[0].get_ydata()[0] == report.tol
    assert not ax.patches  # nothing marked
    assert_not_blank(fig)

    relu = model.layers[1]
    backward = relu.backward
    relu.backward = lambda g, need_input_grad=True: backward(g) * 1.001  # a planted bug
    report = verify.compare(model, x, y, loss=SoftMaxLoss(), mode="end_to_end")
    fig = plots.plot_comparison(report, path=tmp_path / "cmp.png")
    ax = fig.axes[0]
    assert report.first_divergence.label == "1 ReLU"
    assert ax.get_title().endswith("diverges at 1 ReLU")
    (span,) = ax.patches
    assert span.get_x() + span.get_width() / 2 == pytest.approx(1.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["output", "dL/dx", "dW"] and legend[-1] == "tolerance 1e-10"
    dx = ax.collections[1].get_offsets()
    assert dx[1][1] == pytest.approx(1e-3, rel=0.1)  # the ReLU's dL/dx error, drawn where it is
    assert_not_blank(fig)
    assert_png(tmp_path / "cmp.png", fig)
