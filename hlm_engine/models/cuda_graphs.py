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

    runner = CudaGraphRunner(encoder.embed_batch, device, buckets=[(1, 16), (64, 32)])
    out = runner(batch, normalize, dim)   # [b, d], or None: no bucket holds it, CPU, autograd on (run eagerly)

`fn` may itself call the runner first (the encoder's one-line hook in embed_batch): while the runner warms up
or captures, it answers None, so `fn` runs its eager body then.
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
    """`fn(batch, *args) -> [num_seqs, d]` replayed from a CUDA graph per (bucket, args). Buckets are captured
    lazily on the first batch that needs them (warm-up + capture, ~100 ms once), the smallest fitting bucket
    first: fewest padded tokens. All graphs share one memory pool."""

    def __init__(self, fn, device, buckets=DEFAULT_BUCKETS, pad_id: int = 0, warmup: int = 2):
        self.fn, self.device, self.pad_id, self.warmup = fn, torch.device(device), pad_id, warmup
        self.buckets = sorted({(int(b), int(n)) for b, n in buckets}, key=lambda x: (x[0] * x[1], x))
        self.graphs: dict = {}  # (bucket, args) -> (graph, static PackedBatch, static output)
        self.pool = None
        self._busy = False      # inside warm-up / capture: fn's own call to the runner must run eagerly

    def bucket_for(self, batch: PackedBatch):
        for b, n in self.buckets:
            if batch.num_seqs <= b and batch.max_seqlen <= n:
                return b, n
        return None

    def _capture(self, bucket, args):
        b, n = bucket
        dummy = PackedBatch(torch.full((1,), self.pad_id, dtype=torch.int64, device=self.device),
                            torch.tensor([0, 1], dtype=torch.int32, device=self.device),
                            torch.zeros(1, dtype=torch.int64, device=self.device), 1)
        static = pad_to_bucket(dummy, b, n, self.pad_id)
        self._busy = True
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):  # compiles the kernels, allocates lazily created buffers
                    self.fn(static, *args)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self.fn(static, *args)
        finally:
            self._busy = False
        self.graphs[(bucket, args)] = (graph, static, out)

    def __call__(self, batch: PackedBatch, *args):
        if self._busy or self.device.type != "cuda" or torch.is_grad_enabled():
            return None
        bucket = self.bucket_for(batch)
        if bucket is None:
            return None
        if (bucket, args) not in self.graphs:
            self._capture(bucket, args)
        graph, static, out = self.graphs[(bucket, args)]
        padded = pad_to_bucket(batch.to(self.device), *bucket, self.pad_id)
        static.input_ids.copy_(padded.input_ids)
        static.cu_seqlens.copy_(padded.cu_seqlens)
        static.positions.copy_(padded.positions)
        graph.replay()
        return out[:batch.num_seqs].clone()  # the static output is overwritten by the next replay
