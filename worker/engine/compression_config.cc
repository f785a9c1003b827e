// placeholder: replaced by the real compression_config.cc
