"""``interop`` for the layers of modern CNNs: GELU, SiLU, ELU, Softplus, LogSoftMax, Identity, Reshape,
UpSampling2D, LayerNormalization, GroupNormalization.

Models written by hand in torch and in Keras (the spellings their users write) convert to ours
and back, computing the same function; ``verify.compare`` checks outputs and every gradient,
parameter gradients included, layer by layer against both twins; Keras' bilinear upsampling
is pinned to torch's ``align_corners=False``; what cannot be expressed raises
``UnsupportedLayerError`` naming the layer. Float64 throughout, 1e-12 relative (as test_interop).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nn_from_scratch import interop  # noqa: E402
from nn_from_scratch.interop import UnsupportedLayerError  # noqa: E402
from nn_from_scratch.losses import SoftMaxLoss  # noqa: E402
from nn_from_scratch.model import Sequential  # noqa: E402
from nn_from_scratch.neurons import Convolution, GroupNormalization, LayerNormalization, Linear  # noqa: E402
from nn_from_scratch.nodes import (ELU, GELU, Identity, LogSoftMax, Reshape, SiLU, Softplus, UpSampling2D,  # noqa: E402
                                   Vectorization)
from nn_from_scratch.verify import compare  # noqa: E402

RTOL = 1e-12
F64 = torch.float64


def assert_same(a, b, what: str) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    diff = float(np.max(np.abs(a - b), initial=0.0))
    err = diff / float(np.max(np.abs(b))) if diff else 0.0
    assert err <= RTOL, f"{what}: relative difference {err:.3e} > {RTOL:g}"


def randomise_affine(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=F64))


def native_torch_model() -> nn.Sequential:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dtype=F64),
        nn.GroupNorm(2, 4, eps=1e-4, dtype=F64),
        nn.GELU(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.SiLU(),
        nn.Conv2d(4, 4, 3, stride=2, dtype=F64),                   # (4, 5, 5)
        nn.LayerNorm((5, 5), dtype=F64),
        nn.ELU(alpha=0.5),
        nn.Upsample(scale_factor=(1, 2)),                           # nearest: (4, 5, 10)
        nn.Softplus(beta=2.0, threshold=5.0),
        nn.GELU(approximate="tanh"),
        nn.Flatten(),
        nn.Linear(200, 12, dtype=F64),
        nn.Identity(),
        nn.Unflatten(1, (3, 4)),
        nn.LayerNorm(4, eps=1e-3, dtype=F64),
        nn.Flatten(),
        nn.Linear(12, 5, dtype=F64),
        nn.LogSoftmax(dim=1),
    )
    randomise_affine(module, 1)
    return module.eval()


def test_from_torch_native_module_with_the_new_layers():
    module = native_torch_model()
    ours = interop.from_torch(module, input_shape=(3, 6, 6))
    assert [type(layer) for layer in ours.layers] == [
        Convolution, GroupNormalization, GELU, UpSampling2D, SiLU, Convolution, LayerNormalization, ELU, UpSampling2D,
        Softplus, GELU, Vectorization, Linear, Identity, Reshape, LayerNormalization, Vectorization, Linear, LogSoftMax]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 3, 6, 6)) * 2)
    expected = module(x).detach().numpy()
    assert_same(ours.predict(x.numpy()), expected, "from_torch(native) vs native")
    assert_same(interop.to_torch(ours).eval()(x).detach().numpy(), expected, "to_torch(from_torch(native)) vs native")


def our_model() -> Sequential:
    """Every new layer, in configurations both torch and Keras can express."""
    dtype = np.float64
    model = Sequential([
        Convolution((3, 6, 5), 3, 4, padding="same", dtype=dtype),
        GroupNormalization(2, eps=1e-4, dtype=dtype),
        GELU(),
        UpSampling2D((2, 1), interpolation="bilinear"),
        SiLU(),
        LayerNormalization(axis=1, dtype=dtype),                  # over the channels: Keras' last axis
        ELU(alpha=0.6),
        UpSampling2D(2),
        Convolution(None, 3, 3, stride=2, dtype=dtype),
        LayerNormalization(axis=(1, 2, 3), eps=1e-3, dtype=dtype),
        GELU(approximate="tanh"),
        Softplus(),
        Identity(),
        Reshape((6, -1)),
        LayerNormalization(dtype=dtype),
        Vectorization(),
        Linear(None, 5, dtype=dtype),
        LogSoftMax(),
    ], loss=SoftMaxLoss(), input_shape=(3, 6, 5), seed=3)
    rng = np.random.default_rng(4)
    for layer in model.layers:
        for p in layer.parameters().values():
            p[...] = rng.normal(size=p.shape)
    return model


@pytest.mark.parametrize("reference", ["torch", "keras"])
def test_compare_every_gradient_with_both_twins(reference):
    if reference == "keras":
        pytest.importorskip("keras")
    model = our_model()
    rng = np.random.default_rng(5)
    x, labels = rng.normal(size=(3, 3, 6, 5)), rng.integers(0, 5, size=3)
    report = compare(model, x, labels, reference=reference)
    assert report.ok, str(report)
    assert report.max_rel_error <= 1e-10, str(report)


def test_torch_round_trip_of_our_model():
    model = our_model()
    x = np.random.default_rng(6).normal(size=(2, 3, 6, 5))
    twin = interop.to_torch(model).eval()
    expected = model.predict(x)
    assert_same(twin(torch.from_numpy(x)).detach().numpy(), expected, "torch twin")
    again = interop.from_torch(twin, input_shape=(3, 6, 5))
    # torch has no reshape module: Reshape goes out as Flatten + Unflatten and comes back as two layers
    expected_types = [t for b in model.layers for t in ([Vectorization, Reshape] if type(b) is Reshape else [type(b)])]
    assert [type(a) for a in again.layers] == expected_types
    assert_same(again.predict(x), expected, "from_torch(to_torch(m))")


def test_layer_norm_over_any_axes_becomes_a_module_torch_can_run():
    layer = LayerNormalization(axis=(1, 3), dtype=np.float64)
    model = Sequential([layer], input_shape=(2, 3, 4))
    layer.gamma[...] = np.random.default_rng(7).normal(size=(2, 4))
    twin = interop.to_torch(model)
    assert isinstance(twin[0], interop.torch.LayerNormOverAxes)
    x = np.random.default_rng(8).normal(size=(3, 2, 3, 4))
    # The reference: torch's own LayerNorm on the axes moved last by hand.
    ref = nn.functional.layer_norm(torch.from_numpy(x).permute(0, 2, 1, 3), (2, 4), torch.from_numpy(layer.gamma),
                                   torch.from_numpy(layer.beta), 1e-5).permute(0, 2, 1, 3)
    assert_same(twin(torch.from_numpy(x)).detach().numpy(), ref.numpy(), "LayerNormOverAxes vs torch")
    assert_same(model.predict(x), ref.numpy(), "ours vs torch")


@pytest.mark.parametrize("module, match", [
    (nn.Sequential(nn.Conv2d(2, 4, 1), nn.Unflatten(1, (2, 2))), r"Unflatten.*flat \(batch, features\).*not after Conv2d"),
    (nn.Sequential(nn.Unflatten(2, (2, 2))), r"Unflatten\(dim=2.*supported only as Unflatten\(1, sizes\)"),
    (nn.Sequential(nn.Upsample(size=(4, 4))), r"Upsample.*scale_factor"),
    (nn.Sequential(nn.Upsample(scale_factor=1.5)), r"Upsample.*integer scale factors"),
    (nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), r"align_corners=False"),
    (nn.Sequential(nn.UpsamplingBilinear2d(scale_factor=2)), r"align_corners=False"),
    (nn.Sequential(nn.Upsample(scale_factor=2, mode="bicubic")), r"mode='nearest' or mode='bilinear'"),
    (nn.Sequential(nn.LogSoftmax()), r"LogSoftmax\(dim=None\)"),
    (nn.Sequential(nn.LayerNorm(4, elementwise_affine=False)), r"LayerNorm.*elementwise_affine=True and bias=True"),
    (nn.Sequential(nn.LayerNorm(4, bias=False)), r"LayerNorm.*elementwise_affine=True and bias=True"),
    (nn.Sequential(nn.GroupNorm(2, 4, affine=False)), r"GroupNorm.*affine=True"),
])
def test_from_torch_refuses_what_it_cannot_express(module, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        interop.from_torch(module)


# -- Keras ---------------------------------------------------------------------------------------
def _keras():
    keras_interop = pytest.importorskip("nn_from_scratch.interop.keras")
    if keras_interop.keras.backend.backend() != "torch":
        pytest.skip("these checks feed torch tensors to Keras: they need its torch backend")
    return keras_interop, keras_interop.keras


def keras_predict(keras_interop, keras_model, x_nchw: np.ndarray) -> np.ndarray:
    x = np.moveaxis(x_nchw, 1, -1) if x_nchw.ndim == 4 else x_nchw
    with keras_interop.float64_arithmetic():
        y = keras_model(torch.from_numpy(np.ascontiguousarray(x)), training=False)
    y = y.detach().numpy()
    return np.moveaxis(y, -1, 1) if y.ndim == 4 else y


def test_keras_round_trip_of_our_model():
    keras_interop, keras = _keras()
    model = our_model()
    x = np.random.default_rng(9).normal(size=(2, 3, 6, 5))
    expected = model.predict(x)
    twin = interop.to_keras(model)
    assert_same(keras_predict(keras_interop, twin, x), expected, "Keras twin")
    again = interop.from_keras(twin)
    assert [type(a) for a in again.layers] == [type(b) for b in model.layers]
    assert_same(again.predict(x), expected, "from_keras(to_keras(m))")


def test_from_keras_native_model_with_the_new_layers():
    keras_interop, keras = _keras()
    keras.utils.set_random_seed(0)
    f64 = "float64"
    kmodel = keras.Sequential([
        keras.Input((6, 6, 3), dtype=f64),
        keras.layers.Conv2D(4, 3, padding="same", activation="gelu", dtype=f64),
        keras.layers.GroupNormalization(2, epsilon=1e-4, dtype=f64),
        keras.layers.UpSampling2D(2, interpolation="bilinear", dtype=f64),
        keras.layers.Activation("silu", dtype=f64),
        keras.layers.ELU(0.5, dtype=f64),
        keras.layers.LayerNormalization(axis=-1, dtype=f64),           # channels, Keras' epsilon 1e-3
        keras.layers.Conv2D(4, 3, strides=2, dtype=f64),
        keras.layers.LayerNormalization(axis=[1, 2, 3], epsilon=1e-5, dtype=f64),
        keras.layers.Activation("softplus", dtype=f64),
        keras.layers.Identity(dtype=f64),
        keras.layers.UpSampling2D((1, 2), dtype=f64),
        keras.layers.Flatten(dtype=f64),
        keras.layers.Dense(12, activation="elu", dtype=f64),
        keras.layers.Reshape((3, 4), dtype=f64),
        keras.layers.LayerNormalization(dtype=f64),
        keras.layers.Flatten(dtype=f64),
        keras.layers.Dense(5, dtype=f64),
        keras.layers.Activation("log_softmax", dtype=f64),
    ])
    rng = np.random.default_rng(10)
    for layer in kmodel.layers:
        if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.GroupNormalization)):
            layer.set_weights([rng.normal(size=w.shape) for w in layer.get_weights()])
    ours = interop.from_keras(kmodel)
    assert ours.input_shape == (3, 6, 6)
    assert ours.layers[6].get_config()["eps"] == 1e-3 and ours.layers[6].get_config()["axis"] == [1]
    x = rng.normal(size=(3, 3, 6, 6))
    expected = keras_predict(keras_interop, kmodel, x)
    assert_same(ours.predict(x), expected, "from_keras(native) vs native")
    assert_same(keras_predict(keras_interop, interop.to_keras(ours), x), expected, "to_keras(from_keras(native)) vs native")


@pytest.mark.parametrize("size", [(2, 2), (3, 1), (1, 4), (4, 3)])
def test_keras_bilinear_upsampling_is_torchs_align_corners_false(size):
    """What the brief takes for granted, checked: Keras' UpSampling2D(bilinear) on channels-last input
    computes torch's F.interpolate(bilinear, align_corners=False) on the same images."""
    keras_interop, keras = _keras()
    x = np.random.default_rng(11).normal(size=(2, 3, 5, 4))
    layer = keras.layers.UpSampling2D(size, interpolation="bilinear", dtype="float64")
    with keras_interop.float64_arithmetic():
        got = layer(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, -1)))).detach().numpy()
    ref = nn.functional.interpolate(torch.from_numpy(x), scale_factor=size, mode="bilinear", align_corners=False).numpy()
    assert_same(np.moveaxis(got, -1, 1), ref, f"Keras UpSampling2D{size} bilinear vs torch")


def test_to_keras_refuses_what_keras_cannot_express_naming_the_layer():
    keras_interop, keras = _keras()
    cases = [
        (Sequential([Softplus(beta=2.0)], input_shape=(4,)), r"Softplus.*no beta or threshold"),
        (Sequential([Softplus(threshold=10.0)], input_shape=(4,)), r"Softplus"),
        # (H, W) of an image are Keras axes 1 and 2, not trailing: its torch backend gets them wrong
        (Sequential([LayerNormalization((3, 4), dtype=np.float64)], input_shape=(2, 3, 4)),
         r"LayerNormalization.*torch backend"),
        (Sequential([LayerNormalization(axis=1, dtype=np.float64)], input_shape=(2, 3)), r"LayerNormalization"),
        (Sequential([Convolution((1, 4, 4), 1, 2, dtype=np.float64), Vectorization(), Reshape((4, 8))]), r"Reshape"),
        (Sequential([Convolution((1, 4, 4), 1, 2, dtype=np.float64), Vectorization(),
                     GroupNormalization(4, dtype=np.float64)]), r"GroupNormalization"),
    ]
    for model, match in cases:
        with pytest.raises(UnsupportedLayerError, match=match):
            interop.to_keras(model)


def test_from_keras_refuses_what_it_cannot_express():
    keras_interop, keras = _keras()
    cases = [
        ([keras.Input((4, 4, 2)), keras.layers.Reshape((8, 4))], r"Reshape of an image reshapes Keras' \(H, W, C\) order"),
        ([keras.Input((16,)), keras.layers.Reshape((2, 2, 4))], r"Reshape to 3 axes is supported only followed by Permute"),
        ([keras.Input((4, 4, 2)), keras.layers.UpSampling2D(2, interpolation="bicubic")], r"interpolation='bicubic'"),
        ([keras.Input((4, 4, 2)), keras.layers.LayerNormalization(rms_scaling=True)], r"rms_scaling=False"),
        ([keras.Input((4, 4, 2)), keras.layers.GroupNormalization(2, axis=1)], r"GroupNormalization\(axis=1\)"),
        ([keras.Input((4, 4, 2)), keras.layers.Flatten(), keras.layers.GroupNormalization(4)], r"GroupNormalization\(groups=4\)"),
    ]
    for layers, match in cases:
        with pytest.raises(UnsupportedLayerError, match=match):
            interop.from_keras(keras.Sequential(layers))


def test_training_with_the_new_layers_follows_torch_step_by_step():
    """20 Adam steps on our model and on its torch twin: the same losses and final weights (float64)."""
    from nn_from_scratch.optimizers import Adam
    from nn_from_scratch.verify import compare_training

    model = our_model()
    rng = np.random.default_rng(12)
    x, labels = rng.normal(size=(8, 3, 6, 5)), rng.integers(0, 5, size=8)
    report = compare_training(model, x, labels, steps=20, optimizer=Adam(1e-2), batch_size=4)
    assert report.max_loss_rel_error <= 1e-10, str(report)
    assert report.max_weight_rel_error <= 1e-9, str(report)
    assert report.losses[-1] < report.losses[0], str(report)  # it learns, on both sides
