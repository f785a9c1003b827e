// placeholder: replaced by the real compression.cc
