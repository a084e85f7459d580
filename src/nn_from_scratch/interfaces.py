"""The three abstractions everything else is built from.

* :class:`Node` -- a layer without trainable parameters (``ReLU``, ``Vectorization``, pooling).
* :class:`Neuron` -- a layer with trainable parameters (``Linear``, ``Convolution``).
* :class:`Optimizer` -- turns parameter gradients into parameter updates.

A layer maps a batch ``x`` of shape ``(N, *input_shape)`` to ``y`` of shape
``(N, *output_shape)``. ``forward(x)`` remembers what ``backward`` needs (the attributes named
in ``cache_attrs``); ``backward(dL_dy, need_input_grad=True)`` *adds* the parameter gradients to
``_X_pd`` (as torch adds to ``.grad``) and returns ``dL_dx``. Shapes are *per sample*: the batch
size is never part of a layer, so any batch size works at run time.

The protocol that models (``Sequential``, the graph ``Model``) and the training loop rely on:

* ``forward(x)`` / ``backward(dL_dy, need_input_grad=True)``; a merge layer (``Add``,
  ``Concatenate``) takes a list of arrays and returns a list of gradients;
* ``parameters()`` / ``gradients()`` / ``buffers()`` by name, ``zero_grad()``;
* ``training``: set by the model for each pass; in inference mode the model calls
  ``release_cache()`` after the forward, so nothing is kept for a backward;
* ``save_context()`` / ``restore_context(ctx)``: hand the forward cache over to the caller and
  back, so that a layer called at two places of a graph backpropagates each call with its own
  cache.
"""

from __future__ import annotations

import inspect
import sys
from abc import ABC, abstractmethod
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

Shape = tuple[int, ...]


def is_int(value: Any) -> bool:
    """True for a Python or NumPy integer (``bool`` excluded).

    Args:
        value: anything.

    Example:
        >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
        (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def per_sample_shape(shape: Any, expected_ndim: int | None = None, what: str = "shape", who: str = "layer") -> Shape | None:
    """Turn a seed-style shape argument into a per-sample shape.

    The seed passed shapes *with* the batch size, e.g. ``(50, 1, 28, 28)``; newer code passes
    ``(1, 28, 28)`` or leaves it out (``None``). With ``expected_ndim`` given, a shape with one
    extra leading axis is taken to include the batch size, which is dropped. Anything but a
    positive int or a sequence of them (a string, a float) is a ``TypeError`` / ``ValueError``
    naming ``who`` and ``what``.

    Args:
        shape: an int, a sequence of positive ints, or None.
        expected_ndim: the per-sample rank; a shape one axis longer loses its first (batch) axis.
        what: the argument's name, for error messages.
        who: the layer's name, for error messages.

    Returns:
        The per-sample shape as a tuple of ints, or None for None.

    Example:
        >>> per_sample_shape((50, 1, 28, 28), expected_ndim=3)
        (1, 28, 28)
        >>> per_sample_shape(784)
        (784,)
        >>> per_sample_shape("28x28", what="input_shape", who="Conv2D")
        Traceback (most recent call last):
        ...
        TypeError: Conv2D: input_shape must be a positive int or a tuple of them, got '28x28' (str)
    """
    if shape is None:
        return None
    if is_int(shape):
        shape = (shape,)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{who}: {what} must be a positive int or a tuple of them, got {shape!r} ({type(shape).__name__})")
    shape = tuple(shape)
    if not shape or not all(is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"{who}: {what} must be a positive int or a tuple of them, got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if expected_ndim is not None and len(shape) == expected_ndim + 1:
        return shape[1:]
    return shape


def shape_hint(expected: Shape, got: tuple[int, ...]) -> str:
    """A hint for the two common shape mistakes, or ``""``: a sample without its batch axis, and
    a channels-last image batch where this library expects channels first ``(N, C, H, W)``.

    Args:
        expected: the per-sample shape the layer expects.
        got: the shape of what it was given (with the batch axis).

    Returns:
        The hint (starting with `` -- ``), or ``""``.

    Example:
        >>> shape_hint((1, 28, 28), (1, 28, 28))
        ' -- a single sample without its batch axis? Pass x[None] (a batch of one)'
        >>> shape_hint((1, 28, 28), (64, 28, 28, 1))
        ' -- a channels-last (N, H, W, C) batch? This library is channels-first (N, C, H, W): pass x.transpose(0, 3, 1, 2)'
        >>> shape_hint((4,), (8, 5))
        ''
    """
    expected, got = tuple(expected), tuple(got)
    if got == expected:
        return " -- a single sample without its batch axis? Pass x[None] (a batch of one)"
    if len(expected) == 3 and len(got) == 4 and got[1:] == (expected[1], expected[2], expected[0]):
        return (" -- a channels-last (N, H, W, C) batch? This library is channels-first (N, C, H, W): "
                "pass x.transpose(0, 3, 1, 2)")
    return ""


def as_float(x: np.ndarray) -> np.ndarray:
    """``x`` itself when it is floating point, else ``x`` as float64 (integer images, masks).

    Args:
        x: an array.

    Example:
        >>> as_float(np.array([1, 2])).dtype
        dtype('float64')
        >>> as_float(np.ones(2, np.float32)).dtype
        dtype('float32')
    """
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def check_hyperparameter(
    value: Any, what: str, who: str, *, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False,
) -> float:
    """``value`` as a finite float within the bounds, else a ``ValueError`` (``TypeError`` for a
    non-number) naming ``who``, ``what`` and the value. Used by constructors (lr, eps, ...).

    Args:
        value: the value given.
        what: its name (``"lr"``).
        who: the class it is for (``"SGD"``).
        low: the lower bound, or None.
        high: the upper bound, or None.
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Returns:
        ``value`` as a float.

    Example:
        >>> check_hyperparameter(0.1, "lr", "SGD", low=0.0, low_open=True)
        0.1
        >>> check_hyperparameter(0, "lr", "SGD", low=0.0, low_open=True)
        Traceback (most recent call last):
        ...
        ValueError: SGD: lr must be a finite number > 0, got 0
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{who}: {what} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if not np.isfinite(number) or too_low or too_high:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        raise ValueError(f"{who}: {what} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}")
    return number


class Layer(ABC):
    """Common base of nodes and neurons: shape inference, input checks and mode.

    Args:
        name: the layer's name (default: the class name).

    Example:
        >>> from nn_from_scratch.nodes import ReLU
        >>> layer = ReLU()
        >>> layer.build((3,))
        >>> layer.output_shape, layer.training
        ((3,), True)
        >>> layer.forward(np.array([[-1.0, 0.5, 2.0]]))
        array([[0. , 0.5, 2. ]])
        >>> layer.backward(np.ones((1, 3)))
        array([[0., 1., 1.]])
    """

    #: False for element-wise layers (activations, dropout): they take any shape on every call.
    fixed_input_shape = True
    #: True where ``backward(dL_dy, need_input_grad=False)`` skips dL/dx; a model's training
    #: step asks that of its first layer, whose input needs no gradient (as torch does).
    can_skip_input_grad = False
    #: Names of the attributes where ``forward`` keeps what ``backward`` needs.
    cache_attrs: tuple[str, ...] = ()
    #: False while a model runs an inference pass whose caches it will release unread: a layer
    #: may then skip building them (a convolution unrolls its input a block at a time).
    keep_cache = True
    #: Entries of ``cache_attrs`` that hold work buffers reused from one training step to the next
    #: rather than what one forward computed -- by convention ``_plan``, where a convolution keeps
    #: its kernel plan: :meth:`release_after_backward` keeps them, :meth:`release_cache` drops them.
    workspace_attrs: tuple[str, ...] = ("_plan",)
    #: True while a model's backward hands this layer a ``dL_dy`` that nothing reads afterwards
    #: (the dL/dx the next layer has just returned): the layer may overwrite it, e.g. ReLU computes
    #: its dL/dx in place. False when the layer is called directly: the caller's array is kept.
    output_grad_writable = False
    #: How many inputs ``forward`` takes: 1, or None for a merge layer taking a list of any length.
    n_inputs: int | None = 1

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self.training = True

    # -- shapes ---------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        """Fix the per-sample input shape; neurons also create their parameters here."""
        input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = tuple(int(s) for s in self.compute_output_shape(input_shape))
        self.input_shape = input_shape

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input shape. Default: unchanged."""
        return input_shape

    def check_input(self, x: Any) -> np.ndarray:
        """Validate ``x`` against the layer (building it on first use) and return it as an array.

        A wrong shape raises ``ValueError`` naming the layer, the expected and the received shape.
        """
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: expected a numeric array, got dtype {x.dtype}")
        if not self.built:
            if x.ndim < 1:
                raise ValueError(f"{self.name}: expected a batch (N, ...), got a scalar")
            self.build(x.shape[1:])
        elif self.fixed_input_shape and (x.shape[1:] != self.input_shape or x.ndim != len(self.input_shape) + 1):
            raise ValueError(
                f"{self.name}: expected input of shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got {x.shape}{shape_hint(self.input_shape, x.shape)}"
            )
        return x

    def check_output_grad(self, dL_dy: Any, batch: int, dtype: Any = None) -> np.ndarray:
        """``dL_dy`` as an array of shape ``(batch, *output_shape)`` (and ``dtype``, if given).

        A wrong shape raises ``ValueError`` naming the layer, the expected and the received shape.
        """
        dL_dy = np.asarray(dL_dy, dtype=dtype)
        expected = (batch,) + tuple(self.output_shape)
        if dL_dy.shape != expected:
            raise ValueError(f"{self.name}: expected dL_dy of shape {expected}, got {dL_dy.shape}")
        return dL_dy

    # -- the two passes -------------------------------------------------------------------
    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = f(x)`` for a batch; caches what ``backward`` needs."""

    @abstractmethod
    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Given ``dL/dy`` of the last ``forward``, add the parameter gradients, return ``dL/dx``.

        With ``need_input_grad=False`` a layer may skip dL/dx and return ``None``
        (``can_skip_input_grad``); the others compute it anyway.
        """

    def __call__(self, x: Any) -> Any:
        """``forward(x)`` on arrays; on symbolic tensors (``Input(...)``), a node of a graph model."""
        from .symbolic import SymbolicTensor, call_layer_symbolically

        if isinstance(x, SymbolicTensor):
            return call_layer_symbolically(self, x)
        if isinstance(x, (list, tuple)) and any(isinstance(t, SymbolicTensor) for t in x):
            if not all(isinstance(t, SymbolicTensor) for t in x):
                kinds = ", ".join(type(t).__name__ for t in x)
                raise TypeError(
                    f"{self.name}: called on a mix of symbolic tensors and data ({kinds}); in a graph model every "
                    "input must be a symbolic tensor (from Input(...) or another layer's call)"
                )
            return call_layer_symbolically(self, x)
        return self.forward(x)

    # -- the passes as a model runs them -----------------------------------------------------
    def forward_in_pass(self, x: Any, training: bool, keep_cache: bool) -> Any:
        """``forward`` as a model's pass runs it (``Sequential``, the graph ``Model``, ``plots``).

        Without ``keep_cache`` (an inference pass) the layer may skip building its cache
        (:attr:`keep_cache`) and drops whatever it kept once the output is computed.
        """
        self.training, self.keep_cache = training, keep_cache
        out = self.forward(x)
        if not keep_cache:
            self.release_cache()
            self.keep_cache = True
        return out

    def backward_in_pass(self, dL_dy: Any, need_input_grad: bool, output_grad_writable: bool) -> Any:
        """``backward`` as a model's pass runs it, then :meth:`release_after_backward`.

        ``output_grad_writable`` says the model reads ``dL_dy`` no more (see
        :attr:`output_grad_writable`); it holds only during this call.
        """
        self.output_grad_writable = output_grad_writable
        try:
            # need_input_grad is passed only when False: the seed's layers define backward(dL_dy).
            result = self.backward(dL_dy) if need_input_grad else self.backward(dL_dy, need_input_grad=False)
        finally:
            self.output_grad_writable = False
        self.release_after_backward()  # what it cached is freed as the pass moves on, as in torch
        return result

    # -- what forward keeps for backward ----------------------------------------------------
    def release_cache(self) -> None:
        """Drop what the last ``forward`` kept for ``backward`` (inference passes need nothing)."""
        for attr in self.cache_attrs:
            setattr(self, attr, None)

    def release_after_backward(self) -> None:
        """Drop what the last ``forward`` kept, except the work buffers of :attr:`workspace_attrs`.

        Models call it right after each layer's ``backward`` in a training step, so that what was
        cached for the backward is freed as the pass moves on (as torch frees saved tensors) and
        nothing activation-sized is left between steps; a second ``backward`` then needs a new
        forward, as in torch.
        """
        for attr in self.cache_attrs:
            if attr not in self.workspace_attrs:
                setattr(self, attr, None)

    def save_context(self) -> dict[str, Any]:
        """Take the forward cache out of the layer (the layer is left without one)."""
        context = {attr: getattr(self, attr, None) for attr in self.cache_attrs}
        self.release_cache()
        return context

    def restore_context(self, context: dict[str, Any]) -> None:
        """Put back a cache taken by :meth:`save_context`, before the matching ``backward``."""
        for attr, value in context.items():
            setattr(self, attr, value)

    def _require_cache(self, attr: str) -> Any:
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(
                f"{self.name}: backward needs a forward in training mode first "
                "(inference passes keep nothing for a backward, and a model's backward frees each layer's cache once used)"
            )
        return value

    # -- parameters -----------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable arrays by name. Optimizers update them in place."""
        return {}

    def gradients(self) -> dict[str, np.ndarray | None]:
        """``dL/dparameter`` summed over the ``backward`` calls since the last ``zero_grad``,
        with the same names as ``parameters()`` (``None`` before any backward, as torch's ``.grad``)."""
        return {}

    def zero_grad(self) -> None:
        """Forget the accumulated gradients (torch's ``zero_grad(set_to_none=True)``)."""

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state that is saved with the model (e.g. batch-norm running stats)."""
        return {}

    def count_params(self) -> int:
        return int(sum(p.size for p in self.parameters().values()))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (without its weights), as JSON values."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Node(Layer):
    """A layer without trainable parameters.

    Args:
        name: the layer's name (default: the class name).

    Example:
        >>> from nn_from_scratch.nodes import ReLU
        >>> isinstance(ReLU(), Node), ReLU().parameters()
        (True, {})
    """


class NotBuiltError(AttributeError):
    """A parameter read before the layer has created it (its input shape is not known yet).

    An ``AttributeError``, so ``getattr(layer, "W", None)`` still gives ``None``.

    Args:
        *args: the message, as for any exception (it names the layer and parameter).

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> layer = Linear(output_dim=2)
        >>> getattr(layer, "W", None) is None
        True
        >>> isinstance(NotBuiltError("W"), AttributeError)
        True
    """


class _Parameter:
    """The descriptor behind each name in ``Neuron.parameter_names`` (``W``, ``B``, ``gamma``, ...).

    It stores the array in the instance's ``__dict__`` as a plain attribute would. Reading it
    from outside the layer before the layer has created it (``Convolution(...).W`` before any
    input) raises :class:`NotBuiltError` saying so, where a plain attribute gave ``None`` and
    a ``NoneType`` error further on. The layer's own methods (and those of its subclasses)
    still read ``None`` -- the "not created yet" checks (``if self.W is None``) keep working
    -- and so does a parameter that is absent by design once built (``B`` with ``use_bias=False``).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__.get(self.name)
        if value is None and not instance.built and sys._getframe(1).f_locals.get("self") is not instance:
            raise NotBuiltError(
                f"{instance.name}: {self.name} does not exist yet: the layer is not built (its input shape is unknown). "
                "Build it first: give the model input_shape=... (or an Input), call model.build(shape) or "
                f"predict on a batch, or give the layer its input size (e.g. input_dim=...)"
            )
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.name] = value


class Neuron(Layer):
    """A layer with trainable parameters.

    Subclasses create their parameters in ``build`` and name them in ``parameter_names``.
    The gradient of parameter ``X`` lives in attribute ``_X_pd`` (the seed's name, which the
    notebook reads as ``layer._W_pd``); ``gradients()`` is the public way to read them. Each
    ``backward`` adds to it through :meth:`accumulate_gradient`, so a layer used twice before a
    ``zero_grad`` holds the sum of both gradients, as in torch.

    Args:
        name: the layer's name (default: the class name).
        dtype: the dtype of its parameters (float32 by default).

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> layer = Linear(input_dim=3, output_dim=2)
        >>> list(layer.parameters()), layer.count_params()
        (['W'], 8)
        >>> y = layer.forward(np.ones((4, 3), np.float32))
        >>> _ = layer.backward(np.ones((4, 2), np.float32))
        >>> layer.gradients()["W"].shape
        (4, 2)
        >>> layer.zero_grad()
        >>> layer.gradients()
        {'W': None}
    """

    parameter_names: tuple[str, ...] = ("W",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.parameter_names:
            if not isinstance(inspect.getattr_static(cls, name, None), _Parameter):
                setattr(cls, name, _Parameter(name))

    def __init__(self, name: str | None = None, dtype: Any = np.float32) -> None:
        super().__init__(name)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"{self.name}: dtype must be a floating type, got {self.dtype}")
        if self.dtype.itemsize < 4:
            # Refused rather than half-supported: Adam's eps = 1e-8 is 0 in float16 (its smallest
            # subnormal is 6e-8), so the first step divides by ~0, and gradients underflow besides.
            raise TypeError(
                f"{self.name}: dtype {self.dtype} is not supported: float16 training breaks (Adam's eps underflows to 0, "
                "small gradients vanish); use float32 or float64"
            )
        # True when the user passed the weights: a model's seeded re-initialisation skips them.
        self.user_weights = False

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        """Draw fresh initial values for every parameter (only once the shapes are known)."""

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.parameter_names if getattr(self, k, None) is not None}

    def gradients(self) -> dict[str, np.ndarray | None]:
        return {k: getattr(self, f"_{k}_pd", None) for k in self.parameters()}

    def zero_grad(self) -> None:
        for k in self.parameter_names:
            setattr(self, f"_{k}_pd", None)

    def accumulate_gradient(self, name: str, grad: np.ndarray) -> None:
        """Add ``grad`` to ``_{name}_pd``. ``grad`` must be a fresh array: the first one is kept as is."""
        current = getattr(self, f"_{name}_pd", None)
        if current is None:
            setattr(self, f"_{name}_pd", grad)
        else:
            current += grad

    def cast_input(self, x: np.ndarray) -> np.ndarray:
        """Bring the input to this layer's dtype (a no-op when it already is)."""
        return x.astype(self.dtype, copy=False)


class Optimizer(ABC):
    """Updates every trainable array of some layers, in place, from their gradients.

    ``step(layers)`` gathers ``(parameter, gradient)`` pairs, optionally rescales all gradients
    so that their global L2 norm is at most ``clip_norm`` (as ``torch.nn.utils.clip_grad_norm_``
    does), then calls ``update`` once per parameter. Per-parameter state (momentum, Adam
    moments) is keyed by the parameter array itself, so it survives across steps.

    Args:
        lr: the learning rate, > 0.
        clip_norm: the largest global L2 norm of the gradients, or None (no clipping).

    Example:
        >>> class PlainSGD(Optimizer):
        ...     def update(self, param, grad):
        ...         param -= self.lr * grad
        >>> from nn_from_scratch.neurons import Linear
        >>> layer = Linear(input_dim=1, output_dim=1, W=np.array([[1.0], [0.0]]))
        >>> _ = layer.forward(np.ones((1, 1), np.float32))
        >>> _ = layer.backward(np.ones((1, 1), np.float32))
        >>> PlainSGD(lr=0.5).step([layer])
        >>> layer.W.ravel()
        array([ 0.5, -0.5], dtype=float32)
    """

    def __init__(self, lr: float, clip_norm: float | None = None) -> None:
        self.lr = check_hyperparameter(lr, "lr", type(self).__name__, low=0.0, low_open=True)
        self.clip_norm = None if clip_norm is None else check_hyperparameter(
            clip_norm, "clip_norm", type(self).__name__, low=0.0, low_open=True
        )
        self.iterations = 0
        self._state: dict[int, dict[str, Any]] = {}

    @property
    def learning_rate(self) -> float:
        """Keras' name for :attr:`lr` (read and write)."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = value

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_model_ref", None)  # a weak reference to the model (see state_dict) does not travel
        return state

    def _named_parameters(self, model: Any, who: str) -> dict[str, np.ndarray]:
        if model is None:
            ref = getattr(self, "_model_ref", None)
            model = ref() if ref is not None else None
        if model is None:
            raise ValueError(
                f"{type(self).__name__}.{who}: the optimizer belongs to no model yet; pass the model "
                f"({who}(model)) or give it to one (compile(optimizer=...) or Sequential(..., optimizer=...))"
            )
        return dict(model.parameters())

    def state_dict(self, model: Any = None) -> dict[str, Any]:
        """The optimizer's state keyed by parameter name (``"{layer index}.{name}"``, as
        ``model.parameters()`` names them), as copies::

            {"class": "Adam", "config": {...}, "iterations": 120,
             "state": {"0.W": {"step": 120, "exp_avg": array, "exp_avg_sq": array}, ...}}

        ``model`` defaults to the model the optimizer was given to. Parameters that have no
        state yet are left out. :meth:`load_state_dict` puts it back.
        """
        params = self._named_parameters(model, "state_dict")
        state: dict[str, dict[str, Any]] = {}
        for name, p in params.items():
            slots = self._state.get(id(p))
            if slots is None or slots.get("param") is not p:
                continue
            state[name] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in slots.items() if k != "param"}
        return {"class": type(self).__name__, "config": self.get_config(), "iterations": int(self.iterations),
                "state": state}

    def load_state_dict(self, state_dict: dict[str, Any], model: Any = None) -> None:
        """Restore what :meth:`state_dict` returned: the hyper-parameters (as torch restores its
        param groups), ``iterations`` and each parameter's state, matched by name. Everything
        is checked before anything changes: an unknown parameter name, another optimizer class
        or an array whose shape or dtype differs from its parameter's raise ``ValueError``."""
        who = f"{type(self).__name__}.load_state_dict"
        params = self._named_parameters(model, "load_state_dict")
        if not isinstance(state_dict, dict) or not {"class", "config", "iterations", "state"} <= set(state_dict):
            raise ValueError(f"{who}: expected a dict from state_dict() (class, config, iterations, state)")
        if state_dict["class"] != type(self).__name__:
            raise ValueError(f"{who}: the state is of a {state_dict['class']}, not of a {type(self).__name__}")
        for name, slots in state_dict["state"].items():
            if name not in params:
                raise ValueError(f"{who}: state for unknown parameter {name!r}; the model has {', '.join(params)}")
            for slot, value in slots.items():
                if isinstance(value, np.ndarray) and (value.shape != params[name].shape or value.dtype != params[name].dtype):
                    raise ValueError(f"{who}: {name}.{slot} is {value.dtype}{list(value.shape)}, "
                                     f"its parameter is {params[name].dtype}{list(params[name].shape)}")
        fresh = type(self)(**state_dict["config"])  # validates the hyper-parameters
        for key in state_dict["config"]:
            if hasattr(fresh, key):
                setattr(self, key, getattr(fresh, key))
        self.iterations = int(state_dict["iterations"])
        for name, slots in state_dict["state"].items():
            target = self.state_for(params[name])
            for key in [k for k in target if k != "param"]:
                del target[key]
            target.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in slots.items()})

    def state_for(self, param: np.ndarray) -> dict[str, Any]:
        # The param itself is kept in the state so its id cannot be reused by another array.
        return self._state.setdefault(id(param), {"param": param})

    def step(self, layers: Iterable[Layer]) -> None:
        """One update of every parameter of ``layers`` that has a gradient.

        Ctrl-C (SIGINT) is held back until the step is complete (see
        :mod:`nn_from_scratch.interrupts`): an interrupt leaves every parameter, its state and
        ``iterations`` as they were before the step or after it, never half updated.
        """
        from .interrupts import deferred_interrupts

        with deferred_interrupts():
            self._step(layers)

    def _step(self, layers: Iterable[Layer]) -> None:
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        index: dict[int, int] = {}  # id(parameter) -> its place in pairs
        grads_seen: set[int] = set()
        for layer in layers:
            grads = layer.gradients()
            for name, p in layer.parameters().items():
                # A parameter without a gradient (not on the loss's path) is left alone, as in
                # torch. Every parameter is updated once: a layer listed twice (shared in a
                # graph) brings the same gradient array again, which is skipped; one array
                # held by two layers gets the sum of their gradients, as a torch parameter
                # used twice does.
                g = grads.get(name)
                if g is None or id(g) in grads_seen:
                    continue
                grads_seen.add(id(g))
                if id(p) in index:
                    place = index[id(p)]
                    pairs[place] = (p, pairs[place][1] + g)
                else:
                    index[id(p)] = len(pairs)
                    pairs.append((p, g))
        if self.clip_norm is not None:
            norm = np.sqrt(sum(float(np.vdot(g, g)) for _, g in pairs))
            scale = self.clip_norm / (norm + 1e-6)
            if scale < 1.0:
                pairs = [(p, g * scale) for p, g in pairs]
        self.iterations += 1
        for p, g in pairs:
            self.update(p, g)

    @abstractmethod
    def update(self, param: np.ndarray, grad: np.ndarray) -> None:
        """Apply one update to ``param`` in place."""

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.lr, "clip_norm": self.clip_norm}


@runtime_checkable
class TrainableModel(Protocol):
    """What the training loop (:mod:`nn_from_scratch.training`) needs of a model.

    ``Sequential`` and the graph ``Model`` both satisfy it; so does any object with these
    members, which is how the loop stays independent of the classes that define models.

    Args:
        *args: none; a ``Protocol`` describes members and is not instantiated.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> model = Sequential([Linear(4, 3)])
        >>> all(hasattr(model, m) for m in ("forward", "backward", "zero_grad", "ensure_built", "rng"))
        True
    """

    name: str
    layers: list[Layer]
    loss: Any
    optimizer: Optimizer | None
    rng: np.random.Generator
    stop_training: bool
    history: Any

    @property
    def output_shape(self) -> Shape | None: ...

    @property
    def dtype(self) -> np.dtype | None: ...

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The model's output for a batch; in inference mode nothing is kept for a backward."""

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the last training-mode forward, accumulating parameter gradients."""

    def zero_grad(self) -> None:
        """Forget every layer's accumulated gradients."""

    def ensure_built(self, x: np.ndarray) -> None:
        """Build the layers for a batch like ``x`` (with the model's generator), if not built yet."""
