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

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ModelError

log = logging.getLogger(__name__)

_LAYER_NAMES = (b"input_rgb_image_sized", b"input_rgb_image_pyramid", b"loss_mmod_", b"con_4", b"con_5",
                b"affine_", b"bn_con2", b"max_pool_2", b"avg_pool_2", b"fc_2", b"fc_3")
_LAYER = re.compile(rb"\x01([\x03-\x20])(" + b"|".join(_LAYER_NAMES) + rb")")
"""A serialized layer name: one length byte (as a 1-byte integer) and one of the names above."""

OPSET = 17

_converted: dict[str, Any] = {}
_converted_lock = threading.Lock()


def converted(name: str, path: Callable[[], Path], build: Callable[[list["Layer"], str], Any],
              otherwise: str) -> Any:
    """`build(read_layers(file), file name)` for the dlib network file `name`, once per process
    (`path()` finds the file the first time only); None, with one warning saying `otherwise`, where
    it cannot be built: the caller then runs dlib's own implementation."""
    with _converted_lock:
        if name not in _converted:
            try:
                file = path()
                _converted[name] = build(read_layers(file.read_bytes(), file.name), file.name)
            except (ModelError, OSError) as e:
                log.warning("%s: %s", otherwise, e)
                _converted[name] = None
        return _converted[name]


@dataclass
class Layer:
    """One layer of a dlib network file: its kind, integer settings, float settings and parameters."""

    kind: str
    """input, input_pyramid, mmod, con, affine, bn, max_pool, avg_pool or fc."""
    ints: list[int] = field(default_factory=list)
    """con: filters, rows, cols, stride y, stride x, padding y, padding x; pools: window rows, cols,
    strides, paddings (window 0x0: the average of everything); fc: outputs, inputs; input: rows, cols."""
    floats: list[float] = field(default_factory=list)
    """input, input_pyramid: the mean red, green and blue subtracted from each pixel; bn: epsilon;
    mmod: non-max suppression's IoU and covered-fraction thresholds."""
    params: Optional[np.ndarray] = None
    """con: filters then biases; affine: gammas then betas; bn: gammas, betas, running means,
    running variances; fc: inputs x outputs."""


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
        elif name == "input_rgb_image_pyramid":
            layers.append(Layer("input_pyramid", floats=[r.float(), r.float(), r.float()]))
        elif name == "loss_mmod_":
            if r.int() != 1:
                raise r.fail("MMOD options of an unknown version")
            window = [r.int(), r.int()]  # width, height
            _false_alarm, _missed, _match = r.float(), r.float(), r.float()
            layers.append(Layer("mmod", ints=window, floats=[r.float(), r.float()]))
        elif name == "bn_con2":
            params = r.tensor()
            for _ in range(2):  # gamma and beta: views of params (version, 4 dimensions)
                [r.int() for _ in range(5)]
            r.tensor(), r.tensor()  # the last training batch's means and 1/std
            running = np.concatenate([params, r.tensor(), r.tensor()])
            r.int(), r.int()  # updates, window
            [r.float() for _ in range(4)]  # learning rate and weight decay multipliers
            layers.append(Layer("bn", params=running, floats=[r.float()]))
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

    def __init__(self, what: str, network: str) -> None:
        self.nodes: list[Any] = []
        self.weights: list[Any] = []
        self.count = 0
        self.what = what
        self.network = network

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self.what} is not {self.network}: {why}")

    def model(self, inputs: list[Any], outputs: list[Any]) -> bytes:
        """The checked, serialized ONNX model of the nodes so far."""
        import onnx
        from onnx import helper

        graph = helper.make_graph(self.nodes, self.network, inputs, outputs, self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="peoplemap")
        onnx.checker.check_model(model)
        return bytes(model.SerializeToString())

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
    TensorProto, helper = _onnx()
    g = _Graph(what, "dlib's face recognition ResNet")
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
    return g.model([helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", size, size, 3])],
                   [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", outputs])])


def _onnx() -> tuple[Any, Any]:
    """onnx's TensorProto and helper, or ModelError naming the package to install."""
    try:
        from onnx import TensorProto, helper
    except ImportError as e:
        raise ModelError(f"converting dlib's networks needs the onnx package ({e}): pip install onnx") from e
    return TensorProto, helper


# -- dlib's MMOD CNN face detector ---------------------------------------------------------------

def mmod_onnx(layers: list[Layer], what: str = "the model file") -> bytes:
    """The serialized ONNX model of the convolutional part of dlib's MMOD face detector
    (dnn_mmod_face_detection_ex.cpp): three 5x5/2 convolutions with batch norm and relu, three 5x5
    ones, a 9x9 one to one score map. Input "image": N x 3 x H x W float32, already (pixel - mean)
    / 256; output "scores": N x 1 x h x w, output (r, c) centred on input (8c + 14, 8r + 14)."""
    TensorProto, helper = _onnx()
    g = _Graph(what, "dlib's MMOD face detector")
    kinds = [layer.kind for layer in layers]
    if kinds[:2] != ["mmod", "input_pyramid"] or kinds[-1] != "con" or kinds[2:-1] != ["con", "bn"] * 6:
        raise g.fail(f"layers {kinds}")
    x, shape = "image", [3, 0, 0]
    for k in range(6):
        conv, bn = layers[2 + 2 * k], layers[3 + 2 * k]
        x, shape = g.conv(x, shape, conv)
        c = shape[0]
        assert bn.params is not None
        if bn.params.size != 4 * c:
            raise g.fail(f"a batch norm with {bn.params.size} values on {c} channels")
        gamma, beta, mean, var = bn.params.reshape(4, c)
        scale = gamma / np.sqrt(var + bn.floats[0])
        x = g.node("Relu", [g.node("Add", [g.node("Mul", [x, g.const(scale.reshape(1, c, 1, 1))]),
                                          g.const((beta - mean * scale).reshape(1, c, 1, 1))])])
    x, shape = g.conv(x, shape, layers[-1])
    if shape[0] != 1:
        raise g.fail(f"{shape[0]} score maps")
    g.node("Identity", [x], output="scores")
    return g.model([helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                   [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1, "sh", "sw"])])


PYRAMID_RATE = 5 / 6
"""dlib's pyramid_down<6>: each level floor(5/6) of the one above, down to 5 rows."""
TILE_PADDING, TILE_OUTER_PADDING = 10, 11
"""dlib's input_rgb_image_pyramid defaults: zeros between the pyramid's tiles and around them."""


def _round(v: float) -> int:
    """C's round (halves away from zero), as dlib turns a drectangle into a rectangle."""
    return int(np.floor(v + 0.5)) if v >= 0 else -int(np.floor(-v + 0.5))


def tiled_pyramid(rows: int, cols: int, padding: int = TILE_PADDING,
                  outer: int = TILE_OUTER_PADDING) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """dlib's compute_tiled_image_pyramid_details: where each level of an image of rows x cols sits in
    the one image dlib scans (left, top, right, bottom, inclusive), and that image's rows and cols."""
    sizes = [(rows, cols)]
    while True:
        rows, cols = int(np.floor(PYRAMID_RATE * rows)), int(np.floor(PYRAMID_RATE * cols))
        if rows * cols == 0 or rows < 5:
            break
        sizes.append((rows, cols))
    total_height = sum(h + padding for h, _ in sizes) - 2 * padding
    height = prev_width = 0
    for h, w in sizes:
        if w <= sizes[0][1] - prev_width - padding and (height - sizes[0][0]) * 2 >= total_height - sizes[0][0]:
            break
        height += h + padding
        prev_width = w
    height -= padding
    width = sizes[0][1]
    rects: list[tuple[int, int, int, int]] = []
    y = outer
    while y < height + outer and len(rects) < len(sizes):
        h, w = sizes[len(rects)]
        rects.append((outer, y, outer + w - 1, y + h - 1))
        y += h + padding
    y -= padding
    first = rects[0]
    while len(rects) < len(sizes):
        h, w = sizes[len(rects)]
        right, bottom = outer + width - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        if rect[0] <= first[2] and rect[2] >= first[0] and rect[1] <= first[3] and rect[3] >= first[1]:
            break  # the last row would overlap the original image
        rects.append(rect)
        y -= h + padding
    return rects, height + 2 * outer, width + 2 * outer


def _resize_bilinear(t: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """dlib's resize_image of a (3, h, w) tensor: bilinear, corners aligned."""
    _, h, w = t.shape
    ys = np.arange(rows) * ((h - 1) / max(rows - 1, 1))
    xs = np.arange(cols) * ((w - 1) / max(cols - 1, 1))
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 1)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (ys - y0).astype(np.float32)[None, :, None]
    fx = (xs - x0).astype(np.float32)[None, None, :]
    top = t[:, y0][:, :, x0] * (1 - fx) + t[:, y0][:, :, x1] * fx
    bottom = t[:, y1][:, :, x0] * (1 - fx) + t[:, y1][:, :, x1] * fx
    return np.ascontiguousarray(top * (1 - fy) + bottom * fy, dtype=np.float32)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class MmodDetector:
    """dlib's MMOD CNN face detector run in onnxruntime, the rest done as dlib does it: the image and
    its pyramid tiled into one image, one score map, each score above the threshold a detection
    window mapped back to the image, non-max suppression. Equal to dlib's
    cnn_face_detection_model_v1 (without upsampling) up to float rounding (tests/test_face.py)."""

    session: Any
    means: tuple[float, float, float]
    window: tuple[int, int]
    nms_iou: float

    @classmethod
    def from_layers(cls, layers: list[Layer], session_of: Any, what: str = "the model file") -> "MmodDetector":
        model = mmod_onnx(layers, what)
        means = layers[1].floats
        return cls(session_of(model), (means[0], means[1], means[2]), (layers[0].ints[0], layers[0].ints[1]),
                   layers[0].floats[0])

    def detect(self, rgb: np.ndarray, threshold: float = 0.0) -> list[tuple[int, int, int, int, float]]:
        """Faces in an RGB uint8 image: (left, top, right, bottom, score) as dlib's rectangles
        (inclusive), best first, scores above `threshold` (dlib's detection confidence)."""
        h, w = rgb.shape[:2]
        rects, rows, cols = tiled_pyramid(h, w)
        tiled = np.zeros((1, 3, rows, cols), np.float32)
        level = (rgb.astype(np.float32).transpose(2, 0, 1) - np.asarray(self.means, np.float32)[:, None, None]) / 256
        for i, (left, top, right, bottom) in enumerate(rects):
            if i:
                level = _resize_bilinear(level, bottom - top + 1, right - left + 1)
            tiled[0, :, top:bottom + 1, left:right + 1] = level
        if min(rows, cols) < MIN_SCANNED:
            return []
        scores = self.session.run(None, {"image": tiled})[0][0, 0]
        half_w, half_h = (self.window[0] - 1) / 2, (self.window[1] - 1) / 2
        found: list[tuple[float, float, float, float, float]] = []
        for r, c in zip(*np.nonzero(scores > threshold)):
            x, y = 8.0 * c + 14, 8.0 * r + 14
            k = min(range(len(rects)), key=lambda i: _distance(rects[i], x, y))
            left, top = rects[k][0], rects[k][1]
            box = [x - half_w - left, y - half_h - top, x + half_w - left, y + half_h - top]
            for _ in range(k):  # dlib's pyramid_down<6>::point_up, one level at a time
                box = [v * 1.2 + 0.3 for v in box]
            found.append((box[0], box[1], box[2], box[3], float(scores[r, c])))
        found.sort(key=lambda d: -d[4])
        kept: list[tuple[float, float, float, float, float]] = []
        for d in found:
            if all(_iou(d, k) <= self.nms_iou for k in kept):
                kept.append(d)
        return [(_round(d[0]), _round(d[1]), _round(d[2]), _round(d[3]), d[4]) for d in kept]


MIN_SCANNED = 29
"""The smallest side the three 5x5/2 convolutions leave a 5x5 map of."""


def _distance(rect: tuple[int, int, int, int], x: float, y: float) -> float:
    """dlib's nearest_rect measure: how far (x, y) is outside `rect` (0 inside)."""
    dx = max(rect[0] - x, 0.0, x - rect[2])
    dy = max(rect[1] - y, 0.0, y - rect[3])
    return dx * dx + dy * dy
