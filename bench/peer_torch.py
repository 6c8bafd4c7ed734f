"""peer_torch.py - the PyTorch peer of `make bench` (Debian's python3-torch).

A small float32 implementation of GPT-2 (gelu_new, ln_f on the last hidden
state) and of the CLIP text encoder (quick_gelu, causal mask, final layer
norm, pooling at argmax(ids), text projection) that reads the same
model.safetensors files as layerlens and returns every hidden state, as
Hugging Face's output_hidden_states=True does.  The same module is exported
to ONNX for the ONNX Runtime peer (peer_ort.js).

    peer_torch.py verify --model DIR --ids FILE --dump FILE --count K
        the first K sequences, run as one right-padded batch, against the
        states layerlens wrote with `llbench dump` (must agree within 1e-4)
    peer_torch.py export --model DIR --out FILE.onnx
    peer_torch.py bench  --model DIR --ids FILE [--batch 64] [--latency K]
        every sequence of the file in right-padded batches of --batch (file
        order), or K single-sequence calls and their latency percentiles;
        prints one JSON object.

Padding goes on the right: with a causal mask the padding cannot change the
real positions, so no attention mask is needed (pad id 0, which is also
below CLIP's end token, so argmax pooling still finds the end token).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn


# ------------------------------------------------------------------ weights

def read_safetensors(path):
    """name -> float32 torch tensor (a copy), for the F32 tensors of the file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(mm, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") == "gpt2":
        return dict(arch="gpt2", C=cfg["n_embd"], L=cfg["n_layer"], NH=cfg["n_head"],
                    F=cfg.get("n_inner") or 4 * cfg["n_embd"], n_ctx=cfg["n_positions"],
                    eps=cfg.get("layer_norm_epsilon", 1e-5))
    t = cfg.get("text_config", cfg)
    return dict(arch="clip", C=t["hidden_size"], L=t["num_hidden_layers"],
                NH=t["num_attention_heads"], F=t["intermediate_size"],
                n_ctx=t.get("max_position_embeddings", 77), eps=t.get("layer_norm_eps", 1e-5),
                P=cfg.get("projection_dim", t.get("projection_dim")))


# ------------------------------------------------------------------ model

def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-LN block: x += proj(attn(ln1(x))); x += fc2(act(fc1(ln2(x))))."""

    def __init__(self, C, NH, F, eps, act):
        super().__init__()
        self.NH, self.act = NH, act
        self.ln1 = nn.LayerNorm(C, eps=eps)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=eps)
        self.fc1 = nn.Linear(C, F)
        self.fc2 = nn.Linear(F, C)

    def forward(self, x, future):
        B, T, C = x.shape
        hd = C // self.NH
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.NH, hd).transpose(1, 2)
        k = k.view(B, T, self.NH, hd).transpose(1, 2)
        v = v.view(B, T, self.NH, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(future[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TextTransformer(nn.Module):
    """GPT-2 or CLIP's text tower; forward(ids [B, T]) returns the L + 1
    hidden states [B, T, C] (GPT-2's last with ln_f, CLIP's without) and, for
    CLIP, the projected end-token embedding [B, P]."""

    def __init__(self, cfg):
        super().__init__()
        C, self.arch = cfg["C"], cfg["arch"]
        act = gelu_new if self.arch == "gpt2" else quick_gelu
        self.tok = nn.Embedding(1, C)  # resized by load()
        self.pos = nn.Embedding(cfg["n_ctx"], C)
        self.blocks = nn.ModuleList(Block(C, cfg["NH"], cfg["F"], cfg["eps"], act)
                                    for _ in range(cfg["L"]))
        self.lnf = nn.LayerNorm(C, eps=cfg["eps"])
        # True above the diagonal: the positions a token must not see
        self.register_buffer("future", torch.ones(cfg["n_ctx"], cfg["n_ctx"], dtype=torch.bool).triu(1))
        if self.arch == "clip":
            self.text_proj = nn.Linear(C, cfg["P"], bias=False)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.tok(ids) + self.pos.weight[:T]
        states = [x]
        for b in self.blocks:
            x = b(x, self.future)
            states.append(x)
        if self.arch == "gpt2":
            states[-1] = self.lnf(x)
            return tuple(states)
        pooled = self.lnf(x)[torch.arange(ids.shape[0]), ids.argmax(dim=-1)]
        return tuple(states) + (self.text_proj(pooled),)


def load(model_dir):
    cfg = read_config(model_dir)
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    m = TextTransformer(cfg)
    sd = {}
    if cfg["arch"] == "gpt2":
        p = "" if "wte.weight" in w else "transformer."
        sd["tok.weight"], sd["pos.weight"] = w[p + "wte.weight"], w[p + "wpe.weight"]
        sd["lnf.weight"], sd["lnf.bias"] = w[p + "ln_f.weight"], w[p + "ln_f.bias"]
        for i in range(cfg["L"]):
            h, b = f"{p}h.{i}.", f"blocks.{i}."
            # Conv1D weights are [in, out]; nn.Linear wants [out, in]
            for ours, theirs in [("ln1", "ln_1"), ("ln2", "ln_2")]:
                sd[b + ours + ".weight"], sd[b + ours + ".bias"] = w[h + theirs + ".weight"], w[h + theirs + ".bias"]
            for ours, theirs in [("qkv", "attn.c_attn"), ("proj", "attn.c_proj"),
                                 ("fc1", "mlp.c_fc"), ("fc2", "mlp.c_proj")]:
                sd[b + ours + ".weight"] = w[h + theirs + ".weight"].t().contiguous()
                sd[b + ours + ".bias"] = w[h + theirs + ".bias"]
    else:
        p = "text_model."
        sd["tok.weight"] = w[p + "embeddings.token_embedding.weight"]
        sd["pos.weight"] = w[p + "embeddings.position_embedding.weight"]
        sd["lnf.weight"], sd["lnf.bias"] = w[p + "final_layer_norm.weight"], w[p + "final_layer_norm.bias"]
        sd["text_proj.weight"] = w["text_projection.weight"]
        for i in range(cfg["L"]):
            h, b = f"{p}encoder.layers.{i}.", f"blocks.{i}."
            # q, k and v stacked into one [3C, C] projection (same math)
            sd[b + "qkv.weight"] = torch.cat([w[h + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            sd[b + "qkv.bias"] = torch.cat([w[h + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            for ours, theirs in [("proj", "self_attn.out_proj"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2"),
                                 ("ln1", "layer_norm1"), ("ln2", "layer_norm2")]:
                sd[b + ours + ".weight"], sd[b + ours + ".bias"] = w[h + theirs + ".weight"], w[h + theirs + ".bias"]
    m.tok = nn.Embedding(sd["tok.weight"].shape[0], cfg["C"])
    sd["future"] = m.future
    m.load_state_dict(sd, strict=True)
    return m.eval(), cfg


# ------------------------------------------------------------------ inputs

def read_ids(path):
    with open(path) as f:
        return [[int(t) for t in line.split()] for line in f if line.strip()]


def padded(seqs):
    T = max(len(s) for s in seqs)
    a = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        a[i, :len(s)] = s
    return a


def default_embedding(cfg, outs, seqs):
    """What the service returns by default: GPT-2's last layer at the last
    text token (before the trailing <|endoftext|>), CLIP's projection."""
    if cfg["arch"] == "clip":
        return outs[-1].numpy()
    last = outs[cfg["L"]]
    return np.stack([last[i, len(s) - 2].numpy() for i, s in enumerate(seqs)])


def read_dump(path, cfg, seqs):
    """llbench dump: per sequence [L+1][T][C] float32 (+ CLIP's [P])."""
    raw = np.fromfile(path, dtype="<f4")
    out, o, C, L = [], 0, cfg["C"], cfg["L"]
    for s in seqs:
        n = (L + 1) * len(s) * C
        layers = raw[o:o + n].reshape(L + 1, len(s), C)
        o += n
        proj = None
        if cfg["arch"] == "clip":
            proj = raw[o:o + cfg["P"]]
            o += cfg["P"]
        out.append((layers, proj))
    return out


# ------------------------------------------------------------------ commands

def cmd_verify(a):
    m, cfg = load(a.model)
    seqs = read_ids(a.ids)[:a.count]
    ref = read_dump(a.dump, cfg, seqs)
    with torch.inference_mode():
        outs = m(torch.from_numpy(padded(seqs)))
    worst = 0.0
    for i, s in enumerate(seqs):
        for l in range(cfg["L"] + 1):
            d = np.abs(outs[l][i, :len(s)].numpy() - ref[i][0][l]).max()
            worst = max(worst, float(d))
        if ref[i][1] is not None:
            worst = max(worst, float(np.abs(outs[-1][i].numpy() - ref[i][1]).max()))
    scale = max(float(np.abs(r[0]).max()) for r in ref)
    print(json.dumps({"peer": "pytorch", "model": cfg["arch"], "sequences": len(seqs),
                      "max_abs_diff": worst, "max_abs_state": scale}))
    if not worst <= a.tol:
        sys.exit(f"peer_torch: {cfg['arch']} states differ from layerlens by {worst:.3g} (> {a.tol})")


def cmd_export(a):
    m, cfg = load(a.model)
    n_out = cfg["L"] + 1 + (cfg["arch"] == "clip")
    names = [f"hidden_{i}" for i in range(cfg["L"] + 1)] + (["projected"] if cfg["arch"] == "clip" else [])
    axes = {"input_ids": {0: "batch", 1: "seq"}}
    for i, n in enumerate(names):
        axes[n] = {0: "batch"} if n == "projected" else {0: "batch", 1: "seq"}
    dummy = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(m, (dummy,), a.out, input_names=["input_ids"], output_names=names,
                          dynamic_axes=axes, opset_version=14, do_constant_folding=True)
    assert len(names) == n_out


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    m, cfg = load(a.model)
    seqs = read_ids(a.ids)
    res = {"peer": "pytorch", "torch": torch.__version__, "model": cfg["arch"],
           "threads": torch.get_num_threads()}
    with torch.inference_mode():
        if a.latency:
            calls = [seqs[i % len(seqs)] for i in range(a.latency)]
            for s in calls[:3]:  # warm-up
                default_embedding(cfg, m(torch.tensor([s])), [s])
            lat = []
            for s in calls:
                t0 = time.perf_counter()
                default_embedding(cfg, m(torch.tensor([s])), [s])
                lat.append(time.perf_counter() - t0)
            lat.sort()
            res.update(calls=len(lat), p50_ms=1e3 * lat[len(lat) // 2],
                       p99_ms=1e3 * lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)])
        else:
            batches = [seqs[i:i + a.batch] for i in range(0, len(seqs), a.batch)]
            default_embedding(cfg, m(torch.from_numpy(padded(batches[0]))), batches[0])  # warm-up
            t0 = time.perf_counter()
            padded_tokens = 0
            for b in batches:
                x = padded(b)
                padded_tokens += x.size
                default_embedding(cfg, m(torch.from_numpy(x)), b)
            dt = time.perf_counter() - t0
            res.update(sequences=len(seqs), batch=a.batch, seconds=dt, seqs_per_s=len(seqs) / dt,
                       tokens=sum(len(s) for s in seqs), padded_tokens=padded_tokens)
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["verify", "export", "bench"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids")
    ap.add_argument("--dump")
    ap.add_argument("--out")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--latency", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    {"verify": cmd_verify, "export": cmd_export, "bench": cmd_bench}[a.cmd](a)


if __name__ == "__main__":
    main()
