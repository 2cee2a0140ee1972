"""Export a sentence-transformers BERT folder to ONNX for the peers of bench/test_onnx_peer.py.

Runs in the peers' venv (bench/peers/setup_onnx.sh: the same torch CPU build as hlm-engine's, transformers,
onnx, onnxruntime). Writes, into OUT:
    model_fp32.onnx   transformers' BertModel + mean pooling over the attention mask + L2 normalisation, in the
                      graph (what sentence-transformers computes), inputs input_ids / attention_mask /
                      token_type_ids [batch, seq] int64, output embedding [batch, hidden]; the TorchScript
                      exporter (dynamo=False), opset 17, dynamic batch and sequence axes
    model_int8.onnx   ONNX Runtime's dynamic quantisation of it with its defaults (int8 weights, activations
                      quantised per call), the int8 peer of the issue

    bench/.venv-peers/bin/python bench/peers/onnx_export.py MODEL_FOLDER OUT
"""
from __future__ import annotations

import os
import sys

import torch
from transformers import AutoModel


class Pooled(torch.nn.Module):
    """BertModel -> masked mean of the last hidden states -> L2 normalised (sentence-transformers' MiniLM)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.model(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def export(folder: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    model = Pooled(AutoModel.from_pretrained(folder, attn_implementation="eager").eval())
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"embedding": {0: "batch"}}
    fp32 = os.path.join(out, "model_fp32.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask, torch.zeros_like(ids)), fp32, input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(fp32, os.path.join(out, "model_int8.onnx"), weight_type=QuantType.QInt8)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    export(sys.argv[1], sys.argv[2])
