#!/usr/bin/env python3
"""LoRA adapters (model/io/lora.h) end to end, through `paliflow golden`:

base checkpoint + adapter merged by paliflow at load == the checkpoint merged offline (W + scale * B @ A,
computed here in Python doubles, independently of the C code), at fp32 within the golden case's fp32
tolerances, on the fp32 reference and on the engine. The offline-merged checkpoint's outputs come from the
golden runner itself (`--dump`), and become the expected outputs of a case that runs the BASE checkpoint
with `--adapter`. Then every refusal: DoRA, regex target_modules, a module outside target_modules, a base
weight the checkpoint lacks, shape mismatches, an A without its B, a non-LoRA tensor.

Python standard library only (safetensors written with struct/json).
usage: lora_check.py PALIFLOW GOLDEN_DIR WORK_DIR
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys

PREFIX = "base_model.model."


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], data[b:e])
    return tensors


def to_floats(dtype, raw):
    if dtype == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if dtype == "F16":
        return list(struct.unpack("<%de" % (len(raw) // 2), raw))
    if dtype == "BF16":
        u = struct.unpack("<%dH" % (len(raw) // 2), raw)
        return list(struct.unpack("<%df" % len(u), struct.pack("<%dI" % len(u), *[x << 16 for x in u])))
    raise ValueError(dtype)


def write_st(path, tensors):
    """tensors: name -> (dtype, shape, raw bytes)"""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def load_base(ckpt_dir):
    tensors = {}
    for fn in sorted(os.listdir(ckpt_dir)):
        if fn.endswith(".safetensors"):
            tensors.update(read_st(os.path.join(ckpt_dir, fn)))
    return tensors


def v1_name(name):
    """transformers >= 4.52 spelling -> 4.47's (the golden checkpoints' base names are either)."""
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name.startswith("model."):
        return name[len("model."):]
    return name


def make_adapter(out_dir, base, modules, r, alpha, rslora, seed, extra_config=None, spell=None):
    """modules: base weight names without '.weight' (as stored); spell(module) -> adapter's spelling.
    Returns {base weight name: merged floats} computed in doubles."""
    rng = random.Random(seed)
    scale = alpha / math.sqrt(r) if rslora else alpha / r
    ad, merged = {}, {}
    for mod in modules:
        dtype, shape, raw = base[mod + ".weight"]
        n_out, n_in = shape
        a = [rng.uniform(-1, 1) * 0.5 / math.sqrt(n_in) for _ in range(r * n_in)]
        b = [rng.uniform(-1, 1) * 0.5 for _ in range(n_out * r)]
        a = list(struct.unpack("<%df" % len(a), f32(a)))  # the values the file holds
        b = list(struct.unpack("<%df" % len(b), f32(b)))
        name = spell(mod) if spell else mod
        ad[PREFIX + name + ".lora_A.weight"] = ("F32", [r, n_in], f32(a))
        ad[PREFIX + name + ".lora_B.weight"] = ("F32", [n_out, r], f32(b))
        w = to_floats(dtype, raw)
        m = []
        for o in range(n_out):
            for i in range(n_in):
                m.append(w[o * n_in + i] + scale * sum(b[o * r + j] * a[j * n_in + i] for j in range(r)))
        merged[mod + ".weight"] = m
    targets = sorted({m.split(".")[-1] for m in modules})
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "use_rslora": rslora,
           "use_dora": False, "fan_in_fan_out": False, "bias": "none", "modules_to_save": None,
           "rank_pattern": {}, "alpha_pattern": {}, "task_type": "CAUSAL_LM",
           "base_model_name_or_path": "test"}
    if extra_config:
        cfg.update(extra_config)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)
    write_st(os.path.join(out_dir, "adapter_model.safetensors"), ad)
    return merged


def make_case(case_src, out_dir, ckpt_dir, expected):
    """A case directory running ckpt_dir, forward outputs only (greedy ids of a random tiny model flip on
    1e-6 logit differences; logits at every position are the stronger check)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(case_src, "case.json")) as f:
        case = json.load(f)
    case["checkpoint"] = "checkpoint"
    case["ops"] = {k: v for k, v in case["ops"].items() if k != "generate"}
    case["required_outputs"] = [o for o in case["required_outputs"] if o != "generated_ids"]
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump(case, f)
    for name, target in (("inputs.safetensors", os.path.join(case_src, "inputs.safetensors")),
                         ("expected.safetensors", expected), ("checkpoint", ckpt_dir)):
        p = os.path.join(out_dir, name)
        if os.path.lexists(p):
            os.remove(p)
        os.symlink(os.path.abspath(target), p)


def run(cmd, want_rc, what):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != want_rc:
        sys.exit("FAIL %s: exit %d (want %d)\n$ %s\n%s%s" % (what, p.returncode, want_rc, " ".join(cmd),
                                                           p.stdout[-3000:], p.stderr[-3000:]))
    return p.stdout + p.stderr


def check_case(paliflow, golden, work, case_name, modules, r, alpha, rslora, spell):
    src = os.path.join(golden, "model", case_name)
    base_dir = os.path.join(src, "checkpoint")
    base = load_base(base_dir)
    adapter = os.path.join(work, case_name + "_adapter")
    merged = make_adapter(adapter, base, modules, r, alpha, rslora, seed=len(case_name), spell=spell)
    # The offline-merged checkpoint: every tensor as stored, the adapted ones as f32 W + scale B A.
    mdir = os.path.join(work, case_name + "_merged")
    os.makedirs(mdir, exist_ok=True)
    shutil.copy(os.path.join(base_dir, "config.json"), mdir)
    out = {}
    for name, (dtype, shape, raw) in base.items():
        out[name] = ("F32", shape, f32(merged[name])) if name in merged else (dtype, shape, raw)
    write_st(os.path.join(mdir, "model.safetensors"), out)
    # Its outputs through the golden runner; against the base's expected outputs it must FAIL (the adapter
    # changes the model), and the dump is written either way.
    mcase = os.path.join(work, case_name + "_merged_case")
    make_case(src, mcase, mdir, os.path.join(src, "expected.safetensors"))
    dump = os.path.join(work, case_name + "_merged_outputs.safetensors")
    run([paliflow, "golden", "--dump", dump, mcase], 1, case_name + ": merged checkpoint differs from the base")
    # The base + --adapter against those outputs, under the case's fp32 tolerances.
    lcase = os.path.join(work, case_name + "_lora_case")
    make_case(src, lcase, base_dir, dump)
    run([paliflow, "golden", lcase], 1, case_name + ": the base without the adapter must not match")
    run([paliflow, "golden", "--adapter", adapter, lcase], 0, case_name + ": reference, base + adapter")
    run([paliflow, "golden", "--backend", "engine", "--precision", "fp32", "--adapter", adapter, lcase], 0,
        case_name + ": engine fp32, base + adapter")
    print("ok %s: %d modules merged (r %d, alpha %g%s), reference and engine fp32 match the offline merge" %
          (case_name, len(modules), r, alpha, ", rsLoRA" if rslora else ""))
    return src, base, lcase


def refusals(paliflow, work, src, base, lcase):
    q = "language_model.model.layers.0.self_attn.q_proj"
    cases = [
        ("dora", [q], {"use_dora": True}, None, "use_dora is set"),
        ("regex", [q], {"target_modules": ".*q_proj"}, None, "regular expression"),
        ("not_targeted", [q], {"target_modules": ["v_proj"]}, None, "not in target_modules"),
        ("bias", [q], {"bias": "all"}, None, "bias is set"),
        ("lora_bias", [q], {"lora_bias": True}, None, "lora_bias is set"),
        ("modules_to_save", [q], {"modules_to_save": ["lm_head"]}, None, "modules_to_save is set"),
        ("rank", [q], {"r": 3}, None, "want [r=3"),
    ]
    for name, mods, extra, _, want in cases:
        d = os.path.join(work, "bad_" + name)
        make_adapter(d, base, mods, 4, 8, False, 1, extra_config=extra)
        msg = run([paliflow, "golden", "--adapter", d, lcase], 2, "refusal " + name)
        if want not in msg:
            sys.exit("FAIL refusal %s: message lacks %r:\n%s" % (name, want, msg))
    # Tensor-level problems: edit a good adapter's tensors.
    good = os.path.join(work, "bad_base")
    make_adapter(good, base, [q], 4, 8, False, 1)
    ad = read_st(os.path.join(good, "adapter_model.safetensors"))
    A, B = PREFIX + q + ".lora_A.weight", PREFIX + q + ".lora_B.weight"
    edits = [
        ("missing_base", {PREFIX + "language_model.model.layers.99.self_attn.q_proj.lora_A.weight": ad[A],
                          PREFIX + "language_model.model.layers.99.self_attn.q_proj.lora_B.weight": ad[B]},
         "has no language_model.model.layers.99.self_attn.q_proj.weight"),
        ("a_without_b", {A: ad[A]}, "no matching " + B),
        ("b_without_a", {B: ad[B]}, "no matching " + A),
        ("shape_a", {A: ("F32", [4, 3], f32([0.0] * 12)), B: ad[B]}, "tensor " + A + ": shape [4, 3]"),
        ("shape_b", {A: ad[A], B: ("F32", [3, 4], f32([0.0] * 12))}, "tensor " + B + ": shape [3, 4]"),
        ("embedding", {PREFIX + "language_model.model.embed_tokens.lora_embedding_A": ad[A]}, "not a LoRA weight"),
    ]
    for name, tensors, want in edits:
        d = os.path.join(work, "bad_" + name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(good, "adapter_config.json"), d)
        write_st(os.path.join(d, "adapter_model.safetensors"), tensors)
        msg = run([paliflow, "golden", "--adapter", d, lcase], 2, "refusal " + name)
        if want not in msg:
            sys.exit("FAIL refusal %s: message lacks %r:\n%s" % (name, want, msg))
    msg = run([paliflow, "golden", "--adapter", os.path.join(work, "no_such_adapter"), lcase], 2, "absent adapter")
    if "adapter_config.json" not in msg:
        sys.exit("FAIL absent adapter: message lacks the file name:\n" + msg)
    print("ok refusals: %d bad adapters refused by name" % (len(cases) + len(edits) + 1))


def main():
    paliflow, golden, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # v1 F32 Gemma 2 checkpoint; half the text modules spelled in the v2 layout (model.language_model.*).
    n_layers = 2
    mods = []
    for i in range(n_layers):
        for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            mods.append("language_model.model.layers.%d.%s" % (i, m))
    mods += ["vision_tower.vision_model.encoder.layers.0.mlp.fc1", "multi_modal_projector.linear"]

    def v2_spell(mod):
        if mod.startswith("language_model.model.layers.1."):
            return "model.language_model." + mod[len("language_model.model."):]
        return mod

    src, base, lcase = check_case(paliflow, golden, work, "pg2_gemma2_window", mods, 4, 8.0, False, v2_spell)
    # v2 F16 Gemma checkpoint, rsLoRA; the adapter spelled in the v1 layout.
    base2 = load_base(os.path.join(golden, "model", "new_layout_f16", "checkpoint"))
    mods2 = sorted(n[:-len(".weight")] for n in base2
                   if n.endswith((".o_proj.weight", ".gate_proj.weight", ".up_proj.weight")))
    check_case(paliflow, golden, work, "new_layout_f16", mods2, 4, 16.0, True, v1_name)
    refusals(paliflow, work, src, base, lcase)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
