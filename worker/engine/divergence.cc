// placeholder: replaced by the real divergence.cc
