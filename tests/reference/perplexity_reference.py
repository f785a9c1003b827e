#!/usr/bin/env python3
"""Independent reference of ground-truth perplexity by the compression literature's protocol (SPEC
`ppl`), written from GPTQ's / SparseGPT's published evaluation code (datautils.get_wikitext2 and
llama_eval), not from dtm's sources:

    rows    = [row if row.strip() else "" for row in open(FILE, encoding="utf-8")]   # HF's wikitext rows
    text    = "\\n\\n".join(rows)
    tokens  = [bos] + tokenizer(text)         # HF's Llama tokenizer adds one BOS, at the very start
    windows = tokens[k*W:(k+1)*W] for k < len(tokens) // W     # the last partial window dropped
    ppl     = exp(sum of -log p(window[i] | window[:i]) for i >= 1, over all windows / (windows * (W-1)))

The forward is llama_reference.LlamaReference (NumPy; float64 by default here). Tokenization is
transformers.js (tests/tokenizer/encode.js, via node, on the model's tokenizer.json), an
implementation independent of dtm's tokenizer; --tokens FILE (a JSON array of the text's ids,
without BOS) takes ids from any other tokenizer instead.

    perplexity_reference.py --model DIR --text FILE --window W [--compress SPEC] [--join rows|as-is]
                            [--precision float64|float32] [--tokens FILE]

Prints one JSON object: ppl, nll_mean, windows, tokens_scored, text_tokens (BOS included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

from llama_reference import LlamaReference, ReferenceError

ENCODE_JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokenizer", "encode.js")


def joined_rows(path: str) -> str:
    """The rows of a raw text file as HF's wikitext loader yields them, joined as GPTQ joins them."""
    with open(path, encoding="utf-8") as f:
        rows = [row if row.strip() else "" for row in f]
    return "\n\n".join(rows)


def encode_with_transformers_js(text: str, tokenizer_json: str) -> list:
    """Ids of `text` without special tokens, by transformers.js (one JSON string in, one array out)."""
    with tempfile.TemporaryDirectory(prefix="ppl-ref-") as tmp:
        src, dst = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(src, "w", encoding="utf-8") as f:
            f.write(json.dumps(text) + "\n")
        subprocess.run(["node", ENCODE_JS, "--tokenizer-json", tokenizer_json, src, dst], check=True)
        with open(dst, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
    if len(lines) != 1:
        raise ReferenceError(f"encode.js gave {len(lines)} lines for one text")
    return [int(t) for t in json.loads(lines[0])]


def window_nll_sum(model: LlamaReference, window: list) -> float:
    """Sum over i >= 1 of -log softmax(logits[i-1])[window[i]], in float64."""
    logits = model.forward(window).astype(np.float64)[:-1]              # row i-1 predicts token i
    target = np.asarray(window[1:], dtype=np.int64)
    m = logits.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]
    return float(np.sum(lse - logits[np.arange(target.size), target]))


def perplexity(model: LlamaReference, tokens: list, window: int) -> dict:
    if window < 2:
        raise ReferenceError(f"window {window} < 2")
    count = len(tokens) // window
    if count == 0:
        raise ReferenceError(f"{len(tokens)} tokens, fewer than one window of {window}")
    total = sum(window_nll_sum(model, tokens[k * window:(k + 1) * window]) for k in range(count))
    scored = count * (window - 1)
    return {"ppl": math.exp(total / scored), "nll_mean": total / scored, "windows": count,
            "tokens_scored": scored, "text_tokens": len(tokens)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="reference ground-truth perplexity (the GPTQ protocol)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--window", type=int, required=True)
    ap.add_argument("--compress", default="")
    ap.add_argument("--join", choices=("rows", "as-is"), default="rows")
    ap.add_argument("--precision", choices=("float32", "float64"), default="float64")
    ap.add_argument("--tokens", help="JSON array of the text's ids (no BOS), instead of transformers.js")
    a = ap.parse_args(argv)
    try:
        if a.join == "rows":
            text = joined_rows(a.text)
        else:
            with open(a.text, encoding="utf-8", newline="") as f:
                text = f.read()
        if a.tokens:
            with open(a.tokens, encoding="utf-8") as f:
                ids = [int(t) for t in json.load(f)]
        else:
            ids = encode_with_transformers_js(text, os.path.join(a.model, "tokenizer.json"))
        model = LlamaReference(a.model, a.precision)
        model.set_compression(a.compress)
        with open(os.path.join(a.model, "config.json"), encoding="utf-8") as f:
            bos = int(json.load(f)["bos_token_id"])
        print(json.dumps(perplexity(model, [bos] + ids, a.window)))
    except (ReferenceError, OSError, subprocess.CalledProcessError) as e:
        print(f"perplexity_reference: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
