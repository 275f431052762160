#!/usr/bin/env python3
"""TorchAO writes, ao reads: quantize stories260K with TorchAO and save it the way
transformers does (flattened safetensors + quantization_config), then load it with
`ao info --dump-dequantized` (which rebuilds every weight through ao's quantized tensor types and
checks metadata against tensors) and compare our dequantization and linear outputs with
TorchAO's.

Where TorchAO's quantize_ path runs on CPU (int8, intx, 8da4w) the folder is produced by
transformers (TorchAoConfig + save_pretrained). Float8 dynamic, MX and NVFP4 configs refuse
to run without a recent GPU, and Int4Tensor needs the CUDA-only mslk package, so those
weights are built with TorchAO's own tensor constructors (Float8Tensor.from_hp,
MXTensor.to_mx, NVFP4Tensor.to_nvfp4, Int4Tensor from mslk's int4_row_quantize_zp) with the
settings the configs use, and saved with TorchAO's flatten_tensor_state_dict.

    /opt/aoref/bin/python scripts/interop/check_torchao_to_ao.py [--ao build/ao] [--work DIR]
"""
import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, compare_with_ours, run, stories_hf_model  # noqa: E402


def transformers_cases():
    """TorchAO itself rejects group 32 on stories260K's down_proj (K = 172), so grouped intx
    configs go through an FqnToConfig that quantizes down_proj per channel (PerAxis(0))."""
    from torchao.quantization import (FqnToConfig, Int8DynamicActivationInt8WeightConfig,
                                      Int8DynamicActivationIntxWeightConfig, Int8WeightOnlyConfig, IntxWeightOnlyConfig,
                                      MappingType, PerAxis, PerGroup)

    def down_per_axis(make):
        return FqnToConfig({"_default": make(PerGroup(32)), "re:.*down_proj": make(PerAxis(0))})

    return {
        "int8wo": Int8WeightOnlyConfig(),
        "int8dq": Int8DynamicActivationInt8WeightConfig(),
        "intx4wo-g32": down_per_axis(lambda g: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=g)),
        "intx3wo-g32-asym": down_per_axis(lambda g: IntxWeightOnlyConfig(weight_dtype=torch.int3, granularity=g,
                                                                          mapping_type=MappingType.ASYMMETRIC)),
        "8da4w": down_per_axis(lambda g: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                                weight_granularity=g)),
    }


def tensor_cases():
    from torchao.prototype.mx_formats import MXDynamicActivationMXWeightConfig, NVFP4DynamicActivationNVFP4WeightConfig
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import MXTensor, QuantizeTensorToMXKwargs
    from torchao.prototype.mx_formats.nvfp4_tensor import (NVFP4Tensor, QuantizeTensorToNVFP4Kwargs,
                                                           per_tensor_amax_to_scale)
    from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Float8Tensor, Int4Tensor,
                                      Int4WeightOnlyConfig, PerRow, PerTensor)
    from torchao.quantization.quantize_.workflows import QuantizeTensorToFloat8Kwargs

    def fp8(gran):
        return lambda w: Float8Tensor.from_hp(w, granularity=gran, act_quant_kwargs=QuantizeTensorToFloat8Kwargs(granularity=gran))

    def mx(dtype):
        kw = QuantizeTensorToMXKwargs(elem_dtype=dtype, block_size=32, scaling_mode=ScaleCalculationMode.RCEIL,
                                      is_swizzled_scales=True)
        return lambda w: (MXTensor.to_mx(w, dtype, 32, scaling_mode=ScaleCalculationMode.RCEIL, act_quant_kwargs=kw,
                                         is_swizzled_scales=True) if w.shape[1] % 32 == 0 else None)

    def nvfp4(w):
        if w.shape[1] % 16:
            return None
        kw = QuantizeTensorToNVFP4Kwargs(use_dynamic_per_tensor_scale=True, is_swizzled_scales=True)
        return NVFP4Tensor.to_nvfp4(w, per_tensor_scale=per_tensor_amax_to_scale(w.abs().max()),
                                    is_swizzled_scales=True, act_quant_kwargs=kw)

    def int4(g):
        def f(w):
            k = w.shape[1]
            gs = g if k % g == 0 else k
            x = w.reshape(-1, gs).float()
            mx_, mn = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
            s = (mx_ - mn).clamp(min=1e-6) / 15
            z = mn + s * 8
            q = (x.sub(mn).div(s).round().clamp_(0, 15) - 8).to(torch.int8).reshape(w.shape)
            packed = torch.bitwise_or(torch.bitwise_and(q[:, ::2], 0xF), torch.bitwise_left_shift(q[:, 1::2], 4))
            return Int4Tensor(packed.contiguous(), s.view(w.shape[0], -1).t().contiguous(),
                              z.view(w.shape[0], -1).t().contiguous(), [1, gs], list(w.shape),
                              activation_dtype=torch.bfloat16)
        return f

    return {
        "fp8dq-row": (fp8(PerRow()), Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())),
        "fp8dq-tensor": (fp8(PerTensor()), Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor())),
        "int4wo-g32": (int4(32), Int4WeightOnlyConfig(group_size=32)),
        "mxfp8": (mx(torch.float8_e4m3fn), MXDynamicActivationMXWeightConfig()),
        "mxfp4": (mx(torch.float4_e2m1fn_x2), MXDynamicActivationMXWeightConfig(
            activation_dtype=torch.float4_e2m1fn_x2, weight_dtype=torch.float4_e2m1fn_x2)),
        "nvfp4": (nvfp4, NVFP4DynamicActivationNVFP4WeightConfig()),
    }


def save_like_transformers(model, out, make, config):
    from safetensors.torch import save_file
    from torchao.core.config import config_to_dict
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    sd = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        mod = name.rsplit(".", 1)[0]
        q = make(t) if name.endswith(".weight") and t.dim() == 2 and "embed" not in mod and "lm_head" not in mod else None
        sd[name] = q if q is not None else t.contiguous()
    tensors, metadata = flatten_tensor_state_dict(sd)
    metadata["format"] = "pt"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata=metadata)
    cfg = model.config.to_dict()
    cfg["quantization_config"] = {"include_input_output_embeddings": False, "modules_to_not_convert": None,
                                  "quant_method": "torchao", "quant_type": {"default": config_to_dict(config)},
                                  "untie_embedding_weights": False}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)], sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ao", default=str(ROOT / "build/ao"))
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoModelForCausalLM, TorchAoConfig
    from transformers.utils import logging
    logging.set_verbosity_error()
    work = Path(a.work or tempfile.mkdtemp(prefix="ao_interop_"))
    base = work / "base"
    model = stories_hf_model()
    model.save_pretrained(str(base))
    print("| config | written by | TorchAO type | weights | ao load | dequant max rel diff | linear rel err |")
    print("|---|---|---|---:|---|---:|---|")
    ok = True

    def check(name, how, out, linears):
        nonlocal ok
        try:
            run([a.ao, "info", out, "--no-tensors", "--dump-dequantized", work / f"{name}.ours.safetensors"])
        except RuntimeError as e:
            print(f"| {name} | {how} | | | FAILED: {str(e).splitlines()[-1][:150]} | | |")
            ok = False
            return
        qlin = [(n, m) for n, m in linears if type(m.weight).__name__ != "Parameter"]
        types = sorted({type(m.weight).__name__ for _, m in qlin})
        n, deq, lin = compare_with_ours(qlin, work / f"{name}.ours.safetensors")
        ok &= deq <= 1e-6
        print(f"| {name} | {how} | {', '.join(types)} | {n} | ok | {deq:.1e} | {lin} |")

    for name, cfg in transformers_cases().items():
        out = work / name
        qm = AutoModelForCausalLM.from_pretrained(str(base), quantization_config=TorchAoConfig(quant_type=cfg),
                                                  dtype=torch.float32)
        qm.save_pretrained(str(out), safe_serialization=True)
        check(name, "transformers", out, [(n, m) for n, m in qm.named_modules() if isinstance(m, torch.nn.Linear)])
    for name, (make, cfg) in tensor_cases().items():
        out = work / name
        linears, sd = save_like_transformers(model, out, make, cfg)
        holders = []
        for n, _ in linears:
            w = sd.get(n + ".weight")
            if w is not None and not type(w) is torch.Tensor:
                holder = torch.nn.Linear(1, 1)
                holder.weight = torch.nn.Parameter(w, requires_grad=False)
                holders.append((n, holder))
        check(name, "TorchAO tensors", out, holders)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
