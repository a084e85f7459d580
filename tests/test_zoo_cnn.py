"""zoo.resnet, zoo.mobilenet, the augmentation behind their recipe, and ``train --dataset``.

References come from outside the library: the networks' forward passes are written again with
torch.nn.functional on the same weights (torch's own padding, pooling and batch norm), and the
crops are cut from ``np.pad`` arrays by hand from the same random draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from nn_from_scratch import augment, cli, zoo
from nn_from_scratch.losses import SoftMaxLoss
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
from nn_from_scratch.optimizers import GradientDescent


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# -- the networks against a torch forward pass written from their docstrings ----------------------
def torch_resnet_forward(model, x, blocks=(1, 1, 1)):
    """zoo.resnet's docstring in torch.nn.functional, reading the weights of ``model`` in its
    layer order (stem conv, BN; per block conv, BN, conv, BN[, projection conv, BN]; linear)."""
    import torch
    import torch.nn.functional as F

    layers = iter([layer for layer in model.layers if isinstance(layer, (Convolution, BatchNormalization, Linear))])
    t = torch.from_numpy

    def conv_bn(h):
        conv, bn = next(layers), next(layers)
        h = F.conv2d(h, t(conv.W), padding=conv.W.shape[-1] // 2, groups=h.shape[1] // conv.W.shape[1])
        return F.batch_norm(h, None, None, t(bn.gamma), t(bn.beta), training=True, eps=bn.eps)

    def pool(h):
        return F.max_pool2d(h, 2, padding=h.shape[-1] % 2)  # torch: symmetric padding of an odd side

    h = pool(F.relu(conv_bn(t(x))))
    for stage, count in enumerate(blocks):
        if stage > 0:
            h = pool(h)
        for _ in range(count):
            out = F.relu(conv_bn(h))
            branch = conv_bn(out)
            shortcut = h if branch.shape[1] == h.shape[1] else conv_bn(h)
            h = F.relu(branch + shortcut)
    linear = next(layers)
    W = t(linear.W)
    assert next(layers, None) is None
    return (h.mean(dim=(2, 3)) @ W[1:] + W[0]).numpy()


def torch_mobilenet_forward(model, x):
    import torch
    import torch.nn.functional as F

    layers = iter([layer for layer in model.layers if isinstance(layer, (Convolution, BatchNormalization, Linear))])
    t = torch.from_numpy

    def conv_bn_relu(h, depthwise=False):
        conv, bn = next(layers), next(layers)
        h = F.conv2d(h, t(conv.W), padding=conv.W.shape[-1] // 2, groups=h.shape[1] if depthwise else 1)
        return F.relu(F.batch_norm(h, None, None, t(bn.gamma), t(bn.beta), training=True, eps=bn.eps))

    def separable(h):
        return conv_bn_relu(conv_bn_relu(h, depthwise=True))

    def pool(h):
        return F.max_pool2d(h, 2, padding=h.shape[-1] % 2)

    h = separable(pool(conv_bn_relu(t(x))))
    h = separable(separable(pool(h)))
    h = separable(pool(h))
    W = t(next(layers).W)
    assert next(layers, None) is None
    return (h.mean(dim=(2, 3)) @ W[1:] + W[0]).numpy()


def randomize_norms(model, rng):
    """Batch norms start as gamma 1, beta 0; draw them so the check covers both."""
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            layer.gamma[...] = rng.uniform(0.5, 1.5, layer.gamma.shape)
            layer.beta[...] = rng.uniform(-0.5, 0.5, layer.beta.shape)


@pytest.mark.parametrize("input_shape, blocks", [((1, 28, 28), (1, 1, 1)), ((3, 32, 32), (1, 1, 1)), ((1, 28, 28), (2, 1, 2))])
def test_resnet_matches_torch_forward(input_shape, blocks):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = zoo.resnet(input_shape, num_classes=7, width=4, blocks=blocks, dtype=np.float64, seed=1)
    randomize_norms(model, rng)
    x = rng.standard_normal((3, *input_shape))
    ours = model.forward(x, training=True)
    assert ours.shape == (3, 7)
    assert rel_err(ours, torch_resnet_forward(model, x, blocks)) <= 1e-10


@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32)])
def test_mobilenet_matches_torch_forward(input_shape):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = zoo.mobilenet(input_shape, num_classes=5, width=2, dtype=np.float64, seed=1)
    randomize_norms(model, rng)
    x = rng.standard_normal((3, *input_shape))
    ours = model.forward(x, training=True)
    assert ours.shape == (3, 5)
    assert rel_err(ours, torch_mobilenet_forward(model, x)) <= 1e-10


@pytest.mark.parametrize("input_shape, spatial", [((1, 28, 28), [28, 14, 14, 7, 4]), ((3, 32, 32), [32, 16, 16, 8, 4])])
def test_resnet_shapes(input_shape, spatial):
    model = zoo.resnet(input_shape, width=8, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, Convolution)]
    # stem, then per stage: conv, conv[, 1x1 projection]
    assert [c.output_shape for c in convs] == [
        (8, spatial[0], spatial[0]),
        (8, spatial[2], spatial[2]), (8, spatial[2], spatial[2]),
        (16, spatial[3], spatial[3]), (16, spatial[3], spatial[3]), (16, spatial[3], spatial[3]),
        (32, spatial[4], spatial[4]), (32, spatial[4], spatial[4]), (32, spatial[4], spatial[4]),
    ]
    assert [c.kernel_size for c in convs].count((1, 1)) == 2  # projections where the width changes
    assert model.output_shape == (10,)


def test_resnet_width32_parameter_count():
    # Counted by hand: convs 9*(1*32 + 32*32*2 + 32*64 + 64*64 + 64*128 + 128*128) + 1x1 32*64 + 64*128,
    # batch norms 2*(32*3 + 64*3 + 128*3), linear 128*10 + 10.
    convs = 9 * (32 + 2 * 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128) + 32 * 64 + 64 * 128
    assert zoo.resnet(seed=0).count_params() == convs + 2 * 3 * (32 + 64 + 128) + 128 * 10 + 10 == 308_074


def test_mobilenet_is_depthwise_separable():
    model = zoo.mobilenet((1, 28, 28), width=4, seed=0)
    convs = [layer for layer in model.layers if isinstance(layer, Convolution)]
    depthwise = [c for c in convs if c.groups == c.in_channels == c.out_channels > 1 and c.W.shape[1] == 1]
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(depthwise) == len(pointwise) == 4
    assert [c.out_channels for c in pointwise] == [8, 16, 16, 32]


@pytest.mark.parametrize("build", [lambda: zoo.resnet((1, 28, 28), width=4, seed=0),
                                   lambda: zoo.resnet((3, 32, 32), width=4, seed=0),
                                   lambda: zoo.mobilenet((1, 28, 28), width=4, seed=0)])
def test_trains_a_few_steps(build):
    """Every parameter moves on the first step, and a small batch is fitted (loss falls by half)."""
    model = build()
    model.loss = SoftMaxLoss()
    model.optimizer = GradientDescent(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.random((16, *model.input_shape), dtype=np.float32)
    y = np.arange(16) % 10
    before = {name: p.copy() for name, p in model.parameters()}
    losses = [model.train_step(x, y)]
    assert all(not np.array_equal(before[name], p) for name, p in model.parameters())
    losses += [model.train_step(x, y) for _ in range(24)]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        zoo.resnet((28, 28))
    with pytest.raises(ValueError, match="width"):
        zoo.resnet(width=0)
    with pytest.raises(ValueError, match="input_shape"):
        zoo.mobilenet((1, 4, 4))


# -- augmentation ---------------------------------------------------------------------------------
def test_random_crop_is_pad_then_crop():
    rng = np.random.default_rng(0)
    images = rng.random((200, 2, 7, 9))
    out = augment.random_crop(images, 2, np.random.default_rng(5))
    shifts = np.random.default_rng(5).integers(-2, 3, size=(200, 2))  # the same draws
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    expected = np.stack([padded[n, :, 2 + sy:2 + sy + 7, 2 + sx:2 + sx + 9] for n, (sy, sx) in enumerate(shifts)])
    np.testing.assert_array_equal(out, expected)
    assert len({tuple(s) for s in shifts}) == 25  # every offset was exercised
    np.testing.assert_array_equal(augment.random_crop(images, 0, rng), images)


def test_random_flip_mirrors_the_drawn_images():
    images = np.random.default_rng(0).random((50, 1, 4, 5))
    flipped = augment.random_flip(images.copy(), np.random.default_rng(3))
    chosen = np.random.default_rng(3).random(50) < 0.5
    np.testing.assert_array_equal(flipped[chosen], images[chosen][..., ::-1])
    np.testing.assert_array_equal(flipped[~chosen], images[~chosen])
    assert 0 < chosen.sum() < 50


def test_augmentation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        augment.random_crop(np.zeros((2, 1, 4, 4)), 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="images"):
        augment.random_flip(np.zeros((4, 4)), np.random.default_rng(0))
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match="separate"):
        augment.random_crop(x, 1, np.random.default_rng(0), out=x)


def test_random_crop_flip_gives_each_epoch_fresh_images():
    """fit sees the callback's rewritten images: a recording layer collects every batch."""
    from nn_from_scratch import Sequential
    from nn_from_scratch.nodes import Vectorization

    seen: list[np.ndarray] = []

    class Record(Vectorization):
        def forward(self, x):
            if self.training:
                seen.append(np.array(x))
            return super().forward(x)

    rng = np.random.default_rng(0)
    images = rng.random((32, 1, 6, 6)).astype(np.float32)
    labels = np.arange(32) % 3

    def run():
        seen.clear()
        model = Sequential([Record(), Linear(output_dim=3)], input_shape=(1, 6, 6), loss=SoftMaxLoss(),
                           optimizer=GradientDescent(0.1), seed=4)
        hook = augment.RandomCropFlip(images, padding=1, flip=True)
        model.fit(hook.images, labels, epochs=2, batch_size=32, shuffle=False, verbose=0, callbacks=[hook])
        return [s.reshape(32, 1, 6, 6) for s in seen]

    first, second = run()
    np.testing.assert_array_equal(images, np.random.default_rng(0).random((32, 1, 6, 6)).astype(np.float32))  # untouched
    for epoch in (first, second):
        assert not np.array_equal(epoch, images)
        # each image is a shifted and/or mirrored copy: its non-zero pixels are a subset of the original's values
        for n in range(32):
            assert set(epoch[n][epoch[n] != 0].tolist()) <= set(images[n].ravel().tolist())
    assert not np.array_equal(first, second)
    again = run()
    np.testing.assert_array_equal(np.stack(again), np.stack([first, second]))  # seeded by the model


# -- the command line -----------------------------------------------------------------------------
def test_cli_dataset_choice_and_recipe():
    recipe = zoo.RECIPES["resnet"]
    assert recipe.dataset == "fashion_mnist" and recipe.crop_padding == 2 and recipe.flip
    with pytest.raises(SystemExit):
        cli.main(["train", "--dataset", "cifar"])
    with pytest.raises(ValueError, match="unknown dataset"):
        cli.load_dataset("cifar")


def test_cli_trains_resnet_on_the_chosen_dataset(monkeypatch):
    """train() runs the resnet recipe end to end (augmentation, warm-up + cosine, label smoothing) on
    the dataset it is given; tiny stand-in arrays keep it fast."""
    rng = np.random.default_rng(0)
    asked = []

    def tiny(name):
        asked.append(name)
        images = rng.integers(0, 256, (48, 28, 28), dtype=np.uint8)
        return (images[:32], np.arange(32) % 10), (images[32:], np.arange(16) % 10)

    monkeypatch.setattr(cli, "load_dataset", tiny)
    result = cli.train("resnet", epochs=2, batch_size=16, progress=False)
    assert asked == ["fashion_mnist"]  # the recipe's default
    assert len(result.epoch_losses) == 2 and np.isfinite(result.epoch_losses).all()
    assert 0.0 <= result.test_accuracy <= 1.0
    cli.train("resnet", epochs=1, batch_size=16, progress=False, dataset="mnist")
    assert asked[-1] == "mnist"
