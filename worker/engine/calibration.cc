// placeholder: replaced by the real calibration.cc
