"""Every candidate op: output shape and channels at stride 1 and 2 on real input sizes."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdarts import ops
from tfdarts.genotype import PRIMITIVES

SHAPES = [(28, 28, 1), (32, 32, 3), (30, 80, 1)]
CHANNELS = 6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_op_output_shape(name, strides, shape):
    h, w, c = shape
    # lift the raw input to the op's channel count as a cell's preprocessing would
    x = ops.Conv(CHANNELS, 1, name="lift")(tf.random.normal((2, h, w, c)))
    for affine in (False, True):
        y = ops.make_op(name, CHANNELS, strides, affine, f"{name}_{strides}")(x, training=True)
        assert tuple(y.shape) == (2, math.ceil(h / strides), math.ceil(w / strides), CHANNELS)
        assert np.all(np.isfinite(y.numpy()))


def test_registry_matches_primitives():
    assert set(ops.OPS.names()) == set(PRIMITIVES)


def test_unknown_op_lists_known():
    with pytest.raises(KeyError) as err:
        ops.make_op("conv_7x7", 4, 1, True, "x")
    assert "sep_conv_3x3" in str(err.value) and "conv_7x7" in str(err.value)


def test_avg_pool_excludes_padding_at_stride_2():
    x = tf.ones((1, 4, 4, 1))
    y = ops.Pool("avg", 2, name="avg")(x)
    np.testing.assert_allclose(y.numpy(), np.ones((1, 2, 2, 1)), rtol=1e-6)


def test_dilated_stride2_matches_reference_conv():
    """The subsample-then-conv path equals a stride-1 dilated conv sampled every 2nd pixel."""
    layer = ops.DepthwiseConv(3, strides=2, padding=2, dilation=2, name="dw")
    x = tf.random.normal((1, 15, 16, 3))
    y = layer(x)
    ref = tf.nn.depthwise_conv2d(tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]]), layer.kernel.value,
                                 [1, 1, 1, 1], "VALID", dilations=[2, 2])[:, ::2, ::2, :]
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,dilation", [(3, 2), (5, 2), (3, 3), (2, 2), (4, 2)])
@pytest.mark.parametrize("size", [(8, 8), (7, 5), (2, 1)])
def test_dilated_stride1_matches_reference_conv(kernel, dilation, size):
    """Phases by space-to-batch, SAME on each: a zero-padded dilated conv, value and gradients."""
    pad = dilation * (kernel - 1) // 2
    layer = ops.DepthwiseConv(kernel, padding=pad, dilation=dilation, name="dw")
    x = tf.random.normal((2, *size, 3))
    layer(x)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        return [y, *tape.gradient(loss, [x, layer.kernel.value])]

    ref = grads(lambda t: tf.nn.depthwise_conv2d(
        tf.pad(t, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), layer.kernel.value, [1, 1, 1, 1],
        "VALID", dilations=[dilation, dilation]))
    for got, want in zip(grads(layer), ref):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (7, 5), (1, 2)])
@pytest.mark.parametrize("strides,offset", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_subsample_is_the_strided_slice_padded_at_the_end(size, strides, offset):
    h, w = size
    x = tf.random.normal((2, h, w, 3))
    ref = x[:, offset::strides, offset::strides, :]
    rows, cols = -(-h // strides) - ref.shape[1], -(-w // strides) - ref.shape[2]
    want = tf.pad(ref, [[0, 0], [0, rows], [0, cols], [0, 0]])
    np.testing.assert_array_equal(ops.subsample(x, strides, offset), want)
    unknown = tf.function(lambda t: ops.subsample(t, strides, offset),
                          input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_array_equal(unknown(x), want)


def test_batchnorm_tracks_moving_stats_and_uses_them_at_inference():
    bn = ops.BatchNorm(affine=True, track_stats=True, name="bn")
    x = tf.random.normal((64, 4, 4, 3)) * 3.0 + 2.0
    for _ in range(60):
        bn(x, training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), tf.reduce_mean(x, [0, 1, 2]).numpy(), atol=0.05)
    y = bn(x, training=False).numpy()
    assert abs(y.mean()) < 0.05 and abs(y.std() - 1.0) < 0.05


def test_factorized_reduce_odd_size():
    fr = ops.FactorizedReduce(5, name="fr")
    y = fr(tf.random.normal((2, 15, 7, 3)), training=True)
    assert tuple(y.shape) == (2, 8, 4, 5)


@pytest.mark.parametrize("size", [(8, 8), (15, 7)])
def test_factorized_reduce_reads_the_even_and_the_odd_pixels(size):
    fr = ops.FactorizedReduce(5, name="fr")
    x = tf.random.normal((2, *size, 3))
    y = fr(x, training=True)
    relu = tf.nn.relu(x)
    odd = ops.subsample(tf.pad(relu, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :], 2)
    odd = odd[:, :y.shape[1], :y.shape[2], :]
    z = tf.concat([tf.nn.conv2d(relu[:, ::2, ::2, :], fr.conv_a.kernel, 1, "VALID"),
                   tf.nn.conv2d(odd, fr.conv_b.kernel, 1, "VALID")], axis=-1)
    want = tf.nn.batch_normalization(z, *tf.nn.moments(z, [0, 1, 2]), None, None, 1e-5)
    np.testing.assert_allclose(y, want, atol=1e-4)
