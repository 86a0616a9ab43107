"""Answer quality with a real pretrained LM: facts retrieved from a long stream of timestamped captions.

A camera log of timestamped captions ("00:12:31 a red car stops at the gate") is streamed through a
`KVWindowCache` into SmolLM2-135M-Instruct (ChatML chat template: system turn, then a user turn holding
the log), in chunks of 8 captions, each caption's tokens tagged TEXT with its video time (so the text
prior treats them as frame content, not conversation). At the end the question is fed as plain text
("What colour was the giraffe?") and the assistant turn is started with "The giraffe was", so the
next token is the answer; the most likely of the 8 colour words is the model's choice, and a short
greedy continuation is kept too. Needles are captions at
fixed depths of the stream about an object that appears nowhere else ("00:31:02 a pink giraffe
crosses the bridge" is written "00:31:02 the giraffe was pink and crossed the bridge", with a colour
no ordinary caption uses); the answer is its colour.

Scores per configuration (full cache; each bounded policy at 10%, 20%, 50% of the stream's tokens):
- accuracy: the chosen colour is the needle's (chance 1/13); p_correct: its probability among the 13
  colour words (a graded score); also whether the greedy text names it;
- KL(full || config) of the first answer token's distribution (same prompt, same stream);
- agreement: the answer equals the full cache's answer.
The stream stays within the model's 8192 positions so the full cache is a valid reference.
`--variants` runs every bench_table variant (policy x merge, AirCache options) at 5/10/20% instead
(bench/results/captions_variants[_quick].json, read by bench_table.py).
One torch thread by default. Writes bench/results/captions[_quick].json and .png.

    .venv/bin/python bench/bench_captions.py --quick          # ~1.5k-token stream, 5 needles, 10% budgets
    .venv/bin/python bench/bench_captions.py                   # ~3k-token stream, 10 needles
"""

import argparse
import copy
import random
import time

import torch

import common
from common import POLICIES
from streamer.kv_window import KVWindowCache, use_window_attention
from streamer.shared_types import Modality, format_timestamp

COLOURS = ["red", "blue", "green", "white", "black", "yellow", "grey", "orange"]
OBJECTS = ["car", "truck", "bus", "bicycle", "dog", "van", "motorcycle", "horse"]
NEEDLE_OBJECTS = ["elephant", "giraffe", "tractor", "helicopter", "camel", "penguin", "ambulance", "kangaroo",
                  "piano", "canoe", "zebra", "rocket"]  # never in the ordinary captions
NEEDLE_COLOURS = ["purple", "pink", "silver", "golden", "brown"]  # never in the ordinary captions
CHOICES = COLOURS + NEEDLE_COLOURS  # the answer is the most likely of these words
EVENTS = [("stops at the gate", "stopped at the gate"), ("turns into the parking lot", "turned into the parking lot"),
          ("passes the fountain", "passed the fountain"), ("waits by the door", "waited by the door"),
          ("crosses the bridge", "crossed the bridge"), ("parks near the tree", "parked near the tree")]
SYSTEM = "You are a helpful assistant. You answer questions about a camera log in a few words."


def make_stream(n_captions: int, n_needles: int, seed: int = 0):
    """Captions [(time_s, text)] and needles [{index, depth, time, colour, object, event}].

    A needle's object appears in no other caption (an unusual one, with an unusual colour: "the giraffe was pink")."""
    rng = random.Random(seed)
    depths = [(i + 0.5) / n_needles for i in range(n_needles)]
    needle_pairs = [(rng.choice(NEEDLE_COLOURS), o) for o in rng.sample(NEEDLE_OBJECTS, n_needles)]
    others = [(c, o) for c in COLOURS for o in OBJECTS]
    needle_at = {int(d * n_captions): k for k, d in enumerate(depths)}
    captions, needles, t = [], [], 5
    for i in range(n_captions):
        t += rng.randint(4, 30)
        ev = rng.randrange(len(EVENTS))
        if i in needle_at:
            colour, obj = needle_pairs[needle_at[i]]
            needles.append({"index": i, "depth": i / n_captions, "time": format_timestamp(t), "colour": colour,
                            "object": obj, "event": ev})
            captions.append((t, f"{format_timestamp(t)} the {obj} was {colour} and {EVENTS[ev][1]}\n"))
        else:
            colour, obj = rng.choice(others)
            captions.append((t, f"{format_timestamp(t)} a {colour} {obj} {EVENTS[ev][0]}\n"))
    return captions, needles


def question(n: dict) -> str:
    return f"What colour was the {n['object']}?"


class Stream:
    """Token ids with tags: prefix (plain text), caption chunks (TEXT + video time), question suffix."""

    def __init__(self, tokenizer, captions, chunk_captions: int = 8):
        self.tok = tokenizer
        self.prefix = self.ids(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nCamera log:\n")
        self.chunks = []
        for i in range(0, len(captions), chunk_captions):
            ids, times = [], []
            for t, text in captions[i:i + chunk_captions]:
                c = self.ids(text)
                ids += c
                times += [float(t)] * len(c)
            self.chunks.append((ids, times))
        self.n_tokens = len(self.prefix) + sum(len(c[0]) for c in self.chunks)

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def suffix(self, n: dict) -> list[int]:
        """The question turn, and the start of the answer, so the next token is the colour."""
        return self.ids(f"Question: {question(n)}<|im_end|>\n<|im_start|>assistant\nThe {n['object']} was")


@torch.no_grad()
def forward(model, cache, ids, times=None):
    n = len(ids)
    cache.tag(torch.full((n,), int(Modality.TEXT)), None if times is None else torch.tensor(times))
    out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.compress()
    return out.logits[0, -1].float()


@torch.no_grad()
def run_config(model, stream: Stream, cfg, needles, eos: int, colour_ids: list[int], max_new: int = 6) -> dict:
    cache = KVWindowCache(model.config, cfg)
    start = time.perf_counter()
    forward(model, cache, stream.prefix)
    for ids, times in stream.chunks:
        forward(model, cache, ids, times)
    ingest_s = time.perf_counter() - start
    answers = []
    for n in needles:
        c = copy.deepcopy(cache)
        logits = forward(model, c, stream.suffix(n))
        logp = torch.log_softmax(logits, -1)
        choice_logp = torch.log_softmax(logits[colour_ids], -1)  # over the colour words
        choice = CHOICES[int(choice_logp.argmax())]
        out = []
        for _ in range(max_new):
            tok = int(logits.argmax())
            if tok == eos:
                break
            out.append(tok)
            logits = forward(model, c, [tok])
        text = stream.tok.decode(out).strip()
        low = text.lower()
        answers.append({"answer": text, "logp": logp, "choice_ok": choice == n["colour"], "choice": choice,
                        "p_correct": float(choice_logp[CHOICES.index(n["colour"])].exp()),
                        "text_ok": n["colour"] in low})
    return {"answers": answers, "ingest_s": ingest_s, "kv_bytes": cache.kv_bytes(), "kv_tokens": cache.get_seq_length()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--captions", type=int, help="captions in the stream (about 12 tokens each)")
    ap.add_argument("--needles", type=int)
    ap.add_argument("--fractions", type=float, nargs="*", default=None, help="default 0.1 0.2 0.5 (quick: 0.1)")
    ap.add_argument("--policies", nargs="*", default=POLICIES)
    ap.add_argument("--variants", action="store_true",
                    help="instead: every bench_table variant at 5/10/20%% (writes captions_variants[_quick])")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    common.setup(args.threads)
    started = common.machine()
    n_captions = args.captions or (120 if args.quick else 250)
    n_needles = args.needles or (5 if args.quick else 10)
    fractions = args.fractions or ([0.1] if args.quick else [0.1, 0.2, 0.5])

    model, tokenizer = common.load_lm()
    use_window_attention(model)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    colour_ids = [tokenizer(" " + c, add_special_tokens=False)["input_ids"][0] for c in CHOICES]
    captions, needles = make_stream(n_captions, n_needles, args.seed)
    stream = Stream(tokenizer, captions)
    L = stream.n_tokens
    print(f"stream: {n_captions} captions, {L} tokens, {n_needles} needles")
    configs = [dict(label="full", policy="full", budget=None, fraction=1.0)]
    for frac in [] if args.variants else fractions:
        for p in args.policies:
            configs.append(dict(label=f"{p}@{frac:.0%}", policy=p, budget=int(L * frac), fraction=frac, variant=p))
    if args.variants:
        for frac in (0.05, 0.1, 0.2):
            for v in common.table_variants():
                configs.append(dict(label=f"{v['label']}@{frac:.0%}", policy=v["policy"], budget=int(L * frac),
                                    fraction=frac, variant=v["label"], merge=v["merge"], obs_select=v["obs_select"],
                                    layer_budget=v["layer_budget"]))
    seen, unique = set(), []
    for c in configs:  # the default-merge rows of --variants repeat some policy rows
        cfg = common.window(c["policy"], c["budget"], c.get("merge"), c.get("obs_select", "last"),
                            c.get("layer_budget", "uniform"))
        key = (cfg.policy, cfg.budget, cfg.merge, cfg.obs_select, cfg.layer_budget)
        if key not in seen:
            seen.add(key)
            unique.append((c, cfg))

    rows, full = [], None
    for c, cfg in unique:
        r = run_config(model, stream, cfg, needles, eos, colour_ids)
        if full is None:
            full = r
        kl = [float(torch.sum(f["logp"].exp() * (f["logp"] - a["logp"]))) for f, a in zip(full["answers"], r["answers"])]
        row = {**{k: v for k, v in c.items()}, "merge": cfg.merge,
               "accuracy": sum(a["choice_ok"] for a in r["answers"]) / len(needles),
               "p_correct_mean": sum(a["p_correct"] for a in r["answers"]) / len(needles),
               "accuracy_greedy_text": sum(a["text_ok"] for a in r["answers"]) / len(needles),
               "agree_with_full": sum(a["answer"] == f["answer"] for a, f in zip(r["answers"], full["answers"])) / len(needles),
               "kl_first_token_mean": sum(kl) / len(kl), "kl_first_token": kl,
               "answers": [a["answer"] for a in r["answers"]], "choices": [a["choice"] for a in r["answers"]],
               "ingest_s": r["ingest_s"], "kv_bytes": r["kv_bytes"], "kv_tokens": r["kv_tokens"]}
        rows.append(row)
        print(f"{c['label']:34s} acc {row['accuracy']:.2f} p {row['p_correct_mean']:.2f} text {row['accuracy_greedy_text']:.2f} "
              f"KL {row['kl_first_token_mean']:.3f} agree {row['agree_with_full']:.2f}  {row['answers'][:3]}")

    name = ("captions_variants" if args.variants else "captions") + ("_quick" if args.quick else "")
    common.write_json(name, {
        "settings": {"model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to float32)",
                     "stream_tokens": L, "captions": n_captions, "needles": needles,
                     "questions": [question(n) for n in needles], "chunk_captions": 8,
                     "tags": "captions TEXT with video time; system/user opening and question plain text",
                     "kl": "KL(full || config) of the first answer token, nats, mean over needles",
                     "accuracy": "forced choice: the most likely of the 13 colour words after 'The <object> was' is the "
                                 "needle's colour (chance 1/13); p_correct: its probability renormalised over those "
                                 "13 words; accuracy_greedy_text: the greedy 6-token answer names it"},
        "rows": rows,
    }, started)
    if not args.variants:
        plot(rows, fractions, args.policies, name, L)


def plot(rows, fractions, policies, name, L) -> None:
    plt = common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    full = rows[0]
    for p in policies:
        pts = [r for r in rows if r.get("variant") == p and r["label"].startswith(p + "@")]
        xs = [100 * r["fraction"] for r in pts]
        axes[0].plot(xs, [r["accuracy"] for r in pts], "-o", label=p)
        axes[1].plot(xs, [max(r["kl_first_token_mean"], 1e-4) for r in pts], "-o", label=p)
    axes[0].axhline(full["accuracy"], color="k", ls="--", label="full cache")
    axes[0].set(xlabel="budget (% of stream tokens)", ylabel="accuracy (forced choice of the colour)", ylim=(-0.05, 1.05),
                title=f"Caption needles, SmolLM2-135M, {L}-token stream")
    axes[1].set(xlabel="budget (% of stream tokens)", ylabel="KL(full || policy), first token (nats)", yscale="log",
                title="First-token divergence from the full cache")
    for ax in axes:
        ax.legend(fontsize=8)
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
