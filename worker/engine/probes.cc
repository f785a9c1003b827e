// placeholder: replaced by the real probes.cc
