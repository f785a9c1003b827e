// placeholder: replaced by the real checkpoint.cc
