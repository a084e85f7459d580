"""ONNX export and import (nn_from_scratch.interop.onnx), issue 10.

The references come from outside: ``onnx.checker`` (full check) and onnxruntime running the
exported file, and torch for a model that ``torch.onnx.export`` wrote. The seed CNN, LeNet with
batch norm, the zoo's ResNet and MobileNet (or, without them, a graph with a residual Add and a
depthwise convolution) and a model of corner cases pass the checker at opsets 13, 17 and 21 and
match ``predict`` on 1,000 MNIST test images (relative error <= 1e-5, identical classes).
``from_onnx(to_onnx(m))`` gives the model back bit for bit. Each trap named in the issue has a
test of its own below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'nn_from_scratch[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'nn_from_scratch[onnx]')")

from nn_from_scratch import zoo  # noqa: E402
from nn_from_scratch.graph import Input, Model  # noqa: E402
from nn_from_scratch.interfaces import Node  # noqa: E402
from nn_from_scratch.interop import UnsupportedLayerError, from_onnx, to_onnx  # noqa: E402
from nn_from_scratch.interop import onnx as onnx_interop  # noqa: E402
from nn_from_scratch.model import Sequential  # noqa: E402
from nn_from_scratch.neurons import (BatchNormalization, Convolution, GroupNormalization, LayerNormalization,  # noqa: E402
                                     Linear, TransposedConvolution)
from nn_from_scratch.nodes import (ELU, GELU, Add, AveragePooling, Concatenate, Dropout, GlobalAveragePooling,  # noqa: E402
                                   Identity, LeakyReLU, LogSoftMax, MaxPooling, Multiply, ReLU, Reshape, Sigmoid, SiLU,
                                   SoftMax, Softplus, Tanh, UpSampling2D, Vectorization)

OPSETS = (13, 17, 21)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from nn_from_scratch.datasets import mnist

    (_, _), (x_test, _) = mnist.load_data()
    return zoo.preprocess_images(x_test[:1000])


def _session(proto: "onnx.ModelProto") -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(proto: "onnx.ModelProto", x: np.ndarray) -> np.ndarray:
    return _session(proto).run(None, {"input": x})[0]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _with_statistics(model):
    """Batch-norm running statistics away from (0, 1), so that they matter."""
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            layer.running_mean[...] = rng.normal(0, 0.2, layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
            layer.gamma[...] = rng.uniform(0.5, 1.5, layer.gamma.shape)
            layer.beta[...] = rng.normal(0, 0.1, layer.beta.shape)
    return model


def residual_depthwise(dtype=np.float32, seed=0) -> Model:
    """A graph with a residual Add and a depthwise convolution (the shape of ResNet and MobileNet blocks)."""
    x = Input((1, 28, 28))
    h = ReLU()(BatchNormalization(dtype=dtype)(Convolution(kernel_size=3, output_layers=8, padding=1, dtype=dtype)(x)))
    d = Convolution(kernel_size=3, output_layers=8, padding=1, groups=8, use_bias=False, dtype=dtype)(h)
    h = Add()([h, ReLU()(BatchNormalization(dtype=dtype)(d))])
    h = GlobalAveragePooling()(MaxPooling(2)(h))
    return Model(x, Linear(output_dim=10, dtype=dtype)(h), seed=seed)


def corner_cases(dtype=np.float32, seed=0, single_ops: bool = False) -> Model:
    """Padding, stride, dilation, groups and pooling corner cases, and every other layer with an
    ONNX operator, in one graph on (1, 28, 28) inputs. ``single_ops``: only layers that are one
    ONNX operator at opset 21 (no formula: trailing layer norm, Softplus with beta 1, Add of two)."""
    x = Input((1, 28, 28))
    a = Convolution(kernel_size=(3, 2), output_layers=4, padding=(2, 0, 1, 3), stride=(1, 2), dilation=(2, 1), dtype=dtype)(x)
    a = LeakyReLU(0.2)(a)                                                           # (4, 28, 16)
    b = Convolution(kernel_size=3, output_layers=6, padding="same", groups=2, dtype=dtype)(a)
    b = ELU(0.7)(GroupNormalization(3, eps=1e-3, dtype=dtype)(b))                    # (6, 28, 16)
    c = MaxPooling(3, stride=2, padding=(1, 0, 1, 1))(b)                             # (6, 13, 8)
    d1 = AveragePooling(3, stride=1, padding=1, count_include_pad=True)(c)
    d2 = AveragePooling(3, stride=1, padding=1, count_include_pad=False)(c)
    d = Concatenate(axis=1)([d1, d2, Sigmoid()(c)])                                 # (18, 13, 8)
    d = Convolution(kernel_size=3, output_layers=18, padding=(0, 1, 1, 0), groups=18, dtype=dtype)(d)
    d = GELU()(LayerNormalization(axis=(-1 if single_ops else 1), dtype=dtype)(d))    # (18, 13, 8)
    e = TransposedConvolution(kernel_size=3, output_layers=6, stride=2, padding=1, output_padding=1, groups=3,
                              dtype=dtype)(d)                                        # (6, 24, 14)
    e = Softplus(beta=1.0 if single_ops else 2.0)(LayerNormalization(tuple(e.shape[1:]), eps=1e-4, dtype=dtype)(e))
    f = UpSampling2D(2, "nearest")(MaxPooling(2)(e))                                 # (6, 24, 14)
    g = UpSampling2D((2, 1), "bilinear")(AveragePooling(2)(e))                       # (6, 24, 7)
    g = UpSampling2D((1, 2), "bilinear")(GELU("tanh")(g))                            # (6, 24, 14)
    h = Add()([f, SiLU()(e)] if single_ops else [f, g, SiLU()(e)])
    h = Multiply()([h, Tanh()(f)])
    h = Dropout(0.3)(Identity()(h))
    pooled = GlobalAveragePooling()(h)                                               # (6,)
    flat = Vectorization()(MaxPooling(4)(h))                                         # (6 * 6 * 3,)
    flat = Reshape((2, -1))(flat)
    flat = LayerNormalization(axis=-1, dtype=dtype)(flat)                            # (2, 54)
    flat = Reshape((-1,))(flat)
    z = Concatenate(axis=1)([pooled, flat])
    z = ReLU()(BatchNormalization(eps=0.3, dtype=dtype)(Linear(output_dim=16, dtype=dtype)(z)))
    z = LogSoftMax()(Linear(output_dim=10, dtype=dtype)(z))
    return Model(x, SoftMax()(z), seed=seed)


def shared_layer(dtype=np.float32, seed=0) -> Model:
    """One convolution and one batch norm called at two places: their weights are shared in the file."""
    x = Input((1, 28, 28))
    conv, norm = Convolution(kernel_size=3, output_layers=4, padding=1, dtype=dtype), BatchNormalization(dtype=dtype)
    expand = Convolution(kernel_size=1, output_layers=4, dtype=dtype)(x)
    h = ReLU()(norm(conv(expand)))
    h = ReLU()(norm(conv(h)))
    return Model(x, Linear(output_dim=10, dtype=dtype)(Vectorization()(MaxPooling(4)(h))), seed=seed)


def _models() -> dict:
    models = {"seed_cnn": lambda: zoo.seed_cnn(seed=0), "lenet_bn": lambda: zoo.lenet5(seed=0, batch_norm=True),
              "residual_depthwise": residual_depthwise, "corner_cases": corner_cases, "shared_layer": shared_layer}
    for name in ("resnet", "mobilenet"):
        if hasattr(zoo, name):
            models[name] = lambda name=name: getattr(zoo, name)(seed=0)
    return models


@pytest.fixture(scope="module")
def built_models() -> dict:
    return {name: _with_statistics(make()) for name, make in _models().items()}


@pytest.mark.parametrize("name", sorted(_models()))
def test_checker_and_onnxruntime_agree_with_predict(name: str, built_models, images) -> None:
    model = built_models[name]
    expected = model.predict(images, batch_size=500)
    for opset in OPSETS:
        proto = onnx_interop.to_onnx_model(model, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        assert proto.opset_import[0].version == opset
        got = _run(proto, images)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert _relative(got, expected) <= 1e-5, f"{name}, opset {opset}"
        assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1)), f"{name}, opset {opset}"


@pytest.mark.parametrize("name", sorted(_models()))
def test_round_trip_is_bit_for_bit(name: str, built_models, images, tmp_path) -> None:
    model = built_models[name]
    for opset in (13, 21):
        path = tmp_path / f"{name}_{opset}.onnx"
        to_onnx(model, path, opset=opset)
        back = from_onnx(path)
        assert type(back) is type(model)
        ours = [a for layer in model.layers for a in (*layer.parameters().values(), *layer.buffers().values())
                if a.dtype.kind == "f"]
        theirs = [a for layer in back.layers for a in (*layer.parameters().values(), *layer.buffers().values())
                  if a.dtype.kind == "f"]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert [layer.get_config() for layer in back.layers] == [layer.get_config() for layer in model.layers]
        assert np.array_equal(back.predict(images[:100]), model.predict(images[:100]))
        if name == "shared_layer":  # still one layer object at two nodes
            assert len(back.layers) == len(model.layers) < len(back.nodes)


def test_float64_round_trip_and_the_onnxruntime_float64_conv_trap(images) -> None:
    """float64 exports as float64 and comes back bit for bit (the BN epsilon included, which a
    float32 attribute would round); onnxruntime's CPU Conv has no float64 kernel, so serving
    takes dtype='float32', which then matches predict."""
    model = _with_statistics(zoo.lenet5(dtype=np.float64, seed=0))
    model.layers[1].eps = 1e-5  # not a float32 number: the tag must carry it exactly
    proto = onnx_interop.to_onnx_model(model, opset=17)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    back = onnx_interop.from_onnx_model(proto)
    assert back.layers[1].eps == 1e-5
    assert np.array_equal(back.predict(images[:200]), model.predict(images[:200]))
    with pytest.raises(Exception, match="(?i)not.?implemented|could not find an implementation"):
        _session(proto)
    served = onnx_interop.to_onnx_model(model, opset=17, dtype="float32")
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in served.graph.initializer if t.dims)
    expected = model.predict(images)
    got = _run(served, images.astype(np.float32))
    assert _relative(got, expected) <= 1e-5
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def _single_layer(layer, input_shape=(2, 9, 9)) -> Sequential:
    return Sequential([layer], input_shape=input_shape, seed=0)


def test_trap_pads_are_top_left_bottom_right() -> None:
    conv = Convolution(kernel_size=3, output_layers=2, padding=(2, 0, 1, 3), dtype=np.float32)  # ours: t, b, l, r
    model = _single_layer(conv)
    proto = onnx_interop.to_onnx_model(model)
    (node,) = proto.graph.node
    assert [a for a in node.attribute if a.name == "pads"][0].ints == [2, 1, 0, 3]
    x = np.random.default_rng(0).normal(size=(3, 2, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, x), model.predict(x), rtol=1e-5, atol=1e-6)
    pool = _single_layer(MaxPooling(3, stride=2, padding=(1, 0, 0, 1)))
    np.testing.assert_allclose(_run(onnx_interop.to_onnx_model(pool), x), pool.predict(x), rtol=0, atol=0)


@pytest.mark.parametrize("include", [True, False])
def test_trap_average_pool_count_include_pad_is_written(include: bool) -> None:
    model = _single_layer(AveragePooling(3, stride=2, padding=1, count_include_pad=include))
    proto = onnx_interop.to_onnx_model(model)
    (node,) = proto.graph.node
    assert [a.i for a in node.attribute if a.name == "count_include_pad"] == [int(include)]
    x = np.random.default_rng(1).normal(size=(2, 2, 9, 9)).astype(np.float32) + 3.0
    np.testing.assert_allclose(_run(proto, x), model.predict(x), rtol=1e-6)
    # A file without the attribute means 0 (ONNX's default), and imports as such.
    del node.attribute[[a.name for a in node.attribute].index("count_include_pad")]
    node.doc_string = ""
    assert from_onnx(proto).layers[0].count_include_pad is False


def test_trap_batch_norm_epsilon_is_carried() -> None:
    bn = BatchNormalization(eps=0.5, dtype=np.float32)
    model = _with_statistics(_single_layer(bn, (3, 4, 4)))
    proto = onnx_interop.to_onnx_model(model)
    (node,) = proto.graph.node
    assert [a.f for a in node.attribute if a.name == "epsilon"] == [0.5]
    x = np.random.default_rng(2).normal(size=(4, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, x), model.predict(x), rtol=1e-5)
    node.doc_string = ""  # operator by operator, as a foreign file
    assert from_onnx(proto).layers[0].eps == 0.5


def test_trap_flatten_order_is_channels_height_width() -> None:
    """Flatten then Linear against onnxruntime, with a weight that tells C,H,W from H,W,C apart."""
    model = Sequential([Vectorization(), Linear(output_dim=24, dtype=np.float32)], input_shape=(2, 3, 4), seed=0)
    model.layers[1].W[1:] = np.eye(24, dtype=np.float32)  # y = flatten(x) + b
    proto = onnx_interop.to_onnx_model(model)
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 2, 3, 4)
    got = _run(proto, x)
    np.testing.assert_array_equal(got - model.layers[1].W[0], x.reshape(2, -1))  # C, H, W order by hand
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-6)


def test_dynamic_batch_axis(built_models, images) -> None:
    model = built_models["lenet_bn"]
    proto = onnx_interop.to_onnx_model(model)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = _session(proto)
    for n in (1, 7, 64):
        got = session.run(None, {"input": images[:n]})[0]
        assert got.shape == (n, 10)
        assert _relative(got, model.predict(images[:n])) <= 1e-5


def test_foreign_file_imports_operator_by_operator(built_models, images) -> None:
    """Our file with the tags stripped: every single-operator layer goes through the operator
    importer (SiLU's Sigmoid * x comes back as a Sigmoid and a Multiply), at opset 21."""
    model = _with_statistics(corner_cases(single_ops=True))
    proto = onnx_interop.to_onnx_model(model, opset=21)
    for node in proto.graph.node:
        node.doc_string = ""
    proto.doc_string = ""
    back = from_onnx(proto)
    assert any(isinstance(layer, Multiply) for layer in back.layers)
    assert _relative(back.predict(images[:200]), model.predict(images[:200])) <= 1e-5


class Mystery(Node):
    """A layer with no ONNX mapping."""

    def forward(self, x):
        return x

    def backward(self, dL_dy, need_input_grad=True):
        return dL_dy


def test_errors_name_the_layer_and_the_node(tmp_path) -> None:
    model = Sequential([Convolution(kernel_size=3, output_layers=2), Mystery(name="mystery_layer")],
                       input_shape=(1, 8, 8), seed=0)
    with pytest.raises(UnsupportedLayerError, match=r"layer 1 \(mystery_layer, Mystery\)"):
        to_onnx(model, tmp_path / "m.onnx")
    proto = onnx_interop.to_onnx_model(_single_layer(ReLU(), (4,)))
    proto.graph.node[0].op_type = "Hardmax"
    proto.graph.node[0].name = "the_hardmax"
    proto.graph.node[0].doc_string = ""
    with pytest.raises(UnsupportedLayerError, match=r"'the_hardmax' \(Hardmax\)"):
        from_onnx(proto)


def test_tags_are_json_with_the_config() -> None:
    model = _single_layer(BatchNormalization(eps=1e-5, dtype=np.float64), (3,))
    (node,) = onnx_interop.to_onnx_model(model).graph.node
    tag = json.loads(node.doc_string)["nn_from_scratch"]
    assert tag["class"] == "BatchNormalization" and tag["config"]["eps"] == 1e-5


def test_a_torch_export_imports_and_predicts_as_torch(images, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.head = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(3, stride=2, padding=1), nn.Flatten(),
                                      nn.Linear(8 * 7 * 7, 32), nn.GELU(), nn.ELU(0.5), nn.Linear(32, 10))

        def forward(self, x):
            h = self.stem(x)
            return self.head(h + torch.relu(self.depthwise(h)))

    torch.manual_seed(0)
    module = Block().eval()
    with torch.no_grad():
        module.stem[1].running_mean.normal_(0, 0.2)
        module.stem[1].running_var.uniform_(0.5, 2.0)
    path = tmp_path / "torch.onnx"
    x = torch.from_numpy(images[:2])
    torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
    model = from_onnx(path)
    assert isinstance(model, Model)
    assert any(isinstance(layer, AveragePooling) and layer.count_include_pad for layer in model.layers)
    assert any(isinstance(layer, GELU) for layer in model.layers)  # torch's erf formula, fused back
    with torch.no_grad():
        expected = module(torch.from_numpy(images)).numpy()
    got = model.predict(images, batch_size=500)
    assert _relative(got, expected) <= 1e-5
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_cli_export(tmp_path, images) -> None:
    from nn_from_scratch.cli import main

    model = _with_statistics(zoo.lenet5(seed=0))
    model.save(tmp_path / "m.safetensors")
    assert main(["export", str(tmp_path / "m.safetensors"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert _relative(_run(proto, images[:100]), model.predict(images[:100])) <= 1e-5
