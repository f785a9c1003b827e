// placeholder: replaced by the real trainer.cc
