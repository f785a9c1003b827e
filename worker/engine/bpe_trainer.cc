// placeholder: replaced by the real bpe_trainer.cc
