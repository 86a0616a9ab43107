"""Do the cache's answers change with its implementation? First-token KL between two versions of the cache.

The cache code of an earlier commit (`--base`, default: the one before issue 18's speed-ups) is
extracted with `git archive` into a temporary folder and run in a subprocess whose `streamer` package is
that copy; this tree runs in another. Both stream the same retrieval prompts (`retrieval_task.py`, a
timestamped log of `--lines` lines, about 17 tokens each) in chunks of 256 tokens through
SmolLM2-135M-Instruct with each policy and merge mode at each budget, then ask the question and save
the log-probabilities of the first answer token. Reported per configuration, mean over prompts:
KL(base || new) (how much the change moved the answer), beside KL(full || base), the distance of the
bounded cache from the full cache (the scale that "within noise" is measured against), and whether
both pick the same first token. `--base tree` runs this tree on both sides, so that `--new-options`
(WindowConfig settings of the new side only, e.g. `max_gap=None`) is what differs.

    .venv/bin/python bench/kv_equivalence.py [--base COMMIT|tree] [--new-options KEY=VALUE ...] [--prompts 2]
                                             [--lines 150] [--budgets 1024 2048]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

CONFIGS = ["sink-recent", "saddle", "text-prior/pivot", "combined/none", "combined/average", "combined/pivot",
           "combined/weighted"]
BASE = "d3cb9f2"  # main before issue 18's compression changes


def side(args: dict) -> None:
    """Runs in the subprocess: every config on every prompt, first-token log-probs to args['out']."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from retrieval_task import make_prompt
    from streamer.kv_window import KVWindowCache, WindowConfig, use_window_attention

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(args["model_dir"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args["model_dir"])
    use_window_attention(model)
    out = {}
    with torch.no_grad():
        for seed in range(args["prompts"]):
            p = make_prompt(1000 + seed, args["lines"])
            ctx = torch.tensor([tok(p["context"], add_special_tokens=False)["input_ids"]])
            q = torch.tensor([tok(p["question"], add_special_tokens=False)["input_ids"]])
            runs = [("full", None)] if args["full"] else []
            runs += [(f"{c}@{b}", (c, b)) for b in args["budgets"] for c in args["configs"]]
            for label, spec in runs:
                if spec is None:
                    cache = DynamicCache()
                else:
                    policy, _, merge = spec[0].partition("/")
                    cache = KVWindowCache(model.config, WindowConfig(policy=policy, budget=spec[1], merge=merge or None,
                                                                     **args["options"]))
                for piece in ctx.split(256, dim=1):
                    model(input_ids=piece, past_key_values=cache, use_cache=True, logits_to_keep=1)
                logits = model(input_ids=q, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
                out[f"{seed}/{label}"] = logits[0, -1].float().log_softmax(-1)
                print(f"{args['name']} prompt {seed} {label}", flush=True)
    torch.save(out, args["out"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=BASE, help="commit whose streamer/ is the base, or 'tree' (this tree)")
    ap.add_argument("--new-options", nargs="*", default=[], metavar="KEY=VALUE",
                    help="WindowConfig settings of the new side only (values are Python literals: 512, None)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--lines", type=int, default=150)
    ap.add_argument("--budgets", type=int, nargs="*", default=[1024, 2048])
    ap.add_argument("--exact-merge-base", action="store_true",
                    help="base = this tree with merge_window=None (every kept key), to isolate the merge window")
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--name", default="kv_equivalence")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side(json.loads(args.side))

    import common  # the parent only: it imports this tree's streamer

    from streamer.models.smollm2_tokenizer import cache_root

    common.setup(1)
    started = common.machine()
    common.load_lm()  # makes sure the float32 checkpoint is cached
    model_dir = str(cache_root() / "bench-smollm2-135m-instruct")
    tmp = Path(tempfile.mkdtemp(prefix="kv_base_"))
    if args.exact_merge_base:
        base_root, base = common.ROOT, "this tree, merge_window=None"
    elif args.base == "tree":
        base_root, base = common.ROOT, "this tree"
    else:
        base_root, base = tmp / "tree", args.base
    if base_root != common.ROOT:
        archive = subprocess.run(["git", "archive", args.base, "streamer"], cwd=common.ROOT, check=True,
                                 capture_output=True).stdout
        (tmp / "base.tar").write_bytes(archive)
        with tarfile.open(tmp / "base.tar") as tar:
            tar.extractall(base_root, filter="data")
    procs = {}
    options = {"base": {"merge_window": None} if args.exact_merge_base else {},
               "new": {k: ast.literal_eval(v) for k, _, v in (o.partition("=") for o in args.new_options)}}
    for name, root in (("base", base_root), ("new", common.ROOT)):
        job = {"name": name, "model_dir": model_dir, "prompts": args.prompts, "lines": args.lines,
               "budgets": args.budgets, "full": name == "base", "out": str(tmp / f"{name}.pt"),
               "options": options[name], "configs": args.configs}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(common.ROOT / "bench")])}
        procs[name] = subprocess.Popen([sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[2:4]; "
                                        "import kv_equivalence as k, json; k.side(json.loads(sys.argv[1]))",
                                        json.dumps(job), str(root), str(common.ROOT / "bench")],
                                       env=env, cwd=tmp)
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise RuntimeError(f"{name} side failed")
    old, new = torch.load(tmp / "base.pt"), torch.load(tmp / "new.pt")

    def kl(p, q):
        return float((p.exp() * (p - q)).sum())

    rows = {}
    for b in args.budgets:
        for c in args.configs:
            label = f"{c}@{b}"
            pairs = [(old[f"{s}/full"], old[f"{s}/{label}"], new[f"{s}/{label}"]) for s in range(args.prompts)]
            rows[label] = {
                "kl_base_new": sum(kl(o, n) for _, o, n in pairs) / len(pairs),
                "kl_full_base": sum(kl(f, o) for f, o, _ in pairs) / len(pairs),
                "kl_full_new": sum(kl(f, n) for f, _, n in pairs) / len(pairs),
                "same_top1": sum(int(o.argmax() == n.argmax()) for _, o, n in pairs) / len(pairs),
            }
            r = rows[label]
            print(f"{label:24s} KL(base||new) {r['kl_base_new']:.5f}  KL(full||base) {r['kl_full_base']:.4f}  "
                  f"KL(full||new) {r['kl_full_new']:.4f}  same first token {r['same_top1']:.2f}")
    common.write_json(args.name, {"settings": {"base": base, "new_options": args.new_options, "prompts": args.prompts, "lines": args.lines,
                                                      "budgets": args.budgets, "chunk": 256}, "results": rows}, started)


if __name__ == "__main__":
    main()
