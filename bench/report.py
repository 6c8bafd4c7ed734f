"""report.py - turns the raw measurements of scripts/bench.sh into the
Markdown table of build/bench/results.md.

    report.py RESULTS_DIR QUICK

Ratios are layerlens / peer for rates (words/s, GFLOP/s) and peer /
layerlens for times (latency, wall time), so > 1 always means layerlens is
faster.  The sgemm bound of a workload is its FLOPs divided by the
cblas_sgemm rate measured in the same run on the model's own GEMM shapes
(two threads each running single-threaded OpenBLAS at about 256 rows on one
layer's weights, hot in cache: the first row of workload 5)."""
import glob
import json
import os
import platform
import re
import sys


def load(res, name):
    p = os.path.join(res, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        txt = f.read().strip()
    if name.endswith(".json"):
        return json.loads(txt) if txt else None
    return txt


def metric_sums(text, name, model):
    """sum and count of a histogram in the server's /metrics text."""
    out = {}
    for kind in ("sum", "count"):
        m = re.search(r'^%s_%s\{model="%s"\} ([0-9.e+-]+)$' % (name, kind, model), text or "", re.M)
        out[kind] = float(m.group(1)) if m else 0.0
    return out


def batch_stats(res, run, model):
    """Mean sequences and tokens per forward pass during one HTTP workload."""
    before, after = load(res, run + ".metrics-before"), load(res, run + ".metrics-after")
    if before is None or after is None:
        return None
    r = {}
    for key, name in (("seqs", "layerlens_batch_sequences"), ("tokens", "layerlens_batch_tokens")):
        a, b = metric_sums(after, name, model), metric_sums(before, name, model)
        n = a["count"] - b["count"]
        r[key] = (a["sum"] - b["sum"]) / n if n else float("nan")
        r["passes"] = n
    return r


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v != v:
        return "n/a"
    return f"{v:,.{nd}f}"


def ratio(a, b):
    ok = all(isinstance(v, (int, float)) and v for v in (a, b))
    return f"{a / b:.2f}x" if ok else "-"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pct(v):
    return "-" if v is None else "0" if v == 0 else f"{100 * v:.2f}%"


def bf16_section(res, models, p):
    """float32 and bf16 weights on the same batches, and how far bf16 moves
    the hidden states (llbench deviation)."""
    p("## bf16 weights (--dtype bf16), in-process, same run")
    p("")
    if load(res, "bf16-native.txt") == "0":
        p("Not run: this build or CPU has no AVX512-BF16 (the portable bf16 code is not worth timing).")
        p("")
        return
    p("Products with weights in bfloat16 (AVX512-BF16, float32 sums), everything else float32; "
      "timed right after the float32 runs on the same batches (llbench forward). "
      "Speed-up > 1 means bf16 is faster.")
    p("")
    p("| input | model | float32 | bf16 | speed-up |")
    p("| --- | --- | ---: | ---: | ---: |")
    for wl, unit in (("words", "words/s"), ("sentences", "sentences/s")):
        for m in models:
            f = (load(res, f"engine-b64-{m}-{wl}.json") or {}).get("seqs_per_s")
            b = (load(res, f"engine-b64-bf16-{m}-{wl}.json") or {}).get("seqs_per_s", "not run")
            p(f"| {wl}, batch 64 ({unit}) | {m} | {fmt(f)} | {fmt(b)} | {ratio(b, f)} |")
    for m in models:
        f = (load(res, f"engine-b1-{m}.json") or {}).get("p50_ms")
        b = (load(res, f"engine-b1-bf16-{m}.json") or {}).get("p50_ms", "not run")
        p(f"| one word, batch 1, p50 (ms) | {m} | {fmt(f, 2)} | {fmt(b, 2)} | {ratio(f, b)} |")
    p("")
    devs = {(m, wl): load(res, f"bf16-deviation-{m}-{wl}.json") for m in models for wl in ("words", "sentences")}
    some = next((d for d in devs.values() if d), None)
    if not some:
        p("Deviation from float32: not run.")
        p("")
        return
    n = len(some["layers"])
    p("Deviation of the hidden states from float32, per layer (0 = embeddings, float32 in both; "
      "CLIP's projected embedding last): RMS of bf16 - f32 relative to the RMS of f32, and "
      "max |bf16 - f32| relative to max |f32|, over every position of the first sequences of the input.")
    p("")
    p("| model, input (sequences) | measure | " + " | ".join(str(i) for i in range(n)) + " | projected |")
    p("| --- | --- |" + " ---: |" * (n + 1))
    for (m, wl), d in devs.items():
        if not d:
            p(f"| {m}, {wl} | not run |" + " |" * (n + 1))
            continue
        rows = d["layers"] + ([d["projected"]] if d.get("projected") else [])
        cells = [[pct(r["rel_rms"]) for r in rows],
                 [pct(r["max_abs_diff"] / r["max_abs_f32"] if r["max_abs_f32"] else None) for r in rows]]
        for label, c in zip(("relative RMS", "max diff / max f32"), cells):
            c += ["-"] * (n + 1 - len(c))
            p(f"| {m}, {wl} ({d['sequences']}) | {label} | " + " | ".join(c) + " |")
    p("")


def main():
    res, quick = sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "1"
    models = ["gpt2", "clip"]
    flops = {(m, w): load(res, f"flops-{m}-{w}.json") for m in models for w in ("words", "sentences", "stsb")}
    w5 = {(m, c): load(res, f"w5-{m}-{c}.json") for m in models for c in ("2x1", "1x2")}
    sgemm = {}
    for m in models:
        rows = (w5[(m, "2x1")] or {}).get("rows") or []
        # the stricter of the two rates: one layer's weights, hot in cache
        sgemm[m] = (rows[0].get("sgemm_hot_gflops") or rows[0]["sgemm_gflops"]) if rows else None
    out = []
    p = out.append
    p("# layerlens benchmark" + (" (QUICK MODE: brief runs, not the benchmark)" if quick else ""))
    p("")
    p(f"Machine: {cpu_name()}, {os.cpu_count()} cores. "
      f"Peers: PyTorch {((load(res, 'torch-b64-gpt2-words.json') or {}).get('torch', '-'))}, "
      f"ONNX Runtime {((load(res, 'ort-b64-gpt2-words.json') or {}).get('ort', '-'))} (Node), "
      f"2 threads each; layerlens: server defaults (2 workers sharing the 2 cores: a pass alone "
      f"uses both, concurrent passes one each), products with weights in its own kernel "
      f"(src/gemm.c), OpenBLAS for attention only. "
      f"OpenBLAS kernels (layerlens's attention, PyTorch): {load(res, 'openblas-core.txt') or '-'}.")
    lb, la = load(res, "load-before.txt"), load(res, "load-after.txt")
    if lb:
        p(f"Load before timing: `{lb.splitlines()[0].strip()}`")
    if la:
        p(f"Load after: `{la.splitlines()[0].strip()}`")
    p("")
    p("Full-size random checkpoints (GPT-2 124M, CLIP ViT-B/32 text), float32; all runs use the "
      "token ids layerlens produced. Ratios > 1 mean layerlens is faster. "
      "Bound = the workload's FLOPs at the same-run sgemm rate on the model's shapes "
      "(2 threads x 1, 256 rows, one layer's weights hot in cache). For workloads 1 and 2 it is "
      "measured next to the workload: the requests are sent in rounds, with sgemm timed before, "
      "between and after them (the rate in brackets; the range is the rounds', each against the "
      "mean of the sgemm just before and after it). Elsewhere it is workload 5's first row "
      f"(GPT-2 shapes {fmt(sgemm['gpt2'])} GFLOP/s, CLIP shapes {fmt(sgemm['clip'])} GFLOP/s). "
      "Workload 5 shows two sgemm "
      "rates: with the model's 12 layers of distinct weights, coming from memory as in a "
      "forward pass, and with one layer's, hot in cache. Its engine and 12-layer sgemm are "
      "timed in turns (rounds); the first figure is the median of the rounds' ratios, which a "
      "slow spell of the host in one round does not move, then their range, then the ratio of "
      "the totals.")
    p("")
    p("| workload | model | layerlens | ONNX Runtime | PyTorch | vs ORT | vs PyTorch | % of sgemm bound |")
    p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def rate_row(label, m, wl, http_name, unit):
        h = load(res, f"{http_name}.json")
        ll = h.get("rps") if h else None
        if h and h.get("failed"):
            ll = f"failed ({h['why']})"
        o = (load(res, f"ort-b64-{m}-{wl}.json") or {}).get("seqs_per_s")
        t = (load(res, f"torch-b64-{m}-{wl}.json") or {}).get("seqs_per_s")
        fl = flops[(m, wl)]
        bound, detail = None, ""
        rate = (h or {}).get("sgemm_hot_gflops") or sgemm[m]
        rounds = (h or {}).get("rounds_rps") or []
        if isinstance(ll, float) and fl and rate:
            per_seq = (fl["linear_flops"] + fl["attention_flops"]) / fl["sequences"]
            bound = 100.0 * ll * per_seq / (rate * 1e9)
            sg = h.get("sgemm_rounds")
            if sg and len(sg) == len(rounds) + 1:
                per = [100.0 * x * per_seq / ((sg[i] + sg[i + 1]) / 2 * 1e9) for i, x in enumerate(rounds)]
                detail = f" ({min(per):.0f}-{max(per):.0f}; {fmt(rate)})" if len(per) > 1 else f" ({fmt(rate)})"
        rr_txt = f" ({min(rounds):.0f}-{max(rounds):.0f})" if len(rounds) > 1 else ""
        p(f"| {label} ({unit}) | {m} | {fmt(ll)}{rr_txt} | {fmt(o)} | {fmt(t)} | {ratio(ll, o)} | "
          f"{ratio(ll, t)} | {fmt(bound, 0) + '%' + detail if bound else '-'} |")

    for m in models:
        rate_row("1. words, HTTP, 32 clients", m, "words", f"w1-words-{m}", "words/s")
    for m in models:
        rate_row("2. STS-B sentences, HTTP, 32 clients", m, "sentences", f"w2-sentences-{m}", "sentences/s")

    # workload 3
    ev = load(res, "w3-evaluate.json") or {}
    ort3 = [load(res, f"ort-b64-{m}-stsb.json") for m in models]
    pt3 = [load(res, f"torch-b64-{m}-stsb.json") for m in models]
    en3 = [load(res, f"engine-b64-{m}-stsb.json") for m in models]
    o3 = sum(r["seconds"] for r in ort3) if all(ort3) else None
    t3 = sum(r["seconds"] for r in pt3) if all(pt3) else None
    n3 = (flops[("gpt2", "stsb")] or {}).get("sequences", "-")
    label = f"3. STS-B test evaluation, both models, all layers ({n3} sentences; s)"
    if ev.get("available"):
        l3 = ev["cold_ms"] / 1e3
        p(f"| {label}, /v1/evaluate (cached repeat: {ev['warm_ms'] / 1e3:.2f} s) | both | {fmt(l3, 2)} | "
          f"{fmt(o3, 2)} | {fmt(t3, 2)} | {ratio(o3, l3)} | {ratio(t3, l3)} | |")
    else:
        p(f"| {label}, /v1/evaluate | both | not available (HTTP {ev.get('status', '-')}) | "
          f"{fmt(o3, 2)} | {fmt(t3, 2)} | | | |")
    cli = load(res, "w3-eval-cli.json")
    if cli:
        l3 = cli["ms"] / 1e3
        p(f"| {label}, `layerlens eval` in-process | both | {fmt(l3, 2)} | {fmt(o3, 2)} | {fmt(t3, 2)} | "
          f"{ratio(o3, l3)} | {ratio(t3, l3)} | |")
    if all(en3):
        l3 = sum(r["seconds"] for r in en3)
        p(f"| {label}, forward passes only (llbench, batches of 64) | both | {fmt(l3, 2)} | {fmt(o3, 2)} | "
          f"{fmt(t3, 2)} | {ratio(o3, l3)} | {ratio(t3, l3)} | |")

    # workload 4
    for m in models:
        h = load(res, f"w4-latency-{m}.json")
        o = load(res, f"ort-b1-{m}.json")
        t = load(res, f"torch-b1-{m}.json")
        for q in ("p50", "p99"):
            lv, ov, tv = (h or {}).get(q + "_ms"), (o or {}).get(q + "_ms"), (t or {}).get(q + "_ms")
            if h and h.get("failed"):
                lv = f"failed ({h['why']})"
            p(f"| 4. one word, 1 client, {q} latency (ms) | {m} | {fmt(lv, 2)} | {fmt(ov, 2)} | "
              f"{fmt(tv, 2)} | {ratio(ov, lv)} | {ratio(tv, lv)} | |")

    # workload 5
    for m in models:
        for conf, label in (("2x1", "2 workers x 1 thread"), ("1x2", "1 pass x 2 threads")):
            for r in (w5[(m, conf)] or {}).get("rows", []):
                rounds = (f"{fmt(100 * r['round_ratio_median'], 0)}% (rounds "
                          f"{fmt(100 * r['round_ratio_min'], 0)}-{fmt(100 * r['round_ratio_max'], 0)}%; "
                          f"totals {fmt(100 * r['gflops'] / r['sgemm_gflops'], 0)}% of "
                          f"{fmt(r['sgemm_gflops'])}, 12 layers)")
                p(f"| 5. engine, {r['batch_tokens']}-token packed batches, {label} (GFLOP/s) | {m} | "
                  f"{fmt(r['gflops'])} | | | | | {rounds}; "
                  + (f"{fmt(100 * r['gflops'] / r['sgemm_hot_gflops'], 0)}% of "
                     f"{fmt(r['sgemm_hot_gflops'])} (hot)" if r.get("sgemm_hot_gflops") else "-")
                  + " |")
    p("")

    # in-process comparison (no HTTP): what the engine does on the peers' batches
    p("## Same batches in-process (no HTTP): layerlens packs each batch of 64, the peers pad it")
    p("")
    p("| input | model | layerlens | ONNX Runtime | PyTorch | vs ORT | vs PyTorch | padding of the peers |")
    p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for wl, unit in (("words", "words/s"), ("sentences", "sentences/s"), ("stsb", "sentences/s")):
        for m in models:
            e = (load(res, f"engine-b64-{m}-{wl}.json") or {}).get("seqs_per_s")
            o = load(res, f"ort-b64-{m}-{wl}.json") or {}
            t = (load(res, f"torch-b64-{m}-{wl}.json") or {}).get("seqs_per_s")
            pad = (f"{o['padded_tokens'] / o['tokens']:.2f}x tokens" if o.get("tokens") else "-")
            p(f"| {wl} ({unit}) | {m} | {fmt(e)} | {fmt(o.get('seqs_per_s'))} | {fmt(t)} | "
              f"{ratio(e, o.get('seqs_per_s'))} | {ratio(e, t)} | {pad} |")
    for m in models:
        e = load(res, f"engine-b1-{m}.json") or {}
        p(f"| one word, batch 1, p50 / p99 (ms) | {m} | {fmt(e.get('p50_ms'), 2)} / {fmt(e.get('p99_ms'), 2)} "
          f"| | | | | |")
    p("")

    bf16_section(res, models, p)

    # service facts
    p("## Service")
    p("")
    log = ""
    logp = os.path.join(os.path.dirname(res), "server.log")
    if os.path.exists(logp):
        log = open(logp).read()
    wmib = sum(float(x) for x in re.findall(r"([0-9.]+) MiB of (?:[a-z0-9]+ )?weights", log)[:2])
    rss0, rss1, ready = load(res, "rss-loaded-kb.txt"), load(res, "rss-after-kb.txt"), load(res, "ready-ms.txt")
    limit = 1.1 * wmib + 100 if wmib else None
    p("| measure | value | target |")
    p("| --- | ---: | ---: |")
    p(f"| start to /readyz (both models) | {fmt(float(ready), 0) if ready else '-'} ms | <= 2000 ms |")
    p(f"| weights loaded (server log) | {fmt(wmib)} MiB | |")
    p(f"| resident memory, models loaded | {fmt(int(rss0) / 1024) if rss0 else '-'} MiB | <= {fmt(limit)} MiB |")
    rss_mid = load(res, "rss-before-eval-kb.txt")
    p(f"| resident memory, after workloads 1, 2 and 4 | {fmt(int(rss_mid) / 1024) if rss_mid else '-'} MiB | "
      f"<= {fmt(limit)} MiB |")
    p(f"| resident memory, after workload 3 too (holds the evaluation's vector cache) | "
      f"{fmt(int(rss1) / 1024) if rss1 else '-'} MiB | <= {fmt(limit)} MiB |")
    for m in models:
        a, b = load(res, f"w1-words-{m}.json"), load(res, f"w1-words-all-layers-{m}.json")
        if a and b and not a.get("failed") and not b.get("failed"):
            p(f"| {m}: every layer as JSON (13 vectors/word) vs default embedding | "
              f"{fmt(b['rps'])} vs {fmt(a['rps'])} words/s ({fmt(b['resp_bytes_mean'] / 1024)} vs "
              f"{fmt(a['resp_bytes_mean'] / 1024)} KiB/response) | |")
    for run, m in [(f"w1-words-{m}", m) for m in models] + [(f"w2-sentences-{m}", m) for m in models]:
        bs, h = batch_stats(res, run, m), load(res, f"{run}.json")
        if bs and h and not h.get("failed"):
            p(f"| {run}: forward passes, mean sequences / tokens per pass, p50 / p99 latency | "
              f"{int(bs['passes'])}, {fmt(bs['seqs'])} / {fmt(bs['tokens'])}, "
              f"{fmt(h['p50_ms'])} / {fmt(h['p99_ms'])} ms (load generator CPU {fmt(h['client_cpu_s'], 2)} s) | |")
    p("")

    # accounting
    p("## FLOP accounting (from the shapes)")
    p("")
    p("Per token and block: 2 (C*3C + C*C + C*F + F*C) for the four linear layers and 4*T*C for "
      "attention (q k^T and P v over the full T x T square); 12 blocks. GPT-2 124M (C=768, F=3072): "
      "169.9 MFLOP/token + 36.9 kFLOP x T; CLIP text (C=512, F=2048): 75.5 MFLOP/token + 24.6 kFLOP x T.")
    p("")
    p("| input | model | sequences | tokens | mean tokens | MFLOP/token |")
    p("| --- | --- | ---: | ---: | ---: | ---: |")
    for (m, wl), fl in flops.items():
        if fl:
            p(f"| {wl} | {m} | {fl['sequences']} | {fl['tokens']} | {fl['tokens'] / fl['sequences']:.2f} | "
              f"{fl['flops_per_token'] / 1e6:.1f} |")
    p("")
    for m in models:
        for peer in ("torch", "ort"):
            v = load(res, f"verify-{peer}-{m}.json")
            if v:
                p(f"- {peer} {m}: max |difference| to layerlens over every hidden state of "
                  f"{v['sequences']} inputs (one padded batch): {v['max_abs_diff']:.2g}")
    died = sorted(os.path.basename(f)[:-len(".server-died.log")]
                  for f in glob.glob(os.path.join(res, "*.server-died.log")))
    if died:
        p("")
        p(f"**The server died during: {', '.join(died)}** (logs: results/<workload>.server-died.log); "
          "it was restarted for the workloads after.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
