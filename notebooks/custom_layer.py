# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Writing your own layer
#
# A layer is a class with a `forward` and a `backward`. This notebook writes one from the math
# up -- PReLU, a ReLU whose negative slope is learned, one slope per channel (He et al., 2015;
# `torch.nn.PReLU(num_parameters=C)`) -- and checks it three ways:
#
# 1. `verify.gradcheck`: backpropagation against central finite differences;
# 2. `verify.compare`: forward and backward against `torch.nn.PReLU` on the same weights;
# 3. a planted bug, to see what a wrong layer looks like in both reports.
#
# `SIZE` (environment variable `NN_NOTEBOOK_SIZE`: `"full"` or `"ci"`) only sets the size of
# the short training run at the end.

# %% tags=["parameters"]
import os

SIZE = os.environ.get("NN_NOTEBOOK_SIZE", "full")

# %%
FULL = SIZE == "full"
N_TRAIN = 2000 if FULL else 300
import numpy as np
import torch

torch.set_num_threads(1)
print(f"SIZE = {SIZE!r}: the training run at the end uses {N_TRAIN} images")

# %% [markdown]
# ## The math
#
# For an input `x` of shape `(N, C, H, W)` (or `(N, C)`) and one slope `a_c` per channel:
#
# $$ y_{n c h w} = \begin{cases} x_{n c h w} & x_{n c h w} > 0 \\ a_c \, x_{n c h w} & \text{otherwise} \end{cases} $$
#
# Backpropagation gets `g = dL/dy` (same shape as `y`) and returns `dL/dx`; it also adds
# `dL/da` to the layer's gradient. By the chain rule, each element of `x` affects only its own
# `y`, and `a_c` affects every non-positive element of channel `c`:
#
# $$ \frac{\partial L}{\partial x_{nchw}} = g_{nchw} \cdot \begin{cases} 1 & x_{nchw} > 0 \\ a_c & \text{otherwise} \end{cases}
# \qquad \frac{\partial L}{\partial a_c} = \sum_{n,h,w \,:\, x_{nchw} \le 0} g_{nchw} \, x_{nchw} $$
#
# At `x = 0` the function has a kink; like torch, we take the slope `a_c` there (`x > 0` picks 1).
#
# ## The layer
#
# The protocol (`nn_from_scratch.interfaces`, and the design page of the docs):
#
# * a layer with parameters is a `Neuron`; it names them in `parameter_names` and creates them
#   in `build(input_shape)`, when the per-sample input shape is first known;
# * `forward(x)` keeps what `backward` needs in attributes named in `cache_attrs`, and `backward`
#   reads them with `self._require_cache(...)` (a clear error when there was no forward);
# * `backward(dL_dy, need_input_grad=True)` *adds* each parameter's gradient with
#   `accumulate_gradient` (a layer called twice before `zero_grad` holds the sum, as in torch)
#   and returns `dL/dx`;
# * `get_config()` returns the constructor's arguments, so that `load_model` can rebuild it.

# %%
from typing import Any

from nn_from_scratch.interfaces import Neuron


class PReLU(Neuron):
    """``y = x if x > 0 else alpha[c] * x``, one learned slope per channel (axis 1).

    Shapes: ``x`` (N, C, ...) -> ``y`` of the same shape; ``alpha`` (C,).

    Args:
        init: the initial slope of every channel (torch's default, 0.25).
        dtype: float32 or float64.
        name: the layer's name.

    Example:
        >>> PReLU().forward(np.array([[-2.0, 3.0]])).tolist()
        [[-0.5, 3.0]]
    """

    parameter_names = ("alpha",)
    cache_attrs = ("_x",)

    def __init__(self, init: float = 0.25, dtype: Any = np.float32, name: str | None = None) -> None:
        super().__init__(name, dtype)
        self.init = float(init)
        self.alpha: np.ndarray | None = None
        self._alpha_pd: np.ndarray | None = None
        self._x: np.ndarray | None = None

    def build(self, input_shape, rng=None) -> None:
        super().build(input_shape)
        if self.alpha is None:
            self.alpha = np.full(input_shape[0], self.init, dtype=self.dtype)

    def _slopes(self, ndim: int) -> np.ndarray:
        return self.alpha.reshape((-1,) + (1,) * (ndim - 2))  # (C, 1, 1) broadcasts over (N, C, H, W)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.cast_input(self.check_input(x))
        self._x = x
        return np.where(x > 0, x, self._slopes(x.ndim) * x)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x = self._require_cache("_x")
        negative = x <= 0
        summed_axes = (0,) + tuple(range(2, x.ndim))  # every axis but the channel
        self.accumulate_gradient("alpha", np.sum(dL_dy * x * negative, axis=summed_axes))
        return np.where(negative, self._slopes(x.ndim) * dL_dy, dL_dy)

    def get_config(self) -> dict[str, Any]:
        return {"init": self.init, "dtype": self.dtype.name, "name": self.name}


layer = PReLU(dtype=np.float64)
x = np.array([[[-2.0, 0.0], [1.0, 3.0]]])[:, :, None, :]  # (N=1, C=2, H=1, W=2)
print("y =", layer.forward(x).ravel(), " (channel 0 scaled below zero, channel 1 positive)")
print("dL/dx for g = 1:", layer.backward(np.ones_like(x)).ravel(), "  dL/dalpha:", layer.gradients()["alpha"])

# %% [markdown]
# ## 1. Gradcheck: backpropagation against finite differences
#
# `verify.gradcheck` perturbs every element of the input and of `alpha` by `±eps` (central
# differences, float64) and compares the slope of a scalar function of the output with what
# `backward` returned. Inputs are kept away from the kink at 0, where a finite difference
# straddling it measures neither side.

# %%
from nn_from_scratch.verify import gradcheck

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3, 5, 5))
x[np.abs(x) < 1e-3] = 0.5                                  # away from the kink
layer = PReLU(dtype=np.float64)
layer.build(x.shape[1:])
layer.alpha[:] = [0.1, 0.25, -0.3]                         # distinct slopes, one negative
print("gradcheck:", gradcheck(layer, x))

# %% [markdown]
# ## 2. Compare with torch: the same layer in another framework
#
# `verify.compare` needs to know what our layer is in torch. Converters live in a registry
# (`interop.torch.TO_TORCH`): a function from our layer to a `TorchTwin`, the torch modules
# plus a `read` that returns the twin's parameters (or their gradients) in our layout. For
# PReLU that is `torch.nn.PReLU(C)` with our slopes copied in.

# %%
from nn_from_scratch.interop.torch import TO_TORCH, TorchTwin, torch_dtype


@TO_TORCH.register(PReLU)
def prelu_to_torch(layer: PReLU, context) -> TorchTwin:
    module = torch.nn.PReLU(num_parameters=len(layer.alpha), init=layer.init).to(torch_dtype(layer.dtype))
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.alpha.copy()))
    return TorchTwin([module], read=lambda get: {"alpha": get(module.weight)})


# %% [markdown]
# Now the layer inside a small model, compared layer by layer in float64 (tolerance 1e-10):
# every layer's output, `dL/dx` and parameter gradients, ours against torch's.

# %%
from nn_from_scratch import plots
from nn_from_scratch.losses import SoftMaxLoss
from nn_from_scratch.model import Sequential
from nn_from_scratch.neurons import Convolution, Linear
from nn_from_scratch.nodes import MaxPooling, Vectorization
from nn_from_scratch.verify import compare


def small_model(dtype=np.float64) -> Sequential:
    model = Sequential([Convolution(kernel_size=3, output_layers=6, dtype=dtype), PReLU(dtype=dtype),
                        MaxPooling(2), Vectorization(), Linear(output_dim=10, dtype=dtype), PReLU(dtype=dtype)],
                       loss=SoftMaxLoss(), input_shape=(1, 12, 12), seed=0)
    model.layers[1].alpha[:] = np.linspace(-0.2, 0.4, 6)
    return model


model = small_model()
xb, yb = rng.random((8, 1, 12, 12)) - 0.5, rng.integers(0, 10, 8)
report = compare(model, xb, yb, reference="torch")
print(report)
fig = plots.plot_comparison(report)

# %% [markdown]
# ## 3. What a bug looks like
#
# Plant one: forget that the slope also scales the gradient flowing back through the negative
# side -- `dL/dx = g` everywhere, as for the identity. The forward pass is still right, so
# the layer's outputs (and a quick look at predictions) give nothing away.

# %%
class BuggyPReLU(PReLU):
    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x = self._require_cache("_x")
        summed_axes = (0,) + tuple(range(2, x.ndim))
        self.accumulate_gradient("alpha", np.sum(dL_dy * x * (x <= 0), axis=summed_axes))
        return dL_dy.copy()  # BUG: the negative side's slope is missing


try:
    gradcheck(BuggyPReLU(dtype=np.float64), x)
except Exception as error:
    print(type(error).__name__, ":", str(error)[:600])

# %% [markdown]
# Gradcheck names the tensor (`input`) and the worst elements. In a model, `compare` says
# *where*: end to end, a wrong backward corrupts its own `dL/dx` and every gradient *before* it
# (backpropagation runs in reverse), so the first divergence is the last failing layer in
# forward order -- the bug, not its victims.

# %%
buggy = small_model()
buggy.layers[1].__class__ = BuggyPReLU                     # the same weights, the buggy backward
report = compare(buggy, xb, yb, reference="torch", mode="end_to_end")
print(report)
fig = plots.plot_comparison(report)

# %% [markdown]
# The red band marks layer 1: its output agrees to 1e-16, its `dL/dx` is off by order 1, and
# so is the convolution's weight gradient before it, a victim. The layers after it are clean.
# In `mode="local"` (the default) each layer is fed our inputs and our `dL/dy`, so only the
# buggy layer's own row fails:

# %%
print(compare(buggy, xb, yb, reference="torch"))

# %% [markdown]
# ## Using it
#
# The layer trains like any other (here with the library's other layers on MNIST digits), and
# `register_layer` lets `load_model` rebuild a saved model that contains it.

# %%
from nn_from_scratch import load_model, zoo
from nn_from_scratch.datasets import mnist
from nn_from_scratch.optimizers import Adam
from nn_from_scratch.serialization import register_layer

(x_u8, y_all), _ = mnist.load_data()
x_train, y_train = zoo.preprocess_images(x_u8[:N_TRAIN]), y_all[:N_TRAIN]
x_val, y_val = zoo.preprocess_images(x_u8[-500:]), y_all[-500:]
net = Sequential([Convolution(kernel_size=3, output_layers=8), PReLU(), MaxPooling(2), Vectorization(),
                  Linear(output_dim=10)], loss=SoftMaxLoss(), optimizer=Adam(3e-3), input_shape=(1, 28, 28), seed=0)
history = net.fit(x_train, y_train, epochs=3, batch_size=50, validation_data=(x_val, y_val), verbose=0)
print("validation accuracy per epoch:", np.round(history.history["val_accuracy"], 3))
print("learned slopes per channel:", np.round(net.layers[1].alpha, 3))
fig = plots.plot_history(history, title="a CNN with the new PReLU layer")

# %%
import tempfile

register_layer(PReLU)
path = os.path.join(tempfile.mkdtemp(), "prelu.safetensors")
net.save(path)
print("reloaded predictions identical:", np.array_equal(load_model(path).predict(x_val), net.predict(x_val)))
