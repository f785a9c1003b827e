// placeholder: replaced by the real safetensors.cc
