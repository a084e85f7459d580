"""``interop``: models converted to and from torch and Keras compute the same function.

Round trips must give identical predictions: ``to_torch(from_torch(m))`` for a torch ``m``,
``from_keras(to_keras(m))`` for ours, and each converted model must agree with its source.
Float64 throughout, compared at 1e-12 relative (in practice the round trips are exact).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from layer_cases import LAYER_CASES  # noqa: E402
from nn_from_scratch import interop  # noqa: E402
from nn_from_scratch.interfaces import Node  # noqa: E402
from nn_from_scratch.interop import UnsupportedLayerError  # noqa: E402
from nn_from_scratch.losses import SoftMaxLoss  # noqa: E402
from nn_from_scratch.model import Sequential  # noqa: E402
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear  # noqa: E402
from nn_from_scratch.nodes import (AveragePooling, Dropout, GlobalAveragePooling, LeakyReLU, MaxPooling,  # noqa: E402
                                   ReLU, Sigmoid, SoftMax, Tanh, Vectorization)

RTOL = 1e-12


def assert_same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    diff = float(np.max(np.abs(a - b), initial=0.0))
    err = diff / float(np.max(np.abs(b))) if diff else 0.0
    assert err <= RTOL, f"{what}: relative difference {err:.3e} > {RTOL:g}"


def randomise(model: Sequential, rng: np.random.Generator) -> Sequential:
    """Non-trivial biases and batch-norm state, so every weight path is exercised."""
    for layer in model.layers:
        if isinstance(layer, Convolution) and layer.B is not None:
            layer.B[...] = rng.normal(size=layer.B.shape)
        if isinstance(layer, Linear):
            layer.W[0] = rng.normal(size=layer.W.shape[1])
        if isinstance(layer, BatchNormalization):
            c = layer.gamma.shape
            layer.gamma[...] = rng.normal(size=c)
            layer.beta[...] = rng.normal(size=c)
            layer.running_mean[...] = rng.normal(size=c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, size=c)
    return model


def seed_cnn(dtype=np.float64) -> Sequential:
    """The seed notebook's CNN (Part 1): conv 3x3x4, ReLU, conv 7x7x2, ReLU, flatten, dense 10."""
    bs = 50
    return Sequential([
        Convolution((bs, 1, 28, 28), kernel_size=3, output_layers=4, use_bias=False, dtype=dtype),
        ReLU((bs, 4, 26, 26)),
        Convolution((bs, 4, 26, 26), kernel_size=7, output_layers=2, use_bias=False, dtype=dtype),
        ReLU((bs, 2, 20, 20)),
        Vectorization((bs, 2, 20, 20)),
        Linear((bs, 800), (bs, 10), dtype=dtype),
    ], loss=SoftMaxLoss(), seed=0)


def geometry_cnn(dtype=np.float64, keras_compatible: bool = False) -> Sequential:
    """Padding as int, pair, asymmetric 4-tuple and "same"; strides; dilations; with and without bias."""
    dilated_stride = (1, 1) if keras_compatible else (2, 1)  # Keras refuses stride > 1 with dilation > 1
    return Sequential([
        Convolution((3, 17, 15), 3, 4, padding="same", stride=2, dtype=dtype),
        Tanh(),
        Convolution(None, (2, 3), 5, padding=(1, 0, 2, 1), dilation=(1, 2), use_bias=False, dtype=dtype),
        LeakyReLU(0.1),
        Convolution(None, (3, 2), 3, padding=(2, 1), stride=dilated_stride, dilation=(2, 1), dtype=dtype),
        Sigmoid(),
        Convolution(None, 4, 2, padding="same", dtype=dtype),  # even kernel: asymmetric "same"
        ReLU(),
        Vectorization(),
        Linear(None, 6, dtype=dtype),
        SoftMax(),
    ], input_shape=(3, 17, 15), seed=1)


def pooling_bn_cnn(dtype=np.float64, keras_compatible: bool = False) -> Sequential:
    """Pooling in every padding flavour, global average pooling, batch norm (2d and 1d), dropout."""
    layers = [
        Convolution((2, 13, 12), 3, 4, padding=1, dtype=dtype),
        BatchNormalization(dtype=dtype),
        ReLU(),
        MaxPooling(2, padding="same"),
        Convolution(None, 3, 5, dtype=dtype),
        AveragePooling(2, 1, padding="same", count_include_pad=False),
        AveragePooling(3, 2, padding=1, count_include_pad=True),
    ]
    if not keras_compatible:  # Keras' MaxPooling2D pads only as "valid" or "same"
        layers.append(MaxPooling((2, 3), (1, 2), padding=(1, 1)))
    layers += [
        Dropout(0.25),
        Convolution(None, 1, 6, dtype=dtype),
        GlobalAveragePooling(),
        BatchNormalization(dtype=dtype, momentum=0.2),
        Linear(None, 4, dtype=dtype),
    ]
    return Sequential(layers, input_shape=(2, 13, 12), seed=2)


MODELS = {"seed_cnn": seed_cnn, "geometry": geometry_cnn, "pooling_batchnorm": pooling_bn_cnn}


def batch(model: Sequential, rng: np.random.Generator, n: int = 5) -> np.ndarray:
    return rng.normal(size=(n, *model.input_shape))


# -- torch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_to_torch_matches_ours(name: str) -> None:
    rng = np.random.default_rng(10)
    model = randomise(MODELS[name](), rng)
    x = batch(model, rng)
    twin = interop.to_torch(model).eval()
    assert isinstance(twin, nn.Sequential)
    assert_same(twin(torch.from_numpy(x)).detach().numpy(), model.predict(x), f"{name}: torch twin vs ours")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_round_trip(name: str) -> None:
    """``to_torch(from_torch(m))`` for a torch ``m`` predicts exactly what ``m`` predicts."""
    rng = np.random.default_rng(11)
    module = interop.to_torch(randomise(MODELS[name](), rng)).eval()
    ours = interop.from_torch(module)
    again = interop.to_torch(ours).eval()
    x = torch.from_numpy(rng.normal(size=(5, *MODELS[name]().input_shape)))
    expected = module(x).detach().numpy()
    assert_same(ours.predict(x.numpy()), expected, f"{name}: from_torch(m) vs m")
    assert_same(again(x).detach().numpy(), expected, f"{name}: to_torch(from_torch(m)) vs m")
    assert [type(m) for m in again] == [type(m) for m in module]


def test_from_torch_native_module() -> None:
    """A torch model written by hand, with the spellings torch users write."""
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same", dtype=torch.float64),
        nn.BatchNorm2d(4, dtype=torch.float64),
        nn.ReLU(),
        nn.ZeroPad2d((1, 0, 2, 1)),
        nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), bias=False, dtype=torch.float64),
        nn.Sequential(nn.LeakyReLU(0.05), nn.MaxPool2d(2, 1, padding=1)),
        nn.AvgPool2d(2, padding=1, count_include_pad=False),
        nn.Conv2d(6, 6, 1, padding="valid", dtype=torch.float64),
        nn.Dropout(0.1),
        nn.Flatten(),
        nn.Linear(6 * 4 * 7, 8, bias=False, dtype=torch.float64),
        nn.Identity(),
        nn.Tanh(),
        nn.Linear(8, 3, dtype=torch.float64),
        nn.Softmax(dim=-1),
    )
    with torch.no_grad():  # running statistics away from their (0, 1) start
        module[1].running_mean.normal_()
        module[1].running_var.uniform_(0.5, 2.0)
    module.eval()
    ours = interop.from_torch(module, input_shape=(3, 9, 12))
    x = torch.from_numpy(np.random.default_rng(12).normal(size=(4, 3, 9, 12)))
    expected = module(x).detach().numpy()
    assert_same(ours.predict(x.numpy()), expected, "from_torch(native) vs native")
    assert_same(interop.to_torch(ours).eval()(x).detach().numpy(), expected, "to_torch(from_torch(native)) vs native")


def test_torch_weights_are_copied_with_our_layouts() -> None:
    model = randomise(seed_cnn(), np.random.default_rng(13))
    twin = interop.to_torch(model)
    np.testing.assert_array_equal(twin[0].weight.detach().numpy(), model.layers[0].W)  # OIHW both sides
    linear = model.layers[5]
    np.testing.assert_array_equal(twin[5].weight.detach().numpy(), linear.W[1:].T)  # (n_out, n_in)
    np.testing.assert_array_equal(twin[5].bias.detach().numpy(), linear.W[0])  # bias = row 0
    assert twin[0].bias is None and twin[0].weight.dtype == torch.float64
    twin[5].bias.data += 1  # a copy, not a view of our weights
    assert not np.array_equal(twin[5].bias.detach().numpy(), linear.W[0])


def test_asymmetric_padding_becomes_zeropad_then_conv() -> None:
    model = Sequential([Convolution((1, 6, 6), 2, 1, padding="same", dtype=np.float64)], input_shape=(1, 6, 6))
    twin = interop.to_torch(model)
    assert isinstance(twin[0], nn.ZeroPad2d) and tuple(twin[0].padding) == (0, 1, 0, 1)  # (left, right, top, bottom)
    assert twin[1].padding == (0, 0)


class Custom(Node):
    """A layer no converter knows."""

    def forward(self, x):
        return x

    def backward(self, dL_dy):
        return dL_dy


def test_unsupported_layers_raise_an_error_naming_them() -> None:
    model = Sequential([Linear(4, 3, dtype=np.float64), Custom()], input_shape=(4,))
    with pytest.raises(UnsupportedLayerError, match=r"layer 1 Custom"):
        interop.to_torch(model)
    with pytest.raises(UnsupportedLayerError, match=r"Mish"):
        interop.from_torch(nn.Sequential(nn.Linear(3, 2), nn.Mish()))
    with pytest.raises(UnsupportedLayerError, match=r"ConvTranspose2d\): padding_mode='reflect'"):  # built, then switched
        transposed = nn.ConvTranspose2d(2, 2, 3)
        transposed.padding_mode = "reflect"
        interop.from_torch(nn.Sequential(transposed))
    with pytest.raises(UnsupportedLayerError, match=r"padding_mode='reflect'"):
        interop.from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")))
    with pytest.raises(UnsupportedLayerError, match=r"Softmax\(dim=1\)"):
        interop.from_torch(nn.Sequential(nn.Softmax(dim=1)))


def test_to_torch_needs_a_built_model_for_same_padding_with_stride() -> None:
    with pytest.raises(ValueError, match="not built"):
        interop.to_torch([Convolution(None, 3, 2, padding="same", stride=2, W=np.ones((2, 1, 3, 3)))])


# -- Keras ----------------------------------------------------------------------------------------
try:
    from nn_from_scratch.interop import keras as keras_interop
except ImportError:  # keras is an optional extra
    keras_interop = None
keras = getattr(keras_interop, "keras", None)
# The checks feed torch tensors to Keras layers, so they need Keras' torch backend.
needs_keras = pytest.mark.skipif(keras is None or keras.backend.backend() != "torch",
                                 reason="needs keras on its torch backend")


def keras_predict(keras_model, x_nchw: np.ndarray) -> np.ndarray:
    """Keras' prediction for our NCHW batch, back in our layout, with float64 kept as float64."""
    x = np.moveaxis(x_nchw, 1, -1) if x_nchw.ndim == 4 else x_nchw
    with keras_interop.float64_arithmetic():
        y = keras_model(torch.from_numpy(np.ascontiguousarray(x)), training=False)
    y = y.detach().numpy()
    return np.moveaxis(y, -1, 1) if y.ndim == 4 else y


def keras_models() -> dict:
    return {
        "seed_cnn": seed_cnn,
        "geometry": lambda: geometry_cnn(keras_compatible=True),
        "pooling_batchnorm": lambda: pooling_bn_cnn(keras_compatible=True),
    }


@needs_keras
@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras_round_trip(name: str) -> None:
    """``from_keras(to_keras(m))`` predicts exactly what ``m`` predicts, and the Keras twin agrees."""
    rng = np.random.default_rng(20)
    model = randomise(keras_models()[name](), rng)
    x = batch(model, rng)
    expected = model.predict(x)
    twin = interop.to_keras(model)
    assert twin.inputs[0].shape[1:] == (*model.input_shape[1:], model.input_shape[0])  # channels last
    assert_same(keras_predict(twin, x), expected, f"{name}: Keras twin vs ours")
    again = interop.from_keras(twin)
    assert_same(again.predict(x), expected, f"{name}: from_keras(to_keras(m)) vs m")
    assert [type(layer) for layer in again.layers] == [type(layer) for layer in model.layers]


@needs_keras
def test_keras_dense_after_flatten_gets_rows_permuted() -> None:
    """Keras flattens (H, W, C): the dense kernel's row for our feature (c, h, w) moves to h*W*C + w*C + c."""
    model = randomise(seed_cnn(), np.random.default_rng(21))
    twin = interop.to_keras(model)
    kernel, bias = (keras_interop.variable_array(v) for v in twin.layers[-1].weights)
    ours = model.layers[-1].W
    c, h, w = 2, 20, 20
    for (ci, hi, wi) in [(0, 0, 0), (1, 0, 0), (0, 3, 7), (1, 19, 19)]:
        np.testing.assert_array_equal(kernel[hi * w * c + wi * c + ci], ours[1 + ci * h * w + hi * w + wi])
    np.testing.assert_array_equal(bias, ours[0])


@needs_keras
def test_from_keras_native_model() -> None:
    """A Keras model written by hand, with activations given as arguments."""
    keras.utils.set_random_seed(0)
    kmodel = keras.Sequential([
        keras.Input((10, 9, 3), dtype="float64"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", dtype="float64"),
        keras.layers.BatchNormalization(dtype="float64"),
        keras.layers.ZeroPadding2D(((1, 0), (0, 2)), dtype="float64"),
        keras.layers.Conv2D(5, (2, 3), strides=(2, 1), dtype="float64"),
        keras.layers.MaxPooling2D(2, padding="same", dtype="float64"),
        keras.layers.Activation("tanh", dtype="float64"),
        keras.layers.Flatten(dtype="float64"),
        keras.layers.Dropout(0.2, dtype="float64"),
        keras.layers.Dense(7, activation="sigmoid", dtype="float64"),
        keras.layers.Dense(3, activation="softmax", dtype="float64"),
    ])
    bn = kmodel.layers[1]
    rng = np.random.default_rng(22)
    bn.set_weights([rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, size=4)])
    ours = interop.from_keras(kmodel)
    assert ours.input_shape == (3, 10, 9)
    x = rng.normal(size=(4, 3, 10, 9))
    expected = keras_predict(kmodel, x)
    assert_same(ours.predict(x), expected, "from_keras(native) vs native")
    assert_same(keras_predict(interop.to_keras(ours), x), expected, "to_keras(from_keras(native)) vs native")


@needs_keras
def test_keras_unsupported_layers_raise_an_error_naming_them() -> None:
    model = Sequential([Linear(4, 3, dtype=np.float64), Custom()], input_shape=(4,))
    with pytest.raises(UnsupportedLayerError, match=r"layer 1 Custom"):
        interop.to_keras(model)
    with pytest.raises(UnsupportedLayerError, match=r"stride > 1 together with dilation > 1"):
        interop.to_keras(geometry_cnn())
    with pytest.raises(UnsupportedLayerError, match=r"MaxPooling2D pads only"):
        interop.to_keras(pooling_bn_cnn())
    lstm = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(2)])
    with pytest.raises(UnsupportedLayerError, match=r"LSTM"):
        interop.from_keras(lstm)
    mish = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="mish")])
    with pytest.raises(UnsupportedLayerError, match=r"activation 'mish'"):
        interop.from_keras(mish)
    # Keras' torch backend averages replicated edges for an asymmetric "same" pooling; we and
    # TensorFlow average only the elements inside: a 4x4 window, stride 1, padding (1, 2).
    average = Sequential([AveragePooling(4, 1, padding="same", count_include_pad=False)], input_shape=(1, 6, 6))
    with pytest.raises(UnsupportedLayerError, match=r"replicated edge"):
        interop.to_keras(average, dtype=np.float64)
    keras_average = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.AveragePooling2D(4, strides=1, padding="same")])
    with pytest.raises(UnsupportedLayerError, match=r"replicated edge"):
        interop.from_keras(keras_average)


@needs_keras
def test_keras_float64_arithmetic_is_restored() -> None:
    """The float64 switch is scoped: Keras' own promotion table is back after the block."""
    from keras.src.backend.common import dtypes

    before = dict(getattr(dtypes, "BIT64_TO_BIT32_DTYPE", {}))
    with keras_interop.float64_arithmetic():
        assert dtypes.result_type("float64", "float64") == "float64"
    assert dict(getattr(dtypes, "BIT64_TO_BIT32_DTYPE", {})) == before


def _library_classes(module, base) -> list[type]:
    import inspect

    return [c for c in vars(module).values() if inspect.isclass(c) and issubclass(c, base) and c is not base]


def test_every_layer_loss_and_optimizer_of_the_library_has_a_converter() -> None:
    """New layers must come with converters: this lists what the library exports and checks the tables."""
    from nn_from_scratch import losses, neurons, nodes, optimizers
    from nn_from_scratch.interfaces import Layer, Optimizer
    from nn_from_scratch.interop import torch as interop_torch

    from nn_from_scratch.nodes import augmentation

    # The augmentation layers are training-time input transforms: interop refuses them with
    # UnsupportedLayerError naming the layer (tests/test_keras_api.py checks that).
    layers = [c for c in _library_classes(nodes, Layer) + _library_classes(neurons, Layer)
              if c.__name__ not in augmentation.__all__]
    assert len(layers) >= 13
    missing = [c.__name__ for c in layers if not any(issubclass(c, k) for k in interop_torch.TO_TORCH)]
    assert not missing, f"no torch converter for {missing}"
    loss_classes = _library_classes(losses, losses.Loss)
    missing = [c.__name__ for c in loss_classes if not any(issubclass(c, k) for k in interop_torch.TORCH_LOSSES)]
    assert not missing, f"no torch loss for {missing}"
    missing = [c.__name__ for c in _library_classes(optimizers, Optimizer)
               if not any(issubclass(c, k) for k in interop_torch.TORCH_OPTIMIZERS)]
    assert not missing, f"no torch optimizer for {missing}"
    if keras_interop is not None:
        missing = [c.__name__ for c in layers if not any(issubclass(c, k) for k in keras_interop.TO_KERAS)]
        assert not missing, f"no Keras converter for {missing}"
        missing = [c.__name__ for c in loss_classes if not any(issubclass(c, k) for k in keras_interop.KERAS_LOSSES)]
        assert not missing, f"no Keras loss for {missing}"


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda case: case.name)
def test_every_layer_case_converts_both_ways(case) -> None:
    """Random configurations of every layer in ``layer_cases.py`` (kernel, padding, stride, dilation,
    pool geometry, batch-norm rank...) convert to torch and back, computing the same function."""
    rng = np.random.default_rng([2023, zlib.crc32(case.name.encode())])
    for draw in range(6):
        layer, x = case.make(rng, np.float64)
        what = f"{case.name} draw {draw}: {layer!r}, x {x.shape}"
        model = Sequential([layer])
        expected = model.predict(x)
        twin = interop.to_torch(model).eval()
        assert_same(twin(torch.from_numpy(x)).detach().numpy(), expected, f"torch twin, {what}")
        assert_same(interop.from_torch(twin).predict(x), expected, f"from_torch(to_torch(m)), {what}")


@needs_keras
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda case: case.name)
def test_every_layer_case_converts_to_keras_and_back(case) -> None:
    """The same random configurations through Keras. Keras lacks a few (stride with dilation,
    numeric max-pool padding, cumulative batch-norm averages): those must raise
    UnsupportedLayerError naming the layer, and at least 2 of the 6 draws must convert."""
    rng = np.random.default_rng([2023, zlib.crc32(case.name.encode())])
    converted, refused = 0, []
    for draw in range(6):
        layer, x = case.make(rng, np.float64)
        what = f"{case.name} draw {draw}: {layer!r}, x {x.shape}"
        model = Sequential([layer])
        expected = model.predict(x)
        try:
            ktwin = interop.to_keras(model, dtype=x.dtype)
        except UnsupportedLayerError as err:
            assert type(layer).__name__ in str(err), f"{what}: the error must name the layer: {err}"
            refused.append(what)
        else:
            converted += 1
            assert_same(keras_predict(ktwin, x), expected, f"Keras twin, {what}")
            assert_same(interop.from_keras(ktwin).predict(x), expected, f"from_keras(to_keras(m)), {what}")
    assert converted + len(refused) == 6
    assert converted >= 2, f"{case.name}: only {converted} of 6 random configurations convert to Keras; refused: {refused}"
