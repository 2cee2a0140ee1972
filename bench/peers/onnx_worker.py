"""The ONNX peers of bench/test_onnx_peer.py, timed inside their own process (the peers' venv).

ONNX Runtime and OpenVINO cannot be imported into hlm-engine's venv without bringing their own OpenMP and
thread pools into our process, so the benchmark drives this worker over stdin/stdout, one JSON object per
line, and interleaves its rounds with ours. Every time is taken here, around exactly what a user calls:
tokenization (the same tokenizer.json, Rust `tokenizers`) + the session run; the pipe is never timed.

Systems: ort_fp32 (ORT_ENABLE_ALL), ort_int8 (ORT's dynamic quantisation of the same export), ov_fp32
(OpenVINO CPU, f32 inference precision, latency hint); each at the requested intra-op thread count.

Requests -> replies:
  {"op": "init", "tokenizer": PATH, "max_length": N, "models": {system: onnx path}, "threads": [1, 2]}
      -> {"versions": {...}}
  {"op": "latency", "threads": t, "systems": [...], "queries": [...]} -> {system: [ms per query]}
      (batch 1, per query every system in turn, the order rotating by one per query)
  {"op": "throughput", "threads": t, "systems": [...], "queries": [...], "batch": 64} -> {system: seconds}
      (all queries, sorted by token count and cut into batches as sentence-transformers does, padded per batch)
  {"op": "embed", "threads": t, "systems": [...], "queries": [...], "out": DIR} -> {system: npy path}
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


class Peers:
    def __init__(self, tokenizer: str, max_length: int, models: dict[str, str], threads: list[int]):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(tokenizer)
        self.tok.enable_truncation(max_length)
        self.tok.no_padding()
        self.run = {}  # (system, threads) -> callable(feeds) -> [B, d]
        for t in threads:
            for system, path in models.items():
                self.run[(system, t)] = self._ov(path, t) if system.startswith("ov") else self._ort(path, t)

    @staticmethod
    def _ort(path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda feeds: sess.run(None, feeds)[0]

    @staticmethod
    def _ov(path, threads):
        import openvino as ov
        compiled = ov.Core().compile_model(path, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        out = compiled.output(0)
        return lambda feeds: req.infer(feeds)[out]

    def feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        encs = self.tok.encode_batch(texts)
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), dtype=np.int64)
        mask = np.zeros((len(encs), n), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def encode(self, system: str, threads: int, texts: list[str], batch: int) -> np.ndarray:
        lengths = [len(e.ids) for e in self.tok.encode_batch(texts)] if len(texts) > 1 else [0]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = None
        fn = self.run[(system, threads)]
        for s in range(0, len(texts), batch):
            idx = order[s: s + batch]
            e = fn(self.feeds([texts[i] for i in idx]))
            out = np.empty((len(texts), e.shape[1]), np.float32) if out is None else out
            out[idx] = e
        return out

    def latency(self, threads, systems, queries):
        times = {s: [] for s in systems}
        for i, q in enumerate(queries):
            for s in systems[i % len(systems):] + systems[: i % len(systems)]:
                fn = self.run[(s, threads)]
                t0 = time.perf_counter()
                fn(self.feeds([q]))
                times[s].append((time.perf_counter() - t0) * 1e3)
        return times

    def throughput(self, threads, systems, queries, batch):
        out = {}
        for s in systems:
            t0 = time.perf_counter()
            self.encode(s, threads, queries, batch)
            out[s] = time.perf_counter() - t0
        return out


def versions() -> dict[str, str]:
    import onnxruntime
    import openvino
    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def main() -> None:
    peers = None
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        if op == "init":
            peers = Peers(req["tokenizer"], req["max_length"], req["models"], req["threads"])
            reply = {"versions": versions()}
        elif op == "latency":
            reply = peers.latency(req["threads"], req["systems"], req["queries"])
        elif op == "throughput":
            reply = peers.throughput(req["threads"], req["systems"], req["queries"], req["batch"])
        elif op == "embed":
            reply = {}
            for s in req["systems"]:
                path = os.path.join(req["out"], f"{s}_t{req['threads']}.npy")
                np.save(path, peers.encode(s, req["threads"], req["queries"], 64))
                reply[s] = path
        else:
            reply = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
