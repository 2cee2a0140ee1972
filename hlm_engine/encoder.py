"""`Encoder`: a model folder -> embeddings. The public entry point of the runtime.

    enc = Encoder.from_pretrained("minilm" | "mpnet" | path, backend="auto", dtype=None)
    emb = enc.encode(texts, batch_size=64, normalize=True, dim=None, prompt=None)   # np.float32 [n, d]
    q = enc.embed(texts, role="query")      # the embedding interface (also `Engine`): the role's prompt applied

Texts are tokenized in one Rust batch call, sorted by length (so packed batches hold similar lengths
and the order of work is deterministic), packed without padding, and run through our own model code.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F

from hlm_engine import ops
from hlm_engine.config import EncoderConfig, load_folder_config, to_hf_config
from hlm_engine.io import atomic_dir
from hlm_engine.models import build_model
from hlm_engine.hub import resolve
from hlm_engine.models.packing import PackedBatch, pack
from hlm_engine.tokenizer import TextTokenizer
from hlm_engine.weights import hf_to_ours, ours_to_hf, read_weight_files

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
ROLES = ("query", "document")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose 'query' or 'document'")


def qwen3_query_prompt(task: str) -> str:
    """Qwen3-Embedding's query format: `Instruct: {task}\\nQuery:{text}` (documents get no prompt)."""
    return f"Instruct: {task}\nQuery:"


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 on GPU: Qwen3 activations overflow fp16. fp32 on CPU (no fast half GEMMs there).
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Encoder:
    def __init__(self, config: EncoderConfig, model: torch.nn.Module, tokenizer: TextTokenizer,
                 folder: str | None = None, device=None, dtype=None):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.folder = folder
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or default_dtype(self.device)
        self.graphs = None  # a CudaGraphRunner on CUDA (`use_cuda_graphs`): batch-1 forwards as one replay
        self.native = None  # the cpu backend's one-call C++ forward (`use_native`), decided once at load

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, backend: str | None = "auto", dtype=None, device=None,
                        truncation: str = "truncate", max_length: int | None = None,
                        cuda_graphs: bool | None = None, weights: str | None = None,
                        threads: int | None = None) -> "Encoder":
        """cuda_graphs: replay inference forwards from CUDA graphs per (batch, length) bucket (default: on for
        the triton backend on CUDA). weights: the CPU inference format, "fp32" (identical embeddings) | "bf16" |
        "int8" (default: the folder's `weights`, else fp32), served by the native forward of the cpu backend on
        `threads` cores (default: torch's intra-op thread count at load)."""
        folder = resolve(name_or_path)
        cfg = load_folder_config(folder)
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"max_length must be >= 2, got {max_length}")
            cfg.max_length = max_length
        device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = dtype or default_dtype(device)
        be = ops.resolve_backend(backend, device)
        sd, where = read_weight_files(folder)
        ours = hf_to_ours(cfg, sd, where, folder)
        with torch.device("meta"):
            model = build_model(cfg, be)
        expected = model.state_dict()
        for k, v in ours.items():
            if k in expected and tuple(expected[k].shape) != tuple(v.shape):
                raise ValueError(f"{folder}: tensor {k} has shape {tuple(v.shape)}, config expects "
                                 f"{tuple(expected[k].shape)} (from {where})")
        missing = set(expected) - set(ours)
        if missing:
            raise KeyError(f"{folder}: weights missing for {sorted(missing)[:5]} (from {where})")
        # Own, aligned copies: safetensors hands back views into one file buffer (unaligned for MKL).
        model.load_state_dict({k: ours[k].clone() for k in expected}, assign=True)
        del sd, ours
        model = model.to(device=device, dtype=dtype).eval()
        tok = TextTokenizer(os.path.join(folder, "tokenizer.json"), cfg.max_length, cfg.append_eos_token_id,
                            truncation)
        enc = cls(cfg, model, tok, folder, device, dtype)
        enc.use_native(weights or cfg.weights, threads)
        if cuda_graphs or (cuda_graphs is None and device.type == "cuda" and be == "triton"):
            enc.use_cuda_graphs()
        return enc

    @classmethod
    def from_config(cls, cfg: EncoderConfig, tokenizer_path: str, backend: str | None = "torch", dtype=None,
                    device=None, seed: int = 0) -> "Encoder":
        """A randomly initialised model of any shape with a real tokenizer (tests, architecture studies)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        be = ops.resolve_backend(backend, device)
        torch.manual_seed(seed)
        model = build_model(cfg, be)
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                torch.nn.init.ones_(p)
            elif p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.02)
            else:
                torch.nn.init.zeros_(p)
        model = model.to(device=device, dtype=dtype or default_dtype(device)).eval()
        tok = TextTokenizer(tokenizer_path, cfg.max_length, cfg.append_eos_token_id)
        return cls(cfg, model, tok, None, device, dtype)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def backend(self) -> str:
        return self.model.backend

    @property
    def ops(self):
        """The backend object the model was built with (chosen once)."""
        return self.model.ops

    def with_backend(self, backend) -> "Encoder":
        """The same weights behind another backend (a name, or a backend object such as
        `hlm_engine.ops.cpu.CpuBackend(gemm="onednn")`): side-by-side tests and benchmarks. The model is a
        shallow copy sharing every parameter; this encoder is left as it was."""
        import copy
        model = copy.copy(self.model)
        model.ops = ops.get(backend if not isinstance(backend, str) else ops.resolve_backend(backend, self.device))
        model.backend = model.ops.name
        return Encoder(self.config, model, self.tokenizer, self.folder, self.device, self.dtype)

    # ------------------------------------------------------------------ the embedding interface
    def prompt_for(self, role: str) -> str | None:
        """The text prefix of a role: a query gets the model's query instruction (Qwen3-Embedding's
        `Instruct: ...\nQuery:`; none for MiniLM/MPNet), a document none."""
        check_role(role)
        return getattr(self.config, "query_instruction", None) if role == "query" else None

    def embed(self, texts, role: str = "query", dim: int | None = None, batch_size: int = 64) -> np.ndarray:
        """Texts in a role -> L2-normalised np.float32 [n, dim or self.dim] (what `Engine.embed` returns too)."""
        return self.encode(texts, batch_size=batch_size, dim=dim, prompt=self.prompt_for(role))

    @property
    def space(self) -> dict:
        """The embedding space's identity: {name, dim, checksum, space} (see `hlm_engine.identity`)."""
        from hlm_engine.identity import space_of
        return space_of(self)

    # ------------------------------------------------------------------ forward
    def use_native(self, weights: str = "fp32", threads: int | None = None) -> None:
        """Serve inference through the native C++ forward (`hlm_engine.ops.cpu.native`) where the backend is
        cpu: one call per batch, weights packed once in `weights` format. Elsewhere the per-op path stays (and a
        compressed format, which only the native forward has, raises)."""
        from hlm_engine.ops.cpu import native
        self.native = native.for_model(self.model, self.backend, self.device, self.dtype, weights,
                                       threads or torch.get_num_threads())
        self.config.weights = weights

    def set_threads(self, n: int) -> None:
        """Cores the native forward splits each GEMM over (its own thread pool, not torch's)."""
        if self.native is not None:
            self.native.threads = int(n)

    def use_cuda_graphs(self, buckets=None) -> None:
        """Replay inference forwards from CUDA graphs, one per (batch, length) bucket, the batch padded up to the
        nearest captured bucket (`hlm_engine.models.cuda_graphs`); larger batches and autograd run eagerly."""
        if self.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need a CUDA device (this encoder is on {self.device})")
        from hlm_engine.models.cuda_graphs import DEFAULT_BUCKETS, CudaGraphRunner
        self.graphs = CudaGraphRunner(self.embed_batch, self.device, buckets=buckets or DEFAULT_BUCKETS,
                                      pad_id=self.config.pad_token_id)

    def embed_batch(self, batch: PackedBatch, normalize: bool = True, dim: int | None = None) -> torch.Tensor:
        """Packed batch -> pooled embeddings [B, d] (differentiable on the torch backend)."""
        self.check_dim(dim)
        if self.graphs is not None and (out := self.graphs(batch, normalize, dim)) is not None:
            return out
        hidden = self.model(batch)
        proj = getattr(self.model, "proj", None)
        if proj is None:
            return self.ops.pool(hidden, batch.cu_seqlens, self.config.pooling, dim, normalize)
        pooled = self.ops.pool(hidden, batch.cu_seqlens, self.config.pooling, None, False)
        out = self.ops.linear(pooled, proj.weight, proj.bias)  # folded student->teacher projection
        out = out[:, :dim] if dim is not None else out
        return F.normalize(out.float(), dim=-1).to(out.dtype) if normalize else out

    def embed_ids(self, ids_list: list[list[int]], normalize: bool = True, dim: int | None = None) -> np.ndarray:
        """Token id lists (one packed batch, as the scheduler forms them) -> np.float32 [B, d]."""
        if self.native is not None:  # one C++ call: embeddings -> layers -> pool -> head -> L2 norm
            self.check_dim(dim)
            from hlm_engine.ops.cpu import native
            return native.embed_ids(self.native, ids_list, normalize, dim)
        with torch.inference_mode():
            out = self.embed_batch(pack(ids_list, self.device), normalize, dim)
        return out.float().cpu().numpy()

    def tokenize(self, texts, prompt: str | None = None, validated: bool = False) -> list[list[int]]:
        return self.tokenizer.encode(texts, prompt, validated)

    def encode(self, texts, batch_size: int = 64, normalize: bool = True, dim: int | None = None,
               prompt: str | None = None, show_progress: bool = False) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.check_dim(dim)
        ids = self.tokenize(texts, prompt)
        n = len(ids)
        out = np.empty((n, dim or self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: -len(ids[i]))
        starts = range(0, n, batch_size)
        if show_progress:
            from tqdm import tqdm
            starts = tqdm(starts, total=(n + batch_size - 1) // batch_size, desc="encode", unit="batch")
        for s in starts:
            idx = order[s: s + batch_size]
            out[idx] = self.embed_ids([ids[i] for i in idx], normalize, dim)
        return out

    def check_dim(self, dim) -> None:
        """Raise ValueError unless dim is None or an int in [1, self.dim] (Matryoshka truncation)."""
        if dim is not None and not (isinstance(dim, int) and 1 <= dim <= self.dim):
            raise ValueError(f"dim must be an int in [1, {self.dim}] (Matryoshka truncation), got {dim!r}")

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str) -> None:
        """Atomically write a model folder (HF tensor names + our config + tokenizer files)."""
        from safetensors.torch import save_file
        cfg = self.config
        with atomic_dir(path) as tmp:
            sd = {k: v.float() if v.dtype != torch.float32 else v for k, v in self.model.state_dict().items()}
            save_file(ours_to_hf(cfg, sd), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
            cfg.save(os.path.join(tmp, "hlm_config.json"))
            uniform = len(set(cfg.intermediate_sizes)) == 1
            if uniform:  # a valid transformers folder too; per-layer widths live only in hlm_config.json
                with open(os.path.join(tmp, "config.json"), "w") as f:
                    json.dump(to_hf_config(cfg), f, indent=2)
            src = os.path.dirname(self.tokenizer.path)
            for name in _TOKENIZER_FILES:
                if os.path.exists(os.path.join(src, name)):
                    shutil.copy(os.path.join(src, name), os.path.join(tmp, name))
            if uniform and not cfg.output_dim:  # sentence-transformers can load it too (no projection)
                _write_st_files(tmp, cfg)


def _write_st_files(folder: str, cfg: EncoderConfig) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if cfg.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    with open(os.path.join(folder, "modules.json"), "w") as f:
        json.dump(modules, f, indent=2)
    os.makedirs(os.path.join(folder, "1_Pooling"))
    with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": cfg.hidden_size, "pooling_mode_cls_token": cfg.pooling == "cls",
                   "pooling_mode_mean_tokens": cfg.pooling == "mean", "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_lasttoken": cfg.pooling == "last"},
                  f, indent=2)
    with open(os.path.join(folder, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": cfg.max_length, "do_lower_case": False}, f)
