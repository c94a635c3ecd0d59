"""dlib's face descriptor network, read from its own file and run in onnxruntime.

The dlib-bin wheel runs its networks without BLAS: its ResNet takes ~0.12-0.15 s a face on one core,
more than HOG detection on a typical photo. The network is small and fully known: dlib's
`dnn_face_recognition_ex.cpp` defines it (a 29-layer ResNet on 150x150 RGB chips, 128-d output),
and `dlib_face_recognition_resnet_model_v1.dat` stores its weights in dlib's serialization format.
`read_layers` reads that file; `face_descriptor_onnx` builds the same network as an ONNX graph,
which onnxruntime (MLAS kernels) runs at ~5 ms a face on one core. Its descriptors equal dlib's
`compute_face_descriptor` to ~1e-6 (tests/test_face.py compares them on real photos), so vectors
from either are one version and mix freely.

The format, as dlib writes it (dlib/serialize.h, dlib/dnn/*.h): integers are one byte (low nibble: how
many little-endian bytes follow; 0x80: negative) and the bytes; a float is two such integers,
mantissa and exponent; a string is its length and its bytes; a tensor is version 2, its four
dimensions and raw little-endian float32s. Each layer starts with its name ("con_4", "affine_",
...) followed by its settings. The file is walked from name to name, each tensor read whole (never
searched), in the order dlib writes the layers: from the input up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import ModelError

_LAYER_NAMES = (b"input_rgb_image_sized", b"con_4", b"con_5", b"affine_", b"max_pool_2", b"avg_pool_2",
                b"fc_2", b"fc_3")
_LAYER = re.compile(rb"\x01([\x03-\x20])(" + b"|".join(_LAYER_NAMES) + rb")")
"""A serialized layer name: one length byte (as a 1-byte integer) and one of the names above."""

OPSET = 17


@dataclass
class Layer:
    """One layer of a dlib network file: its kind, integer settings, float settings and parameters."""

    kind: str
    """input, con, affine, max_pool, avg_pool or fc."""
    ints: list[int] = field(default_factory=list)
    """con: filters, rows, cols, stride y, stride x, padding y, padding x; pools: window rows, cols,
    strides, paddings (window 0x0: the average of everything); fc: outputs, inputs; input: rows, cols."""
    floats: list[float] = field(default_factory=list)
    """input: the mean red, green and blue subtracted from each pixel."""
    params: Optional[np.ndarray] = None


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self.what} is not a dlib network file this reader knows: {why} (byte {self.pos})")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("it ends early")
        head = self.data[self.pos]
        n = head & 0x0F
        if n > 8 or self.pos + 1 + n > len(self.data):
            raise self.fail("a bad integer")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("a tensor of an unknown version")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        if min(dims) < 0 or self.pos + 4 * count > len(self.data):
            raise self.fail("a tensor runs past the end")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return values


def read_layers(data: bytes, what: str = "the model file") -> list[Layer]:
    """The layers with settings or weights (input, convolutions, affine, pools, fully connected) of a
    dlib network file's bytes, from the input up. Layers without any (relu, add_prev, tags) are not
    listed: the network's definition says where they go. ModelError on a file that is not one."""
    r = _Reader(data, what)
    layers: list[Layer] = []
    while True:
        m = _LAYER.search(data, r.pos)
        if m is None:
            break
        if m.group(1)[0] != len(m.group(2)):  # a longer name that starts like one of ours
            r.pos = m.start() + 1
            continue
        r.pos = m.end()
        name = m.group(2).decode("ascii")
        if name == "input_rgb_image_sized":
            means = [r.float(), r.float(), r.float()]
            layers.append(Layer("input", ints=[r.int(), r.int()], floats=means))
        elif name.startswith("con_"):
            params = r.tensor()
            layers.append(Layer("con", ints=[r.int() for _ in range(7)], params=params))
        elif name == "affine_":
            layers.append(Layer("affine", params=r.tensor()))
        elif name in ("max_pool_2", "avg_pool_2"):
            layers.append(Layer(name[:8], ints=[r.int() for _ in range(6)]))
        else:  # fc_
            outputs, inputs = r.int(), r.int()
            layers.append(Layer("fc", ints=[outputs, inputs], params=r.tensor()))
    if not layers:
        raise r.fail("no layer found")
    return layers


class _Graph:
    """Collects ONNX nodes and weights; shapes are (channels, rows, cols) of one sample."""

    def __init__(self, what: str) -> None:
        self.nodes: list[Any] = []
        self.weights: list[Any] = []
        self.count = 0
        self.what = what

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self.what} is not dlib's face recognition ResNet: {why}")

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        n = self.name("w")
        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), n))
        return n

    def node(self, op: str, inputs: list[str], output: Optional[str] = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, shape: list[int], layer: Layer) -> tuple[str, list[int]]:
        filters, rows, cols, sy, sx, py, px = layer.ints
        k = shape[0]
        assert layer.params is not None
        size = filters * k * rows * cols
        if layer.params.size != size + filters:
            raise self.fail(f"a convolution with {layer.params.size} parameters on {k} channels")
        w = layer.params[:size].reshape(filters, k, rows, cols)
        y = self.node("Conv", [x, self.const(w), self.const(layer.params[size:])], kernel_shape=[rows, cols],
                      strides=[sy, sx], pads=[py, px, py, px])
        return y, [filters, (shape[1] + 2 * py - rows) // sy + 1, (shape[2] + 2 * px - cols) // sx + 1]

    def affine(self, x: str, shape: list[int], layer: Layer) -> str:
        k = shape[0]
        assert layer.params is not None
        if layer.params.size != 2 * k:
            raise self.fail(f"an affine layer with {layer.params.size} parameters on {k} channels")
        gamma = layer.params[:k].reshape(1, k, 1, 1)
        beta = layer.params[k:].reshape(1, k, 1, 1)
        return self.node("Add", [self.node("Mul", [x, self.const(gamma)]), self.const(beta)])

    def pool(self, x: str, shape: list[int], layer: Layer) -> tuple[str, list[int]]:
        rows, cols, sy, sx, py, px = layer.ints
        if rows == 0 and cols == 0:
            return self.node("GlobalAveragePool", [x]), [shape[0], 1, 1]
        if py or px:
            raise self.fail("a padded pooling layer")  # dlib's padded average ignores the padding
        op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
        y = self.node(op, [x], kernel_shape=[rows, cols], strides=[sy, sx])
        return y, [shape[0], (shape[1] - rows) // sy + 1, (shape[2] - cols) // sx + 1]

    def pad_to(self, x: str, shape: list[int], target: list[int]) -> str:
        """dlib's add_prev adds tensors of different sizes as if the smaller were zero beyond its end."""
        if shape == target:
            return x
        pads = [0, 0, 0, 0, 0] + [t - s for t, s in zip(target, shape)]
        return self.node("Pad", [x, self.const(np.array(pads), np.int64)])


def face_descriptor_onnx(layers: list[Layer], what: str = "the model file") -> bytes:
    """The serialized ONNX model of dlib's face recognition ResNet with these layers' weights.

    Input "chips": N x 150 x 150 x 3 uint8 RGB (dlib.get_face_chip's output); output "descriptors":
    N x 128 float32, dlib's raw (unnormalised) descriptors. The network (dnn_face_recognition_ex.cpp):
    input (pixel - mean) / 256; conv 7x7/2, affine, relu, max pool 3x3/2; residual blocks
    [conv 3x3, affine, relu, conv 3x3, affine] + shortcut, relu, where a block whose first conv has
    stride 2 takes a 2x2/2 average pool of its input as the shortcut; global average pool; a 128-d
    fully connected layer without bias. ModelError when the layers do not fit that network.
    """
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as e:
        raise ModelError(f"converting dlib's descriptor needs the onnx package ({e}): pip install onnx") from e
    g = _Graph(what)
    kinds = [layer.kind for layer in layers]
    if kinds[:4] != ["input", "con", "affine", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
        raise g.fail(f"layers {kinds[:4]} ... {kinds[-2:]}")
    inp = layers[0]
    size = inp.ints[0]
    if inp.ints != [size, size]:
        raise g.fail(f"a {inp.ints} input")
    x = g.node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.node("Sub", [x, g.const(np.array(inp.floats).reshape(1, 3, 1, 1))])
    x = g.node("Mul", [x, g.const(np.array(1 / 256.0))])
    shape = [3, size, size]
    x, shape = g.conv(x, shape, layers[1])
    x = g.node("Relu", [g.affine(x, shape, layers[2])])
    x, shape = g.pool(x, shape, layers[3])
    body = layers[4:-2]
    i = 0
    while i < len(body):
        block = body[i:i + 4]
        if [layer.kind for layer in block] != ["con", "affine", "con", "affine"]:
            raise g.fail(f"a residual block of {[layer.kind for layer in block]}")
        y, s1 = g.conv(x, shape, block[0])
        y = g.node("Relu", [g.affine(y, s1, block[1])])
        y, s2 = g.conv(y, s1, block[2])
        y = g.affine(y, s2, block[3])
        i += 4
        if block[0].ints[3] != 1:  # a downsampling block: its shortcut is pooled
            if i >= len(body) or body[i].kind != "avg_pool":
                raise g.fail("a strided block without its pooled shortcut")
            skip, ss = g.pool(x, shape, body[i])
            i += 1
        else:
            skip, ss = x, shape
        target = [max(a, b) for a, b in zip(s2, ss)]
        x = g.node("Relu", [g.node("Add", [g.pad_to(y, s2, target), g.pad_to(skip, ss, target)])])
        shape = target
    x, shape = g.pool(x, shape, layers[-2])
    fc = layers[-1]
    outputs, inputs = fc.ints
    assert fc.params is not None
    if inputs != shape[0] or shape[1:] != [1, 1] or fc.params.size != inputs * outputs:
        raise g.fail(f"a {inputs}x{outputs} fully connected layer on {shape}")
    x = g.node("Flatten", [x])
    g.node("MatMul", [x, g.const(fc.params.reshape(inputs, outputs))], output="descriptors")
    graph = helper.make_graph(g.nodes, "dlib_face_recognition_resnet", [
        helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", size, size, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", outputs])], g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="peoplemap")
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
