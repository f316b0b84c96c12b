"""Trains the support-intent model from messages.csv and writes it as ONNX.

    python train.py OUT.onnx          train, write the model, print its digest
    python train.py --predict MODEL TEXT...
                                      print each text's probabilities, as JSON,
                                      computed by onnxruntime natively

The model is a softmax regression with two heads over hashed word and
word-pair features: `intent` (account, billing, cancellation, shipping,
technical) and `urgency` (high, low, normal). The features are computed the
same way by the plugin (src/features.rs): keep them in step.

Reproducible: no randomness, full-batch gradient descent in float64 for a
fixed number of steps, weights rounded before they are stored in float32.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

DIMENSIONS = 1024
STEPS = 400
LEARNING_RATE = 2.0
L2 = 1e-4
HERE = Path(__file__).resolve().parent


def tokens(text):
    """Maximal runs of ASCII letters and digits, lowercased (ASCII only, as
    Rust's `to_ascii_lowercase`)."""
    words, word = [], []
    for ch in text:
        if "A" <= ch <= "Z":
            ch = chr(ord(ch) + 32)
        if ("a" <= ch <= "z") or ("0" <= ch <= "9"):
            word.append(ch)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    return words


def fnv1a32(data):
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def features(text):
    """log(1 + count) of each hashed word and word pair, scaled to length 1."""
    words = tokens(text)
    grams = words + [a + " " + b for a, b in zip(words, words[1:])]
    vector = np.zeros(DIMENSIONS, dtype=np.float64)
    for gram in grams:
        vector[fnv1a32(gram.encode()) % DIMENSIONS] += 1.0
    vector = np.log1p(vector)
    norm = np.sqrt(np.sum(vector * vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def softmax_regression(x, labels, classes):
    """Weights and bias of a softmax regression, by gradient descent from zero."""
    y = np.zeros((len(labels), len(classes)))
    for row, label in enumerate(labels):
        y[row, classes.index(label)] = 1.0
    weights = np.zeros((x.shape[1], len(classes)))
    bias = np.zeros(len(classes))
    for _ in range(STEPS):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        error = (p - y) / len(labels)
        weights -= LEARNING_RATE * (x.T @ error + L2 * weights)
        bias -= LEARNING_RATE * error.sum(axis=0)
    return np.round(weights, 4).astype(np.float32), np.round(bias, 4).astype(np.float32)


def train(out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = [line.split(",", 2) for line in (HERE / "messages.csv").read_text().splitlines()[1:]]
    x = np.stack([features(text) for _, _, text in rows]).astype(np.float64)
    nodes, initializers, outputs = [], [], []
    for head, column in (("intent", 0), ("urgency", 1)):
        labels = [row[column] for row in rows]
        classes = sorted(set(labels))
        weights, bias = softmax_regression(x, labels, classes)
        initializers += [
            numpy_helper.from_array(weights, f"{head}_weights"),
            numpy_helper.from_array(bias, f"{head}_bias"),
        ]
        nodes += [
            helper.make_node("MatMul", ["features", f"{head}_weights"], [f"{head}_product"]),
            helper.make_node("Add", [f"{head}_product", f"{head}_bias"], [f"{head}_logits"]),
            helper.make_node("Softmax", [f"{head}_logits"], [head], axis=-1),
        ]
        outputs.append(helper.make_tensor_value_info(head, TensorProto.FLOAT, ["batch", len(classes)]))
        print(f"{head}: {', '.join(classes)}", file=sys.stderr)
    graph = helper.make_graph(
        nodes,
        "support-intent",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", DIMENSIONS])],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="train.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString(deterministic=True)
    Path(out).write_bytes(data)
    print("sha256:" + hashlib.sha256(data).hexdigest())


def predict(model, texts):
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    batch = np.stack([features(text) for text in texts])
    intent, urgency = session.run(["intent", "urgency"], {"features": batch})
    for row in range(len(texts)):
        print(json.dumps({"intent": intent[row].tolist(), "urgency": urgency[row].tolist()}))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--predict":
        predict(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 2:
        train(sys.argv[1])
    else:
        sys.exit(__doc__)
