"""CUDA graphs for the encoder forward: one graph per (batch, length) bucket over static buffers, and the
padding that fits a packed batch into the nearest captured bucket.

Why: a student forward is ~45 kernel launches; at batch 1 each costs ~3 us of launch overhead against a
roofline bound of ~11 us for the whole MiniLM forward on an A100 (bench/roofline.py). A graph replays them all
with one launch. Graphs need fixed shapes and addresses, so a bucket (B, L) owns static buffers of
T = B * L tokens and 2B sequences, and a batch of b <= B texts of at most L tokens is padded into it:

    real texts: sequences 0..b-1, tokens [0, t)           (unchanged: they never see a padding token)
    padding:    tokens [t, T) as sequences of <= L pad tokens, then empty sequences up to 2B

Every token belongs to some sequence of at most L tokens (the attention kernels and the reference need
that), each padding sequence attends only to itself, and the outputs of rows >= b are dropped. `max_seqlen`
is the bucket's L, so the launchers pick the same tiles at capture and replay.

    runner = CudaGraphRunner(lambda batch: encoder.embed_batch(batch), device, buckets=[(1, 16), (64, 32)])
    out = runner(batch)        # [b, d], or None when no bucket holds the batch (run it eagerly)
"""
from __future__ import annotations

import torch

from hlm_engine.models.packing import PackedBatch

DEFAULT_BUCKETS = ((1, 8), (1, 16), (1, 32), (1, 64), (1, 128), (8, 32), (32, 32), (64, 32), (64, 64))


def pad_to_bucket(batch: PackedBatch, max_batch: int, max_len: int, pad_id: int = 0) -> PackedBatch:
    """`batch` (b <= max_batch texts of <= max_len tokens) as a packed batch of exactly max_batch * max_len
    tokens in 2 * max_batch sequences; its first b sequences are the input's (host-side, on batch's device)."""
    b, t = batch.num_seqs, batch.num_tokens
    if b > max_batch or batch.max_seqlen > max_len:
        raise ValueError(f"batch of {b} texts of <= {batch.max_seqlen} tokens does not fit bucket "
                         f"({max_batch}, {max_len})")
    total, n_seqs = max_batch * max_len, 2 * max_batch
    dev = batch.input_ids.device
    pad = total - t
    full, rest = divmod(pad, max_len)
    pad_lens = [max_len] * full + ([rest] if rest else [])
    # b + ceil(pad / L) <= 2B: pad <= B*L - b, as each real text has at least one token.
    lens = torch.tensor(pad_lens + [0] * (n_seqs - b - len(pad_lens)), dtype=torch.int32, device=dev)
    cu = torch.cat([batch.cu_seqlens.to(torch.int32), t + torch.cumsum(lens, 0, dtype=torch.int32)])
    ids = torch.cat([batch.input_ids, torch.full((pad,), pad_id, dtype=batch.input_ids.dtype, device=dev)])
    pos_pad = torch.arange(max_len, device=dev).repeat(full + 1)[:pad] if pad else batch.positions[:0]
    return PackedBatch(ids, cu, torch.cat([batch.positions, pos_pad.to(batch.positions.dtype)]), max_len)


class CudaGraphRunner:
    """`fn(batch) -> [num_seqs, d]` replayed from a CUDA graph per bucket. Buckets are captured lazily on the
    first batch that needs them (the first call per bucket pays warm-up + capture, ~100 ms), smallest fitting
    bucket first: fewest padded tokens. All graphs share one memory pool."""

    def __init__(self, fn, device, buckets=DEFAULT_BUCKETS, pad_id: int = 0, warmup: int = 2):
        self.fn, self.device, self.pad_id, self.warmup = fn, torch.device(device), pad_id, warmup
        self.buckets = sorted({(int(b), int(n)) for b, n in buckets}, key=lambda x: (x[0] * x[1], x))
        self.graphs: dict = {}  # bucket -> (graph, static PackedBatch, static output)
        self.pool = None

    def bucket_for(self, batch: PackedBatch):
        for b, n in self.buckets:
            if batch.num_seqs <= b and batch.max_seqlen <= n:
                return b, n
        return None

    def _capture(self, bucket):
        b, n = bucket
        dummy = PackedBatch(torch.full((1,), self.pad_id, dtype=torch.int64, device=self.device),
                            torch.tensor([0, 1], dtype=torch.int32, device=self.device),
                            torch.zeros(1, dtype=torch.int64, device=self.device), 1)
        static = pad_to_bucket(dummy, b, n, self.pad_id)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(self.warmup):  # compiles the kernels and allocates lazily created buffers
                self.fn(static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool), torch.inference_mode():
            out = self.fn(static)
        self.graphs[bucket] = (graph, static, out)

    @torch.inference_mode()
    def __call__(self, batch: PackedBatch):
        bucket = self.bucket_for(batch)
        if bucket is None or self.device.type != "cuda":
            return None
        if bucket not in self.graphs:
            self._capture(bucket)
        graph, static, out = self.graphs[bucket]
        padded = pad_to_bucket(batch.to(self.device), *bucket, self.pad_id)
        static.input_ids.copy_(padded.input_ids)
        static.cu_seqlens.copy_(padded.cu_seqlens)
        static.positions.copy_(padded.positions)
        graph.replay()
        return out[:batch.num_seqs].clone()  # the static output is overwritten by the next replay
