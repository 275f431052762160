#!/usr/bin/env python3
"""ao writes, transformers + TorchAO read: quantize stories260K with `ao quantize` into each
format, load the folder with AutoModelForCausalLM (TorchAO's safetensors support), and compare
TorchAO's dequantization and F.linear of every quantized weight with ours (`ao info --dump-dequantized`),
then greedy-decode 16 tokens and compare with the golden ids.

    /opt/aoref/bin/python scripts/interop/check_ao_to_torchao.py [--ao build/ao] [--work DIR]
"""
import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GOLDEN, ROOT, STORIES, compare_with_ours, greedy, run  # noqa: E402

CONFIGS = ["int8wo", "int8wo-g32", "int8dq", "int4wo-g32", "int4wo-g32-tp", "int4wo-g128-hqq", "intx4wo-g32", "intx2wo-g32-asym", "8da4w", "fp8wo",
           "fp8dq-row", "fp8dq-tensor", "mxfp8", "mxfp6", "mxfp4", "nvfp4", "nvfp4wo"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ao", default=str(ROOT / "build/ao"))
    ap.add_argument("--work", default=None)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging
    logging.set_verbosity_error()
    work = Path(a.work or tempfile.mkdtemp(prefix="ao_interop_"))
    print("| config | TorchAO type | weights | load | dequant max rel diff | linear rel err | greedy 16 vs golden |")
    print("|---|---|---:|---|---:|---|---|")
    ok = True
    for c in a.configs.split(","):
        out = work / c
        run([a.ao, "quantize", STORIES, out, "--config", c, "--force"])
        run([a.ao, "info", out, "--no-tensors", "--dump-dequantized", work / f"{c}.ours.safetensors"])
        try:
            model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
        except Exception as e:
            print(f"| {c} | | | FAILED: {type(e).__name__}: {str(e)[:120]} | | | |")
            ok = False
            continue
        linears = [(n, m) for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and type(m.weight).__name__ != "Parameter"]
        types = sorted({type(m.weight).__name__ for _, m in linears})
        n, deq, lin = compare_with_ours(linears, work / f"{c}.ours.safetensors")
        try:
            ids = greedy(model)
            g = f"{sum(int(x == y) for x, y in zip(ids, GOLDEN))}/{len(GOLDEN)} match"
        except Exception as e:
            g = f"n/a on CPU ({type(e).__name__})"
        ok &= deq <= 1e-6 or deq != deq  # NaN: TorchAO cannot dequantize this type on CPU
        deq_text = "n/a" if deq != deq else f"{deq:.1e}"
        print(f"| {c} | {', '.join(types)} | {n} | ok | {deq_text} | {lin} | {g} |")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
