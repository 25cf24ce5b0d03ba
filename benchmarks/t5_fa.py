"""Why FA learns a T5 so slowly: a defect, or the rule? (issue: T5 under fa, 30 Adam steps)

A small T5 (d_model 32, 2+2 layers, vocabulary 64, random init as transformers gives it) learns
one fixed batch; loss after steps 1, 30 and 100 for each arm:

    python benchmarks/t5_fa.py

Arms: the rule as converted; with the tied output head (``lm_head``, which shares T5's N(0, 1)
embedding) left on BP; with that embedding drawn at std 0.05 instead; at lr 1e-2 instead of
1e-3; and KP-type rules (kp, pfa, ldfa) under AdamW with weight decay 1.0, which their B → W
convergence needs. FA with B := W reproduces T5's BP gradients exactly
(tests/test_real_models.py::test_fa_with_feedback_equal_to_weights_is_bp[t5]).
Writes benchmarks/results/t5_fa.md.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

import alignlab

OUT = Path(__file__).parent / "results" / "t5_fa.md"
ARMS = [  # (label, rule, options, shared std, lr, weight decay)
    ("bp", "bp", {}, None, 1e-3, 0.0),
    ("fa", "fa", {}, None, 1e-3, 0.0),
    ("fa, match_norm", "fa", {"match_norm": True}, None, 1e-3, 0.0),
    ("fa, lm_head on BP", "fa", {"exclude": ["lm_head"]}, None, 1e-3, 0.0),
    ("usf", "usf", {}, None, 1e-3, 0.0),
    ("dfa", "dfa", {}, None, 1e-3, 0.0),
    ("bp, embedding std 0.05", "bp", {}, 0.05, 1e-3, 0.0),
    ("fa, embedding std 0.05", "fa", {}, 0.05, 1e-3, 0.0),
    ("bp, lr 1e-2", "bp", {}, None, 1e-2, 0.0),
    ("fa, lr 1e-2", "fa", {}, None, 1e-2, 0.0),
    ("kp", "kp", {}, None, 1e-3, 0.0),
    ("pfa", "pfa", {}, None, 1e-3, 0.0),
    ("ldfa", "ldfa", {}, None, 1e-3, 0.0),
    ("kp, AdamW wd 1, lr 1e-2", "kp", {}, None, 1e-2, 1.0),
    ("pfa, AdamW wd 1, lr 1e-2", "pfa", {}, None, 1e-2, 1.0),
    ("ldfa, AdamW wd 1, lr 1e-2", "ldfa", {}, None, 1e-2, 1.0),
]


def t5():
    import transformers

    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, vocab_size=64, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, dropout_rate=0.0))


def run(rule, options, std, lr, wd, steps=100) -> list[float]:
    torch.manual_seed(0)
    model = t5()
    if std is not None:
        with torch.no_grad():
            model.shared.weight.normal_(0, std)
    alignlab.convert(model, rule, **options)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(2, 64, (4, 8), generator=g), "labels": torch.randint(2, 64, (4, 4), generator=g)}
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    warnings.simplefilter("ignore")
    tic = time.time()
    rows = []
    for label, rule, options, std, lr, wd in ARMS:
        losses = run(rule, options, std, lr, wd)
        rows.append(f"| {label} | {losses[0]:.2f} | {losses[29]:.2f} | {losses[-1]:.2f} |")
        print(rows[-1], flush=True)
    OUT.write_text("# T5 under feedback rules: loss on one fixed batch\n\n`python benchmarks/t5_fa.py` "
                   f"(AdamW, weight decay 0 unless named; {time.time() - tic:.0f} s)\n\n"
                   "| arm | step 1 | step 30 | step 100 |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
