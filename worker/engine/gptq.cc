// placeholder: replaced by the real gptq.cc
