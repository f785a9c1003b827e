// placeholder: replaced by the real evaluator.cc
