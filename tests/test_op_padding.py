"""Convs and pools pad inside the kernel: same outputs and gradients as pad-then-VALID."""

import numpy as np
import pytest
import tensorflow as tf

from tfdarts import ops
from tfdarts.genotype import PRIMITIVES


def _pad(x, pad, value=0.0):
    return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=value)


def reference_conv(self, x):
    return tf.nn.conv2d(_pad(x, self.padding), self.kernel.value, strides=self.strides,
                        padding="VALID")


def reference_depthwise(self, x):
    x = _pad(x, self.padding)
    strides, dilation = self.strides, self.dilation
    if strides > 1 and dilation > 1:
        x = x[:, ::strides, ::strides, :]
        strides = dilation = 1
    return tf.nn.depthwise_conv2d(x, self.kernel.value, [1, strides, strides, 1], "VALID",
                                  dilations=[dilation, dilation])


def reference_max_pool(self, x):
    if self.kind != "max":
        return PLAIN_POOL(self, x)
    return tf.nn.max_pool2d(_pad(x, 1, x.dtype.min), 3, self.strides, "VALID")


PLAIN_POOL = ops.Pool.call


def _outputs_and_grads(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.cos(y))
    grads = tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])
    return [y] + grads


@pytest.mark.parametrize("size", [28, 15, 7])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("name", [p for p in PRIMITIVES if p != "none"])
def test_op_matches_pad_then_valid(name, strides, size, monkeypatch):
    tf.random.set_seed(size)
    x = tf.random.normal((3, size, size + 1, 6))
    layer = ops.make_op(name, 6, strides, True, f"{name}_{strides}")
    got = _outputs_and_grads(layer, x)
    monkeypatch.setattr(ops.Conv, "call", reference_conv)
    monkeypatch.setattr(ops.DepthwiseConv, "call", reference_depthwise)
    monkeypatch.setattr(ops.Pool, "call", reference_max_pool)
    want = _outputs_and_grads(layer, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):  # kernel gradients sum in another order: float32 rounding
        scale = max(1.0, float(np.abs(w.numpy()).max()))
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("strides,padding,dilation,kernel", [
    (1, 1, 1, 3), (2, 2, 1, 5), (1, 2, 2, 3), (1, 4, 2, 5), (2, 2, 2, 3), (2, 4, 2, 5),
    (1, 3, 2, 3), (2, 1, 2, 3)])
def test_depthwise_paths_match_reference(strides, padding, dilation, kernel):
    """Every branch of `DepthwiseConv.call`, including the non-SAME fallbacks."""
    layer = ops.DepthwiseConv(kernel, strides, padding, dilation, name="dw")
    x = tf.random.normal((2, 13, 16, 4))
    y = layer(x)
    np.testing.assert_allclose(y.numpy(), reference_depthwise(layer, x).numpy(), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("name", ["dil_conv_3x3", "dil_conv_5x5", "sep_conv_3x3"])
def test_traced_gradients_match_reference(name, monkeypatch):
    """The same in a traced function, where oneDNN's graph rewrite picks the kernels."""
    x = tf.random.normal((2, 14, 14, 6))
    layer = ops.make_op(name, 6, 1, False, name)
    got = tf.function(lambda x: _outputs_and_grads(layer, x))(x)
    monkeypatch.setattr(ops.DepthwiseConv, "call", reference_depthwise)
    want = tf.function(lambda x: _outputs_and_grads(layer, x))(x)
    for g, w in zip(got, want):
        scale = max(1.0, float(np.abs(w.numpy()).max()))
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=2e-6 * scale)


def test_kernels_pad_internally():
    """No Pad op in the graph of a stride-1 separable or dilated conv (nothing extra kept)."""
    for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3"):
        layer = ops.make_op(name, 4, 1, False, name)
        fn = tf.function(lambda x, layer=layer: layer(x, training=True))
        graph = fn.get_concrete_function(tf.TensorSpec((2, 8, 8, 4))).graph
        types = {op.type for op in graph.get_operations()}
        assert not types & {"Pad", "PadV2"}, (name, types & {"Pad", "PadV2"})
