// placeholder: replaced by the real sentencepiece_model.cc
