"""End-to-end tests of `dtmctl train` (recovery training) on the tiny model: a model pruned by
`dtmctl apply` trains on C4-style JSON lines, its pruned weights stay exactly 0 through a masked
phase, the loss falls, `--prune` sets a round's masks to exactly the smallest magnitudes of the input
(computed here from the file), `--remask` puts the masks back after an unmasked phase, a run stopped
mid-way and started again on its checkpoint folder writes the
same model (same fingerprint) as an uninterrupted one, the same run started again on its finished
output adopts it (another run is refused naming what differs), and bad input exits 2 without writing
a model.

Run by CTest (label `model`) after the `tiny_model` fixture; needs DTMCTL, DTM_TINY_MODEL and
DTM_BROWN_DIR in the environment.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import unittest
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtmctl_run import DTMCTL, run, run_json  # noqa: E402

MODEL = os.environ["DTM_TINY_MODEL"]
BROWN = os.environ["DTM_BROWN_DIR"]
PRUNED = ("model.layers.0.mlp.up_proj", "model.layers.2.self_attn.o_proj")
# Small: CI has 2 cores. 8 steps of 4 sequences of 64 tokens.
TRAIN = ("--batch", "4", "--max-sequences", "48", "--lr", "2e-3", "--threads", "2")


def read_f32_tensor(folder, name):
    """One float32 tensor of FOLDER/model.safetensors, parsed here (8-byte header length, JSON header,
    raw little-endian bytes), independently of dtm's reader."""
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        info = header[name]
        assert info["dtype"] == "F32", info
        begin, end = info["data_offsets"]
        f.seek(8 + header_len + begin)
        values = array("f")
        values.frombytes(f.read(end - begin))
    return values


class DtmctlTrainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtmctl-train-test-")
        text = os.path.join(cls.tmp, "brown.txt")
        run("brown-text", "--corpus", BROWN, "--split", "train", "--out", text)
        # C4's shape: one JSON object per line with the document's text.
        cls.data = os.path.join(cls.tmp, "c4-like.jsonl")
        with open(text) as src, open(cls.data, "w") as out:
            for line in src:
                if line.strip():
                    out.write(json.dumps({"text": line.strip(), "url": "brown"}) + "\n")
        cls.pruned = os.path.join(cls.tmp, "pruned")
        run("apply", "--model", MODEL, "--config", ",".join(f"{c}=prune:0.5" for c in PRUNED), "--out", cls.pruned)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def train(self, out, *extra, check=True, seq_len=64):
        args = ("train", "--model", self.pruned, "--data", self.data, "--out", out, "--seq-len", str(seq_len), *TRAIN,
                *extra)
        return run_json(*args) if check else run(*args, check=False)

    def test_a_masked_phase_keeps_the_pruned_weights_at_zero_and_the_loss_falls(self):
        out = os.path.join(self.tmp, "masked")
        report = self.train(out, "--phases", "masked:8")
        self.assertTrue(report["finished"])
        self.assertEqual(report["steps"], 8)
        self.assertEqual(len(report["losses"]), 8)
        self.assertEqual(report["masked_weights"], 2)
        self.assertEqual(report["data"]["seq_len"], 64)
        self.assertEqual(report["data"]["sequences"], 48)
        self.assertLess(sum(report["losses"][-2:]), sum(report["losses"][:2]))
        self.assertEqual(len(report["out_fingerprint"]), 64)
        for component in PRUNED:
            before = read_f32_tensor(self.pruned, component + ".weight")
            after = read_f32_tensor(out, component + ".weight")
            zeros = [i for i, v in enumerate(before) if v == 0.0]
            self.assertGreaterEqual(len(zeros), len(before) // 2, component)
            self.assertEqual({after[i] for i in zeros}, {0.0}, component)
            self.assertNotEqual(list(before), list(after), component)  # the kept weights trained
        # The trained folder is a model: its tokenizer came along, and it evaluates.
        self.assertTrue(os.path.exists(os.path.join(out, "tokenizer.json")))
        ppl = run_json("ppl", "--model", out, "--corpus", os.path.join(self.tmp, "brown.txt"), "--count", "4",
                       "--prefix", "8", "--completion", "16")
        self.assertGreater(ppl["ppl"], 1)

    def test_a_resumed_run_writes_the_model_of_an_uninterrupted_one(self):
        straight = self.train(os.path.join(self.tmp, "straight"), "--phases", "masked:4,unmasked:3")
        ckpt = os.path.join(self.tmp, "ckpt")
        resumed_out = os.path.join(self.tmp, "resumed")
        stopped = self.train(resumed_out, "--phases", "masked:4,unmasked:3", "--checkpoint-dir", ckpt,
                             "--checkpoint-every", "2", "--stop-after", "5")
        self.assertFalse(stopped["finished"])
        self.assertIsNone(stopped["out"])
        self.assertFalse(os.path.exists(resumed_out))  # nothing that could pass for the trained model
        rest = self.train(resumed_out, "--phases", "masked:4,unmasked:3", "--checkpoint-dir", ckpt,
                          "--checkpoint-every", "2")
        self.assertEqual(rest["resumed_at"], 4)
        self.assertEqual(rest["losses"], straight["losses"])
        self.assertEqual(rest["out_fingerprint"], straight["out_fingerprint"])

    def test_a_run_whose_output_holds_its_trained_model_adopts_it(self):
        # What a worker meets when its coordinator was killed after an earlier attempt wrote the
        # model but before that attempt could report it: the same run again on the same folder.
        out = os.path.join(self.tmp, "adopted")
        first = self.train(out, "--phases", "masked:3")
        files = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}
        again = self.train(out, "--phases", "masked:3")
        self.assertEqual(again["resumed_at"], 3)  # nothing left to train
        self.assertEqual(again["losses"], first["losses"])
        self.assertEqual(again["out_fingerprint"], first["out_fingerprint"])
        self.assertEqual(again["output_zeros"], first["output_zeros"])  # measured from the folder it adopted
        self.assertEqual({name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}, files)
        with open(os.path.join(out, "dtm-training.json")) as f:
            record = json.load(f)
        self.assertEqual(record["losses"], first["losses"])
        # Another run on that folder is refused naming what differs, and the folder stays as it was.
        other = self.train(out, "--phases", "masked:3", "--warmup", "2", check=False)
        self.assertEqual(other.returncode, 2, other.stderr)
        self.assertIn("holds the model of another run: its warmup_steps is 0, this run's is 2", other.stderr)
        self.assertEqual({name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}, files)
        # A record that is not one (a 10 MB line of zeros) is named, not trusted.
        forged = os.path.join(self.tmp, "forged")
        os.makedirs(forged)
        with open(os.path.join(forged, "dtm-training.json"), "w") as f:
            f.write("0" * (10 << 20))
        proc = self.train(forged, "--phases", "masked:3", check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("not a training record", proc.stderr)

    def test_prune_sets_a_rounds_masks_by_magnitude_before_training(self):
        # A sparsification round on an already pruned model: up_proj from 50 % to 70 %, a dense
        # q_proj to 30 %; o_proj keeps the zeros it has. The masks are exactly the smallest
        # magnitudes of the input (ties to the lower index), computed here from the file.
        targets = {"model.layers.0.mlp.up_proj": 0.7, "model.layers.1.self_attn.q_proj": 0.3}
        out = os.path.join(self.tmp, "round")
        report = self.train(out, "--phases", "masked:3", "--prune",
                            ",".join(f"{c}=prune:{t}" for c, t in targets.items()))
        self.assertEqual(report["masked_weights"], 3)
        for component, target in targets.items():
            before = read_f32_tensor(self.pruned, component + ".weight")
            after = read_f32_tensor(out, component + ".weight")
            k = round(target * len(before))
            smallest = set(sorted(range(len(before)), key=lambda i: (abs(before[i]), i))[:k])
            zeros = {i for i, v in enumerate(after) if v == 0.0}
            self.assertEqual(zeros, smallest, component)
        kept = [i for i, v in enumerate(read_f32_tensor(self.pruned, PRUNED[1] + ".weight")) if v == 0.0]
        self.assertEqual({read_f32_tensor(out, PRUNED[1] + ".weight")[i] for i in kept}, {0.0})
        self.assertEqual(report["pruned_entries"],
                         sum(round(t * len(read_f32_tensor(MODEL, c + ".weight"))) for c, t in targets.items()) +
                         len(kept))
        for bad, needle in (("model.layers.0.mlp.up_proj=int8-absmax", "training prunes by magnitude only"),
                            ("model.layers.9.mlp.up_proj=prune:0.5", "--prune")):
            proc = self.train(os.path.join(self.tmp, "bad-prune"), "--phases", "masked:1", "--prune", bad, check=False)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertIn(needle, proc.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "bad-prune")))

    def test_remask_puts_the_masks_back_after_an_unmasked_phase(self):
        out = os.path.join(self.tmp, "remasked")
        report = self.train(out, "--phases", "masked:2,unmasked:3", "--remask")
        self.assertTrue(report["finished"])
        moved = os.path.join(self.tmp, "not-remasked")  # the same run without: the zeros moved
        self.train(moved, "--phases", "masked:2,unmasked:3")
        for component in PRUNED:
            before = read_f32_tensor(self.pruned, component + ".weight")
            after = read_f32_tensor(out, component + ".weight")
            self.assertLess(sum(v == 0.0 for v in read_f32_tensor(moved, component + ".weight")),
                            sum(v == 0.0 for v in before), component)
            self.assertEqual({i for i, v in enumerate(after) if v == 0.0},
                             {i for i, v in enumerate(before) if v == 0.0}, component)
            self.assertNotEqual(list(before), list(after), component)
            # The run reports the written model's zeros as this reader counts them.
            self.assertEqual(report["output_zeros"][component],
                             {"zeros": sum(v == 0.0 for v in after), "params": len(after)})
        self.assertEqual(len(report["output_zeros"]), 7 * 4)  # every linear component of the 4 layers

    def gang(self, out, phases, *extra):
        """Two `dtmctl train` processes as one gang over Gloo on loopback; returns both reports."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        def args(rank, folder):
            # One thread each: the two members share this machine's cores.
            return ("train", "--model", self.pruned, "--data", self.data, "--out", folder, "--seq-len", "64",
                    *TRAIN[:-2], "--threads", "1", "--phases", phases, "--gang-rank", str(rank), "--gang-size", "2",
                    "--gang-master", f"127.0.0.1:{port}", "--gang-timeout", "60", *extra)
        member = subprocess.Popen([DTMCTL, *args(1, out + "-rank1")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            zero = run_json(*args(0, out))
            stdout, stderr = member.communicate(timeout=120)
        finally:
            member.kill()
        self.assertEqual(member.returncode, 0, stderr)
        return zero, json.loads(stdout)

    def test_a_gang_of_two_processes_trains_as_one_process_does(self):
        phases = "masked:3,unmasked:2"
        alone = self.train(os.path.join(self.tmp, "alone"), "--phases", phases)
        zero, one = self.gang(os.path.join(self.tmp, "gang"), phases)
        self.assertEqual((zero["gang_rank"], one["gang_rank"]), (0, 1))
        for got in (zero["losses"], one["losses"]):
            self.assertEqual(len(got), 5)
            for a, b in zip(got, alone["losses"]):
                self.assertAlmostEqual(a, b, delta=1e-5 * b)
        self.assertIsNone(one["out"])  # member 0 writes the model
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "gang-rank1")))
        self.assertEqual(zero["tokens_trained"], alone["tokens_trained"] // 2)
        # ZeRO-1 changes where AdamW's moments live, not the arithmetic: the same model bit for bit.
        sharded, _ = self.gang(os.path.join(self.tmp, "gang-sharded"), phases, "--shard-optimizer")
        self.assertEqual(sharded["out_fingerprint"], zero["out_fingerprint"])

    def test_bad_input_exits_2_and_writes_no_model(self):
        empty = os.path.join(self.tmp, "empty.jsonl")
        with open(empty, "w") as f:
            f.write('{"text": "   "}\n')
        taken = os.path.join(self.tmp, "taken")
        os.makedirs(taken)
        with open(os.path.join(taken, "config.json"), "w") as f:
            f.write("{}")
        cases = [
            (("--phases", "frozen:3"), 64, "phases"),
            (("--phases", "masked:2", "--micro-batch", "3"), 64, "micro-batch"),
            (("--phases", "masked:1"), 1025, "max_position_embeddings 1024"),
            (("--phases", "masked:1", "--gang-rank", "1"), 64, "--gang-size"),
            (("--phases", "masked:1", "--gang-size", "2", "--gang-master", "nowhere"), 64, "--gang-master"),
        ]
        for extra, seq_len, needle in cases:
            with self.subTest(extra=extra, seq_len=seq_len):
                out = os.path.join(self.tmp, "bad-" + needle)
                proc = self.train(out, *extra, check=False, seq_len=seq_len)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn(needle, proc.stderr)
                self.assertEqual(proc.stdout, "")
                self.assertFalse(os.path.exists(out))
        proc = run("train", "--model", self.pruned, "--data", empty, "--out", os.path.join(self.tmp, "x"), *TRAIN,
                   "--phases", "masked:1", check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(empty, proc.stderr)
        proc = self.train(taken, "--phases", "masked:1", check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("is not empty", proc.stderr)
        self.assertEqual(os.listdir(taken), ["config.json"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
