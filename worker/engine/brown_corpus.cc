// placeholder: replaced by the real brown_corpus.cc
