// placeholder: replaced by the real sha256.cc
