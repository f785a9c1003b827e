"""`dtmctl train` (recovery training) on the tiny model against the independent reference
tests/reference/training_reference.py (issue 14: every metric cross-checked by an independent
computation): the documents tokenized by Google's spm_encode, packed as the contract says
(BOS doc EOS ..., sequences of seq_len + 1, last partial dropped), the loss in NumPy float64.

The batch is every packed sequence (--batch = --max-sequences), so each step's batch is the whole
set whatever the seeded order, and its mean token loss is order-free:
  * packing: documents, tokens, sequences and the fingerprint equal the reference's, for JSON lines
    and for raw text holding the same documents;
  * step 1's loss (the initial model) and step 2's (the model after one step, as `dtmctl train
    --phases unmasked:1` writes it) equal the reference's to REL_TOL;
  * that one AdamW step (lr 1e-3, no clipping, no warm-up) moved every weight as AdamW's first step
    does: w1 = w0 (1 - lr wd) - lr g / (|g| + eps), checked exactly where g = 0 (embedding rows of
    tokens no input holds), entry by entry on lm_head (its gradient computed by the reference), and
    as |w1 - w0 (1 - lr wd)| <= lr, with nearly every entry moved a full lr, everywhere else.

Run by CTest (labels `model`, `reference`) after the `tiny_model` fixture; needs DTMCTL,
DTM_TINY_MODEL, /usr/bin/python3 with NumPy and spm_encode on PATH.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtmctl_run import run_json  # noqa: E402

MODEL = os.environ["DTM_TINY_MODEL"]
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference", "training_reference.py")

# dtm trains in float32, the reference computes in float64: a mean over 768 token losses of ~5 nats,
# each from a float32 forward, lands within ~1e-7 relatively (seen: 1.1e-7); 1e-5 leaves 100x for
# other libtorch kernels and thread counts, and is still ~1e4 times below what one step changes.
REL_TOL = 1e-5
SEQ_LEN, SEQUENCES = 64, 12  # 12 x 65 tokens: the documents below hold ~890, so reading stops early
LR = 1e-3
# lr x wd = 1 %: large enough that a decay applied twice, or not at all, moves a weight by far
# more than float32 rounding (and moves a norm weight of ~1 by ten lr).
WEIGHT_DECAY = 10.0
TRAIN = ("--seq-len", str(SEQ_LEN), "--batch", str(SEQUENCES), "--max-sequences", str(SEQUENCES), "--lr", str(LR),
         "--weight-decay", str(WEIGHT_DECAY), "--clip", "0", "--warmup", "0", "--schedule", "constant", "--seed", "7",
         "--threads", "2")
REF_ARGS = ("--seq-len", str(SEQ_LEN), "--max-sequences", str(SEQUENCES))

PARAGRAPHS = [
    "The river town woke slowly on winter mornings. Smoke rose from the chimneys of the bakery first, then from "
    "the school, and by eight o'clock the whole street smelled of bread and wet wool.",
    "Nobody remembered who had planted the oak in the square.",
    "Mrs. Halloway kept the post office for thirty-one years. She knew every family by its handwriting, and she "
    "could tell from the weight of a letter whether it carried good news or a bill.",
    "In the spring of 1961 the river rose higher than anyone had seen it. The water came up over the lower road, "
    "into the cellars of the houses by the mill, and for three days the children went to school by boat.",
    "   \t ",  # only whitespace: not a document
    "A committee was formed to study the problem. It met on Tuesday evenings in the library, drank a great deal "
    "of coffee, and after eleven months reported that the river was, in its opinion, too close to the town.",
    "The new bridge opened in October. The mayor cut a ribbon, the band played two marches and a waltz, and a "
    "small dog walked across before anyone else, to general applause.",
    "Farming here has always been a matter of patience. The soil is heavy and the season is short; a farmer who "
    "plants too early loses his seed to the frost, and one who plants too late loses his harvest to the rain.",
    "On market days the square filled with carts: potatoes and cabbages, eggs in straw, cheeses wrapped in cloth, "
    "honey in jars with handwritten labels, and once, memorably, a goat that had eaten its owner's hat.",
    "The caf\u00e9 by the station served coffee that was strong, bitter and cheap \u2014 \u201cthe three "
    "virtues,\u201d the owner said.",
    "Science came to the town in the form of a retired teacher with a telescope. On clear nights he set it up on "
    "the church steps and showed anyone who asked the rings of Saturn and the moons of Jupiter.",
    "Some of the older people said that the winters had been colder when they were young. The records kept at "
    "the school did not entirely agree with them, but nobody wanted to argue.",
    "The railway closed in 1974, and for a while it seemed that the town would close with it. The young people "
    "left for the cities, the shops on the high street shut one by one, and the station clock stopped at twenty "
    "past four.",
    "It was the walkers who brought the town back. They came for the hills and the river path, stayed in the "
    "rooms above the inn, and wanted breakfast, maps, boots, and postcards to send home.",
    "Today there are four hundred and twelve people living in the parish, two shops, one school, a doctor on "
    "Thursdays, and a library that opens whenever Mr. Patel remembers to unlock it.",
    "Ask anyone what they like best about the place and they will think for a long time before they answer. "
    "Then they will say the quiet, or the river, or the bread, and they will look a little surprised at "
    "themselves.",
]


def reference(command, model, data, *extra):
    proc = subprocess.run([sys.executable, REFERENCE, command, "--model", model, "--data", data, *REF_ARGS, *extra],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"training_reference.py {command} failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def rel(ours, theirs):
    return abs(ours - theirs) / abs(theirs)


class DtmctlTrainReferenceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        started = time.monotonic()
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-train-ref-test-")
        # C4's shape, with a blank line (skipped) and a whitespace-only document (skipped).
        cls.jsonl = os.path.join(cls.tmp, "docs.jsonl")
        with open(cls.jsonl, "w", encoding="utf-8") as f:
            for i, text in enumerate(PARAGRAPHS):
                f.write(json.dumps({"text": text, "url": f"doc-{i}"}) + "\n" + ("\n" if i == 3 else ""))
        # The same documents as raw text: paragraphs between lines of only whitespace.
        cls.text = os.path.join(cls.tmp, "docs.txt")
        with open(cls.text, "w", encoding="utf-8") as f:
            f.write("\n \t\n".join(p for p in PARAGRAPHS if p.strip()) + "\n")
        cls.one = os.path.join(cls.tmp, "one-step")
        cls.run1 = run_json("train", "--model", MODEL, "--data", cls.jsonl, "--out", cls.one, "--phases", "unmasked:1",
                            *TRAIN)
        cls.run2 = run_json("train", "--model", MODEL, "--data", cls.text, "--out", os.path.join(cls.tmp, "two-steps"),
                            "--phases", "unmasked:2", *TRAIN)
        cls.ref0 = reference("loss", MODEL, cls.jsonl)
        cls.ref0_text = reference("loss", MODEL, cls.text)
        cls.ref1 = reference("loss", cls.one, cls.jsonl)
        cls.step = reference("first-step", MODEL, cls.jsonl, "--trained", cls.one, "--lr", str(LR), "--weight-decay",
                             str(WEIGHT_DECAY))
        print(f"\nstep 1 loss: dtm {cls.run1['losses'][0]!r}, reference {cls.ref0['loss']!r} "
              f"(rel {rel(cls.run1['losses'][0], cls.ref0['loss']):.3g}); step 2 loss: dtm {cls.run2['losses'][1]!r}, "
              f"reference {cls.ref1['loss']!r} (rel {rel(cls.run2['losses'][1], cls.ref1['loss']):.3g}); first step: "
              + json.dumps({k: v for k, v in cls.step.items() if k != "tensors"})
              + f"; setup {time.monotonic() - started:.1f} s", file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_packing_matches_the_reference(self):
        for report, ref in ((self.run1, self.ref0), (self.run2, self.ref0_text)):
            data = report["data"]
            with self.subTest(path=data["path"]):
                self.assertEqual(data["seq_len"], SEQ_LEN)
                self.assertEqual(data["sequences"], SEQUENCES)
                self.assertEqual(ref["sequences"], SEQUENCES)
                for key in ("documents", "tokens", "fingerprint"):
                    self.assertEqual(data[key], ref[key], key)
        # Reading stopped at the document that completed the last sequence, before the file's end.
        self.assertLess(self.ref0["documents"], len([p for p in PARAGRAPHS if p.strip()]))
        self.assertEqual(self.ref0["tokens_scored"], SEQUENCES * SEQ_LEN)

    def test_first_step_loss_matches_the_reference(self):
        self.assertEqual(self.run1["steps"], 1)
        self.assertEqual(len(self.run1["losses"]), 1)
        loss = self.run1["losses"][0]
        self.assertLess(rel(loss, self.ref0["loss"]), REL_TOL, f"dtm {loss!r} vs reference {self.ref0['loss']!r}")
        self.assertEqual(self.step["loss0"], self.ref0["loss"])  # the gradient below is of this loss
        # The same documents from raw text train the same first step.
        self.assertEqual(self.run2["losses"][0], loss)

    def test_second_step_loss_is_the_written_models_loss(self):
        self.assertEqual(len(self.run2["losses"]), 2)
        loss = self.run2["losses"][1]
        self.assertLess(rel(loss, self.ref1["loss"]), REL_TOL, f"dtm {loss!r} vs reference {self.ref1['loss']!r}")
        # One step moves the loss by far more than the tolerance: the check tells the models apart.
        self.assertGreater(rel(self.ref1["loss"], self.ref0["loss"]), 1000 * REL_TOL)

    def test_one_adamw_step_moves_the_weights_as_adamw_does(self):
        step = self.step
        self.assertTrue(step["ok"], step["failures"])
        self.assertGreater(step["still_rows"], 0)
        self.assertIn("lm_head.weight", step["tensors"])
        self.assertEqual(len(step["tensors"]), 2 + 9 * 4 + 1)  # embed, lm_head, 9 a layer, final norm


if __name__ == "__main__":
    unittest.main(verbosity=2)
