// placeholder: replaced by the real llama_model.cc
