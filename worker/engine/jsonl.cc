// placeholder: replaced by the real jsonl.cc
