// placeholder: replaced by the real baseline.cc
