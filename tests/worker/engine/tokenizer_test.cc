// placeholder: replaced by the real test
#include <gtest/gtest.h>
