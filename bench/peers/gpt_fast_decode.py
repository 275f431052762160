#!/usr/bin/env python3
"""PyTorch peer for the CUDA decode benchmark: a gpt-fast-style Llama decode loop (static KV cache,
fused wqkv, greedy argmax on device), batch 1, random weights of a synthetic shape (llama3-8b,
llama3-1b, llama2-7b, qwen2.5-7b: the engine's --synthetic shapes, Qwen's q/k/v bias included).

Variants: eager or torch.compile(mode="reduce-overhead", fullgraph=True) (CUDA graphs), with bf16
weights, int8 weight-only (gpt-fast's form: F.linear(x, w.to(bf16)) * scales, which inductor
fuses) or int4 weight-only g128 through PyTorch's own tinygemm ops
(aten._convert_weight_to_int4pack / aten._weight_int4pack_mm; int4-g32, int4-g64, int4-g256 for
its other group sizes).

  python3 bench/peers/gpt_fast_decode.py --variants llama3-8b:compile:bf16,llama3-8b:compile:int4
Prints one JSON object per variant (model, variant, format, tok_s, weight_gb, gb_s).
--pp N adds a prefill of N tokens from position 0 (pp_tok_s): one forward over the N tokens, the
lm_head on the last one only (as ao's engine and llama-bench do), torch.compile(fullgraph=True)
without CUDA graphs for the compile variants; --tg 0 leaves the decode out.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    "llama3-8b": dict(dim=4096, hidden=14336, layers=32, heads=32, kv=8, vocab=128256, theta=500000.0),
    "llama3-1b": dict(dim=2048, hidden=8192, layers=16, heads=32, kv=8, vocab=128256, theta=500000.0),
    "llama2-7b": dict(dim=4096, hidden=11008, layers=32, heads=32, kv=32, vocab=32000, theta=10000.0),
    # Qwen2.5-7B: a bias on q, k and v (added after the fused projection).
    "qwen2.5-7b": dict(dim=3584, hidden=18944, layers=28, heads=28, kv=4, vocab=152064, theta=1000000.0,
                       qkv_bias=True),
}
DEV = "cuda"
BF16 = torch.bfloat16


class BF16Linear(nn.Module):
    def __init__(self, n, k):
        super().__init__()
        self.register_buffer("weight", torch.randn(n, k, device=DEV, dtype=BF16) * 0.02)

    def forward(self, x):
        return F.linear(x, self.weight)

    def nbytes(self):
        return self.weight.numel() * 2


class Int8Linear(nn.Module):
    """int8 weight-only, gpt-fast's form: F.linear(x, w.to(bf16)) * scales. Format "int8pack"
    calls torch._weight_int8pack_mm directly. On an H200 with torch 2.11 (runs 286-288, llama3-8b
    shape) that op gave 18.5-19.9 tok/s decode and 65 tok/s prefill, and torch.compile of the
    F.linear form measured the same (19.86 / 65.1: inductor's weight-only int8 pattern appears to
    lower it to that op); eager F.linear gave 34.1 tok/s decode (launch-bound) and 12215 tok/s
    prefill."""

    def __init__(self, n, k, pack_mm=False):
        super().__init__()
        self.register_buffer("weight", torch.randint(-128, 128, (n, k), dtype=torch.int8, device=DEV))
        self.register_buffer("scales", torch.rand(n, dtype=BF16, device=DEV) * 1e-3)
        self.n = n
        self.pack_mm = pack_mm

    def forward(self, x):
        if self.pack_mm:
            shape = x.shape
            y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight, self.scales)
            return y.reshape(*shape[:-1], self.n)
        return F.linear(x, self.weight.to(dtype=x.dtype)) * self.scales

    def nbytes(self):
        return self.weight.numel() + self.scales.numel() * 2


class Int4Linear(nn.Module):
    def __init__(self, n, k, group=128, inner_k_tiles=8):
        super().__init__()
        w = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=DEV)
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack(w, inner_k_tiles))
        self.register_buffer("scales_and_zeros", torch.rand(k // group, n, 2, dtype=BF16, device=DEV) * 1e-3)
        self.group, self.n, self.k = group, n, k

    def forward(self, x):
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, shape[-1]), self.weight, self.group,
                                              self.scales_and_zeros)
        return y.reshape(*shape[:-1], self.n)

    def nbytes(self):
        return self.n * self.k // 2 + self.scales_and_zeros.numel() * 2


def make_linear(fmt, n, k):
    if fmt == "bf16":
        return BF16Linear(n, k)
    if fmt in ("int8", "int8pack"):
        return Int8Linear(n, k, pack_mm=fmt == "int8pack")
    if fmt == "int4":
        return Int4Linear(n, k)
    if fmt.startswith("int4-g"):  # int4-g32 / -g64 / -g256: tinygemm's other group sizes
        return Int4Linear(n, k, group=int(fmt[len("int4-g"):]))
    raise ValueError(fmt)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, device=DEV, dtype=BF16), requires_grad=False)

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, c, fmt, max_seq):
        super().__init__()
        D, H, KV = c["dim"], c["heads"], c["kv"]
        self.H, self.KV, self.hd = H, KV, D // H
        self.wqkv = make_linear(fmt, (H + 2 * KV) * self.hd, D)
        self.bqkv = (torch.randn((H + 2 * KV) * self.hd, device=DEV, dtype=BF16) * 0.02
                     if c.get("qkv_bias") else None)
        self.wo = make_linear(fmt, D, H * self.hd)
        self.w1 = make_linear(fmt, c["hidden"], D)
        self.w3 = make_linear(fmt, c["hidden"], D)
        self.w2 = make_linear(fmt, D, c["hidden"])
        self.attention_norm = RMSNorm(D)
        self.ffn_norm = RMSNorm(D)
        self.register_buffer("k_cache", torch.zeros(1, KV, max_seq, self.hd, dtype=BF16, device=DEV))
        self.register_buffer("v_cache", torch.zeros(1, KV, max_seq, self.hd, dtype=BF16, device=DEV))

    def forward(self, x, cos, sin, input_pos, mask):
        B, T, D = x.shape
        H, KV, hd = self.H, self.KV, self.hd
        qkv = self.wqkv(self.attention_norm(x))
        if self.bqkv is not None:
            qkv = qkv + self.bqkv
        q, k, v = qkv.split([H * hd, KV * hd, KV * hd], dim=-1)
        q = q.view(B, T, H, hd).transpose(1, 2)
        k = k.view(B, T, KV, hd).transpose(1, 2)
        v = v.view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        self.k_cache[:, :, input_pos] = k
        self.v_cache[:, :, input_pos] = v
        kk = self.k_cache.repeat_interleave(H // KV, dim=1)
        vv = self.v_cache.repeat_interleave(H // KV, dim=1)
        y = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        h = x + self.wo(y.transpose(1, 2).reshape(B, T, H * hd))
        n = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(n)) * self.w3(n))


class Transformer(nn.Module):
    def __init__(self, c, fmt, max_seq):
        super().__init__()
        D, hd = c["dim"], c["dim"] // c["heads"]
        self.tok_embeddings = nn.Embedding(c["vocab"], D, device=DEV, dtype=BF16)
        self.layers = nn.ModuleList(Block(c, fmt, max_seq) for _ in range(c["layers"]))
        self.norm = RMSNorm(D)
        self.output = make_linear(fmt, c["vocab"], D)
        inv = 1.0 / (c["theta"] ** (torch.arange(0, hd, 2, device=DEV).float() / hd))
        t = torch.arange(max_seq, device=DEV).float()
        freqs = torch.outer(t, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().to(BF16))
        self.register_buffer("sin", emb.sin().to(BF16))
        self.register_buffer("causal", torch.tril(torch.ones(max_seq, max_seq, dtype=torch.bool, device=DEV)))

    def forward(self, idx, input_pos, last_only=False):
        mask = self.causal[None, None, input_pos]
        cos, sin = self.cos[input_pos], self.sin[input_pos]
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x, cos, sin, input_pos, mask)
        if last_only:  # prefill: the next token's logits only
            x = x[:, -1:]
        return self.output(self.norm(x))

    def weight_bytes(self):
        b = 0
        for m in self.modules():
            if hasattr(m, "nbytes") and m is not self:
                b += m.nbytes()
        return b + sum(2 * p.numel() for n, p in self.named_parameters() if "norm" in n)


def decode_one(model, tok, input_pos):
    logits = model(tok.view(1, 1), input_pos)
    return torch.argmax(logits[:, -1], dim=-1)


def prefill_one(model, idx, input_pos):
    logits = model(idx, input_pos, last_only=True)
    return torch.argmax(logits[:, -1], dim=-1)


def time_prefill(model, mode, c, pp, reps):
    """Median tokens/s of a prefill of pp random tokens from position 0."""
    step = torch.compile(prefill_one, fullgraph=True) if mode == "compile" else prefill_one
    idx = torch.randint(0, c["vocab"], (1, pp), device=DEV)
    pos = torch.arange(pp, device=DEV)
    for _ in range(3):  # warm up (compile)
        step(model, idx, pos)
    times = []
    for _ in range(max(reps, 3)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(model, idx, pos)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return pp / times[len(times) // 2]


def run_variant(model_name, mode, fmt, tg, reps, pp=0):
    c = SHAPES[model_name]
    max_seq = max(1024, pp + 1)
    pp_tok_s = None
    with torch.no_grad():
        model = Transformer(c, fmt, max_seq)
        if pp > 0:
            pp_tok_s = time_prefill(model, mode, c, pp, reps)
        if tg == 0:
            wb = model.weight_bytes()
            del model
            torch.cuda.empty_cache()
            torch._dynamo.reset()
            return dict(model=model_name, variant=f"{mode} {fmt}", mode=mode, format=fmt,
                        pp=pp, pp_tok_s=round(pp_tok_s, 1), weight_gb=round(wb / 1e9, 3),
                        torch=torch.__version__)
        step = decode_one
        if mode == "compile":
            step = torch.compile(decode_one, mode="reduce-overhead", fullgraph=True)
        tok = torch.zeros(1, dtype=torch.long, device=DEV)
        pos = torch.zeros(1, dtype=torch.long, device=DEV)
        t_compile = time.time()
        for i in range(4):  # warm up: compile + graph recording
            tok = step(model, tok, pos).clone()
            pos += 1
        torch.cuda.synchronize()
        t_compile = time.time() - t_compile
        times = []
        for _ in range(reps):
            tok = torch.zeros(1, dtype=torch.long, device=DEV)
            pos = torch.zeros(1, dtype=torch.long, device=DEV)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(tg):
                tok = step(model, tok, pos).clone()
                pos += 1
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        times.sort()
        tok_s = tg / times[len(times) // 2]
        wb = model.weight_bytes()
        del model
    torch.cuda.empty_cache()
    torch._dynamo.reset()
    if fmt.startswith("int8"):
        fmt = "int8 (_weight_int8pack_mm)" if fmt == "int8pack" else "int8 (F.linear * scales)"
    r = dict(model=model_name, variant=f"{mode} {fmt}", mode=mode, format=fmt, tok_s=round(tok_s, 2),
             weight_gb=round(wb / 1e9, 3), gb_s=round(wb * tok_s / 1e9, 1),
             warmup_s=round(t_compile, 1), torch=torch.__version__)
    if pp_tok_s is not None:
        r.update(pp=pp, pp_tok_s=round(pp_tok_s, 1))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="llama3-8b:eager:bf16,llama3-8b:compile:bf16,"
                    "llama3-8b:compile:int8,llama3-8b:compile:int4,llama3-1b:compile:bf16,llama3-1b:compile:int4")
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--pp", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    import torch._inductor.config as ic
    ic.fx_graph_cache = True
    out = open(args.json, "a") if args.json else None
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    for v in args.variants.split(","):
        model_name, mode, fmt = v.split(":")
        try:
            r = run_variant(model_name, mode, fmt, args.tg if mode == "compile" else min(args.tg, 32),
                            args.reps, args.pp)
        except Exception as e:  # report and go on with the next variant
            r = dict(model=model_name, variant=f"{mode} {fmt}", error=f"{type(e).__name__}: {e}"[:300])
            torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)
        if out:
            out.write(json.dumps(r) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
