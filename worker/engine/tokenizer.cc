// placeholder: replaced by the real tokenizer.cc
