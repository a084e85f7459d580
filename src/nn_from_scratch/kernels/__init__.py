"""The hot array kernels, shared by every layer that needs them; each fast kernel keeps its
simple reference beside it, and the tests hold one against the other.

* :mod:`.geometry`: sizes, padding (Keras' ``"same"`` too), padded copies, window views, memory layouts.
* :mod:`.blas`: ``C = A @ B + beta * C`` on strided views through NumPy's own BLAS.
* :mod:`.conv`: convolution: the im2col reference, the fast batch-innermost plan (any stride,
  dilation and padding), grouped and depthwise convolution.
* :mod:`.pooling`: max and average pooling.
* :mod:`.normalization`: batch norm in the input's own memory layout.
* :mod:`.elementwise`: ReLU's backward, a cache-sized chunk at a time (in place inside a model).
* :mod:`.resample`: nearest and bilinear upsampling.
* :mod:`.special`: erf and erfc (exact GELU).

Layers reach every kernel through this package (``kernels.conv2d_forward``); the names below
are re-exported from the modules that define them.
"""

from __future__ import annotations

from .conv import (
    Conv2dPlan,
    GroupedConv2dPlan,
    check_groups,
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_plan,
    grouped_conv2d_backward,
    grouped_conv2d_forward,
    im2col,
)
from .elementwise import flat_view, relu_backward, relu_backward_reference
from .geometry import (
    ConvGeometry,
    Padding4,
    as_pair,
    checked_output_hw,
    empty_in_order,
    image_shape,
    memory_order,
    pad2d,
    resolve_padding,
    same_padding,
    window_view,
    zeros_in_layout_of,
)
from .normalization import batch_norm_train_backward, batch_norm_train_forward, channel_blocks, from_channel_blocks
from .pooling import (
    avg_pool2d_backward,
    avg_pool2d_backward_reference,
    avg_pool2d_divisor,
    avg_pool2d_forward,
    avg_pool2d_forward_reference,
    max_pool2d_backward,
    max_pool2d_forward,
    pool_windows,
)
from .resample import (
    linear_interpolation_matrix,
    linear_source_taps,
    upsample_bilinear2d,
    upsample_bilinear2d_backward,
    upsample_bilinear2d_reference,
    upsample_nearest2d,
    upsample_nearest2d_backward,
)
from .special import erf, erfc
