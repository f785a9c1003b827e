// placeholder: replaced by the real model_config.cc
