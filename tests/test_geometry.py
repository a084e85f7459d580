""""same" padding against references that work it out themselves: a hand-written table of pads,
explicit loops over a hand-padded input, Keras' own Conv2D / MaxPooling2D, and torch given the
table's pads (never the library's resolved ``layer.geometry.padding``).

TensorFlow's rule, which Keras and this library follow: the output length is ``ceil(size /
stride)``; the total padding ``max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)``
is split with the odd pixel at the end (bottom/right).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layer_cases import reference_padding
from nn_from_scratch import Sequential
from nn_from_scratch.neurons import Convolution
from nn_from_scratch.nodes import AveragePooling, MaxPooling

# (size, kernel, stride, dilation) -> (before, after), each worked out by hand.
SAME_TABLE = {
    (5, 3, 1, 1): (1, 1),   # out 5, total 2
    (4, 4, 1, 1): (1, 2),   # out 4, total 3: the odd pixel after
    (4, 2, 1, 1): (0, 1),   # out 4, total 1
    (7, 3, 2, 1): (1, 1),   # out 4, total 3*2 + 3 - 7 = 2
    (6, 3, 2, 1): (0, 1),   # out 3, total 2*2 + 3 - 6 = 1
    (8, 4, 2, 1): (1, 1),   # out 4, total 6 + 4 - 8 = 2
    (5, 3, 1, 2): (2, 2),   # effective kernel 5, total 4
    (6, 2, 1, 3): (1, 2),   # effective kernel 4, total 3
    (10, 5, 3, 1): (2, 2),  # out 4, total 9 + 5 - 10 = 4
    (5, 1, 2, 1): (0, 0),   # out 3, total 4 + 1 - 5 = 0
    (9, 2, 3, 1): (0, 0),   # out 3, total 6 + 2 - 9 < 0 -> 0
    (7, 4, 3, 2): (3, 3),   # effective kernel 7, out 3, total 6 + 7 - 7 = 6
    (3, 7, 1, 1): (3, 3),   # kernel larger than the input: out 3, total 6
    (2, 4, 2, 1): (1, 1),   # out 1, total 0 + 4 - 2 = 2
    (11, 6, 4, 1): (1, 2),  # out 3, total 8 + 6 - 11 = 3
    (9, 3, 2, 2): (2, 2),   # effective kernel 5, out 5, total 8 + 5 - 9 = 4
}


def test_reference_padding_of_the_layer_table_agrees_with_the_hand_table():
    for (size, k, s, d), pads in SAME_TABLE.items():
        assert reference_padding("same", (size, size), (k, k), (s, s), (d, d))[:2] == pads, (size, k, s, d)


def naive_conv(x, W, B, stride, dilation, pads):
    """Cross-correlation by explicit loops over a hand-padded input."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw), (kh, kw) = stride, dilation, W.shape[2:]
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.empty((x.shape[0], W.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh : i * sh + dh * (kh - 1) + 1 : dh, j * sw : j * sw + dw * (kw - 1) + 1 : dw]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", window, W)
    return y + (0 if B is None else B[None, :, None, None])


PAIRS = list(itertools.combinations(sorted(SAME_TABLE), 2))[::7]  # a spread of different H and W rules


@pytest.mark.parametrize("rows, cols", PAIRS, ids=lambda v: "x".join(map(str, v)))
def test_convolution_same_padding_matches_the_hand_table(rows, cols):
    (h, kh, sh, dh), (w, kw, sw, dw) = rows, cols
    rng = np.random.default_rng(h * 100 + w)
    layer = Convolution((2, h, w), (kh, kw), 3, padding="same", stride=(sh, sw), dilation=(dh, dw), dtype=np.float64)
    layer.B[...] = rng.normal(size=3)
    x = rng.normal(size=(2, 2, h, w))
    y = layer.forward(x)
    assert y.shape == (2, 3, -(-h // sh), -(-w // sw))
    pads = SAME_TABLE[rows] + SAME_TABLE[cols]
    np.testing.assert_allclose(y, naive_conv(x, layer.W, layer.B, (sh, sw), (dh, dw), pads), rtol=1e-12, atol=1e-13)


POOL_ROWS = [key for key in sorted(SAME_TABLE) if key[3] == 1 and 2 * max(SAME_TABLE[key]) <= key[1] + 1]


@pytest.mark.parametrize("rows", POOL_ROWS, ids=lambda v: "x".join(map(str, v)))
def test_pooling_same_padding_matches_the_hand_table(rows):
    from test_pooling import naive_pool

    h, k, s, _ = rows
    cols = (6, 3, 2, 1)  # W: pads (0, 1)
    rng = np.random.default_rng(h * 10 + k)
    x = rng.normal(size=(2, 3, h, cols[0]))
    pads = SAME_TABLE[rows] + SAME_TABLE[cols]
    y = MaxPooling((k, 3), (s, 2), "same").forward(x)
    np.testing.assert_array_equal(y, naive_pool(x, (k, 3), (s, 2), pads, "max"))
    for include in (True, False):
        y = AveragePooling((k, 3), (s, 2), "same", count_include_pad=include).forward(x)
        np.testing.assert_allclose(y, naive_pool(x, (k, 3), (s, 2), pads, "avg", include), rtol=1e-13, atol=1e-15)


def test_same_padding_matches_keras():
    """Keras' Conv2D and MaxPooling2D pad "same" by their own code: our outputs must agree.
    (Keras refuses stride > 1 with dilation > 1; its torch backend's AveragePooling2D treats
    asymmetric "same" padding differently -- see test_interop -- so it is not used here.)"""
    from conftest import keras_or_skip

    keras = keras_or_skip()
    import torch

    from nn_from_scratch.interop import keras as keras_interop

    rng = np.random.default_rng(0)
    for (h, kh, sh, dh), (w, kw, sw, dw) in PAIRS:
        if (sh > 1 or sw > 1) and (dh > 1 or dw > 1):
            continue  # not expressible in Keras; the hand table above covers it
        x = rng.normal(size=(2, 2, h, w))
        layer = Convolution((2, h, w), (kh, kw), 3, padding="same", stride=(sh, sw), dilation=(dh, dw), dtype=np.float64)
        layer.B[...] = rng.normal(size=3)
        conv = keras.layers.Conv2D(3, (kh, kw), strides=(sh, sw), dilation_rate=(dh, dw), padding="same", dtype="float64")
        conv.build((None, h, w, 2))
        conv.set_weights([layer.W.transpose(2, 3, 1, 0), layer.B])
        with keras_interop.float64_arithmetic():
            theirs = conv(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, -1)))).detach().numpy()
        np.testing.assert_allclose(layer.forward(x), np.moveaxis(theirs, -1, 1), rtol=1e-11, atol=1e-12)
        if dh == dw == 1 and kh <= h + 1 and kw <= w + 1:
            pool = keras.layers.MaxPooling2D((kh, kw), strides=(sh, sw), padding="same", dtype="float64")
            with keras_interop.float64_arithmetic():
                theirs = pool(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, -1)))).detach().numpy()
            ours = MaxPooling((kh, kw), (sh, sw), "same").forward(x)
            np.testing.assert_array_equal(ours, np.moveaxis(theirs, -1, 1))


def test_to_torch_same_padding_matches_torch_on_the_hand_pads():
    """The torch twin of a "same" convolution or pooling computes what torch computes on the
    input padded with the table's pads."""
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop

    F = torch.nn.functional
    rng = np.random.default_rng(1)
    for (h, kh, sh, dh), (w, kw, sw, dw) in PAIRS:
        x = rng.normal(size=(2, 2, h, w))
        model = Sequential([Convolution((2, h, w), (kh, kw), 3, padding="same", stride=(sh, sw), dilation=(dh, dw),
                                        dtype=np.float64)])
        top, bottom = SAME_TABLE[(h, kh, sh, dh)]
        left, right = SAME_TABLE[(w, kw, sw, dw)]
        W, B = (torch.from_numpy(a.copy()) for a in (model.layers[0].W, model.layers[0].B))
        expected = F.conv2d(F.pad(torch.from_numpy(x), (left, right, top, bottom)), W, B, stride=(sh, sw), dilation=(dh, dw))
        np.testing.assert_allclose(interop.to_torch(model)(torch.from_numpy(x)).detach().numpy(), expected.numpy(),
                                   rtol=1e-12, atol=1e-13)
    for rows in POOL_ROWS:
        h, k, s, _ = rows
        x = rng.normal(size=(1, 2, h, 6))
        top, bottom = SAME_TABLE[rows]
        left, right = SAME_TABLE[(6, 3, 2, 1)]
        model = Sequential([MaxPooling((k, 3), (s, 2), "same")], input_shape=(2, h, 6))
        expected = F.max_pool2d(F.pad(torch.from_numpy(x), (left, right, top, bottom), value=-np.inf), (k, 3), (s, 2))
        np.testing.assert_array_equal(interop.to_torch(model)(torch.from_numpy(x)).numpy(), expected.numpy())
