"""Builds bench-medium, the model the inference benchmark runs, as ONNX.

    python train.py OUT.onnx

A multilayer perceptron over the same 1024-wide `features` input as
support-intent (so one plugin can drive both): 1024 -> 2048 -> 2048 -> 1024,
ReLU between layers, about 8 million multiply-adds per row. Enough compute
that the host's overhead per call is measurable against it. The weights are
not trained: they come from a fixed seed, so the bytes are the same on
every run.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np

WIDTHS = [1024, 2048, 2048, 1024]


def build(out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(20261204)
    nodes, initializers = [], []
    current = "features"
    for layer, (fan_in, fan_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        weights = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = np.zeros(fan_out, dtype=np.float32)
        initializers += [
            numpy_helper.from_array(weights, f"w{layer}"),
            numpy_helper.from_array(bias, f"b{layer}"),
        ]
        last = layer == len(WIDTHS) - 2
        nodes += [
            helper.make_node("MatMul", [current, f"w{layer}"], [f"m{layer}"]),
            helper.make_node("Add", [f"m{layer}", f"b{layer}"], ["scores" if last else f"a{layer}"]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{layer}"], [f"r{layer}"]))
            current = f"r{layer}"
    graph = helper.make_graph(
        nodes,
        "bench-medium",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", WIDTHS[0]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", WIDTHS[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="train.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString(deterministic=True)
    Path(out).write_bytes(data)
    print("sha256:" + hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(sys.argv[1])
