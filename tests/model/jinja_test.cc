#include "model/jinja.h"
#include "gtest/gtest.h"
TEST(JinjaTest, Placeholder) {}
