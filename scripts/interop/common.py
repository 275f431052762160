"""Shared helpers for the TorchAO interop checks (run with /opt/aoref/bin/python)."""
import json
import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
STORIES = ROOT.parent / "shared/data/models/stories260K/stories260K.bin"
GOLDEN = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def permute_rope(w, heads):  # HF's convert_llama_weights_to_hf permutation
    rows, cols = w.shape
    return w.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def stories_hf_model(path=STORIES):
    """stories260K (llama2.c .bin) as a transformers LlamaForCausalLM in fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM
    raw = Path(path).read_bytes()
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    data = torch.from_numpy(np.frombuffer(raw, dtype=np.float32, offset=28).copy())
    pos = 0

    def take(*shape):
        nonlocal pos
        n = math.prod(shape)
        t = data[pos:pos + n].view(*shape)
        pos += n
        return t

    hd = dim // heads
    emb = take(vocab, dim)
    sd = {"model.embed_tokens.weight": emb}
    per = [("input_layernorm.weight", (dim,)), ("self_attn.q_proj.weight", (dim, dim)),
           ("self_attn.k_proj.weight", (kv * hd, dim)), ("self_attn.v_proj.weight", (kv * hd, dim)),
           ("self_attn.o_proj.weight", (dim, dim)), ("post_attention_layernorm.weight", (dim,)),
           ("mlp.gate_proj.weight", (hidden, dim)), ("mlp.down_proj.weight", (dim, hidden)),
           ("mlp.up_proj.weight", (hidden, dim))]
    for name, shape in per:
        t = take(layers, *shape)
        for l in range(layers):
            w = t[l]
            if name.startswith("self_attn.q_proj"):
                w = permute_rope(w, heads)
            if name.startswith("self_attn.k_proj"):
                w = permute_rope(w, kv)
            sd[f"model.layers.{l}.{name}"] = w.clone()
    sd["model.norm.weight"] = take(dim)
    take(seq, hd // 2)
    take(seq, hd // 2)
    sd["lm_head.weight"] = emb if shared else take(vocab, dim)
    cfg = LlamaConfig(hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=seq, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=shared, head_dim=hd, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(sd, strict=False)
    return model.eval()


def torchao_dequantize(w):
    """Dequantized f32 weight of any TorchAO tensor subclass TorchAO can handle on CPU."""
    from torchao.quantization import Int4Tensor
    if isinstance(w, Int4Tensor):  # no CPU dequantize op: mslk layout, q * scale + zero
        lo = (w.qdata.to(torch.int32) << 28) >> 28
        hi = (w.qdata.to(torch.int32) << 24) >> 28
        vals = torch.stack([lo, hi], dim=-1).reshape(w.qdata.shape[0], -1).float()
        g = w.block_size[-1]
        return vals * w.scale.float().t().repeat_interleave(g, 1) + w.zero_point.float().t().repeat_interleave(g, 1)
    try:
        return w.dequantize(torch.float32).float()
    except TypeError:
        return w.dequantize().float()


def greedy(model, n=len(GOLDEN)):
    ids = torch.tensor([[1]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n - 1, do_sample=False, min_new_tokens=n - 1)
    return out[0].tolist()


def compare_with_ours(model_linears, ours_path):
    """Max |ours - TorchAO| of dequantized weights and of linear outputs (relative)."""
    from safetensors import safe_open
    f = safe_open(str(ours_path), "pt")
    deq_err, lin_err, lin_note, n = 0.0, 0.0, "", 0
    for fqn, mod in model_linears:
        key = fqn + ".weight"
        if key not in f.keys():
            continue
        n += 1
        try:
            ref = torchao_dequantize(mod.weight)
        except Exception as e:  # e.g. tinygemm's layout only dequantizes through a CUDA op
            return n, float("nan"), f"TorchAO dequantize n/a on CPU ({type(e).__name__})"
        ours = f.get_tensor(key)
        deq_err = max(deq_err, (ours - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30))
        for m in (1, 16):
            x = f.get_tensor(f"{fqn}.x_m{m}")  # the exact input ao multiplied
            try:
                with torch.no_grad():
                    y = torch.nn.functional.linear(x, mod.weight).float()
                yo = f.get_tensor(f"{fqn}.linear_m{m}")
                lin_err = max(lin_err, ((yo - y).norm() / y.norm().clamp_min(1e-30)).item())
            except Exception as e:  # TorchAO has no CPU kernel for this type
                lin_note = f"TorchAO linear n/a on CPU ({type(e).__name__})"
    return n, deq_err, (lin_note if lin_note else f"{lin_err:.1e}")
