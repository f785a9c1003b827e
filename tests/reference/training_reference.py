#!/usr/bin/env python3
"""Independent reference of recovery training's data and loss (SPEC "Recovery training"), written
from the documented contract only (SPEC, the header comments of worker/engine/training_data.h and
recovery_trainer.h, torch.optim.AdamW's published update rule), never from the engine's sources.

Packing, as the contract states it (L = seq_len):

    documents = JSON lines' "text" (blank lines skipped) or raw text's paragraphs (lines holding only
                ASCII whitespace separate them; a paragraph's lines joined by "\\n"); a document of
                only ASCII whitespace is skipped
    stream    = BOS doc_1 EOS BOS doc_2 EOS ...     doc_i = the tokenizer's ids of text_i, no BOS
    sequences = stream[k*(L+1) : (k+1)*(L+1)], the last partial chunk dropped; with max_sequences
                M > 0 reading stops after the document that completes the M-th sequence
    fingerprint = SHA-256(seq_len as 8 bytes LE, then every packed token as 4 bytes LE)

The loss of a step is the mean next-token cross-entropy over every target token of its batch
(sequence[:L] the input, sequence[1:] the targets); `loss` computes it over all packed sequences,
which is the first step's loss whenever the batch is all of them (the mean is order-free). The
forward is llama_reference.LlamaReference, float64 by default.

Tokens come from Google's SentencePiece (`spm_encode`, the model's tokenizer.model: one document a
line, so a document holding a line break needs the other encoder) or transformers.js
(tests/tokenizer/encode.js on the model's tokenizer.json, via node); both are independent of dtm's
tokenizer. BOS and EOS are config.json's bos_token_id and eos_token_id.

    training_reference.py loss --model DIR --data FILE --seq-len L [--max-sequences M]
                               [--format auto|jsonl|text] [--encoder spm|transformers-js]
                               [--precision float64|float32]
        -> {"loss", "sequences", "seq_len", "documents", "tokens", "fingerprint", "tokens_scored"}

    training_reference.py first-step --model DIR --trained DIR2 --data FILE --seq-len L
                               [--max-sequences M] --lr LR --weight-decay WD [--eps 1e-8] ...
        DIR2 must be DIR after ONE AdamW step on the batch of all sequences, at learning rate LR,
        without clipping (or with a clip the gradient norm stays under). AdamW's first step
        (bias-corrected moments, t = 1) is, whatever the betas:
            w1 = w0 * (1 - LR*WD) - LR * g / (|g| + eps)      elementwise
        so, with d = w1 - w0 * (1 - LR*WD):
          * every entry: |d| <= LR (plus float32 rounding);
          * entries whose gradient is 0 (embedding rows of tokens no input holds): d = 0 exactly
            (float32 rounding of the decay only);
          * lm_head (untied): g is computed here in float64, dL/dW = sum_t (softmax_t - onehot_t) h_t^T / T
            with h_t the final-normed hidden states, so w1 is predicted entry by entry; an entry with
            |g| near eps is sensitive to the float32 gradient's error (du/dg = eps / (|g| + eps)^2), so
            the figure checked is the gradient error, relative to max |g|, that the distances imply;
          * the share of entries that moved by at least LR/2 (a nonzero gradient moves a full step).
        Prints those figures per tensor and overall; "ok" is whether they meet --tol.

Exit status 2 with a message on bad input.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np

from llama_reference import Checkpoint, LlamaReference, ReferenceError

HERE = os.path.dirname(os.path.abspath(__file__))
ENCODE_JS = os.path.join(HERE, "..", "tokenizer", "encode.js")
ASCII_WS = " \t\n\r\f\v"


# ----------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------

def _open(path: str):
    if not os.path.isfile(path):
        raise ReferenceError(f"{path}: not a regular file")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "rt", encoding="utf-8", newline="")


def resolve_format(path: str, fmt: str) -> str:
    if fmt == "auto":
        name = path[:-3] if path.endswith(".gz") else path
        return "jsonl" if name.endswith(".jsonl") or name.endswith(".json") else "text"
    if fmt not in ("jsonl", "text"):
        raise ReferenceError(f"unknown format {fmt!r}")
    return fmt


def read_documents(path: str, fmt: str = "auto") -> List[str]:
    """Every document of the file, in order, whitespace-only ones left out."""
    fmt = resolve_format(path, fmt)
    docs: List[str] = []
    with _open(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final "\n" ends the last line, it does not start one
    if fmt == "jsonl":
        for number, line in enumerate(lines, 1):
            if not line.strip(ASCII_WS):
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ReferenceError(f"{path}:{number}: not an object with a string \"text\"")
            docs.append(row["text"])
    else:
        paragraph: List[str] = []
        for line in lines + [""]:
            if line.strip(ASCII_WS):
                paragraph.append(line)
            elif paragraph:
                docs.append("\n".join(paragraph))
                paragraph = []
    return [d for d in docs if d.strip(ASCII_WS)]


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------

def encode_spm(docs: List[str], tokenizer_model: str) -> List[List[int]]:
    """Ids of each document by Google's spm_encode (no BOS/EOS), one document a line."""
    for i, d in enumerate(docs):
        if "\n" in d or "\r" in d:
            raise ReferenceError(f"document {i + 1} holds a line break, which spm_encode (a line a "
                                 "document) cannot take: use --encoder transformers-js")
    with tempfile.TemporaryDirectory(prefix="train-ref-") as tmp:
        src, dst = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.txt")
        with open(src, "w", encoding="utf-8", newline="") as f:
            f.write("".join(d + "\n" for d in docs))
        subprocess.run(["spm_encode", f"--model={tokenizer_model}", "--output_format=id", f"--input={src}",
                        f"--output={dst}"], check=True)
        with open(dst, encoding="utf-8") as f:
            out = f.read().split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(docs):
        raise ReferenceError(f"spm_encode gave {len(out)} lines for {len(docs)} documents")
    return [[int(t) for t in line.split()] for line in out]


def encode_transformers_js(docs: List[str], tokenizer_json: str) -> List[List[int]]:
    """Ids of each document by transformers.js (tests/tokenizer/encode.js; no special tokens)."""
    with tempfile.TemporaryDirectory(prefix="train-ref-") as tmp:
        src, dst = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(src, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(d) + "\n" for d in docs))
        subprocess.run(["node", ENCODE_JS, "--tokenizer-json", tokenizer_json, src, dst], check=True)
        with open(dst, encoding="utf-8") as f:
            out = [json.loads(line) for line in f if line.strip()]
    if len(out) != len(docs):
        raise ReferenceError(f"encode.js gave {len(out)} rows for {len(docs)} documents")
    return [[int(t) for t in row] for row in out]


def special_ids(model_dir: str) -> Tuple[int, int]:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("bos_token_id") is None or cfg.get("eos_token_id") is None:
        raise ReferenceError(f"{model_dir}/config.json: no bos_token_id or eos_token_id")
    eos = cfg["eos_token_id"]
    return int(cfg["bos_token_id"]), int(eos[0] if isinstance(eos, list) else eos)


# ----------------------------------------------------------------------------------------------
# Packing
# ----------------------------------------------------------------------------------------------

def pack(doc_ids: List[List[int]], bos: int, eos: int, seq_len: int, max_sequences: int = 0) -> dict:
    """The packed sequences [N, seq_len+1] and what the contract reports about them."""
    if seq_len < 1:
        raise ReferenceError(f"seq_len {seq_len} < 1")
    span = seq_len + 1
    stream: List[int] = []
    documents = 0
    for ids in doc_ids:
        stream += [bos] + ids + [eos]
        documents += 1
        if max_sequences > 0 and len(stream) >= max_sequences * span:
            break  # this document completed the max_sequences-th sequence
    count = len(stream) // span
    if max_sequences > 0:
        count = min(count, max_sequences)
    if count == 0:
        raise ReferenceError(f"{len(stream)} tokens, fewer than one sequence of {span}")
    seqs = np.asarray(stream[:count * span], dtype=np.int64).reshape(count, span)
    digest = hashlib.sha256(struct.pack("<q", seq_len))
    digest.update(seqs.astype("<i4").tobytes())
    return {"sequences": seqs, "documents": documents, "tokens": len(stream), "fingerprint": digest.hexdigest()}


def load_sequences(a) -> dict:
    docs = read_documents(a.data, a.format)
    if a.encoder == "spm":
        ids = encode_spm(docs, os.path.join(a.model, "tokenizer.model"))
    else:
        ids = encode_transformers_js(docs, os.path.join(a.model, "tokenizer.json"))
    bos, eos = special_ids(a.model)
    return pack(ids, bos, eos, a.seq_len, a.max_sequences)


# ----------------------------------------------------------------------------------------------
# Loss and the lm_head gradient
# ----------------------------------------------------------------------------------------------

def _token_losses(logits: np.ndarray, targets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-token cross-entropy [T] and softmax [T, V] of float64 logits [T, V]."""
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    z = e.sum(axis=-1, keepdims=True)
    nll = (m + np.log(z))[:, 0] - logits[np.arange(targets.size), targets]
    return nll, e / z


def mean_loss(model: LlamaReference, seqs: np.ndarray, head_grad: bool = False):
    """Mean next-token cross-entropy over every target token of `seqs` (float64 sums); with head_grad
    also d(loss)/d(lm_head.weight) [V, D] in float64."""
    total, count = 0.0, 0
    grad = None
    head = model.lm_head().astype(np.float64)
    for row in seqs:
        inputs, targets = row[:-1], row[1:]
        h = model.hidden_states(inputs.tolist()).astype(np.float64)  # [L, D], final-normed
        nll, probs = _token_losses(h @ head.T, targets)
        total += float(nll.sum())
        count += targets.size
        if head_grad:
            probs[np.arange(targets.size), targets] -= 1.0
            g = probs.T @ h                                              # [V, D], this sequence's sum
            grad = g if grad is None else grad + g
    loss = total / count
    return (loss, count, grad / count) if head_grad else (loss, count)


# ----------------------------------------------------------------------------------------------
# AdamW's first step
# ----------------------------------------------------------------------------------------------

def first_step_report(model0: LlamaReference, trained_dir: str, seqs: np.ndarray, lr: float, wd: float,
                      eps: float, tol: dict) -> dict:
    cfg = model0.cfg
    if cfg.tie_word_embeddings or not model0.ckpt.has("lm_head.weight"):
        raise ReferenceError("first-step needs an untied lm_head (its gradient is computed here)")
    trained = Checkpoint(trained_dir)
    names0, names1 = model0.ckpt.names(), trained.names()
    if names0 != names1:
        raise ReferenceError(f"tensors differ: {sorted(set(names0) ^ set(names1))}")
    loss, _, g_head = mean_loss(model0, seqs, head_grad=True)
    decay = 1.0 - lr * wd
    seen = np.zeros(cfg.vocab_size, dtype=bool)
    seen[np.unique(seqs[:, :-1])] = True               # tokens some input holds: their embedding rows get a gradient
    ulp = 2.0 ** -23
    out: Dict[str, dict] = {}
    worst_bound, worst_head, worst_still = float("-inf"), 0.0, 0.0
    min_moved = 1.0
    still_rows = 0
    for name in names0:
        w0 = model0.ckpt.tensor(name).astype(np.float64)
        w1 = trained.tensor(name).astype(np.float64)
        if w0.shape != w1.shape:
            raise ReferenceError(f"{name}: shape {w0.shape} -> {w1.shape}")
        d = w1 - w0 * decay
        rounding = 4 * ulp * np.maximum(np.abs(w0), np.abs(w1))  # float32 results of the decay and the step
        stats = {"max_abs_d_over_lr": float(np.abs(d).max() / lr)}
        # |d| <= lr, up to float32 rounding: how far past it the worst entry is, in units of lr.
        bound = float(((np.abs(d) - rounding) / lr - 1.0).max())
        stats["bound_excess"] = bound
        worst_bound = max(worst_bound, bound)
        moving = np.ones(w0.shape, dtype=bool)
        if name == "model.embed_tokens.weight":
            moving = np.broadcast_to(seen[:, None], w0.shape)
            still = float((np.abs(d[~seen]) / (rounding[~seen] + 1e-30)).max()) if (~seen).any() else 0.0
            stats["still_rows"] = int((~seen).sum())
            stats["still_max_d_over_rounding"] = still  # <= 1: the decay alone
            worst_still = max(worst_still, still)
            still_rows = int((~seen).sum())
        moved = float((np.abs(d[moving]) >= 0.5 * lr).mean()) if moving.any() else 1.0
        stats["moved_share"] = moved
        min_moved = min(min_moved, moved)
        if name == "lm_head.weight":
            # The float32 gradient differs from this float64 one by some delta, which moves the step
            # by lr * eps * delta / (|g| + eps)^2: nothing where |g| >> eps, much where |g| ~ eps.
            # Reported: the least delta, relative to max |g|, that explains every entry's distance
            # from its prediction beyond float32 rounding and 1e-5 lr (the update's own arithmetic).
            pred = w0 * decay - lr * g_head / (np.abs(g_head) + eps)
            beyond = np.maximum(np.abs(w1 - pred) - rounding - 1e-5 * lr, 0.0)
            implied = beyond * (np.abs(g_head) + eps) ** 2 / (lr * eps * np.abs(g_head).max())
            stats["head_max_err_over_lr"] = float(np.abs(w1 - pred).max() / lr)
            stats["head_grad_err"] = float(implied.max())
            worst_head = max(worst_head, float(implied.max()))
        out[name] = stats
    summary = {"loss0": loss, "lr": lr, "weight_decay": wd, "bound_excess": worst_bound,
               "still_rows": still_rows, "still_max_d_over_rounding": worst_still,
               "head_grad_err": worst_head, "min_moved_share": min_moved}
    failures = []
    if worst_bound > tol["bound"]:
        failures.append(f"an entry moved more than lr (by {worst_bound:.3g} lr)")
    if still_rows == 0:
        failures.append("no embedding row without gradient to check the decay on")
    if worst_still > 1.0:
        failures.append(f"a row without gradient is not w0*(1-lr*wd) ({worst_still:.3g} x float32 rounding)")
    if worst_head > tol["head"]:
        failures.append(f"lm_head off its predicted step: as if the gradient were off by {worst_head:.3g} max|g|")
    if min_moved < tol["moved"]:
        failures.append(f"a tensor's share of entries that moved a full step is {min_moved:.3g}")
    summary["ok"] = not failures
    summary["failures"] = failures
    summary["tensors"] = out
    return summary


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _common(p):
    p.add_argument("--model", required=True, help="HF checkpoint folder (tokenizer.model / tokenizer.json in it)")
    p.add_argument("--data", required=True, help="JSON lines with \"text\" or raw text (.gz ok)")
    p.add_argument("--format", choices=("auto", "jsonl", "text"), default="auto")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--max-sequences", type=int, default=0, help="0: every full sequence of the file")
    p.add_argument("--encoder", choices=("spm", "transformers-js"), default="spm")
    p.add_argument("--precision", choices=("float32", "float64"), default="float64")


def _cmd_loss(a) -> None:
    packed = load_sequences(a)
    model = LlamaReference(a.model, a.precision)
    loss, scored = mean_loss(model, packed["sequences"])
    print(json.dumps({"loss": loss, "sequences": int(packed["sequences"].shape[0]), "seq_len": a.seq_len,
                      "documents": packed["documents"], "tokens": packed["tokens"],
                      "fingerprint": packed["fingerprint"], "tokens_scored": scored}))


def _cmd_first_step(a) -> None:
    packed = load_sequences(a)
    model = LlamaReference(a.model, a.precision)
    tol = {"bound": a.tol_bound, "head": a.tol_head, "moved": a.tol_moved}
    print(json.dumps(first_step_report(model, a.trained, packed["sequences"], a.lr, a.weight_decay, a.eps, tol)))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("loss", help="packing figures and the mean token loss over all packed sequences")
    _common(p)
    p.set_defaults(func=_cmd_loss)
    p = sub.add_parser("first-step", help="check a model after one AdamW step on all packed sequences")
    _common(p)
    p.add_argument("--trained", required=True, help="the model after the one step")
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--weight-decay", type=float, required=True)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--tol-bound", type=float, default=1e-4, help="|d| <= lr * (1 + this)")
    p.add_argument("--tol-head", type=float, default=1e-6,
                   help="lm_head's step as predicted, up to a gradient error of this times max|g|")
    p.add_argument("--tol-moved", type=float, default=0.9, help="least share of entries that moved >= lr/2")
    p.set_defaults(func=_cmd_first_step)
    a = ap.parse_args(argv)
    try:
        a.func(a)
    except (ReferenceError, OSError, ValueError, subprocess.CalledProcessError) as e:
        print(f"training_reference: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
