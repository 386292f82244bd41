"""Candidate operations of the DARTS search space and their building blocks.

All layers work on channels-last (NHWC) tensors. Spatial padding is explicit
and symmetric, as in the reference implementation, so that every op at stride 2
maps an ``H x W`` input to ``ceil(H/2) x ceil(W/2)`` with the same pixel
alignment (TF's ``SAME`` padding would pad (0, 1) on even sizes instead).

Every op factory has the signature ``(channels, strides, affine, name)`` and is
looked up by name in `OPS`; input channels are inferred when the layer builds.
`register_op` adds a new op to the search space (`tfdarts.space`) and its
factory here in one call.
"""

from __future__ import annotations

import weakref
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdarts import space
from tfdarts.registry import Registry

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # moving = momentum * moving + (1 - momentum) * batch

OpFactory = Callable[[int, int, bool, str], keras.layers.Layer]
OPS: Registry[OpFactory] = Registry("op")
"""Layer factories by op name; the names are those of `tfdarts.space.OP_INFO`."""


def register_op(name: str, *, parameter_free: bool = False, search_bn: bool = False,
                colour: str = "") -> Callable[[OpFactory], OpFactory]:
    """Decorator adding a new candidate op to the search space.

    The op becomes valid in genotypes, ``search.primitives``, the random sampler
    and the figures. Example::

        @ops.register_op("conv_1x1")
        def conv_1x1(channels, strides, affine, name):
            return ops.relu_conv_bn(channels, 1, strides, 0, affine, name)

    Args:
        name: Op name (must be new).
        parameter_free: The op has no trainable weights.
        search_bn: The supernet follows it with a non-affine batch norm.
        colour: Matplotlib colour for figures ("" = from a palette).

    Returns:
        A decorator registering an `OpFactory` ``(channels, strides, affine, name)
        -> layer`` that maps ``(B, H, W, C_in)`` to ``(B, ceil(H/s), ceil(W/s), channels)``.
    """

    def wrap(factory: OpFactory) -> OpFactory:
        space.OP_INFO.register(name)(space.OpInfo(name, parameter_free, search_bn, colour))
        return OPS.register(name)(factory)

    return wrap


def unregister_op(name: str) -> None:
    """Removes an op added by `register_op` (the paper's ops cannot be removed)."""
    if name in space.PRIMITIVES:
        raise ValueError(f"{name!r} is one of the paper's ops and cannot be removed")
    OPS.unregister(name)
    space.OP_INFO.unregister(name)


def _pad(x: tf.Tensor, pad: int, value: float = 0.0) -> tf.Tensor:
    """Pads the two spatial dims of ``(B, H, W, C)`` by `pad` on each side."""
    if pad == 0:
        return x
    return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=value)


def subsample(x: tf.Tensor, strides: int, offset: int = 0) -> tf.Tensor:
    """``x[:, offset::strides, offset::strides, :]``, zero-padded at the end to ``ceil(H/s)``.

    A reshape and a slice: on CPU a strided slice of stride 2 costs about 5x as
    much forward, and its gradient kernel several times a pad.

    Args:
        x: ``(B, H, W, C)``; with static H, W, C a reshape and a slice, otherwise a
            strided slice.
        strides: Subsampling factor s.
        offset: First pixel taken in each spatial dim, ``0 <= offset < s``.

    Returns:
        ``(B, ceil(H/s), ceil(W/s), C)``.
    """
    _, h, w, c = x.shape
    if strides == 1:
        return x
    if h is None or w is None or c is None:
        size = tf.shape(x)
        x = _pad_end(x, -size[1] % strides, -size[2] % strides)
        return x[:, offset::strides, offset::strides, :]
    extra_h, extra_w = -h % strides, -w % strides
    x = _pad_end(x, extra_h, extra_w)
    rows, cols = (h + extra_h) // strides, (w + extra_w) // strides
    y = tf.reshape(x, [-1, rows, strides, cols, strides * c])
    # tf.slice, not indexing: its gradient is a pad, a strided slice's a much slower kernel
    y = tf.slice(y, [0, 0, offset, 0, offset * c], [-1, rows, 1, cols, c])
    return tf.reshape(y, [-1, rows, cols, c])


def offset_pixels(x: tf.Tensor) -> tf.Tensor:
    """``(B, H, W, C)`` zero-padded at the end to an even size, then from pixel (1, 1)
    on: its stride-2 subsample is ``x[:, 1::2, 1::2, :]`` padded to ``ceil(H/2)``."""
    _, h, w, _ = x.shape
    if h is None or w is None:
        h, w = tf.shape(x)[1], tf.shape(x)[2]
    return tf.slice(_pad_end(x, h % 2, w % 2), [0, 1, 1, 0], [-1, -1, -1, -1])


def _pad_end(x: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """Zero rows and columns after the last of ``(B, H, W, C)`` (ints or scalar tensors)."""
    if isinstance(rows, int) and isinstance(cols, int) and not rows and not cols:
        return x
    return tf.pad(x, [[0, 0], [0, rows], [0, cols], [0, 0]])


def _explicit(pad: int):
    """`pad` pixels on each side as a conv's own padding: ``"VALID"`` or an explicit list.

    The kernel pads internally, so the backward pass keeps the unpadded input
    (which the preceding ReLU keeps anyway) instead of a padded copy.
    """
    return "VALID" if pad == 0 else [[0, 0], [pad, pad], [pad, pad], [0, 0]]


_GRAPH_CONSTANTS: "weakref.WeakKeyDictionary[tf.Graph, Dict[Tuple, tf.Tensor]]" = (
    weakref.WeakKeyDictionary())


def _constant(value: float, length: int, dtype: tf.DType) -> tf.Tensor:
    """A ``(length,)`` constant filled with `value`, created once per traced graph.

    A supernet has hundreds of non-affine batch norms; sharing their constant
    scale, offset and (empty) statistics keeps thousands of identical nodes out
    of the traced step, which is traced and optimised faster.
    """
    if tf.executing_eagerly():
        return tf.fill([length], tf.constant(value, dtype))
    graph = tf.compat.v1.get_default_graph()
    cache = _GRAPH_CONSTANTS.setdefault(graph, {})
    key = (value, length, dtype)
    if key not in cache:
        with tf.control_dependencies(None):  # valid anywhere in this graph
            cache[key] = tf.fill([length], tf.constant(value, dtype))
    return cache[key]


class BatchNorm(keras.layers.Layer):
    """Batch normalisation on the fused kernel (the fast path on CPU and GPU).

    Args:
        affine: Learn a scale and offset (the discrete network) or not (supernet).
        track_stats: Keep moving statistics for inference. The supernet always
            normalises with batch statistics and does not track them.
        name: Layer name.
    """

    def __init__(self, affine: bool = True, track_stats: bool = True,
                 name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.affine = affine
        self.track_stats = track_stats

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        if self.affine:
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        if self.track_stats:
            self.moving_mean = self.add_weight(shape=(channels,), initializer="zeros",
                                               trainable=False, aggregation="mean",
                                               name="moving_mean")
            self.moving_var = self.add_weight(shape=(channels,), initializer="ones",
                                              trainable=False, aggregation="mean",
                                              name="moving_variance")

    def _scale_offset(self, channels: int):
        if self.affine:
            return self.gamma.value, self.beta.value
        dtype = tf.as_dtype(self.compute_dtype)
        return _constant(1.0, channels, dtype), _constant(0.0, channels, dtype)

    def call(self, x: tf.Tensor, training: bool = False, scale: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Normalises ``(B, H, W, C)`` over B, H, W.

        Args:
            x: ``(B, H, W, C)``.
            training: Batch statistics (and, when tracked, a moving-average update).
            scale: ``(C,)`` factors of the normalised output, for a non-affine batch
                norm whose output is weighted anyway (a mixed edge's alpha): the
                weighting then costs no pass of its own.
        """
        if scale is not None and self.affine:
            raise ValueError(f"{self.name}: an affine batch norm learns its own scale")
        own_scale, offset = self._scale_offset(x.shape[-1])
        scale = own_scale if scale is None else scale
        if training or not self.track_stats:
            y, mean, var = _batch_norm_train(x, scale, offset)
            if training and self.track_stats:
                self.moving_mean.assign(BN_MOMENTUM * self.moving_mean + (1 - BN_MOMENTUM) * mean)
                self.moving_var.assign(BN_MOMENTUM * self.moving_var + (1 - BN_MOMENTUM) * var)
            return y
        if x.dtype == tf.float64:
            return tf.nn.batch_normalization(x, self.moving_mean.value, self.moving_var.value,
                                             offset, scale, BN_EPSILON)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, mean=self.moving_mean.value, variance=self.moving_var.value,
            epsilon=BN_EPSILON, is_training=False)
        return y

    def get_config(self) -> dict:
        return {**super().get_config(), "affine": self.affine, "track_stats": self.track_stats}


class Composite(keras.layers.Layer):
    """A layer made only of sub-layers, which build themselves on first call.

    Without its own `build`, Keras 3 builds a layer by tracing `call` on
    symbolic inputs first; for nested cells that re-traces every level and made
    building a supernet take minutes. This no-op `build` skips that.
    """

    def build(self, input_shape) -> None:
        pass


def _batch_norm_train(x: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor):
    """Batch-statistics BN: ``(y, mean, unbiased variance)``.

    The fused kernel (float16/32) is the fast path; float64, which it does not
    support, takes the moments path (used for exact-derivative checks).
    """
    if x.dtype != tf.float64:
        empty = _constant(0.0, 0, tf.float32)  # no running statistics in training mode
        return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean=empty, variance=empty,
                                                epsilon=BN_EPSILON, is_training=True)
    mean, var = tf.nn.moments(x, axes=[0, 1, 2])
    y = tf.nn.batch_normalization(x, mean, var, offset, scale, BN_EPSILON)
    n = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
    return y, mean, var * n / tf.maximum(n - 1.0, 1.0)


class Conv(keras.layers.Layer):
    """Bias-free 2-D convolution with explicit symmetric padding.

    Args:
        filters: Output channels.
        kernel_size: Square kernel side.
        strides: Stride in both spatial dims.
        padding: Pixels of zero padding on each side.
        name: Layer name.
    """

    def __init__(self, filters: int, kernel_size: int = 1, strides: int = 1, padding: int = 0,
                 name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.filters, self.kernel_size = filters, kernel_size
        self.strides, self.padding = strides, padding

    def build(self, input_shape) -> None:
        shape = (self.kernel_size, self.kernel_size, int(input_shape[-1]), self.filters)
        self.kernel = self.add_weight(shape=shape, initializer="he_normal", name="kernel")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """``(B, H, W, Cin) -> (B, H', W', filters)``."""
        return tf.nn.conv2d(x, self.kernel.value, strides=self.strides,
                            padding=_explicit(self.padding))

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


class DepthwiseConv(keras.layers.Layer):
    """Depthwise convolution with explicit padding, stride and dilation.

    ``tf.nn.depthwise_conv2d`` rejects stride > 1 together with dilation > 1.
    When stride == dilation (dil_conv in a reduction cell), the dilated taps at
    stride s read only every s-th padded pixel, so subsampling the padded input
    by s and running an undilated stride-1 VALID conv is exact and cheap; when
    the padding is a multiple of s that is the input subsampled by s and
    padded by ``padding / s``.

    The kernel pads by itself, so the backward pass keeps no padded copy of
    the input; for an odd kernel, symmetric "same-size" padding is given as
    SAME, which reaches oneDNN's gradient kernels on CPU. A dilated stride-1
    conv of an odd kernel with that padding runs the undilated kernel on the
    ``dilation**2`` pixel phases of the input (space to batch); other dilated
    stride-1 convs go through ``tf.nn.depthwise_conv2d``.

    Args:
        kernel_size: Square kernel side.
        strides: Stride in both spatial dims.
        padding: Pixels of zero padding on each side.
        dilation: Dilation rate.
        name: Layer name.
    """

    def __init__(self, kernel_size: int, strides: int = 1, padding: int = 0, dilation: int = 1,
                 name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if strides > 1 and dilation > 1 and strides != dilation:
            raise ValueError(f"{name}: stride {strides} with dilation {dilation} is not supported")
        self.kernel_size, self.strides = kernel_size, strides
        self.padding, self.dilation = padding, dilation

    def build(self, input_shape) -> None:
        shape = (self.kernel_size, self.kernel_size, int(input_shape[-1]), 1)
        # each channel sees only k*k inputs: Keras' fan_in (k*k*C) would shrink it C times
        init = keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")
        self.kernel = self.add_weight(shape=shape, initializer=init, name="kernel")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """``(B, H, W, C) -> (B, H', W', C)``."""
        strides, dilation, pad = self.strides, self.dilation, self.padding
        if dilation == 1:
            return self._conv(x, strides, pad)
        same = 2 * pad == dilation * (self.kernel_size - 1)
        # SAME pads an even kernel one pixel more after than before: only odd ones map
        if strides == 1 and same and self.kernel_size % 2 and None not in x.shape[1:3]:
            return self._dilated_same(x, dilation)
        if strides == 1:
            # the kernel's own dilation has no gradient kernels on CPU; tf.nn rewrites it
            return tf.nn.depthwise_conv2d(x if same else _pad(x, pad), self.kernel.value,
                                          [1, 1, 1, 1], "SAME" if same else "VALID",
                                          dilations=[dilation, dilation])
        if pad % strides == 0:
            return self._conv(subsample(x, strides), 1, pad // strides)
        return self._conv(subsample(_pad(x, pad), strides), 1, 0)

    def _dilated_same(self, x: tf.Tensor, dilation: int) -> tf.Tensor:
        """Stride 1, SAME padding, dilated: the undilated kernel on each of the
        ``dilation**2`` pixel phases (space to batch), each phase zero-padded by SAME.

        Unlike tf.nn's rewrite (padding in the space-to-batch, a VALID conv), the
        phases carry no conv padding (only zeros completing the last phase when H or
        W is not a multiple of the dilation), and the conv runs the faster SAME
        gradient kernels. The kernel size must be odd.
        """
        h, w = x.shape[1], x.shape[2]
        extra = [[0, -h % dilation], [0, -w % dilation]]  # whole phases; zeros past the end
        phases = tf.space_to_batch(x, [dilation, dilation], extra)
        y = tf.raw_ops.DepthwiseConv2dNative(input=phases, filter=self.kernel.value,
                                             strides=[1, 1, 1, 1], padding="SAME")
        return tf.batch_to_space(y, [dilation, dilation], extra)

    def _conv(self, x: tf.Tensor, strides: int, pad: int) -> tf.Tensor:
        """The undilated depthwise kernel, padding `pad` on each side internally."""
        if strides == 1 and 2 * pad == self.kernel_size - 1:
            # the same pixels; on CPU only SAME (and VALID) reach oneDNN's gradient kernels,
            # EXPLICIT falls back to slower generic ones (a retrain step 4-16 % faster)
            return tf.raw_ops.DepthwiseConv2dNative(
                input=x, filter=self.kernel.value, strides=[1, 1, 1, 1], padding="SAME")
        return tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=self.kernel.value, strides=[1, strides, strides, 1],
            padding="EXPLICIT" if pad else "VALID",
            explicit_paddings=[0, 0, pad, pad, pad, pad, 0, 0] if pad else [])

    def get_config(self) -> dict:
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation": self.dilation}


class Sequence(Composite):
    """Applies named sub-layers in order, passing `training` to those that take it."""

    def __init__(self, layers: List[keras.layers.Layer], name: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.blocks = list(layers)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        for block in self.blocks:
            x = block(x, training=training)  # Keras drops `training` for layers without it
        return x


class ReLU(keras.layers.Layer):
    """Elementwise max(x, 0)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(x)


def relu_conv_bn(channels: int, kernel_size: int, strides: int, padding: int, affine: bool,
                 name: str, track_stats: bool = True) -> Sequence:
    """ReLU -> Conv(k x k) -> BN."""
    return Sequence([ReLU(name=f"{name}_relu"),
                     Conv(channels, kernel_size, strides, padding, name=f"{name}_conv"),
                     BatchNorm(affine, track_stats, name=f"{name}_bn")], name=name)


def dil_conv(channels: int, kernel_size: int, strides: int, padding: int, dilation: int,
             affine: bool, name: str, track_stats: bool = True) -> Sequence:
    """ReLU -> depthwise k x k (dilated) -> pointwise 1x1 -> BN."""
    return Sequence([ReLU(name=f"{name}_relu"),
                     DepthwiseConv(kernel_size, strides, padding, dilation, name=f"{name}_dw"),
                     Conv(channels, 1, name=f"{name}_pw"),
                     BatchNorm(affine, track_stats, name=f"{name}_bn")], name=name)


def sep_conv(channels: int, kernel_size: int, strides: int, affine: bool, name: str,
             track_stats: bool = True) -> Sequence:
    """Two (ReLU, depthwise, pointwise, BN) blocks; only the first is strided."""
    pad = kernel_size // 2
    return Sequence([
        dil_conv(channels, kernel_size, strides, pad, 1, affine, f"{name}_a", track_stats),
        dil_conv(channels, kernel_size, 1, pad, 1, affine, f"{name}_b", track_stats),
    ], name=name)


class Identity(keras.layers.Layer):
    """Returns its input."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x


class Zero(keras.layers.Layer):
    """The ``none`` op: zeros shaped like the (strided) input."""

    def __init__(self, strides: int = 1, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.strides = strides

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.zeros_like(subsample(x, self.strides))

    def get_config(self) -> dict:
        return {**super().get_config(), "strides": self.strides}


class FactorizedReduce(Composite):
    """Halves the spatial size with two offset 1x1 stride-2 convs, concatenated.

    Works for odd sizes too: the offset branch is zero-padded at the end so both
    branches have ``ceil(H/2) x ceil(W/2)`` pixels.

    Args:
        channels: Output channels (split between the two branches).
        affine: Affine BN.
        name: Layer name.
        track_stats: BN keeps moving statistics.
    """

    def __init__(self, channels: int, affine: bool = True, name: Optional[str] = None,
                 track_stats: bool = True, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.channels = channels
        self.conv_a = Conv(channels // 2, 1, strides=2, name=f"{self.name}_conv_a")
        self.conv_b = Conv(channels - channels // 2, 1, strides=2, name=f"{self.name}_conv_b")
        self.bn = BatchNorm(affine, track_stats, name=f"{self.name}_bn")

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(B, H, W, Cin) -> (B, ceil(H/2), ceil(W/2), channels)``."""
        x = tf.nn.relu(x)
        y = tf.concat([self.conv_a(x), self.conv_b(offset_pixels(x))], axis=-1)
        return self.bn(y, training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels}


class Pool(keras.layers.Layer):
    """3x3 max or average pool, padding 1; the average excludes padded pixels.

    Args:
        kind: ``"max"`` or ``"avg"``.
        strides: 1 or 2.
        name: Layer name.
    """

    def __init__(self, kind: str, strides: int = 1, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.kind, self.strides = kind, strides

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """``(B, H, W, C) -> (B, ceil(H/s), ceil(W/s), C)``."""
        if self.kind == "max":
            if self.strides == 1:  # SAME at stride 1 pads (1, 1) with pixels that never win
                return tf.nn.max_pool2d(x, 3, 1, "SAME")
            return tf.nn.max_pool2d(_pad(x, 1, x.dtype.min), 3, self.strides, "VALID")
        if self.strides == 1:  # SAME at stride 1 pads (1, 1) and excludes it from the mean
            return tf.nn.avg_pool2d(x, 3, 1, "SAME")
        summed = tf.nn.avg_pool2d(_pad(x, 1), 3, self.strides, "VALID") * 9.0
        return summed / tf.cast(self._counts(x.shape[1], x.shape[2]), x.dtype)

    def _counts(self, height: int, width: int) -> tf.Tensor:
        """Real (unpadded) pixels under each window, shape ``(1, H', W', 1)``."""
        ones = np.pad(np.ones((height, width), np.float32), 1)
        rows = [ones[i:i + 3].sum(0) for i in range(0, height, self.strides)]
        counts = [[r[j:j + 3].sum() for j in range(0, width, self.strides)] for r in rows]
        return tf.constant(np.asarray(counts, np.float32)[None, :, :, None])

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "strides": self.strides}


@OPS.register("none")
def _none(channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
    return Zero(strides, name=name)


@OPS.register("max_pool_3x3")
def _max_pool(channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
    return Pool("max", strides, name=name)


@OPS.register("avg_pool_3x3")
def _avg_pool(channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
    return Pool("avg", strides, name=name)


@OPS.register("skip_connect")
def _skip(channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
    if strides == 1:
        return Identity(name=name)
    return FactorizedReduce(channels, affine, name=name, track_stats=affine)


def _register_conv(op: str, kernel: int, dilated: bool) -> None:
    def factory(channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
        # the supernet (affine=False) uses batch statistics only; see BatchNorm
        if dilated:
            return dil_conv(channels, kernel, strides, kernel - 1, 2, affine, name, affine)
        return sep_conv(channels, kernel, strides, affine, name, affine)

    OPS.register(op)(factory)


_register_conv("sep_conv_3x3", 3, False)
_register_conv("sep_conv_5x5", 5, False)
_register_conv("dil_conv_3x3", 3, True)
_register_conv("dil_conv_5x5", 5, True)


def make_op(op: str, channels: int, strides: int, affine: bool, name: str) -> keras.layers.Layer:
    """Builds the op registered as `op` (KeyError listing known ops otherwise)."""
    return OPS.get(op)(channels, strides, affine, name)
